"""Celery task modules; each stays thin and calls plain functions."""
