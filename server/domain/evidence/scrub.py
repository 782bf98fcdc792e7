"""Evidence scrubbing (JL-6): stored bytes and every evidence column are checked against the SIGNED manifest.

Nothing here trusts one database column to vouch for another. Each recording's ``manifest_text`` must
hash to its ``manifest_hash`` and carry a signature by a key that the append-only key history
(``device_keys``) says was valid when the segment was stored; every column (device, sequence, size,
sha256, times, officer, session, chain link, object key …) must equal the signed manifest's value; the
object under the key derived from the manifest must have the manifest's size and SHA-256. Device-level
checks: ``devices.public_key`` must be the key the history says is current, and every append-only
segment receipt must still have its recording (a deleted row is a missing segment).

Two costs, two paths: :func:`check_columns` needs no object bytes and runs live in the chain report
and before media is served; :func:`check_object` reads the whole object and runs in the scrubber —
on demand (API, ``zfjl-server scrub``) or continuously at a bounded rate (``server.workers.loops.Scrubber``).
Results go to the append-only ``scrub_findings`` table; a finding stays open until a later check of the same
recording passes (an ``ok`` row), and open findings raise the ``evidence_integrity`` alert.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from protocol.errors import ProtocolError
from protocol.manifest import SegmentManifest
from server.domain.base import utcnow
from server.domain.cases.signed_events import check_device_case_events
from server.domain.evidence.keys import (
    KeyPeriod,
    Unauthorised,
    device_key_periods,
    history_authorization,
    keys_valid_at,
)
from server.domain.evidence.models import Recording, ScrubFinding, SegmentReceipt
from server.domain.fleet.models import Device
from server.domain.governance.retention_models import DisposalTombstone
from server.infra.storage import ObjectNotFound, ObjectStore, recording_key

__all__ = [
    "Finding",
    "ScrubReport",
    "Throttle",
    "check_columns",
    "check_device",
    "check_object",
    "finding_of",
    "finding_to_dict",
    "open_findings",
    "record_findings",
    "scrub",
]

_LOG = logging.getLogger(__name__)

OK = "ok"
# Why a key-history entry is not authorised, as the finding says it (evidence/keys.py).
_UNAUTHORISED_ZH: dict[Unauthorised, str] = {
    Unauthorised.NO_AUTHORISATION: "未指明授权它的操作记录",
    Unauthorised.AUDIT_MISSING: "指明的操作记录不存在或属于其他设备",
    Unauthorised.AUDIT_MISMATCH: "指明的操作记录是另一操作或另一密钥",
    Unauthorised.AUDIT_REUSED: "同一操作记录已授权过该密钥",
    Unauthorised.KEY_CHANGE_UNSIGNED: "新密钥没有被替换的密钥签名",
}
_UNAUTHORISED_EN: dict[Unauthorised, str] = {
    Unauthorised.NO_AUTHORISATION: "it names no audit row of the act that wrote it",
    Unauthorised.AUDIT_MISSING: "the audit row it names does not exist or is of another device",
    Unauthorised.AUDIT_MISMATCH: "the audit row it names records another act or another key",
    Unauthorised.AUDIT_REUSED: "the audit row it names already authorised this key",
    Unauthorised.KEY_CHANGE_UNSIGNED: "a new key not signed over by the key it replaces",
}
# Recordings per database round trip while scrubbing.
BATCH = 100


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One integrity failure of stored evidence; ``code`` is stable, messages in Chinese and English."""

    device_id: str
    recording_id: int | None
    sequence: int | None
    code: str
    message: str
    message_en: str

    @property
    def scope(self) -> tuple[int | None, int | None]:
        """What a later ``ok`` clears: one recording, one missing sequence, or the device itself."""
        return (self.recording_id, self.sequence)


def _verifies(public_key: bytes, signature: bytes, text: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, text.encode("utf-8"))
    except (InvalidSignature, ValueError):
        return False
    return True


