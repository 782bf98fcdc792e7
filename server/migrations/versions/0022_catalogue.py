"""The before-enforcement catalogue: entries, their append-only history, update items (GS-9).

Revision ID: 0022
Revises: 0025
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0025"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# GS-7, GS-18: as for publication items, who wrote, reviewed, published, revised or withdrew an entry
# is never changed or removed; the database refuses UPDATE and DELETE on the history. PostgreSQL reuses
# the trigger function of migration 0017.
_HISTORY = "catalogue_history"
_PG_FUNCTION = "zfjl_publicity_append_only"


def upgrade() -> None:
    """Create the catalogue tables and the append-only triggers of its history."""
    op.create_table(
        "catalogue_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("pending", sa.JSON(), nullable=True),
        sa.Column("published", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("revised_by", sa.String(64), nullable=True),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("corrected_at", TS, nullable=True),
        sa.Column("withdrawn_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_catalogue_entries_agency_kind", "catalogue_entries", ["agency_id", "kind", "state"])
    op.create_table(
        _HISTORY,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("entry_id", sa.Integer(), sa.ForeignKey("catalogue_entries.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_catalogue_history_entry_id", _HISTORY, ["entry_id"])
    op.create_table(
        "catalogue_updates",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("entry_id", sa.Integer(), sa.ForeignKey("catalogue_entries.id"), nullable=False),
        sa.Column("cause", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(300), nullable=False),
        sa.Column("effective_on", sa.Date(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("deadline_provisional", sa.Boolean(), nullable=False),
        sa.Column("calendar_version", sa.String(200), nullable=False),
        sa.Column("opened_by", sa.String(64), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("closed_by", sa.String(64), nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("closed_on_time", sa.Boolean(), nullable=True),
    )
    op.create_index("ix_catalogue_updates_entry_id", "catalogue_updates", ["entry_id"])
    op.create_index("ix_catalogue_updates_open", "catalogue_updates", ["agency_id", "closed_at", "due_on"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE TRIGGER {_HISTORY}_append_only BEFORE UPDATE OR DELETE ON {_HISTORY} "
            f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {_HISTORY}_no_{action.lower()} BEFORE {action} ON {_HISTORY} "
                f"BEGIN SELECT RAISE(ABORT, 'zfjl: {_HISTORY} is append-only'); END"
            )


def downgrade() -> None:
    """Drop the triggers, then the tables."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {_HISTORY}_append_only ON {_HISTORY}")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {_HISTORY}_no_{action}")
    op.drop_table("catalogue_updates")
    op.drop_table(_HISTORY)
    op.drop_table("catalogue_entries")
