"""Store locks extended by a resumable job after an agency lengthens a retention period (JL-19).

Revision ID: 0032
Revises: 0028
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0028"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


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


def downgrade() -> None:
    """Drop the jobs (the periods they served stay, and so does every lock they extended)."""
    op.drop_index("ix_retention_lock_jobs_state", table_name="retention_lock_jobs")
    op.drop_index("ix_retention_lock_jobs_agency_id", table_name="retention_lock_jobs")
    op.drop_table("retention_lock_jobs")
