"""Archive packages of ended cases (JL-18: archived within 30 days, with a provenance note).

:func:`build_archive` writes one BagIt bag (RFC 8493) of a case that reached a final status: the
whole-process record, its attachments, every linked recording's bytes and signed manifest, the
sessions those recordings belong to with their JL-16 verdict, the audit trail of all of it (CSV), a
provenance note per recording (who recorded it with which certificate, on which device, when in UTC and
local time, its place in the device's hash chain, who had the device checked out), and — what makes
it checkable without the server — the ledger leaf of every included row with its inclusion proof and
the signed checkpoint they prove against. ``zfjl-verify package`` checks it offline.

A recording disposed of after its retention (JL-19) has no bytes left to copy: its place holds the
disposal tombstone (hash, size, reason, who asked, who approved, when), itself a proved ledger leaf, and
its provenance note says it was disposed. The case still archives, and the verifier accounts for the
recording by that tombstone instead of reporting its media missing.

The bag is zipped into the object store (``archives/…``) and recorded as an append-only
``archive_packages`` row, itself a ledger leaf. :func:`overdue_archives` lists the ended cases whose
30 days passed without a package (the JL-18 deadline).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.domain.audit import AuditLog, write_audit
from server.domain.base import utcnow
from server.domain.cases.catalogue import STATUS_EVENT
from server.domain.cases.models import Case, CaseAttachment, CaseEvent
from server.domain.cases.record import case_record
from server.domain.cases.service import FINAL_STATUSES, get_case
from server.domain.errors import Conflict, NotFound
from server.domain.evidence.models import Recording
from server.domain.fleet.models import Device, DeviceAlert, DeviceAssignment
from server.domain.governance import ledger
from server.domain.governance.archives_models import ArchivePackage, CaseReview
from server.domain.governance.disposal import tombstone_to_dict
from server.domain.governance.models import LedgerLeaf
from server.domain.governance.retention_models import DisposalTombstone
from server.domain.governance.review import review_to_dict
from server.domain.people.models import Agency, Officer
from server.domain.people.service import Caller
from server.domain.sessions.models import EnforcementSessionRecord, SessionEventRecord
from server.domain.sessions.service import session_detail
from server.infra.agency_keys import AgencyKeyring
from server.infra.storage import ObjectStore
from zfjl_common.fsutil import sha256_file
from zfjl_verify.package import PACKAGE_FORMAT
from zfjl_verify.proofs import encode_hash
from zfjl_verify.seal import SEAL_FILE, sign_seal
from zfjl_verify.suite import SealKey, Suite

__all__ = [
    "ARCHIVE_DEADLINE",
    "ARCHIVE_ROLES",
    "BuiltArchive",
    "build_archive",
    "ended_at_clause",
]

# JL-18: an ended act is archived within 30 days.
ARCHIVE_DEADLINE = timedelta(days=30)
# Who seals a package: the agency's legal reviewer and head (the agency's archive duty), or an admin.
ARCHIVE_ROLES: tuple[str, ...] = ("legal_reviewer", "agency_head", "system_admin")
LOCAL_TIME = ZoneInfo("Asia/Shanghai")  # the Anhui measures' local time, shown next to UTC
_BAGIT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
_CHUNK = 1024 * 1024


class LedgerBusy(Conflict):
    """Another ledger round ran at the same moment; nothing was written, try again."""

    code = "ledger_busy"


class CaseNotEnded(Conflict):
    """Only an act that ended (closed, withdrawn, revoked) is archived."""

    code = "case_not_ended"


def ended_at_clause() -> ColumnElement[Any]:
    """When a case reached its final status: its last status change (final statuses have no way out)."""
    return (
        select(func.max(CaseEvent.recorded_at))
        .where(CaseEvent.case_id == Case.id, CaseEvent.event_type == STATUS_EVENT.code)
        .correlate(Case)
        .scalar_subquery()
    )


@dataclass(frozen=True)
class BuiltArchive:
    """A package just sealed: its row and where the bag was written (the zip is in the object store)."""

    row: ArchivePackage
    bag_dir: Path
    zip_path: Path


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str).encode("utf-8")


def _iso_pair(moment: datetime) -> dict[str, str]:
    return {"utc": moment.isoformat(), "local": moment.astimezone(LOCAL_TIME).isoformat()}


class _BagWriter:
    """Writes payload files under ``data/`` and remembers their names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "data").mkdir(parents=True)
        self.files: list[str] = []

    def put(self, name: str, data: bytes) -> None:
        target = self.root / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        self.files.append(f"data/{name}")

    def copy_object(self, store: ObjectStore, key: str, name: str) -> None:
        """Copy one stored object into the payload, streamed."""
        target = self.root / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        size = store.size(key)
        with target.open("wb") as out:
            if size:
                for chunk in store.open_range(key, 0, size - 1):
                    out.write(chunk)
        self.files.append(f"data/{name}")

    def _digests(self, name: str, algorithms: tuple[str, ...]) -> tuple[int, dict[str, str]]:
        """Size and hex digest of one file in every algorithm, in one read."""
        path = self.root / name
        hashers = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                for hasher in hashers.values():
                    hasher.update(chunk)
        return path.stat().st_size, {a: h.hexdigest() for a, h in hashers.items()}

    def seal(
        self, info: dict[str, str], *, agency_id: int, private_key: SealKey, suite: Suite
    ) -> tuple[str, str]:
        """Write the manifests (one per digest of the suite), bagit.txt, bag-info.txt, the tag manifests
        and the agency's seal over them (zfjl_verify/seal.py, suite.py); return (oxum, tag sha256)."""
        algorithms = suite.digests
        lines_by: dict[str, list[str]] = {a: [] for a in algorithms}
        total = 0
        for name in sorted(self.files):
            size, digests = self._digests(name, algorithms)
            total += size
            for algorithm in algorithms:
                lines_by[algorithm].append(f"{digests[algorithm]}  {name}\n")
        oxum = f"{total}.{len(self.files)}"
        for algorithm in algorithms:
            manifest = self.root / f"manifest-{algorithm}.txt"
            manifest.write_text("".join(lines_by[algorithm]), encoding="utf-8")
        (self.root / "bagit.txt").write_text(_BAGIT, encoding="utf-8")
        lines = [f"{k}: {v}\n" for k, v in {**info, "Payload-Oxum": oxum}.items()]
        (self.root / "bag-info.txt").write_text("".join(lines), encoding="utf-8")
        tags = ("bagit.txt", "bag-info.txt", *(f"manifest-{a}.txt" for a in algorithms))
        tag_digests = {name: self._digests(name, algorithms)[1] for name in tags}
        for algorithm in algorithms:
            (self.root / f"tagmanifest-{algorithm}.txt").write_text(
                "".join(f"{tag_digests[n][algorithm]}  {n}\n" for n in tags), encoding="utf-8"
            )
        sealed = {a: self._digests(f"tagmanifest-{a}.txt", (a,))[1][a] for a in algorithms}
        (self.root / SEAL_FILE).write_text(
            sign_seal(agency_id, self.root.name, sealed, private_key, suite), encoding="utf-8"
        )
        return oxum, sealed["sha256"]