def finding_of(rec: Recording, code: str, message: str, message_en: str) -> Finding:
    return Finding(
        device_id=rec.device_id,
        recording_id=rec.id,
        sequence=rec.sequence,
        code=code,
        message=message,
        message_en=message_en,
    )


def signed_manifest_of(rec: Recording) -> SegmentManifest | None:
    """The manifest parsed from the stored signed text, None if the text is not a canonical manifest."""
    try:
        manifest = SegmentManifest.from_json_dict(json.loads(rec.manifest_text))
    except (ValueError, ProtocolError):
        return None
    if manifest.canonical_bytes().decode("utf-8") != rec.manifest_text:
        return None
    return manifest


def _expected_columns(rec: Recording, manifest: SegmentManifest) -> dict[str, tuple[object, object]]:
    """(column value, signed value) for every column the signed manifest determines."""
    manifest_hash = hashlib.sha256(rec.manifest_text.encode("utf-8")).hexdigest()
    return {
        "device_id": (rec.device_id, manifest.device_id),
        "sequence": (rec.sequence, manifest.sequence),
        "size": (rec.size, manifest.size),
        "sha256": (rec.sha256, manifest.sha256),
        "started_at": (rec.started_at, manifest.started_at),
        "ended_at": (rec.ended_at, manifest.ended_at),
        "officer_id": (rec.officer_id, manifest.officer_id),
        "session_id": (rec.session_id, manifest.session_id),
        "kind": (rec.kind, manifest.kind),
        "media_type": (rec.media_type, manifest.media_type),
        "prev_manifest_hash": (rec.prev_manifest_hash, manifest.prev_manifest_hash),
        "file_id": (rec.file_id, manifest_hash[:32]),
        "object_key": (
            rec.object_key,
            recording_key(manifest.device_id, manifest.sequence, manifest.sha256),
        ),
        "verified": (rec.verified, True),
    }


def check_columns(rec: Recording, periods: Sequence[KeyPeriod]) -> list[Finding]:
    """Checks that need no object bytes: hash, signature by the key valid when stored, columns vs manifest."""
    out: list[Finding] = []
    if hashlib.sha256(rec.manifest_text.encode("utf-8")).hexdigest() != rec.manifest_hash:
        out.append(
            finding_of(
                rec,
                "manifest_hash_mismatch",
                "签名清单的哈希与记录不符（清单被改动）",
                "the signed manifest does not hash to the stored manifest hash (manifest edited)",
            )
        )
    keys = keys_valid_at(periods, rec.stored_at)
    if not any(_verifies(key, bytes(rec.signature), rec.manifest_text) for key in keys):
        out.append(
            finding_of(
                rec,
                "bad_signature",
                "清单签名无法用入库时有效的设备公钥（密钥历史）验证",
                "the manifest signature does not verify with the device key valid when it was stored "
                "(key history)",
            )
        )
    manifest = signed_manifest_of(rec)
    if manifest is None:
        out.append(
            finding_of(rec, "manifest_unreadable", "签名清单无法解析", "the signed manifest cannot be parsed")
        )
        return out
    differing = sorted(
        name for name, (column, signed) in _expected_columns(rec, manifest).items() if column != signed
    )
    if differing:
        names = ", ".join(differing)
        out.append(
            finding_of(
                rec,
                "column_mismatch",
                f"记录的字段与签名清单不符：{names}",
                f"columns differ from the signed manifest: {names}",
            )
        )
    return out


