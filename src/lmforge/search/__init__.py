"""Hyperparameter search on Optuna: the space a config names, studies of ordinary runs."""
