"""Device fleet: MQTT credentials, provisioning, profiles, assignment, alerts.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the fleet tables."""
    op.create_table(
        "device_credentials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_reason", sa.String(255), nullable=False),
    )
    op.create_index("ix_device_credentials_device", "device_credentials", ["device_id"])
    op.create_table(
        "device_serial_allowlist",
        sa.Column("serial", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("added_by", sa.String(64), nullable=False),
        sa.Column("added_at", TS, nullable=False),
        sa.Column("used_by_device", sa.String(64), nullable=True),
    )
    op.create_table(
        "device_provisioning_requests",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("claim_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
    )
    op.create_index(
        "ix_device_provisioning_requests_device_id", "device_provisioning_requests", ["device_id"]
    )
    op.create_table(
        "device_profiles",
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "device_assignments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("checked_out_at", TS, nullable=False),
        sa.Column("checked_out_by", sa.String(64), nullable=False),
        sa.Column("battery_at_checkout", sa.Integer(), nullable=True),
        sa.Column("checked_in_at", TS, nullable=True),
        sa.Column("checked_in_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_device_assignments_device", "device_assignments", ["device_id", "checked_out_at"])
    op.create_table(
        "device_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("message_en", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("raised_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("cleared_at", TS, nullable=True),
        sa.UniqueConstraint("device_id", "kind", "raised_at", name="uq_device_alerts_device_kind_raised"),
    )
    op.create_index("ix_device_alerts_open", "device_alerts", ["device_id", "cleared_at"])
    op.create_table(
        "device_config_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
    )
    op.create_index("ix_device_config_versions_target", "device_config_versions", ["scope", "target"])
    op.create_table(
        "device_config_state",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("published_version", sa.Integer(), nullable=False),
        sa.Column("reported_version", sa.Integer(), nullable=True),
        sa.Column("reported_settings", sa.JSON(), nullable=False),
        sa.Column("reported_error", sa.Text(), nullable=False),
        sa.Column("reported_at", TS, nullable=True),
    )
    op.create_table(
        "device_commands",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_device_commands_device_state", "device_commands", ["device_id", "state"])


def downgrade() -> None:
    """Drop the fleet tables."""
    op.drop_index("ix_device_commands_device_state", table_name="device_commands")
    op.drop_table("device_commands")
    op.drop_table("device_config_state")
    op.drop_index("ix_device_config_versions_target", table_name="device_config_versions")
    op.drop_table("device_config_versions")
    op.drop_index("ix_device_alerts_open", table_name="device_alerts")
    op.drop_table("device_alerts")
    op.drop_index("ix_device_assignments_device", table_name="device_assignments")
    op.drop_table("device_assignments")
    op.drop_table("device_profiles")
    op.drop_index("ix_device_provisioning_requests_device_id", table_name="device_provisioning_requests")
    op.drop_table("device_provisioning_requests")
    op.drop_table("device_serial_allowlist")
    op.drop_index("ix_device_credentials_device", table_name="device_credentials")
    op.drop_table("device_credentials")
