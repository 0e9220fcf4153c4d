"""Training, experiment tracking and hyperparameter search."""
