"""One open fleet alert per device and kind: a partial unique index on ``device_alerts``.

Revision ID: 0035
Revises: 0032

Alerts are evaluated hourly by the holder of the ``hourly-alerts`` lease and on demand by any server
process; evaluations take a lock named after that job (``server.domain.leases.exclusive``), and the
database now refuses a second open alert of a kind for a device as well. Open duplicates that concurrent
evaluations may have left before are closed first: the earliest one stays open, the others are cleared
at their last sighting (their history stays).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision = "0032"
branch_labels = None
depends_on = None

_OPEN = sa.text("cleared_at IS NULL")


def upgrade() -> None:
    """Clear open duplicates, keeping the earliest; then allow one open alert per device and kind."""
    op.execute(
        "UPDATE device_alerts SET cleared_at = last_seen_at "
        "WHERE cleared_at IS NULL AND id NOT IN ("
        "SELECT keep FROM (SELECT MIN(id) AS keep FROM device_alerts WHERE cleared_at IS NULL "
        "GROUP BY device_id, kind) AS earliest)"
    )
    op.create_index(
        "uq_device_alerts_one_open",
        "device_alerts",
        ["device_id", "kind"],
        unique=True,
        postgresql_where=_OPEN,
        sqlite_where=_OPEN,
    )


def downgrade() -> None:
    """Drop the index (the cleared duplicates stay cleared)."""
    op.drop_index("uq_device_alerts_one_open", table_name="device_alerts")
