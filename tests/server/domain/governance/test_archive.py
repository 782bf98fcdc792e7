"""Archive packages (JL-18) on SQLite and PostgreSQL: an ended case is sealed into a BagIt bag that carries
its recordings, provenance notes and ledger proofs; the bag is recorded (a ledger leaf); cases whose 30
days passed without a package are listed as overdue."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, text

from protocol.session import SessionEventKind
from server.domain.cases import service as case_service
from server.domain.cases.inputs import CaseEventInput, NewCase, StatusChange
from server.domain.errors import NotFound
from server.domain.fleet.devices import register_device
from server.domain.governance import archive_listing, archives, ledger
from server.domain.governance.archives_models import ArchivePackage
from server.domain.governance.models import LedgerLeaf
from server.domain.people.service import Caller
from server.infra.agency_keys import AgencyKeyring
from server.infra.db import get_engine, session_scope
from server.infra.storage import STORE_KEY
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory, migrated_app
from tests.server.domain.sessions.conftest import T0, Recorder, hand_over, make_officer, send
from tests.server.http.pages.workspace.conftest import commit_media
from zfjl_verify.cli import main as verify_main

K = SessionEventKind
CERT = "AH-2001"
PLACE = "合肥市蜀山区某超市"


@dataclass
class CaseScene:
    """An inspection case of agency A, its officer's session with two recorded minutes, callers."""

    app: Flask
    case_id: int = 0
    recording_ids: list[int] = field(default_factory=list)
    callers: dict[str, Caller] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)


def build_case(app: Flask, tmp: Path, *, close: bool = True, device_id: str = "rec-ar-1") -> CaseScene:
    """Officer 王 records a two-minute session; his inspection case links the first minute; closed."""
    scene = CaseScene(app)
    for name, role, cert, agency in (
        ("wang", "officer", CERT, "某市市场监督管理局"),
        ("reviewer", "legal_reviewer", None, "某市市场监督管理局"),
        ("head", "agency_head", "AH-2000", "某市市场监督管理局"),
        ("supervisor", "supervisor", None, "某市市场监督管理局"),
        ("other", "legal_reviewer", None, "芜湖市城市管理局"),
    ):
        if name not in scene.users:
            scene.users[name] = make_officer(
                app, f"{device_id}-{name}", role, certificate=cert and f"{cert}-{device_id}",
                agency=agency, register=cert is not None,
            )  # fmt: skip
    cert = f"{CERT}-{device_id}"
    from server.domain.accounts.models import User

    with session_scope(app) as session:
        for name, pk in scene.users.items():
            user = session.get(User, pk)
            assert user is not None
            scene.callers[name] = Caller(str(user.id), user.role, user.agency_id)
    (tmp / device_id).mkdir(parents=True, exist_ok=True)
    segments = SegmentFactory(tmp / device_id, device_id=device_id)
    with session_scope(app) as session:
        register_device(session, device_id, segments.public_key)
    hand_over(app, device_id, scene.users["wang"], at=T0 - timedelta(days=1))
    recorder = Recorder(app, segments, session_id=f"{device_id}-s1")
    ingest = IngestService.from_app(app)
    send(ingest, recorder.event(K.STARTED, T0, officer_id=cert))
    for minute in range(2):
        data = os.urandom(4096) + bytes([minute])
        start = T0 + timedelta(minutes=minute)
        scene.recording_ids.append(commit_media(recorder, start, 60, data, officer_id=cert))
    send(ingest, recorder.event(K.ENDED, T0 + timedelta(minutes=2), officer_id=cert))
    from server.domain.people.models import Officer

    with session_scope(app) as session:
        wang = scene.callers["wang"]
        officer_pk = session.scalar(select(Officer.id).where(Officer.certificate_number == cert))
        case = case_service.create_case(
            session, wang,
            NewCase.from_json({"number": f"皖检〔2026〕{device_id}", "act_kind": "inspection",
                               "origin": "ex_officio", "officer_ids": [officer_pk]}),
        )  # fmt: skip
        scene.case_id = case.id
        for event_type, second, recordings in (
            ("initiation.ex_officio_source", -600, []),
            ("investigation.credential_shown", 5, [scene.recording_ids[0]]),
            ("investigation.on_site_inspection", 30, [scene.recording_ids[0]]),
        ):
            case_service.record_event(
                session, wang, case.id,
                CaseEventInput.from_json({"event_type": event_type,
                                          "occurred_at": (T0 + timedelta(seconds=second)).isoformat(),
                                          "officer_ids": [officer_pk], "recording_ids": recordings,
                                          "place": PLACE if recordings else ""}),
            )  # fmt: skip
        if close:
            case_service.change_status(
                session,
                scene.callers["reviewer"],
                case.id,
                StatusChange.from_json({"status": "closed", "reason": "检查完毕"}),
            )
    return scene


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database."""
    app = migrated_app(tmp_path / "var", db_url)
    yield app
    get_engine(app).dispose()


def signer(app: Flask) -> ledger.LedgerSigner:
    """The deployment's ledger key."""
    return ledger.LedgerSigner.from_ingest_key(app.extensions["zfjl.settings"].ingest_key)