def _case_recordings(session: Session, record: dict[str, Any], events: list[CaseEvent]) -> list[Recording]:
    """The recordings linked to the case's events and those covering them (the record's own rule)."""
    ids = {rid for e in events for rid in e.recording_ids or []}
    for stage in record["stages"]:
        for item in stage["events"]:
            ids.update(item.get("covering_recording_ids") or [])
    if not ids:
        return []
    return list(
        session.scalars(select(Recording).where(Recording.id.in_(sorted(ids))).order_by(Recording.id))
    )


def _sessions(session: Session, recordings: list[Recording]) -> list[EnforcementSessionRecord]:
    keys = {(r.device_id, r.session_id) for r in recordings if r.session_id}
    if not keys:
        return []
    clause = or_(
        *(
            and_(EnforcementSessionRecord.device_id == d, EnforcementSessionRecord.session_id == s)
            for d, s in sorted(keys)
        )
    )
    return list(
        session.scalars(select(EnforcementSessionRecord).where(clause).order_by(EnforcementSessionRecord.id))
    )


def _audit_rows(session: Session, targets: dict[str, Iterable[int]]) -> list[AuditLog]:
    """Every audit row about the case, its events, recordings and sessions (the custody trail)."""
    conditions = [
        and_(AuditLog.target_type == kind, AuditLog.target_id.in_([str(i) for i in ids]))
        for kind, ids in targets.items()
        if ids
    ]
    if not conditions:
        return []
    return list(session.scalars(select(AuditLog).where(or_(*conditions)).order_by(AuditLog.id)))


