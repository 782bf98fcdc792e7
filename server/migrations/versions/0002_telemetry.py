"""Device telemetry: latest presence per device and health samples.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create device_presence and device_health."""
    op.create_table(
        "device_presence",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_table(
        "device_health",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("backlog_bytes", sa.BigInteger(), nullable=False),
        sa.Column("backlog_segments", sa.Integer(), nullable=False),
        sa.Column("oldest_pending_age_s", sa.Float(), nullable=True),
        sa.Column("free_bytes", sa.BigInteger(), nullable=True),
        sa.Column("battery_pct", sa.Integer(), nullable=True),
        sa.Column("recording", sa.Boolean(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
    )
    op.create_index("ix_device_health_device_at", "device_health", ["device_id", "at"])


def downgrade() -> None:
    """Drop the telemetry tables."""
    op.drop_index("ix_device_health_device_at", table_name="device_health")
    op.drop_table("device_health")
    op.drop_table("device_presence")
