"""sceneseg: a reproducible pipeline for movie scene segmentation on MovieScenes (LGSS)."""

__version__ = "0.1.0"
