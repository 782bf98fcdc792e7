"""Publicity: items, append-only history, correction requests, holiday schedules (GS-7, GS-11 – GS-19).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# GS-7, GS-18: the history of who collected, reviewed, published, corrected or withdrew an item is
# never changed or removed by the product; the database itself refuses UPDATE and DELETE on it.
_APPEND_ONLY = ("publication_history",)
_PG_FUNCTION = "zfjl_publicity_append_only"


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
    """Create the publicity tables and the append-only triggers of the history."""
    op.create_table(
        "publication_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=True),
        sa.Column("source_event_id", sa.Integer(), sa.ForeignKey("case_events.id"), nullable=True),
        sa.Column("act_kind", sa.String(16), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("party_name", sa.String(300), nullable=False),
        sa.Column("document_number", sa.String(128), nullable=False),
        sa.Column("decided_on", sa.Date(), nullable=True),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("redactions", sa.JSON(), nullable=False),
        sa.Column("published", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("deadline_rule", sa.String(32), nullable=False),
        sa.Column("deadline_provisional", sa.Boolean(), nullable=False),
        sa.Column("calendar_version", sa.String(200), nullable=False),
        sa.Column("disclosure_earliest_end", sa.Date(), nullable=True),
        sa.Column("disclosure_ends", sa.Date(), nullable=True),
        sa.Column("excluded_grounds", sa.JSON(), nullable=False),
        sa.Column("excluded_reason", sa.Text(), nullable=True),
        sa.Column("withdrawal_reason", sa.Text(), nullable=True),
        sa.Column("withdrawal_due_on", sa.Date(), nullable=True),
        sa.Column("replaces_item_id", sa.Integer(), sa.ForeignKey("publication_items.id"), nullable=True),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("corrected_at", TS, nullable=True),
        sa.Column("withdrawn_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("source_event_id", name="uq_publication_items_source_event"),
    )
    op.create_index("ix_publication_items_case_id", "publication_items", ["case_id"])
    op.create_index("ix_publication_items_portal_order", "publication_items", ["decided_on", "id"])
    op.create_index("ix_publication_items_kind_date", "publication_items", ["act_kind", "decided_on"])
    if op.get_bind().dialect.name == "postgresql":
        # Substring search on the portal (LIKE '%…%'): trigram indexes; pg_trgm is a trusted extension
        # of PostgreSQL's standard contrib set, so the database owner may create it.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "ix_publication_items_party_prefix",
        "publication_items",
        ["party_name"],
        postgresql_ops={"party_name": "varchar_pattern_ops"},
    )
    for name, column in (("party_trgm", "party_name"), ("document_trgm", "document_number")):
        op.create_index(
            f"ix_publication_items_{name}",
            "publication_items",
            [column],
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
        )
    op.create_index("ix_publication_items_portal", "publication_items", ["state", "disclosure_ends"])
    op.create_index("ix_publication_items_agency_state", "publication_items", ["agency_id", "state"])
    op.create_table(
        "publication_history",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("publication_items.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_publication_history_item_id", "publication_history", ["item_id"])
    op.create_table(
        "publication_corrections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("publication_items.id"), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("contact", sa.String(200), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
    )
    op.create_index("ix_publication_corrections_item_id", "publication_corrections", ["item_id"])
    op.create_table(
        "holiday_schedules",
        sa.Column("year", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("holidays", sa.JSON(), nullable=False),
        sa.Column("workdays", sa.JSON(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("loaded_by", sa.String(64), nullable=False),
        sa.Column("loaded_at", TS, nullable=False),
    )
    _append_only_triggers()


def downgrade() -> None:
    """Drop the triggers, then the tables."""
    _drop_append_only_triggers()
    op.drop_table("holiday_schedules")
    op.drop_index("ix_publication_corrections_item_id", table_name="publication_corrections")
    op.drop_table("publication_corrections")
    op.drop_index("ix_publication_history_item_id", table_name="publication_history")
    op.drop_table("publication_history")
    for name in (
        "document_trgm",
        "party_prefix",
        "party_trgm",
        "kind_date",
        "portal_order",
        "agency_state",
        "portal",
        "case_id",
    ):
        op.drop_index(f"ix_publication_items_{name}", table_name="publication_items")
    op.drop_table("publication_items")
