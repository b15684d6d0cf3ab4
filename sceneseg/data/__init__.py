"""Data handling: the movie format, safe loading and validation of the dataset pickles, the sources
(synthetic sample, MovieScenes archive, local files), the split, LGSS windows and the similarity
features every model and reference reads (computed once by the features stage)."""
