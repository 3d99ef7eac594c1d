"""TrustCard task service: queue post analyses on Celery/Redis behind a FastAPI API."""

__version__ = "0.1.0"
