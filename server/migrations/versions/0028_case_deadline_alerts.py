"""Deadline alerts about a case, not only a publication item: the JL-18 archive deadline.

Revision ID: 0028
Revises: 0024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """``deadline_alerts.item_id`` becomes optional and ``case_id`` is added (batch mode on SQLite)."""
    with op.batch_alter_table("deadline_alerts") as batch:
        batch.alter_column("item_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("case_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_deadline_alerts_case_id", "cases", ["case_id"], ["id"])
        batch.create_index("ix_deadline_alerts_case_id", ["case_id"])


def downgrade() -> None:
    """Drop the case alerts and the column; ``item_id`` is required again."""
    op.execute("DELETE FROM deadline_alerts WHERE item_id IS NULL")
    with op.batch_alter_table("deadline_alerts") as batch:
        batch.drop_index("ix_deadline_alerts_case_id")
        batch.drop_constraint("fk_deadline_alerts_case_id", type_="foreignkey")
        batch.drop_column("case_id")
        batch.alter_column("item_id", existing_type=sa.Integer(), nullable=False)