def _audit_csv(rows: list[AuditLog]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "at_utc", "actor", "action", "target_type", "target_id", "client_ip", "detail"])
    for row in rows:
        writer.writerow(
            [row.id, row.at.isoformat(), row.actor, row.action, row.target_type, row.target_id or "",
             row.client_ip or "", row.detail]
        )  # fmt: skip
    return out.getvalue().encode("utf-8")


def _places(record: dict[str, Any]) -> dict[int, list[str]]:
    """Where each recording was made, as far as the case's events say (the events it is linked to)."""
    places: dict[int, set[str]] = {}
    for stage in record["stages"]:
        for item in stage["events"]:
            if not item.get("place"):
                continue
            for rid in {*(item.get("recording_ids") or []), *(item.get("covering_recording_ids") or [])}:
                places.setdefault(rid, set()).add(item["place"])
    return {rid: sorted(found) for rid, found in places.items()}


def _clock(session: Session, rec: Recording) -> dict[str, Any]:
    """Whether a clock-drift alert (over 3 s/day, GA/T 947) was open on the device while it recorded."""
    alert = session.scalars(
        select(DeviceAlert)
        .where(
            DeviceAlert.device_id == rec.device_id,
            DeviceAlert.kind == "clock_drift",
            DeviceAlert.raised_at <= rec.ended_at,
            or_(DeviceAlert.cleared_at.is_(None), DeviceAlert.cleared_at >= rec.started_at),
        )
        .order_by(DeviceAlert.id.desc())
        .limit(1)
    ).first()
    if alert is None:
        return {"status": "no_alert"}
    return {"status": "drift_alert", "drift_s_per_day": (alert.detail or {}).get("drift_s_per_day")}


def _provenance(
    session: Session, rec: Recording, now: datetime, places: dict[int, list[str]]
) -> dict[str, Any]:
    """The provenance note of one recording: who, which device, when, where, chain, custody (JL-18)."""
    officer = (
        session.scalars(select(Officer).where(Officer.certificate_number == rec.officer_id)).first()
        if rec.officer_id
        else None
    )
    device = session.get(Device, rec.device_id)
    custody = session.scalars(
        select(DeviceAssignment)
        .where(
            DeviceAssignment.device_id == rec.device_id,
            DeviceAssignment.checked_out_at <= rec.started_at,
            or_(DeviceAssignment.checked_in_at.is_(None), DeviceAssignment.checked_in_at > rec.started_at),
        )
        .order_by(DeviceAssignment.id)
    ).all()
    late = rec.stored_at - rec.ended_at > timedelta(hours=24)
    return {
        "recording_id": rec.id,
        "recorded_by": {
            "certificate_number": rec.officer_id,
            "officer_id": officer.id if officer else None,
            "name": officer.name if officer else None,
            "agency_id": officer.agency_id if officer else None,
        },
        "device": {
            "id": rec.device_id,
            "serial": device.serial if device else None,
            "model": device.model if device else None,
            "key_fingerprint": device.key_fingerprint if device else None,
        },
        "started_at": _iso_pair(rec.started_at),
        "ended_at": _iso_pair(rec.ended_at),
        "stored_at": _iso_pair(rec.stored_at),
        # JL-17: stored more than 24 hours after recording ended.
        "uploaded_late": late,
        # The recorder's clock is signed into the manifest; the fleet alerts on drift over 3 s/day.
        "clock_drift": _clock(session, rec),
        "place": places.get(rec.id) or None,
        "chain": {
            "sequence": rec.sequence,
            "manifest_hash": rec.manifest_hash,
            "prev_manifest_hash": rec.prev_manifest_hash,
            "signature_verified": rec.verified,
            "sha256": rec.sha256,
            "size": rec.size,
        },
        "custody": [
            {
                "user_id": a.user_id,
                "agency_id": a.agency_id,
                "checked_out_at": a.checked_out_at.isoformat(),
                "checked_out_by": a.checked_out_by,
                "checked_in_at": a.checked_in_at.isoformat() if a.checked_in_at else None,
            }
            for a in custody
        ],
        "noted_at": now.isoformat(),
    }


