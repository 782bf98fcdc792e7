"""A device check-out keeps the assignee's agency: evidence recorded under it belongs there (JL-20).

Revision ID: 0015
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``device_assignments.agency_id`` and fill it from each assignee's current agency."""
    # A snapshot of the agency as it was, so no foreign key (like explanation_signatures.officer_id).
    op.add_column("device_assignments", sa.Column("agency_id", sa.Integer(), nullable=True))
    # Existing check-outs: the best knowledge there is of the agency at the time is the current one.
    op.execute(
        "UPDATE device_assignments SET agency_id = "
        "(SELECT users.agency_id FROM users WHERE users.id = device_assignments.user_id)"
    )


def downgrade() -> None:
    """Drop the column (batch mode rebuilds the table on SQLite)."""
    with op.batch_alter_table("device_assignments") as batch:
        batch.drop_column("agency_id")
