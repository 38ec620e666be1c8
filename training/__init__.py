"""Offline training: data loading, the training run, evaluation and the artifact it writes."""
