"""Retention, legal hold, disposal tombstones, approvals and access classes, all append-only (JL-19, JL-20).

Revision ID: 0019
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0020"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# Governance facts are ledger leaves: the database refuses to change or delete them, as it does the ledger.
_APPEND_ONLY = (
    "governance_requests",
    "governance_decisions",
    "retention_assignments",
    "legal_holds",
    "legal_hold_releases",
    "disposal_tombstones",
    "access_class_changes",
)
_PG_FUNCTION = "zfjl_governance_append_only"


def _append_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'zfjl: % is append-only', TG_TABLE_NAME; END $$"
        )
        for table in _APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
            )
        return
    for table in _APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'zfjl: {table} is append-only'); END"
            )


def _drop_append_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
        return
    for table in _APPEND_ONLY:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")


def upgrade() -> None:
    """Create the governance tables and their append-only triggers."""
    op.create_table(
        "governance_requests",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("requester_role", sa.String(32), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("recipient", sa.String(300), nullable=False),
        sa.Column("recipient_body", sa.String(32), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("recording_ids", sa.JSON(), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=True),
        sa.Column("duration_days", sa.Integer(), nullable=False),
        sa.Column("requested_at", TS, nullable=False),
    )
    op.create_index("ix_governance_requests_agency_id", "governance_requests", ["agency_id"])
    op.create_index("ix_governance_requests_requested_by", "governance_requests", ["requested_by"])
    op.create_table(
        "governance_decisions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("governance_requests.id"), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=False),
        sa.Column("decider_role", sa.String(32), nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.UniqueConstraint("request_id", name="uq_governance_decisions_request"),
    )
    op.create_table(
        "retention_assignments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("recording_id", sa.Integer(), sa.ForeignKey("recordings.id"), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("assigned_by", sa.String(64), nullable=False),
        sa.Column("assigned_at", TS, nullable=False),
        sa.UniqueConstraint("recording_id", "category", name="uq_retention_assignments_category"),
    )
    op.create_index("ix_retention_assignments_recording_id", "retention_assignments", ["recording_id"])
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("recording_id", sa.Integer(), sa.ForeignKey("recordings.id"), nullable=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_by", sa.String(64), nullable=False),
        sa.Column("placed_at", TS, nullable=False),
    )
    op.create_index("ix_legal_holds_agency_id", "legal_holds", ["agency_id"])
    op.create_table(
        "legal_hold_releases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hold_id", sa.Integer(), sa.ForeignKey("legal_holds.id"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("released_by", sa.String(64), nullable=False),
        sa.Column("released_at", TS, nullable=False),
        sa.UniqueConstraint("hold_id", name="uq_legal_hold_releases_hold"),
    )
    op.create_table(
        "disposal_tombstones",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("recording_id", sa.Integer(), sa.ForeignKey("recordings.id"), nullable=False),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("governance_requests.id"), nullable=False),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("object_key", sa.String(512), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("officer_id", sa.String(128), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("retained_until", TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("approved_by", sa.String(64), nullable=False),
        sa.Column("disposed_at", TS, nullable=False),
        sa.UniqueConstraint("recording_id", name="uq_disposal_tombstones_recording"),
    )
    op.create_index("ix_disposal_tombstones_request_id", "disposal_tombstones", ["request_id"])
    op.create_index("ix_disposal_tombstones_agency_id", "disposal_tombstones", ["agency_id"])
    op.create_table(
        "access_class_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("recording_id", sa.Integer(), sa.ForeignKey("recordings.id"), nullable=False),
        sa.Column("access_class", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("set_by", sa.String(64), nullable=False),
        sa.Column("set_at", TS, nullable=False),
    )
    op.create_index("ix_access_class_changes_recording_id", "access_class_changes", ["recording_id"])
    _append_only_triggers()


def downgrade() -> None:
    """Drop the triggers, then the tables (dependants first)."""
    _drop_append_only_triggers()
    op.drop_index("ix_access_class_changes_recording_id", table_name="access_class_changes")
    op.drop_table("access_class_changes")
    op.drop_index("ix_disposal_tombstones_agency_id", table_name="disposal_tombstones")
    op.drop_index("ix_disposal_tombstones_request_id", table_name="disposal_tombstones")
    op.drop_table("disposal_tombstones")
    op.drop_table("legal_hold_releases")
    op.drop_index("ix_legal_holds_agency_id", table_name="legal_holds")
    op.drop_table("legal_holds")
    op.drop_index("ix_retention_assignments_recording_id", table_name="retention_assignments")
    op.drop_table("retention_assignments")
    op.drop_table("governance_decisions")
    op.drop_index("ix_governance_requests_requested_by", table_name="governance_requests")
    op.drop_index("ix_governance_requests_agency_id", table_name="governance_requests")
    op.drop_table("governance_requests")
