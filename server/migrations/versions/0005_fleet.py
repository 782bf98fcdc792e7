"""Device fleet: assignment, configuration, commands, updates, alerts.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables (filled in by the capability that owns them)."""


def downgrade() -> None:
    """Drop the tables."""
