"""Security-log rows say how many refusals they stand for (a flood is summed, never dropped).

Revision ID: 0012
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0015"
branch_labels = None
depends_on = None

_TABLE = "ingest_rejections"


def upgrade() -> None:
    """Add ``occurrences`` (1 for every existing row); plain ADD COLUMN keeps any trigger on the table."""
    op.add_column(_TABLE, sa.Column("occurrences", sa.Integer(), nullable=False, server_default=sa.text("1")))


def downgrade() -> None:
    """Drop the column with a plain ALTER TABLE (SQLite ≥ 3.35), so no batch rebuild drops triggers."""
    op.drop_column(_TABLE, "occurrences")
