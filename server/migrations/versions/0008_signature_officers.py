"""Written-explanation signatures name the signing officer and certificate (JL-16).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TABLE = "explanation_signatures"


def upgrade() -> None:
    """Add nullable officer columns; plain ADD COLUMN keeps the append-only triggers of 0003."""
    # JL-16: rows signed before this revision keep NULL (signed by an account, not checked).
    op.add_column(_TABLE, sa.Column("officer_id", sa.Integer(), nullable=True))
    op.add_column(_TABLE, sa.Column("certificate_number", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Drop the officer columns (batch mode on SQLite rebuilds the table, so re-create triggers)."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column(_TABLE, "certificate_number")
        op.drop_column(_TABLE, "officer_id")
        return
    op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_update")
    op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_delete")
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_column("certificate_number")
        batch.drop_column("officer_id")
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {_TABLE}_no_{action.lower()} BEFORE {action} ON {_TABLE} "
            f"BEGIN SELECT RAISE(ABORT, 'zfjl: {_TABLE} is append-only'); END"
        )