def seal(app: Flask, scene: CaseScene, tmp: Path, who: str = "reviewer") -> archives.BuiltArchive:
    """Build the case's package as ``who``."""
    with session_scope(app) as session:
        return archives.build_archive(
            session, scene.callers[who], scene.case_id, store=app.extensions[STORE_KEY],
            signer=signer(app), keyring=AgencyKeyring.from_settings(app.extensions["zfjl.settings"]),
            work_dir=tmp,
        )  # fmt: skip


def run_verify(app: Flask, tmp: Path, package: Path) -> int:
    """``zfjl-verify package`` with the pinned key, as an archivist runs it."""
    key = tmp / "ledger.pub"
    key.write_text(signer(app).verifier.encode() + "\n")
    return verify_main(["package", "--key", str(key), str(package)])


def test_jl18_an_ended_cases_package_verifies_offline_as_directory_and_zip(
    app: Flask, tmp_path: Path
) -> None:
    scene = build_case(app, tmp_path)
    built = seal(app, scene, tmp_path / "out")
    bag = built.bag_dir
    index = json.loads((bag / "data/package.json").read_text())
    # The linked minute and the one covering the inspection (the record's 60 s slack) are both inside.
    assert sorted(r["id"] for r in index["recordings"]) == scene.recording_ids
    assert {"case_events", "recordings", "session_events", "audit_log"} <= set(index["rows"])
    assert len(index["rows"]["case_events"]) == 4  # three events and the closing
    note = json.loads((bag / f"data/recordings/{scene.recording_ids[0]}/provenance.json").read_text())
    assert note["recorded_by"]["certificate_number"] == f"{CERT}-rec-ar-1"
    assert note["recorded_by"]["name"] and note["device"]["id"] == "rec-ar-1"
    assert note["started_at"]["local"].endswith("+08:00") and note["custody"]
    assert note["place"] == [PLACE] and note["clock_drift"] == {"status": "no_alert"}
    assert (bag / "bagit.txt").read_text().startswith("BagIt-Version: 1.0")
    assert run_verify(app, tmp_path, bag) == 0
    assert run_verify(app, tmp_path, built.zip_path) == 0
    with session_scope(app) as session:
        row = session.scalars(select(ArchivePackage)).one()
        assert row.on_time and row.recording_count == 2 and row.zip_sha256
        # The archiving is itself recorded in the ledger (next round).
        ledger.sequence(session)
        assert (
            session.scalar(select(LedgerLeaf.kind).where(LedgerLeaf.ref_table == "archive_packages"))
            == "archive"
        )


def _copy(bag: Path, tmp: Path, name: str) -> Path:
    import shutil

    target = tmp / name
    shutil.copytree(bag, target)
    return target


