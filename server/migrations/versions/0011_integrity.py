"""Evidence integrity: device key history, segment receipts, scrub findings; append-only evidence tables.

Revision ID: 0011
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# JL-6: evidence rows, the security log and the key history are never changed or removed by the product;
# the database itself refuses UPDATE and DELETE on them.
_APPEND_ONLY = ("recordings", "ingest_rejections", "device_keys", "segment_receipts", "scrub_findings")
_PG_FUNCTION = "zfjl_integrity_append_only"


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
    """Create the integrity tables, backfill them from devices and recordings, add the triggers."""
    op.create_table(
        "device_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_until", TS, nullable=True),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
    )
    op.create_index("ix_device_keys_device_id", "device_keys", ["device_id"])
    op.create_table(
        "segment_receipts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("manifest_hash", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.UniqueConstraint("device_id", "sequence", name="uq_segment_receipts_device_sequence"),
    )
    op.create_table(
        "scrub_findings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=True),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_scrub_findings_device_id", "scrub_findings", ["device_id"])
    op.create_index("ix_scrub_findings_recording_id", "scrub_findings", ["recording_id"])
    op.create_index("ix_scrub_findings_at", "scrub_findings", ["at"])
    # Backfill: every registered key is valid from its registration; every stored segment was receipted.
    op.execute(
        "INSERT INTO device_keys (device_id, public_key, key_fingerprint, valid_from, valid_until, event, "
        "recorded_by, recorded_at) SELECT id, public_key, key_fingerprint, registered_at, NULL, 'backfill', "
        "'migration', registered_at FROM devices"
    )
    op.execute(
        "INSERT INTO segment_receipts (device_id, sequence, manifest_hash, at) "
        "SELECT device_id, sequence, manifest_hash, stored_at FROM recordings"
    )
    _append_only_triggers()


def downgrade() -> None:
    """Drop the triggers, then the tables."""
    _drop_append_only_triggers()
    op.drop_table("scrub_findings")
    op.drop_table("segment_receipts")
    op.drop_index("ix_device_keys_device_id", table_name="device_keys")
    op.drop_table("device_keys")