def _prove(
    session: Session, signer: ledger.LedgerSigner, bag: _BagWriter, wanted: dict[str, list[int]]
) -> tuple[int, list[dict[str, Any]], dict[str, list[int]]]:
    """Run one ledger round, then write the checkpoint and every wanted row's leaf into the bag.

    Returns the checkpoint's tree size, the index entries of the leaves (with their inclusion proofs)
    and the wanted rows that are proved (rows sequenced after this checkpoint are not claimed).
    """
    # Every included row must be a leaf of a signed tree before its proof can be written.
    try:
        ledger.sequence(session)
        ledger.checkpoint(session, signer)
    except IntegrityError:
        # The ledger worker (or another request) sequenced the same rows at the same moment: the unique
        # keys refused our copy. The caller's transaction rolls back; trying again a moment later works.
        raise LedgerBusy(
            "账本正在记账，请稍后重试归档", "the ledger is being sequenced; archive again shortly"
        ) from None
    signed = ledger.latest_checkpoint(session)
    assert signed is not None  # the round above signed one: the package's own rows are leaves
    leaves: list[LedgerLeaf] = []
    for table, ids in wanted.items():
        for start in range(0, len(ids), 500):
            leaves.extend(
                session.scalars(
                    select(LedgerLeaf).where(
                        LedgerLeaf.ref_table == table, LedgerLeaf.ref_id.in_(ids[start : start + 500])
                    )
                )
            )
    leaves = [leaf for leaf in leaves if leaf.leaf_index < signed.tree_size]
    leaves.sort(key=lambda leaf: leaf.leaf_index)
    tree = ledger.load_tree(session)
    bag.put("ledger/checkpoint.note", signed.note.encode("utf-8"))
    index_leaves = []
    for leaf in leaves:
        name = f"ledger/leaves/{leaf.leaf_index:012d}.json"
        bag.put(name, leaf.data.encode("utf-8"))
        proof = tree.inclusion_proof(leaf.leaf_index, signed.tree_size)
        index_leaves.append(
            {
                "leaf_index": leaf.leaf_index,
                "table": leaf.ref_table,
                "id": leaf.ref_id,
                "data": name,
                "proof": {
                    "leaf_index": leaf.leaf_index,
                    "tree_size": signed.tree_size,
                    "hashes": [encode_hash(h) for h in proof],
                },
            }
        )
    proved = {(leaf.ref_table, leaf.ref_id) for leaf in leaves}
    rows = {t: [i for i in ids if (t, i) in proved] for t, ids in wanted.items()}
    return signed.tree_size, index_leaves, rows


def _tombstones(session: Session, recordings: list[Recording]) -> dict[int, DisposalTombstone]:
    """The disposal tombstone of each of these recordings that was disposed of (JL-19)."""
    if not recordings:
        return {}
    rows = session.scalars(
        select(DisposalTombstone).where(DisposalTombstone.recording_id.in_([r.id for r in recordings]))
    )
    return {stone.recording_id: stone for stone in rows}


