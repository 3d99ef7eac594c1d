"""Analyses record the API key that submitted them (issue 15: tasks belong to their client).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("analyses", sa.Column("owner", sa.String(32), nullable=True))
    op.create_index("ix_analyses_owner", "analyses", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_analyses_owner", table_name="analyses")
    with op.batch_alter_table("analyses") as batch:
        batch.drop_column("owner")
