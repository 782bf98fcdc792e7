"""Reading recordings and reporting on each device's signed hash chain."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.manifest import GENESIS_HASH
from server.models import IngestRejection, Recording
from server.services import Invalid, NotFound
from server.services.devices import get_device
from server.services.people import Caller
from server.services.scope import recording_in_scope, require_recording

__all__ = [
    "FIRST_SEQUENCE",
    "MAX_PAGE",
    "chain_report",
    "get_recording",
    "list_recordings",
    "recording_detail",
    "recording_summary",
]

FIRST_SEQUENCE = 0
MAX_PAGE = 200


def list_recordings(
    session: Session,
    *,
    device_id: str | None = None,
    limit: int = 50,
    before: int | None = None,
    scope: Caller | None = None,
) -> tuple[list[Recording], int | None]:
    """Newest first by id; ``before`` is the cursor returned as ``next`` by the previous page.

    With ``scope``, only the caller's agency's recordings (services/scope.py, JL-20).
    """
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit 必须在 1 到 {MAX_PAGE} 之间", f"limit must be between 1 and {MAX_PAGE}")
    query = select(Recording).order_by(Recording.id.desc()).limit(limit + 1)
    if device_id:
        query = query.where(Recording.device_id == device_id)
    if before is not None:
        query = query.where(Recording.id < before)
    if scope is not None:
        query = query.where(recording_in_scope(scope))
    rows = list(session.scalars(query))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def get_recording(session: Session, recording_id: int, *, scope: Caller | None = None) -> Recording:
    """The recording, or NotFound; with ``scope``, another agency's recording is NotFound too (JL-20)."""
    recording = session.get(Recording, recording_id)
    missing = NotFound(f"录像 {recording_id} 不存在", f"recording {recording_id} not found")
    if recording is None:
        raise missing
    if scope is not None:
        require_recording(session, scope, recording, missing)
    return recording


def recording_summary(rec: Recording) -> dict[str, Any]:
    """List-view fields of a recording."""
    return {
        "id": rec.id,
        "device_id": rec.device_id,
        "sequence": rec.sequence,
        "started_at": rec.started_at.isoformat(),
        "ended_at": rec.ended_at.isoformat(),
        "size": rec.size,
        "sha256": rec.sha256,
        "verified": rec.verified,
        "media_type": rec.media_type,
        "officer_id": rec.officer_id,
        "kind": rec.kind,
    }


def recording_detail(rec: Recording) -> dict[str, Any]:
    """Everything about a recording, including the signed manifest and its signature."""
    out = recording_summary(rec)
    out.update(
        {
            "file_id": rec.file_id,
            "session_id": rec.session_id,
            "manifest": rec.manifest_text,
            "signature": base64.b64encode(rec.signature).decode("ascii"),
            "manifest_hash": rec.manifest_hash,
            "prev_manifest_hash": rec.prev_manifest_hash,
            "stored_at": rec.stored_at.isoformat(),
            "storage_backend": rec.storage_backend,
        }
    )
    return out


def _signature_ok(public_key: bytes, rec: Recording) -> bool:
    # Re-checked at report time so a row edited in the database is caught, not just trusted.
    if hashlib.sha256(rec.manifest_text.encode("utf-8")).hexdigest() != rec.manifest_hash:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            rec.signature, rec.manifest_text.encode("utf-8")
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def chain_report(session: Session, device_id: str) -> dict[str, Any]:
    """Gaps, broken links and bad signatures in a device's chain; ``verified`` only if there are none."""
    device = get_device(session, device_id)
    rows = list(
        session.scalars(
            select(Recording).where(Recording.device_id == device_id).order_by(Recording.sequence)
        )
    )
    gaps: list[dict[str, int]] = []
    breaks: list[dict[str, Any]] = []
    unverified: list[int] = []
    previous: Recording | None = None
    for rec in rows:
        if not rec.verified or not _signature_ok(device.public_key, rec):
            unverified.append(rec.sequence)
        if previous is None:
            # The chain starts at a manifest pointing to GENESIS; missing leading segments are a gap.
            if rec.prev_manifest_hash != GENESIS_HASH:
                if rec.sequence > FIRST_SEQUENCE:
                    gaps.append({"from": FIRST_SEQUENCE, "to": rec.sequence - 1})
                else:
                    breaks.append(
                        {
                            "sequence": rec.sequence,
                            "expected_prev": GENESIS_HASH,
                            "actual_prev": rec.prev_manifest_hash,
                        }
                    )
        elif rec.sequence > previous.sequence + 1:
            gaps.append({"from": previous.sequence + 1, "to": rec.sequence - 1})
        elif rec.prev_manifest_hash != previous.manifest_hash:
            breaks.append(
                {
                    "sequence": rec.sequence,
                    "expected_prev": previous.manifest_hash,
                    "actual_prev": rec.prev_manifest_hash,
                }
            )
        previous = rec
    rejections = session.scalars(
        select(IngestRejection)
        .where(IngestRejection.device_id == device_id, IngestRejection.code == "bad_signature")
        .order_by(IngestRejection.at)
    )
    bad_signatures = [
        {"file_id": r.file_id, "at": r.at.isoformat(), "message": r.message} for r in rejections
    ]
    return {
        "device_id": device_id,
        "segments": len(rows),
        "verified": not gaps and not breaks and not bad_signatures and not unverified,
        "gaps": gaps,
        "breaks": breaks,
        "bad_signatures": bad_signatures,
        "unverified": unverified,
        "head": rows[-1].manifest_hash if rows else None,
    }