def _put_recordings(
    session: Session,
    bag: _BagWriter,
    store: ObjectStore,
    recordings: list[Recording],
    stones: dict[int, DisposalTombstone],
    now: datetime,
    places: dict[int, list[str]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Copy each recording with its signed manifest and provenance note; (index entries, notes).

    A disposed recording's bytes are gone (JL-19): its tombstone takes the media's place.
    """
    index_recordings = []
    provenance = []
    for rec in recordings:
        entry: dict[str, Any] = {"id": rec.id, "manifest": f"recordings/{rec.id}/manifest.txt"}
        stone = stones.get(rec.id)
        if stone is None:
            entry["media"] = f"recordings/{rec.id}/segment{_extension(rec.media_type)}"
            bag.copy_object(store, rec.object_key, entry["media"])
        else:
            entry["tombstone"] = f"recordings/{rec.id}/tombstone.json"
            entry["tombstone_id"] = stone.id
            bag.put(entry["tombstone"], _json(tombstone_to_dict(stone)))
        bag.put(f"recordings/{rec.id}/manifest.txt", rec.manifest_text.encode("utf-8"))
        bag.put(f"recordings/{rec.id}/signature.b64", base64.b64encode(bytes(rec.signature)) + b"\n")
        note = _provenance(session, rec, now, places)
        if stone is not None:
            note["disposed"] = {
                "tombstone_id": stone.id,
                "request_id": stone.request_id,
                "reason": stone.reason,
                "requested_by": stone.requested_by,
                "approved_by": stone.approved_by,
                "disposed_at": _iso_pair(stone.disposed_at),
                "note": "录像已于保存期满后经批准销毁，档案包中以销毁记录代替其文件"
                " / disposed of after its retention by an approved request; its tombstone stands in"
                " for the file",
            }
        bag.put(f"recordings/{rec.id}/provenance.json", _json(note))
        provenance.append(note)
        index_recordings.append(entry)
    return index_recordings, provenance


@dataclass(frozen=True)
class _Sealed:
    oxum: str
    tag_sha256: str
    zip_path: Path
    zip_sha256: str
    zip_size: int


def _seal_and_zip(
    bag: _BagWriter,
    bag_name: str,
    work_dir: Path,
    info: dict[str, str],
    agency_id: int,
    keyring: AgencyKeyring,
) -> _Sealed:
    oxum, tag_sha = bag.seal(
        info, agency_id=agency_id, private_key=keyring.private_key(agency_id), suite=keyring.suite
    )
    zip_path = work_dir / f"{bag_name}.zip"
    _zip(bag.root, zip_path, bag_name)
    return _Sealed(oxum, tag_sha, zip_path, sha256_file(zip_path), zip_path.stat().st_size)


def _new_bag(work_dir: Path, bag_name: str) -> tuple[Path, _BagWriter]:
    bag_dir = work_dir / bag_name
    if bag_dir.exists():
        shutil.rmtree(bag_dir)
    return bag_dir, _BagWriter(bag_dir)


def build_archive(
    session: Session,
    caller: Caller,
    case_id: int,
    *,
    store: ObjectStore,
    signer: ledger.LedgerSigner,
    keyring: AgencyKeyring,
    work_dir: Path,
    archive_store: ObjectStore | None = None,
    archive_prefix: str = "",
    now: datetime | None = None,
    before_store: Callable[[Session], None] | None = None,
) -> BuiltArchive:
    """Seal the archive package of an ended case (flushed); NotFound outside the caller's agency.

    ``before_store`` runs in ``session`` once the zip is sealed and before anything is written to a
    store: the archiving job's lease fence. A job that lost its lease (paused past its expiry while
    another process took over) raises there and writes no object; one that passes keeps the lease row
    locked until its commit, so no takeover can start while its objects are written (the archive store
    may be WORM under Object Lock: an object once written can never be taken back).

    The zip goes to the evidence store (the download answers from there) and, with ``archive_store``,
    is delivered to the archive store under ``archive_prefix`` before the row is written: a failed
    delivery raises and the caller's transaction leaves no package row (JL-18).
    """
    now = now or utcnow()
    case = get_case(session, caller, case_id)
    if not caller.may_write(case.agency_id):
        raise NotFound("案件不存在", "case not found")
    if case.status not in FINAL_STATUSES:
        raise CaseNotEnded(
            f"案件尚未办结（状态 {case.status}），不能归档", f"the case has not ended (status {case.status})"
        )
    ended_at = session.scalar(select(ended_at_clause()).where(Case.id == case.id))
    record = case_record(session, caller, case.id)
    events = list(
        session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id))
    )
    recordings = _case_recordings(session, record, events)
    stones = _tombstones(session, recordings)
    sessions = _sessions(session, recordings)
    session_events = list(
        session.scalars(
            select(SessionEventRecord)
            .where(SessionEventRecord.enforcement_session_id.in_([s.id for s in sessions]))
            .order_by(SessionEventRecord.id)
        )
    ) if sessions else []  # fmt: skip
    reviews = list(
        session.scalars(select(CaseReview).where(CaseReview.case_id == case.id).order_by(CaseReview.id))
    )
    attachments = (
        list(
            session.scalars(
                select(CaseAttachment)
                .where(CaseAttachment.event_id.in_([e.id for e in events]))
                .order_by(CaseAttachment.id)
            )
        )
        if events
        else []
    )
    write_audit(
        session, actor=caller.user_id, action="archive.build", target_type="case", target_id=case.id,
        detail={"recordings": [r.id for r in recordings]},
    )  # fmt: skip
    audit = _audit_rows(
        session,
        {
            "case": [case.id],
            "case_event": [e.id for e in events],
            "recording": [r.id for r in recordings],
            "session": [s.id for s in sessions],
        },
    )
    agency = session.get(Agency, case.agency_id)
    bag_name = f"zfjl-case-{case.id}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    bag_dir, bag = _new_bag(work_dir, bag_name)
    wanted: dict[str, list[int]] = {
        "case_events": [e.id for e in events],
        "recordings": [r.id for r in recordings],
        "disposal_tombstones": sorted(stone.id for stone in stones.values()),
        "session_events": [e.id for e in session_events],
        "case_reviews": [r.id for r in reviews],
        "audit_log": [a.id for a in audit],
    }
    tree_size, index_leaves, rows = _prove(session, signer, bag, wanted)
    bag.put("case/record.json", _json(record))
    bag.put("case/reviews.json", _json([review_to_dict(r) for r in reviews]))
    for a in attachments:
        bag.copy_object(store, a.object_key, f"case/attachments/{a.id}/{_safe_name(a.name)}")
    index_recordings, provenance = _put_recordings(
        session, bag, store, recordings, stones, now, _places(record)
    )
    for s in sessions:
        bag.put(f"sessions/{s.id}.json", _json(session_detail(session, s)))
    bag.put("audit.csv", _audit_csv(audit))
    bag.put(
        "provenance.json",
        _json(
            {
                "case": {"id": case.id, "number": case.number, "agency_id": case.agency_id,
                         "agency": agency.name if agency else None,
                         "ended_at": ended_at.isoformat() if ended_at else None},
                "archived_by": caller.user_id,
                "archived_at": _iso_pair(now),
                "ledger_origin": signer.name,
                "recordings": provenance,
            }
        ),
    )  # fmt: skip
    bag.put(
        "package.json",
        _json(
            {
                "format": PACKAGE_FORMAT,
                "case_id": case.id,
                "case_number": case.number,
                "checkpoint": "ledger/checkpoint.note",
                "tree_size": tree_size,
                "leaves": index_leaves,
                "recordings": index_recordings,
                # Rows sequenced after this checkpoint (the archiving's own audit row) are not claimed.
                "rows": rows,
            }
        ),
    )
    sealed = _seal_and_zip(
        bag,
        bag_name,
        work_dir,
        {
            "Source-Organization": agency.name if agency else str(case.agency_id),
            "External-Identifier": case.number,
            "Bagging-Date": now.date().isoformat(),
            "Bag-Software-Agent": "zfjl",
            "External-Description": f"Case file {case.number}, {len(recordings)} recordings (JL-18)",
        },
        case.agency_id,
        keyring,
    )
    if before_store is not None:
        before_store(session)
    key = f"archives/{case.agency_id}/{case.id}/{sealed.zip_sha256}.zip"
    store.put_file(key, sealed.zip_path, sealed.zip_sha256, verified=True)
    delivered = None
    if archive_store is not None:
        delivered = f"{archive_prefix}{case.agency_id}/{case.id}/{sealed.zip_sha256}.zip"
        archive_store.put_file(delivered, sealed.zip_path, sealed.zip_sha256, verified=True)
    row = ArchivePackage(
        case_id=case.id,
        agency_id=case.agency_id,
        bag_name=bag_name,
        tagmanifest_sha256=sealed.tag_sha256,
        zip_sha256=sealed.zip_sha256,
        zip_size=sealed.zip_size,
        object_key=key,
        payload_oxum=sealed.oxum,
        recording_count=len(recordings),
        leaf_count=len(index_leaves),
        checkpoint_size=tree_size,
        ended_at=ended_at,
        on_time=ended_at is None or now - ended_at <= ARCHIVE_DEADLINE,
        created_by=caller.user_id,
        created_at=now,
        delivered_key=delivered,
    )
    session.add(row)
    session.flush()
    return BuiltArchive(row=row, bag_dir=bag_dir, zip_path=sealed.zip_path)


def _safe_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name).strip(".")
    return cleaned or "file"


def _extension(media_type: str) -> str:
    return {"video/mp4": ".mp4", "audio/mp4": ".m4a"}.get(media_type.split(";")[0].strip(), ".bin")


def _zip(bag_dir: Path, zip_path: Path, bag_name: str) -> None:
    """Zip the bag under one top-level directory (stored, not deflated: video does not compress)."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(p for p in bag_dir.rglob("*") if p.is_file()):
            archive.write(path, f"{bag_name}/{path.relative_to(bag_dir).as_posix()}")


def agency_seal_key(session: Session, keyring: AgencyKeyring, agency_id: int) -> dict[str, Any]:
    """The public half of an agency's seal key, published so an archive office can pin it (JL-18), and the
    keys it replaced with the periods they sealed in: a package sealed before a rotation stays verifiable."""
    agency = session.get(Agency, agency_id)
    if agency is None:
        raise NotFound("机关不存在", "agency not found")
    *previous, current = keyring.seal_keys(agency.id)
    return {
        "agency_id": agency.id,
        "agency": agency.name,
        "algorithm": keyring.algorithm,
        "verifier_key": current.verifier.encode(),
        "valid_from": current.to_dict()["valid_from"],
        "previous_keys": [key.to_dict() for key in reversed(previous)],
    }