class Throttle:
    """Sleeps so that reading stays under ``bytes_per_s`` (0 = unbounded); wakes early when stopped."""

    def __init__(
        self,
        bytes_per_s: int,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bytes_per_s = bytes_per_s
        self.stop = stop or threading.Event()
        self.clock = clock
        self._start = clock()
        self._bytes = 0

    def spend(self, amount: int) -> None:
        """Account for ``amount`` bytes read; wait until the budget allows them."""
        if self.bytes_per_s <= 0:
            return
        self._bytes += amount
        due = self._start + self._bytes / self.bytes_per_s
        delay = due - self.clock()
        if delay > 0:
            self.stop.wait(delay)


class ScrubStopped(Exception):
    """The scrubber was asked to stop in the middle of an object."""


def check_object(store: ObjectStore, rec: Recording, throttle: Throttle | None = None) -> Finding | None:
    """Read the object the signed manifest names and compare its size and SHA-256 with the manifest."""
    manifest = signed_manifest_of(rec)
    if manifest is None:
        return None  # check_columns reports it; there is no signed size or hash to compare with
    key = recording_key(manifest.device_id, manifest.sequence, manifest.sha256)
    try:
        size = store.size(key)
    except ObjectNotFound:
        return finding_of(rec, "object_missing", "证据对象不存在", f"the evidence object {key} is missing")
    if size != manifest.size:
        return finding_of(
            rec,
            "object_size_mismatch",
            f"证据对象大小 {size} 与签名清单 {manifest.size} 不符",
            f"the evidence object has {size} bytes, the signed manifest says {manifest.size}",
        )
    digest = hashlib.sha256()
    read = 0
    try:
        chunks = store.open_range(key, 0, size - 1) if size else iter(())
        for chunk in chunks:
            if throttle is not None:
                if throttle.stop.is_set():
                    raise ScrubStopped
                throttle.spend(len(chunk))
            digest.update(chunk)
            read += len(chunk)
    except ObjectNotFound:
        return finding_of(rec, "object_missing", "证据对象不存在", f"the evidence object {key} is missing")
    if read != manifest.size or digest.hexdigest() != manifest.sha256:
        return finding_of(
            rec,
            "object_hash_mismatch",
            "证据对象的 SHA-256 与签名清单不符（内容被改动或替换）",
            "the evidence object's SHA-256 differs from the signed manifest (bytes altered or swapped)",
        )
    return None


def check_device(session: Session, device: Device, periods: Sequence[KeyPeriod]) -> list[Finding]:
    """Device-level checks: the registry key against the key history, receipts against recordings, and
    the device's stored case events against the statements it signed (JL-8)."""
    out: list[Finding] = []
    now = utcnow()
    if not periods:
        out.append(
            Finding(
                device_id=device.id,
                recording_id=None,
                sequence=None,
                code="key_history_missing",
                message="设备没有密钥历史记录",
                message_en="the device has no key history",
            )
        )
    elif bytes(device.public_key) not in keys_valid_at(periods, now) and not any(
        bytes(device.public_key) == p.public_key for p in periods
    ):
        out.append(
            Finding(
                device_id=device.id,
                recording_id=None,
                sequence=None,
                code="key_replaced",
                message="设备登记表中的公钥不在密钥历史中（被替换）",
                message_en="the device's registered public key is not in its key history (replaced)",
            )
        )
    # JL-6: a key-history entry nothing authorises (written straight into the database, dated now or not)
    # counts for no signature (device_key_periods leaves it out) and is reported here, by the chain report
    # and by the scrubber, whose finding raises the evidence_integrity alert.
    for entry in history_authorization(session, device.id)[1]:
        out.append(
            Finding(
                device_id=device.id,
                recording_id=None,
                sequence=None,
                code="key_history_unauthorised",
                message=f"密钥历史记录 #{entry.entry_id}（{entry.event}，密钥 {entry.key_fingerprint[:16]}…）"
                f"没有授权：{_UNAUTHORISED_ZH[entry.reason]}",
                message_en=f"key history entry #{entry.entry_id} ({entry.event}, key "
                f"{entry.key_fingerprint[:16]}…) is not authorised: {_UNAUTHORISED_EN[entry.reason]}",
            )
        )
    stored = select(Recording.sequence).where(Recording.device_id == device.id)
    missing = session.scalars(
        select(SegmentReceipt.sequence)
        .where(SegmentReceipt.device_id == device.id, SegmentReceipt.sequence.not_in(stored))
        .order_by(SegmentReceipt.sequence)
    )
    for problem in check_device_case_events(session, device.id, periods):
        message, message_en = problem.messages()
        out.append(
            Finding(
                device_id=device.id,
                recording_id=None,
                sequence=None,
                code=problem.code,
                message=message,
                message_en=message_en,
            )
        )
    for sequence in missing:
        out.append(
            Finding(
                device_id=device.id,
                recording_id=None,
                sequence=sequence,
                code="segment_missing",
                message=f"已确认入库的第 {sequence} 段记录已不存在（被删除）",
                message_en=f"segment {sequence} was receipted as stored but its row is gone (deleted)",
            )
        )
    return out


def open_findings(rows: Iterable[ScrubFinding]) -> list[ScrubFinding]:
    """Stored findings not cleared by a later ``ok`` in the same scope (pure; rows in id order)."""
    by_scope: dict[tuple[int | None, int | None], list[ScrubFinding]] = {}
    for row in sorted(rows, key=lambda r: r.id):
        scope = (row.recording_id, row.sequence)
        if row.code == OK:
            by_scope[scope] = []
        else:
            by_scope.setdefault(scope, []).append(row)
    return [row for rows_ in by_scope.values() for row in rows_]


def device_open_findings(session: Session, device_id: str) -> list[ScrubFinding]:
    """Open stored findings of one device."""
    return open_findings(session.scalars(select(ScrubFinding).where(ScrubFinding.device_id == device_id)))


def record_findings(
    session: Session,
    device_id: str,
    scope: tuple[int | None, int | None],
    findings: Sequence[Finding],
    *,
    source: str,
    clears: bool = True,
) -> list[Finding]:
    """Append what changed in one scope: new findings, or ``ok`` when earlier ones no longer hold.

    Returns the findings that are new (not already open), so callers alert only once per failure.
    """
    rows = session.scalars(
        select(ScrubFinding).where(
            ScrubFinding.device_id == device_id,
            ScrubFinding.recording_id.is_(None)
            if scope[0] is None
            else ScrubFinding.recording_id == scope[0],
            ScrubFinding.sequence.is_(None) if scope[1] is None else ScrubFinding.sequence == scope[1],
        )
    )
    still_open = {row.code for row in open_findings(rows)}
    current = {f.code for f in findings}
    now = utcnow()
    rewrite = clears and bool(still_open - current)
    if rewrite:
        session.add(
            ScrubFinding(
                device_id=device_id,
                recording_id=scope[0],
                sequence=scope[1],
                code=OK,
                message="复核通过 / check passed",
                source=source,
                at=now,
            )
        )
        still_open = set()
    new = [f for f in findings if f.code not in still_open]
    for f in new:
        session.add(
            ScrubFinding(
                device_id=device_id,
                recording_id=f.recording_id,
                sequence=f.sequence,
                code=f.code,
                message=f"{f.message} / {f.message_en}",
                source=source,
                at=now,
            )
        )
    session.flush()
    for f in new:
        _LOG.error(
            "ALERT evidence integrity of device %s (recording %s, segment %s): %s: %s",
            f.device_id,
            f.recording_id,
            f.sequence,
            f.code,
            f.message_en,
        )
    return new


def finding_to_dict(row: ScrubFinding | Finding) -> dict[str, Any]:
    """JSON view of a stored or live finding."""
    if isinstance(row, Finding):
        return {
            "recording_id": row.recording_id,
            "sequence": row.sequence,
            "code": row.code,
            "message": f"{row.message} / {row.message_en}",
            "source": "live",
            "at": None,
        }
    return {
        "recording_id": row.recording_id,
        "sequence": row.sequence,
        "code": row.code,
        "message": row.message,
        "source": row.source,
        "at": row.at.isoformat(),
    }


@dataclass
class ScrubReport:
    """What one scrub pass checked and found."""

    devices: int = 0
    recordings: int = 0
    bytes_read: int = 0
    findings: list[Finding] = field(default_factory=list)
    new_findings: int = 0
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "devices": self.devices,
            "recordings": self.recordings,
            "bytes_read": self.bytes_read,
            "new_findings": self.new_findings,
            "findings": [finding_to_dict(f) for f in self.findings],
            "stopped": self.stopped,
        }


