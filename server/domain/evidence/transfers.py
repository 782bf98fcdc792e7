"""What the ingest edge asks the evidence store about a transfer: is it stored, and does it fit the chain."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.manifest import SignedManifest
from server.domain.evidence.commit import record_rejection
from server.domain.evidence.models import Recording

__all__ = ["record_chain_breaks", "stored_segment"]


def stored_segment(session: Session, device_id: str, file_id: str) -> tuple[int, str] | None:
    """The recording committed for this transfer and its sha256 (named in ``complete``), if any.

    A file id is the first 32 hex digits of the manifest hash: the range on ``manifest_hash`` lets the
    unique index find the prefix (hashes are lowercase hex).
    """
    row = session.execute(
        select(Recording.id, Recording.sha256).where(
            Recording.device_id == device_id,
            Recording.manifest_hash >= file_id,
            Recording.manifest_hash < file_id + "g",
            Recording.file_id == file_id,
        )
    ).first()
    return None if row is None else (int(row[0]), str(row[1]))


def record_chain_breaks(session: Session, signed: SignedManifest) -> list[str]:
    """Security-log rows for every stored neighbour this segment disagrees with on their link (JL-23).

    The evidence stays stored: a break is an alert, not a reason to refuse what the device signed.
    """
    manifest = signed.manifest
    before, after = manifest.sequence - 1, manifest.sequence + 1
    neighbours = session.scalars(
        select(Recording).where(
            Recording.device_id == manifest.device_id, Recording.sequence.in_((before, after))
        )
    ).all()
    breaks: list[str] = []
    for other in neighbours:
        if other.sequence == before and other.manifest_hash != manifest.prev_manifest_hash:
            breaks.append(
                f"segment {manifest.sequence} points back to {manifest.prev_manifest_hash[:16]}… "
                f"but segment {other.sequence} is {other.manifest_hash[:16]}…"
            )
        if other.sequence == after and other.prev_manifest_hash != signed.manifest_hash:
            breaks.append(
                f"segment {other.sequence} points back to {other.prev_manifest_hash[:16]}… "
                f"but segment {manifest.sequence} is {signed.manifest_hash[:16]}…"
            )
    for text in breaks:
        record_rejection(
            session,
            code="chain_break",
            message=f"hash chain break of device {manifest.device_id}: {text}",
            device_id=manifest.device_id,
            file_id=signed.file_id,
            manifest_text=signed.manifest_text,
        )
    return breaks
