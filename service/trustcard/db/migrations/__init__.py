"""Alembic migrations of the trustcard database (run with `trustcard db upgrade`)."""