def scrub(
    session: Session,
    store: ObjectStore,
    *,
    device_id: str | None = None,
    throttle: Throttle | None = None,
    source: str = "scrub",
    checkpoint: Callable[[], None],
) -> ScrubReport:
    """Check every recording (of one device, or all) and the devices themselves; record the findings.

    The caller owns the transaction and passes ``checkpoint`` (its session's commit): the pass calls
    it after each batch, so a long pass keeps its results if it is stopped and holds no transaction
    open while it hashes; the ingest path is never blocked by it (reads only, plus appends to
    ``scrub_findings``).
    """
    report = ScrubReport()
    query = select(Device).order_by(Device.id)
    if device_id is not None:
        query = query.where(Device.id == device_id)
    device_ids = list(session.scalars(query.with_only_columns(Device.id)))
    for current_id in device_ids:
        device = session.get(Device, current_id)
        if device is None:
            continue
        report.devices += 1
        periods = device_key_periods(session, current_id)
        device_level = check_device(session, device, periods)
        report.findings.extend(device_level)
        scopes: dict[tuple[int | None, int | None], list[Finding]] = {(None, None): []}
        for receipt_seq in session.scalars(
            select(ScrubFinding.sequence).where(
                ScrubFinding.device_id == current_id,
                ScrubFinding.recording_id.is_(None),
                ScrubFinding.sequence.is_not(None),
            )
        ):
            scopes.setdefault((None, receipt_seq), [])
        for f in device_level:
            scopes.setdefault(f.scope, []).append(f)
        for scope, found in scopes.items():
            report.new_findings += len(record_findings(session, current_id, scope, found, source=source))
        checkpoint()
        last_id = 0
        while True:
            batch = list(
                session.scalars(
                    select(Recording)
                    .where(Recording.device_id == current_id, Recording.id > last_id)
                    .order_by(Recording.id)
                    .limit(BATCH)
                )
            )
            if not batch:
                break
            # Detach the rows and end the read transaction: hashing a batch at a bounded rate takes long,
            # and a transaction held open meanwhile would pin SQLite's WAL and PostgreSQL's vacuum.
            # JL-19: a recording destroyed by an approved disposal has no bytes on purpose; its tombstone
            # (a ledger leaf) says so, and only its row is still checked.
            disposed = set(
                session.scalars(
                    select(DisposalTombstone.recording_id).where(
                        DisposalTombstone.recording_id.in_([rec.id for rec in batch])
                    )
                )
            )
            for rec in batch:
                session.expunge(rec)
            checkpoint()
            for rec in batch:
                last_id = rec.id
                found = check_columns(rec, periods)
                if rec.id in disposed:
                    report.recordings += 1
                    report.findings.extend(found)
                    report.new_findings += len(
                        record_findings(session, current_id, (rec.id, rec.sequence), found, source=source)
                    )
                    continue
                try:
                    object_finding = check_object(store, rec, throttle)
                except ScrubStopped:
                    report.stopped = True
                    checkpoint()
                    return report
                if object_finding is not None:
                    found.append(object_finding)
                else:
                    report.bytes_read += rec.size
                report.recordings += 1
                report.findings.extend(found)
                report.new_findings += len(
                    record_findings(session, current_id, (rec.id, rec.sequence), found, source=source)
                )
                checkpoint()
    return report


def open_findings_count(session: Session, device_id: str) -> int:
    """How many stored findings of the device are open (for alerts)."""
    has_any = session.scalar(select(func.count(ScrubFinding.id)).where(ScrubFinding.device_id == device_id))
    return len(device_open_findings(session, device_id)) if has_any else 0


# -- media serving ---------------------------------------------------------------------------------
