"""Evidence ledger: RFC 9162 leaves and signed checkpoints, both append-only (JL-6, JL-23).

Revision ID: 0016
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# The ledger is the proof that nothing else was changed: the database refuses to change it either.
_APPEND_ONLY = ("ledger_leaves", "ledger_checkpoints")
# Its own function name, so dropping it never touches another migration's function.
_PG_FUNCTION = "zfjl_ledger_append_only"


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
    """Create the ledger tables and their append-only triggers (the sequencer then fills them)."""
    op.create_table(
        "ledger_leaves",
        sa.Column("leaf_index", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref_table", sa.String(64), nullable=False),
        sa.Column("ref_id", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("sequenced_at", TS, nullable=False),
        sa.UniqueConstraint("ref_table", "ref_id", name="uq_ledger_leaves_ref"),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", TS, nullable=False),
        sa.UniqueConstraint("tree_size", name="uq_ledger_checkpoints_tree_size"),
    )
    op.create_index("ix_ledger_checkpoints_signed_at", "ledger_checkpoints", ["signed_at"])
    _append_only_triggers()


def downgrade() -> None:
    """Drop the triggers, then the tables."""
    _drop_append_only_triggers()
    op.drop_index("ix_ledger_checkpoints_signed_at", table_name="ledger_checkpoints")
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_leaves")
