"""What an insider with full database rights can do before tampering: switch the append-only triggers off."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["APPEND_ONLY_EVIDENCE_TABLES", "disable_append_only_triggers"]

APPEND_ONLY_EVIDENCE_TABLES = (
    "recordings",
    "ingest_rejections",
    "device_keys",
    "segment_receipts",
    "scrub_findings",
)


def disable_append_only_triggers(session: Session) -> None:
    """Drop (SQLite) or disable (PostgreSQL) the evidence tables' append-only triggers."""
    if session.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_EVIDENCE_TABLES:
            session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        return
    for table in APPEND_ONLY_EVIDENCE_TABLES:
        for action in ("update", "delete"):
            session.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{action}"))
