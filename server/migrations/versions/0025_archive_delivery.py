"""Archiving by a job (JL-18) and sealed export packages for external provision (JL-20).

``archive_packages.delivered_key`` says where the package was delivered in the archive store;
``archive_failures`` records each failed attempt of the archiving job (the case stays pending);
``provision_exports`` records each sealed export package built for an approved external provision.
The two new tables are append-only, like the packages.

Revision ID: 0025
Revises: 0026
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0026"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
_APPEND_ONLY = ("archive_failures", "provision_exports")
_PG_FUNCTION = "zfjl_archive_delivery_append_only"


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


def upgrade() -> None:
    """Add the delivery column and both tables with their indexes and append-only triggers."""
    op.add_column("archive_packages", sa.Column("delivered_key", sa.String(512), nullable=True))
    op.create_table(
        "archive_failures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempted_at", TS, nullable=False),
    )
    op.create_index("ix_archive_failures_case_id", "archive_failures", ["case_id"])
    op.create_table(
        "provision_exports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("governance_requests.id"), nullable=False),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("bag_name", sa.String(128), nullable=False),
        sa.Column("object_key", sa.String(512), nullable=False),
        sa.Column("zip_sha256", sa.String(64), nullable=False),
        sa.Column("zip_size", sa.BigInteger(), nullable=False),
        sa.Column("recording_count", sa.Integer(), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_provision_exports_request_id", "provision_exports", ["request_id"])
    _append_only_triggers()


def downgrade() -> None:
    """Drop the triggers, the tables and the column."""
    if op.get_bind().dialect.name == "postgresql":
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    else:
        for table in _APPEND_ONLY:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    op.drop_table("provision_exports")
    op.drop_table("archive_failures")
    with op.batch_alter_table("archive_packages") as batch:
        batch.drop_column("delivered_key")
