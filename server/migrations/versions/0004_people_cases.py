"""Agencies, officers, credentials and cases (GS-9, GS-10, JL-7 to JL-11).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables (filled in by the capability that owns them)."""


def downgrade() -> None:
    """Drop the tables."""
