"""Post analysis: extraction, pluggable analyzers, trust score; no Celery and no database here."""
