"""Publication deadline alerts per agency: due soon, overdue (GS-22, GS-23).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create deadline_alerts, kept like device_alerts: opened, refreshed, cleared, never deleted."""
    op.create_table(
        "deadline_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("publication_items.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("message_en", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("raised_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("cleared_at", TS, nullable=True),
        sa.UniqueConstraint("item_id", "kind", "raised_at", name="uq_deadline_alerts_item_kind_raised"),
    )
    op.create_index("ix_deadline_alerts_open", "deadline_alerts", ["agency_id", "cleared_at"])
    op.create_index("ix_deadline_alerts_item_id", "deadline_alerts", ["item_id"])


def downgrade() -> None:
    """Drop the alerts table."""
    op.drop_index("ix_deadline_alerts_item_id", table_name="deadline_alerts")
    op.drop_index("ix_deadline_alerts_open", table_name="deadline_alerts")
    op.drop_table("deadline_alerts")
