"""Early revocation of grants (JL-20) and retention periods per agency (JL-19), both append-only.

Revision ID: 0026
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0021"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# Both are governance facts and ledger leaves: the database refuses to change or delete them.
_APPEND_ONLY = ("grant_revocations", "retention_periods")
_PG_FUNCTION = "zfjl_governance_periods_append_only"


def upgrade() -> None:
    """Create the two tables and their append-only triggers."""
    op.create_table(
        "grant_revocations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("governance_requests.id"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("revoked_by", sa.String(64), nullable=False),
        sa.Column("revoker_role", sa.String(32), nullable=False),
        sa.Column("revoked_at", TS, nullable=False),
        sa.UniqueConstraint("request_id", name="uq_grant_revocations_request"),
    )
    op.create_table(
        "retention_periods",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("set_by", sa.String(64), nullable=False),
        sa.Column("set_at", TS, nullable=False),
    )
    op.create_index("ix_retention_periods_agency_id", "retention_periods", ["agency_id"])
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


def downgrade() -> None:
    """Drop the triggers, then the tables."""
    if op.get_bind().dialect.name == "postgresql":
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    else:
        for table in _APPEND_ONLY:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    op.drop_index("ix_retention_periods_agency_id", table_name="retention_periods")
    op.drop_table("retention_periods")
    op.drop_table("grant_revocations")
