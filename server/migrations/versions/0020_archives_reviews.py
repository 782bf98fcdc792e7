"""Archive packages (JL-18) and case-file reviews (JL-22), both append-only.

Revision ID: 0020
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0017"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# What was archived and what a reviewer found are records themselves: never rewritten (JL-18, JL-22).
_APPEND_ONLY = ("archive_packages", "case_reviews")
_PG_FUNCTION = "zfjl_archives_append_only"


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
    """Create both tables, their indexes and the append-only triggers."""
    op.create_table(
        "archive_packages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("bag_name", sa.String(128), nullable=False),
        sa.Column("tagmanifest_sha256", sa.String(64), nullable=False),
        sa.Column("zip_sha256", sa.String(64), nullable=False),
        sa.Column("zip_size", sa.BigInteger(), nullable=False),
        sa.Column("object_key", sa.String(512), nullable=False),
        sa.Column("payload_oxum", sa.String(64), nullable=False),
        sa.Column("recording_count", sa.Integer(), nullable=False),
        sa.Column("leaf_count", sa.Integer(), nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("on_time", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_archive_packages_case_id", "archive_packages", ["case_id"])
    op.create_index("ix_archive_packages_agency_id", "archive_packages", ["agency_id"])
    op.create_index("ix_archive_packages_created_at", "archive_packages", ["created_at"])
    op.create_table(
        "case_reviews",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("rectifications", sa.JSON(), nullable=False),
        sa.Column("rectify_by", sa.Date(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("follows_review_id", sa.Integer(), sa.ForeignKey("case_reviews.id"), nullable=True),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("reviewer_role", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_case_reviews_case_id", "case_reviews", ["case_id"])
    op.create_index("ix_case_reviews_agency_id", "case_reviews", ["agency_id"])
    op.create_index("ix_case_reviews_created_at", "case_reviews", ["created_at"])
    _append_only_triggers()


def downgrade() -> None:
    """Drop the triggers, then the tables."""
    _drop_append_only_triggers()
    op.drop_table("case_reviews")
    op.drop_table("archive_packages")
