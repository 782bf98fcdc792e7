"""Witness cosignatures of the ledger's checkpoints, append-only (JL-6, JL-23; docs/ledger.md).

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
_PG_FUNCTION = "zfjl_cosignatures_append_only"


def upgrade() -> None:
    """Create ``ledger_cosignatures``; the database refuses to change or delete a stored cosignature."""
    op.create_table(
        "ledger_cosignatures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("witness", sa.String(255), nullable=False),
        sa.Column("cosigned_at", TS, nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.UniqueConstraint("tree_size", "witness", name="uq_ledger_cosignatures_size_witness"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'zfjl: % is append-only', TG_TABLE_NAME; END $$"
        )
        op.execute(
            "CREATE TRIGGER ledger_cosignatures_append_only BEFORE UPDATE OR DELETE ON ledger_cosignatures "
            f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
        return
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER ledger_cosignatures_no_{action.lower()} BEFORE {action} ON ledger_cosignatures "
            "BEGIN SELECT RAISE(ABORT, 'zfjl: ledger_cosignatures is append-only'); END"
        )


def downgrade() -> None:
    """Drop the table (and its trigger function)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_cosignatures_append_only ON ledger_cosignatures")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS ledger_cosignatures_no_{action}")
    op.drop_table("ledger_cosignatures")
