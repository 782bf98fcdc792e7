"""Before evidence is served: refuse bytes that are missing or fail their signed manifest (JL-6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.evidence.keys import KeyPeriod, device_key_periods
from server.domain.evidence.models import Recording, ScrubFinding
from server.domain.evidence.scrub import (
    check_columns,
    check_object,
    finding_of,
    finding_to_dict,
    open_findings,
    record_findings,
)
from server.infra.storage import ObjectNotFound, ObjectStore

__all__ = ["MISSING_CODES", "ServingProblem", "check_before_serving", "evidence_status"]


# What the media endpoint answers for each finding: missing bytes, or bytes that are not the evidence.
MISSING_CODES = frozenset({"object_missing", "segment_missing"})


@dataclass(frozen=True)
class ServingProblem:
    """Why a recording's media must not be served; ``code`` is evidence_missing or evidence_corrupt."""

    code: str
    finding_code: str
    message: str
    message_en: str


def _problem(code: str, message: str, message_en: str) -> ServingProblem:
    if code in MISSING_CODES:
        return ServingProblem(
            "evidence_missing",
            code,
            f"证据文件缺失，已告警，请联系管理员从备份恢复（{message}）",
            f"the evidence object is missing; an alert was raised ({message_en})",
        )
    return ServingProblem(
        "evidence_corrupt",
        code,
        f"证据文件与签名清单不符，已告警，不予提供（{message}）",
        f"the stored evidence does not match its signed manifest; an alert was raised ({message_en})",
    )


def check_before_serving(
    session: Session, store: ObjectStore, rec: Recording, *, full_read: bool
) -> ServingProblem | None:
    """Checks before any byte is served: open findings, columns vs signed manifest, object size, and
    for a full read (no Range: a download or an export) the object's SHA-256.

    Hashing the whole object on each ranged read would cost a full read per seek of a video player, so
    ranged reads check the size only and the scrubber checks their bytes. New findings are recorded here
    (append-only) so they become alerts.
    """
    stored = open_findings(
        session.scalars(
            select(ScrubFinding).where(
                ScrubFinding.device_id == rec.device_id, ScrubFinding.recording_id == rec.id
            )
        )
    )
    if stored:
        first = stored[0]
        zh, _, en = first.message.partition(" / ")
        return _problem(first.code, zh, en or zh)
    found = check_columns(rec, device_key_periods(session, rec.device_id))
    if not found:
        try:
            size = store.size(rec.object_key)
        except ObjectNotFound:
            found = [
                finding_of(
                    rec,
                    "object_missing",
                    "证据对象不存在",
                    f"the evidence object {rec.object_key} is missing",
                )
            ]
        else:
            if size != rec.size:
                found = [
                    finding_of(
                        rec,
                        "object_size_mismatch",
                        f"证据对象大小 {size} 与签名清单 {rec.size} 不符",
                        f"the evidence object has {size} bytes, the signed manifest says {rec.size}",
                    )
                ]
    if not found and full_read:
        object_finding = check_object(store, rec)
        found = [object_finding] if object_finding is not None else []
    if not found:
        return None
    record_findings(session, rec.device_id, (rec.id, rec.sequence), found, source="media", clears=False)
    return _problem(found[0].code, found[0].message, found[0].message_en)


def evidence_status(session: Session, recordings: Sequence[Recording]) -> dict[str, Any]:
    """Whether these recordings (e.g. one enforcement session's) match their signed manifests.

    A timeline is computed from the recordings' columns; this says whether those columns, signatures and
    (per the scrubber and media serving) objects still match what the recorder signed.
    """
    periods: dict[str, list[KeyPeriod]] = {}
    findings: list[dict[str, Any]] = []
    for rec in recordings:
        if rec.device_id not in periods:
            periods[rec.device_id] = device_key_periods(session, rec.device_id)
        live = check_columns(rec, periods[rec.device_id])
        findings.extend(finding_to_dict(f) for f in live)
        seen = {f.code for f in live}
        stored = session.scalars(
            select(ScrubFinding).where(
                ScrubFinding.device_id == rec.device_id, ScrubFinding.recording_id == rec.id
            )
        )
        findings.extend(finding_to_dict(row) for row in open_findings(stored) if row.code not in seen)
    return {"verified": not findings, "findings": findings}
