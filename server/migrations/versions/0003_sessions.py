"""Enforcement sessions, interruption markers, explanations and bookmarks (JL-16).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# JL-16, JL-19: session records are evidence; the database itself refuses to change them.
_APPEND_ONLY = (
    "enforcement_sessions",
    "session_events",
    "interruption_markers",
    "written_explanations",
    "explanation_signatures",
)
# Its own function name: 0004 creates zfjl_append_only() for the case tables.
_PG_FUNCTION = "zfjl_sessions_append_only"


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
    """Create the session tables and their append-only triggers."""
    op.create_table(
        "enforcement_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.UniqueConstraint("device_id", "session_id", name="uq_enforcement_sessions_device_session"),
    )
    op.create_table(
        "session_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "enforcement_session_id", sa.Integer(), sa.ForeignKey("enforcement_sessions.id"), nullable=False
        ),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("officer_id", sa.String(128), nullable=False),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("marker_id", sa.String(64), nullable=False),
        sa.Column("cause", sa.String(128), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("bookmark_type", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("event_text", sa.Text(), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.UniqueConstraint("device_id", "event_id", name="uq_session_events_device_event"),
        sa.UniqueConstraint("device_id", "seq", name="uq_session_events_device_seq"),
    )
    op.create_index("ix_session_events_session_seq", "session_events", ["enforcement_session_id", "seq"])
    op.create_index("ix_session_events_kind_at", "session_events", ["kind", "at"])
    op.create_table(
        "interruption_markers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "enforcement_session_id", sa.Integer(), sa.ForeignKey("enforcement_sessions.id"), nullable=False
        ),
        sa.Column("marker_id", sa.String(64), nullable=False),
        sa.Column("opened_event_id", sa.Integer(), sa.ForeignKey("session_events.id"), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("cause", sa.String(128), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.UniqueConstraint(
            "enforcement_session_id", "marker_id", name="uq_interruption_markers_session_marker"
        ),
    )
    op.create_table(
        "written_explanations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "enforcement_session_id", sa.Integer(), sa.ForeignKey("enforcement_sessions.id"), nullable=False
        ),
        sa.Column("marker_ref", sa.Integer(), sa.ForeignKey("interruption_markers.id"), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_sha256", sa.String(64), nullable=False),
        sa.Column("gaps", sa.JSON(), nullable=False),
        sa.Column("filed_by", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("filed_at", TS, nullable=False),
    )
    op.create_index("ix_written_explanations_session", "written_explanations", ["enforcement_session_id"])
    op.create_table(
        "explanation_signatures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("explanation_id", sa.Integer(), sa.ForeignKey("written_explanations.id"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("text_sha256", sa.String(64), nullable=False),
        sa.Column("signed_at", TS, nullable=False),
        sa.UniqueConstraint("explanation_id", "user_id", name="uq_explanation_signatures_explanation_user"),
    )
    _append_only_triggers()


def downgrade() -> None:
    """Drop the triggers, then the tables (children first)."""
    _drop_append_only_triggers()
    op.drop_table("explanation_signatures")
    op.drop_index("ix_written_explanations_session", table_name="written_explanations")
    op.drop_table("written_explanations")
    op.drop_table("interruption_markers")
    op.drop_index("ix_session_events_kind_at", table_name="session_events")
    op.drop_index("ix_session_events_session_seq", table_name="session_events")
    op.drop_table("session_events")
    op.drop_table("enforcement_sessions")
