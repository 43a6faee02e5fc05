"""Configured projects bound to a data directory: training, model files, suggesting."""
