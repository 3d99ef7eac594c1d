"""Metrics (and later traces and logs) shared by the API, the worker and the exporter."""
