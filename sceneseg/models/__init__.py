"""The models of the pipeline, one package each, and what they share.

``registry`` maps the name ``train.model`` selects to its :class:`~sceneseg.models.base.ModelKind`
(``base``: the interface train, evaluate and ``sceneseg predict`` use); ``lgss`` and ``simseq`` hold
everything only that model uses (params, network, training loop, adapter); ``references`` the
boosted and stacked references that evaluate fits beside the model; ``checkpoint`` saves and loads
any model. This file imports nothing: a stage that reads one model's params section imports that
section's module alone, not torch.
"""
