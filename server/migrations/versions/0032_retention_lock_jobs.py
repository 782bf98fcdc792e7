"""Store locks extended by a resumable job after an agency lengthens a retention period (JL-19); key-history
entries carry their authorisation, and a baseline says which older entries are trusted as they stood (JL-6).

Revision ID: 0032
Revises: 0030
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0030"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
_PG_FUNCTION = "zfjl_key_history_baselines_append_only"


def upgrade() -> None:
    """Create ``retention_lock_jobs``: a job's progress changes as it runs, so it is not append-only."""
    op.create_table(
        "retention_lock_jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("period_id", sa.Integer(), sa.ForeignKey("retention_periods.id"), nullable=False),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("checked", sa.Integer(), nullable=False),
        sa.Column("extended", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.UniqueConstraint("period_id", name="uq_retention_lock_jobs_period"),
    )
    op.create_index("ix_retention_lock_jobs_agency_id", "retention_lock_jobs", ["agency_id"])
    op.create_index("ix_retention_lock_jobs_state", "retention_lock_jobs", ["state"])
    # Plain ADD COLUMN (no batch copy on SQLite): the append-only triggers of device_keys stay in place, and
    # existing rows, and so their ledger leaves, keep their values.
    op.add_column("device_keys", sa.Column("audit_id", sa.Integer(), nullable=True))
    op.add_column("device_keys", sa.Column("rotation_signature", sa.LargeBinary(64), nullable=True))
    op.create_table(
        "key_history_baselines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("through_id", sa.Integer(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
    )
    op.execute(
        "INSERT INTO key_history_baselines (through_id, recorded_at) "
        "SELECT COALESCE(MAX(id), 0), CURRENT_TIMESTAMP FROM device_keys"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'zfjl: % is append-only', TG_TABLE_NAME; END $$"
        )
        op.execute(
            "CREATE TRIGGER key_history_baselines_append_only BEFORE UPDATE OR DELETE ON "
            f"key_history_baselines FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER key_history_baselines_no_{action.lower()} BEFORE {action} ON "
                "key_history_baselines BEGIN SELECT RAISE(ABORT, 'zfjl: key_history_baselines is "
                "append-only'); END"
            )


def downgrade() -> None:
    """Drop the jobs (the periods they served stay, and so does every lock they extended), the baseline
    and the authorisation columns."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS key_history_baselines_append_only ON key_history_baselines")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS key_history_baselines_no_{action}")
    op.drop_table("key_history_baselines")
    # ALTER TABLE DROP COLUMN, not a batch copy: device_keys keeps its append-only triggers.
    op.drop_column("device_keys", "rotation_signature")
    op.drop_column("device_keys", "audit_id")
    op.drop_index("ix_retention_lock_jobs_state", table_name="retention_lock_jobs")
    op.drop_index("ix_retention_lock_jobs_agency_id", table_name="retention_lock_jobs")
    op.drop_table("retention_lock_jobs")
