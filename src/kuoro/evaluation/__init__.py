"""Evaluation: Annif's metrics, limit and threshold optimisation, hyperparameter search and the
HTML report."""
