"""Evaluation: the Eluvio metrics, scoring of prediction files, the evaluate stage's report of every
system, and the plots."""
