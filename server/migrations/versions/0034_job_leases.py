"""Job leases: one server process at a time runs each singleton background job (docs/scaling.md).

Revision ID: 0034
Revises: 0028
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0034"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``job_leases``: holder, expiry and last round on the database's clock, fencing token."""
    op.create_table(
        "job_leases",
        sa.Column("job", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=True),
        sa.Column("renewed_at", sa.Float(), nullable=True),
        sa.Column("last_run_at", sa.Float(), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    """Drop the leases (each process then runs its jobs alone, as before)."""
    op.drop_table("job_leases")
