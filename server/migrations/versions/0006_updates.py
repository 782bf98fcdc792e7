"""Signed update bundles and staged rollouts.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the update and rollout tables."""
    op.create_table(
        "update_bundles",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("bundle_metadata", sa.JSON(), nullable=False),
        sa.Column("object_key", sa.String(255), nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
        sa.Column("uploaded_at", TS, nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("bundle_id", sa.String(32), sa.ForeignKey("update_bundles.id"), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("success_threshold_pct", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("current_batch", sa.Integer(), nullable=False),
        sa.Column("command_ttl_s", sa.Integer(), nullable=False),
        sa.Column("base_url", sa.String(255), nullable=False),
        sa.Column("halted_reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "rollout_targets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rollout_id", sa.Integer(), sa.ForeignKey("rollouts.id"), nullable=False),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("command_id", sa.String(32), nullable=True),
        sa.Column("download_token", sa.String(64), nullable=True, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_rollout_targets_rollout", "rollout_targets", ["rollout_id", "batch"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_rollout_targets_rollout", table_name="rollout_targets")
    op.drop_table("rollout_targets")
    op.drop_table("rollouts")
    op.drop_table("update_bundles")
