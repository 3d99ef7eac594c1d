"""Storage of analyses, their stage results and known claims (SQLAlchemy 2, Alembic)."""