def _rehash(bag: Path) -> None:
    """Recompute every BagIt manifest, as a forger who edited the payload would."""
    import hashlib

    for algorithm in ("sha256", "sha512"):
        lines = []
        for path in sorted(p for p in (bag / "data").rglob("*") if p.is_file()):
            digest = hashlib.new(algorithm, path.read_bytes()).hexdigest()
            lines.append(f"{digest}  {path.relative_to(bag).as_posix()}\n")
        (bag / f"manifest-{algorithm}.txt").write_text("".join(lines))
    for algorithm in ("sha256", "sha512"):
        tags = ("bagit.txt", "bag-info.txt", "manifest-sha256.txt", "manifest-sha512.txt")
        (bag / f"tagmanifest-{algorithm}.txt").write_text(
            "".join(f"{hashlib.new(algorithm, (bag / t).read_bytes()).hexdigest()}  {t}\n" for t in tags)
        )


def test_jl18_the_provenance_note_says_when_the_devices_clock_was_drifting(
    app: Flask, tmp_path: Path
) -> None:
    from server.domain.fleet.models import DeviceAlert

    scene = build_case(app, tmp_path)
    with session_scope(app) as session:
        session.add(
            DeviceAlert(
                device_id="rec-ar-1", kind="clock_drift", severity="warning", message="设备时钟偏差",
                message_en="device clock drifts +4.0 s/day", detail={"drift_s_per_day": 4.0},
                raised_at=T0 - timedelta(hours=1), last_seen_at=T0,
            )
        )  # fmt: skip
    bag = seal(app, scene, tmp_path / "out").bag_dir
    note = json.loads((bag / f"data/recordings/{scene.recording_ids[0]}/provenance.json").read_text())
    assert note["clock_drift"] == {"status": "drift_alert", "drift_s_per_day": 4.0}


