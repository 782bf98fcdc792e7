"""Annual reports (GS-17) and their append-only history.

Revision ID: 0021
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# Who generated, submitted, returned and published a report is a record itself: never rewritten (GS-7).
_APPEND_ONLY = ("annual_report_history",)
_PG_FUNCTION = "zfjl_annual_reports_append_only"


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
    """Create the annual report tables and the append-only trigger of their history."""
    op.create_table(
        "annual_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("submitted_by", sa.String(64), nullable=True),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("generated_at", TS, nullable=False),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("agency_id", "year", name="uq_annual_reports_agency_year"),
    )
    op.create_index("ix_annual_reports_agency_id", "annual_reports", ["agency_id"])
    op.create_table(
        "annual_report_history",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("report_id", sa.Integer(), sa.ForeignKey("annual_reports.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_annual_report_history_report_id", "annual_report_history", ["report_id"])
    _append_only_triggers()


def downgrade() -> None:
    """Drop the trigger, then the tables."""
    _drop_append_only_triggers()
    op.drop_index("ix_annual_report_history_report_id", "annual_report_history")
    op.drop_table("annual_report_history")
    op.drop_index("ix_annual_reports_agency_id", "annual_reports")
    op.drop_table("annual_reports")
