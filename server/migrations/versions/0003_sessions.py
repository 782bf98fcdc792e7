"""Enforcement sessions, interruption markers, explanations and bookmarks (JL-16).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables (filled in by the capability that owns them)."""


def downgrade() -> None:
    """Drop the tables."""