def test_jl18_tampering_with_a_package_is_detected(
    app: Flask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene = build_case(app, tmp_path)
    bag = seal(app, scene, tmp_path / "out").bag_dir
    rid = scene.recording_ids[0]
    capsys.readouterr()

    flipped = _copy(bag, tmp_path, "flipped")
    video = flipped / f"data/recordings/{rid}/segment.bin"
    if not video.exists():
        video = next((flipped / f"data/recordings/{rid}").glob("segment.*"))
    raw = bytearray(video.read_bytes())
    raw[100] ^= 0x01
    video.write_bytes(bytes(raw))
    assert run_verify(app, tmp_path, flipped) == 1
    assert "hash_mismatch" in capsys.readouterr().err
    # The forger recomputes every manifest: the ledger's committed SHA-256 still catches it.
    _rehash(flipped)
    assert run_verify(app, tmp_path, flipped) == 1
    assert "recording_changed" in capsys.readouterr().err

    removed = _copy(bag, tmp_path, "removed")
    (removed / "data/audit.csv").unlink()
    assert run_verify(app, tmp_path, removed) == 1
    assert "file_missing" in capsys.readouterr().err

    edited = _copy(bag, tmp_path, "edited")
    manifest = edited / "manifest-sha256.txt"
    manifest.write_text(manifest.read_text().replace("data/audit.csv", "data/audit.CSV"))
    assert run_verify(app, tmp_path, edited) == 1
    err = capsys.readouterr().err
    assert "hash_mismatch" in err and "file_unlisted" in err  # the tag manifest and the payload both

    signed_manifest = _copy(bag, tmp_path, "signed-manifest")
    text_path = signed_manifest / f"data/recordings/{rid}/manifest.txt"
    text_path.write_text(text_path.read_text().replace('"kind":"segment"', '"kind":"segmenu"'))
    _rehash(signed_manifest)
    assert run_verify(app, tmp_path, signed_manifest) == 1
    assert "manifest_changed" in capsys.readouterr().err


def test_jl18_a_proof_from_another_tree_is_refused(
    app: Flask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zfjl_verify import MerkleTree, encode_hash, leaf_hash

    scene = build_case(app, tmp_path)
    bag = _copy(seal(app, scene, tmp_path / "out").bag_dir, tmp_path, "foreign")
    index_path = bag / "data/package.json"
    index = json.loads(index_path.read_text())
    entry = next(e for e in index["leaves"] if e["table"] == "recordings")
    size = entry["proof"]["tree_size"]
    # Another tree of the same size holding the same leaf at the same index: a valid proof, wrong tree.
    other = MerkleTree()
    for i in range(size):
        other.append_hash(
            leaf_hash((bag / "data" / entry["data"]).read_bytes())
            if i == entry["leaf_index"]
            else leaf_hash(b"%d" % i)
        )
    entry["proof"]["hashes"] = [encode_hash(h) for h in other.inclusion_proof(entry["leaf_index"], size)]
    index_path.write_text(json.dumps(index))
    _rehash(bag)
    capsys.readouterr()
    assert run_verify(app, tmp_path, bag) == 1
    err = capsys.readouterr().err
    assert "proof_failed" in err and "unproved_recording" in err


def test_jl18_a_package_needs_the_pinned_key(app: Flask, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from zfjl_verify import NoteVerifier

    scene = build_case(app, tmp_path)
    bag = seal(app, scene, tmp_path / "out").bag_dir
    stranger = NoteVerifier.from_private_key(signer(app).name, Ed25519PrivateKey.generate())
    (tmp_path / "wrong.pub").write_text(stranger.encode() + "\n")
    assert verify_main(["package", "--key", str(tmp_path / "wrong.pub"), str(bag)]) == 1


def test_jl18_only_ended_cases_of_ones_agency_are_archived(app: Flask, tmp_path: Path) -> None:
    scene = build_case(app, tmp_path, close=False)
    with pytest.raises(archives.CaseNotEnded):
        seal(app, scene, tmp_path / "out")
    with session_scope(app) as session:
        case_service.change_status(
            session,
            scene.callers["reviewer"],
            scene.case_id,
            StatusChange.from_json({"status": "closed", "reason": "检查完毕"}),
        )
    with pytest.raises(NotFound):
        seal(app, scene, tmp_path / "out", who="other")
    with session_scope(app) as session:
        assert session.scalar(select(ArchivePackage.id)) is None


def test_jl18_cases_ended_over_30_days_ago_without_a_package_are_overdue(app: Flask, tmp_path: Path) -> None:
    scene = build_case(app, tmp_path)
    late = build_case(app, tmp_path, device_id="rec-ar-2")
    reviewer = scene.callers["reviewer"]
    with session_scope(app) as session:
        now = archives.utcnow()
        assert archive_listing.overdue_archives(session, reviewer, now=now) == []  # just closed: not yet due
        due = archive_listing.overdue_archives(session, reviewer, now=now, include_due=True)
        assert [(c["state"], c["days_left"]) for c in due] == [("due", 29), ("due", 29)]
        listed = archive_listing.overdue_archives(session, reviewer, now=now + timedelta(days=31))
        assert [c["case_id"] for c in listed] == sorted([scene.case_id, late.case_id])
        assert listed[0]["days_overdue"] == 1  # due 30 days after ending, a day and seconds ago
        # Another agency's reviewer sees none of them (JL-20).
        assert (
            archive_listing.overdue_archives(session, scene.callers["other"], now=now + timedelta(days=31))
            == []
        )
    seal(app, scene, tmp_path / "out")
    with session_scope(app) as session:
        listed = archive_listing.overdue_archives(
            session, reviewer, now=archives.utcnow() + timedelta(days=31)
        )
        assert [c["case_id"] for c in listed] == [late.case_id]


def test_jl18_packages_are_append_only(app: Flask, tmp_path: Path) -> None:
    scene = build_case(app, tmp_path)
    seal(app, scene, tmp_path / "out")
    with pytest.raises(Exception, match="append-only"), session_scope(app) as session:
        session.execute(text("UPDATE archive_packages SET on_time = :f"), {"f": False})


def test_jl18_a_ledger_round_racing_the_archive_is_refused_cleanly(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import IntegrityError

    scene = build_case(app, tmp_path)

    def collide(session: object) -> int:
        raise IntegrityError("INSERT INTO ledger_leaves", {}, Exception("uq_ledger_leaves_ref"))

    monkeypatch.setattr(ledger, "sequence", collide)
    with pytest.raises(archives.LedgerBusy):
        seal(app, scene, tmp_path / "out")
    with session_scope(app) as session:
        assert session.scalar(select(ArchivePackage.id)) is None
