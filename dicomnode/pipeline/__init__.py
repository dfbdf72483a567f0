"""Pipelines: load a completed series as a volume, preprocess, run a model, write results."""
