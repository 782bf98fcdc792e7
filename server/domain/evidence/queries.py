"""Reading recordings and reporting on each device's signed hash chain."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from protocol.manifest import GENESIS_HASH
from server.domain.errors import Invalid, NotFound
from server.domain.evidence.models import IngestRejection, Recording
from server.domain.fleet.devices import get_device
from server.domain.people.service import Caller
from server.domain.scope import recording_in_scope, require_recording

__all__ = [
    "FIRST_SEQUENCE",
    "MAX_PAGE",
    "UPLOAD_LIMIT",
    "UploadTally",
    "chain_report",
    "get_recording",
    "list_recordings",
    "recording_detail",
    "recording_summary",
    "session_recordings",
    "upload_tallies",
]

FIRST_SEQUENCE = 0
MAX_PAGE = 200
# JL-17: a recording is stored by the agency within 24 hours of being recorded.
UPLOAD_LIMIT = timedelta(hours=24)


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


def session_recordings(session: Session, device_id: str, session_id: str) -> list[Recording]:
    """The segments and explanation clips a device recorded in one enforcement session, by start."""
    return list(
        session.scalars(
            select(Recording)
            .where(Recording.device_id == device_id, Recording.session_id == session_id)
            .order_by(Recording.started_at, Recording.id)
        )
    )


UploadTally = dict[str, Any]


def _tally() -> UploadTally:
    return {"segments": 0, "late": 0, "last": None}


def upload_tallies(
    session: Session, scope: Caller, device_ids: Iterable[str]
) -> tuple[dict[str, UploadTally], dict[str, UploadTally]]:
    """Per device and per officer (certificate number, ``—`` for none) of the segments ``scope`` may read
    on ``device_ids``: how many are stored, how many arrived late (JL-17: over ``UPLOAD_LIMIT`` after
    their end) and when the last one started; one query."""
    per_device = {device_id: _tally() for device_id in device_ids}
    per_officer: dict[str, UploadTally] = {}
    rows = session.execute(
        select(
            Recording.device_id,
            Recording.officer_id,
            Recording.started_at,
            Recording.ended_at,
            Recording.stored_at,
        ).where(recording_in_scope(scope), Recording.device_id.in_(list(per_device)))
    )
    for device_id, officer_id, started_at, ended_at, stored_at in rows:
        late = _late(stored_at, ended_at)
        for bucket in (per_device[device_id], per_officer.setdefault(officer_id or "—", _tally())):
            bucket["segments"] += 1
            bucket["late"] += int(late)
            bucket["last"] = started_at if bucket["last"] is None else max(bucket["last"], started_at)
    return per_device, per_officer


def _late(stored_at: datetime, ended_at: datetime) -> bool:
    return stored_at - ended_at > UPLOAD_LIMIT


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


REJECTED_UPLOADS_SHOWN = 50


def _rejected_uploads(session: Session, device_id: str) -> dict[str, Any]:
    """Uploads the server refused for this device: reported apart from the verified chain.

    Anyone able to publish on the device's topics can send a forged manifest; refusing it is the
    system working, so it never makes the stored chain unverified (it is a security-log entry).
    """
    totals = dict(
        session.execute(
            # A flood summary row stands for ``occurrences`` refusals (server/ingest/service.py).
            select(IngestRejection.code, func.sum(IngestRejection.occurrences))
            .where(IngestRejection.device_id == device_id)
            .group_by(IngestRejection.code)
        ).all()
    )
    rows = session.scalars(
        select(IngestRejection)
        .where(IngestRejection.device_id == device_id)
        .order_by(IngestRejection.id.desc())
        .limit(REJECTED_UPLOADS_SHOWN)
    )
    by_code = {code: int(total) for code, total in totals.items()}
    return {
        "count": sum(by_code.values()),
        "by_code": by_code,
        "items": [
            {
                "code": r.code,
                "file_id": r.file_id,
                "at": r.at.isoformat(),
                "message": r.message,
                "occurrences": r.occurrences,
            }
            for r in rows
        ],
    }


def chain_report(session: Session, device_id: str) -> dict[str, Any]:
    """The device's stored chain: gaps, broken links and integrity findings; ``verified`` only if none.

    Every row is checked against its SIGNED manifest with the key the append-only key history says was
    valid when it was stored (live, no object bytes); object bytes are checked by the scrubber, whose
    open findings are included. Rejected uploads are listed apart and do not affect ``verified``.
    """
    from server.domain.evidence import scrub
    from server.domain.evidence.keys import device_key_periods

    device = get_device(session, device_id)
    rows = list(
        session.scalars(
            select(Recording).where(Recording.device_id == device_id).order_by(Recording.sequence)
        )
    )
    periods = device_key_periods(session, device_id)
    live: list[scrub.Finding] = scrub.check_device(session, device, periods)
    gaps: list[dict[str, int]] = []
    breaks: list[dict[str, Any]] = []
    unverified: list[int] = []
    previous: Recording | None = None
    for rec in rows:
        found = scrub.check_columns(rec, periods)
        live.extend(found)
        if any(f.code in ("bad_signature", "manifest_hash_mismatch", "manifest_unreadable") for f in found):
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
    seen = {(f.recording_id, f.sequence, f.code) for f in live}
    integrity = [scrub.finding_to_dict(f) for f in live]
    for row in scrub.device_open_findings(session, device_id):
        if (row.recording_id, row.sequence, row.code) not in seen:
            seen.add((row.recording_id, row.sequence, row.code))
            integrity.append(scrub.finding_to_dict(row))
    integrity.sort(key=lambda f: (f["sequence"] is None, f["sequence"] or 0, f["code"]))
    return {
        "device_id": device_id,
        "segments": len(rows),
        "verified": not gaps and not breaks and not unverified and not integrity,
        "gaps": gaps,
        "breaks": breaks,
        "unverified": unverified,
        "integrity": integrity,
        "head": rows[-1].manifest_hash if rows else None,
        "rejected_uploads": _rejected_uploads(session, device_id),
    }
