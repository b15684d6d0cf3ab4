"""The references evaluate fits beside the model on the same transitions: ``boosted`` (scikit-learn
gradient-boosted trees) and ``stacked`` (a logistic regression)."""
