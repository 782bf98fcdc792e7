"""GS-12 withdrawal orders with the reconsideration or litigation record they come from.

Revision ID: 0030
Revises: 0031
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0031"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """The ``withdrawal_orders`` table; an item's ``withdrawal_due_on`` stays where it was."""
    op.create_table(
        "withdrawal_orders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("publication_items.id"), nullable=False),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("revoked_on", sa.Date(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("deadline_provisional", sa.Boolean(), nullable=False),
        sa.Column("calendar_version", sa.String(200), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=True),
        sa.Column("source_body", sa.String(200), nullable=False),
        sa.Column("source_document", sa.String(128), nullable=False),
        sa.Column("source_decided_on", sa.Date(), nullable=True),
        sa.Column("ordered_by", sa.String(64), nullable=False),
        sa.Column("ordered_at", TS, nullable=False),
    )
    op.create_index("ix_withdrawal_orders_item_id", "withdrawal_orders", ["item_id"])


def downgrade() -> None:
    """Drop the orders; the items keep their withdrawal deadlines."""
    op.drop_index("ix_withdrawal_orders_item_id", table_name="withdrawal_orders")
    op.drop_table("withdrawal_orders")
