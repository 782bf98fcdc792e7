"""Chain heads devices report in health, so a stored segment that goes missing raises an alert.

Revision ID: 0009
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0013"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create device_chain_heads: one row per (device, sequence, hash) a device signed as its head."""
    op.create_table(
        "device_chain_heads",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("manifest_hash", sa.String(64), nullable=False),
        sa.Column("first_reported_at", TS, nullable=False),
        sa.Column("last_reported_at", TS, nullable=False),
        sa.UniqueConstraint("device_id", "sequence", "manifest_hash", name="uq_device_chain_heads"),
    )


def downgrade() -> None:
    """Drop device_chain_heads."""
    op.drop_table("device_chain_heads")
