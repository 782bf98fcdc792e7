"""Chain report: gaps, broken links, bad signatures, tampered rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.orm import Session

from protocol.manifest import GENESIS_HASH
from server.domain.errors import NotFound
from server.domain.evidence.commit import BadSignature, commit_segment
from server.domain.evidence.queries import chain_report
from server.domain.fleet import devices
from server.infra.storage import LocalObjectStore
from tests.conftest import SegmentFactory
from tests.server.insider import disable_append_only_triggers


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    """A local object store."""
    return LocalObjectStore(tmp_path / "objects")


def _commit(session: Session, store: LocalObjectStore, seg: SegmentFactory, **kwargs: object) -> None:
    signed, path = seg.make(**kwargs)  # type: ignore[arg-type]
    commit_segment(session, store, signed, path)


def test_clean_chain_verifies(db_session: Session, store: LocalObjectStore, segments: SegmentFactory) -> None:
    devices.register_device(db_session, segments.device_id, segments.public_key)
    for _ in range(4):
        _commit(db_session, store, segments)
    report = chain_report(db_session, segments.device_id)
    assert report["segments"] == 4 and report["verified"] is True
    assert report["gaps"] == [] and report["breaks"] == [] and report["integrity"] == []
    assert report["rejected_uploads"]["count"] == 0


def test_gap_break_and_bad_signature(
    db_session: Session, store: LocalObjectStore, segments: SegmentFactory
) -> None:
    devices.register_device(db_session, segments.device_id, segments.public_key)
    _commit(db_session, store, segments)  # 0
    _commit(db_session, store, segments)  # 1
    segments.make(advance=True)  # 2 never arrives
    segments.make(advance=True)  # 3 never arrives
    _commit(db_session, store, segments)  # 4 -> gap 2..3
    _commit(db_session, store, segments, prev_hash="ab" * 32)  # 5 points at the wrong predecessor
    forged, path = segments.make(key=Ed25519PrivateKey.generate(), advance=False)
    with pytest.raises(BadSignature):
        commit_segment(db_session, store, forged, path)

    report = chain_report(db_session, segments.device_id)
    assert report["segments"] == 4 and report["verified"] is False
    assert report["gaps"] == [{"from": 2, "to": 3}]
    assert len(report["breaks"]) == 1
    brk = report["breaks"][0]
    assert (
        brk["sequence"] == 5
        and brk["actual_prev"] == "ab" * 32
        and brk["expected_prev"] != brk["actual_prev"]
    )
    (bad,) = report["rejected_uploads"]["items"]
    assert bad["code"] == "bad_signature" and bad["file_id"] == forged.file_id and bad["at"]
    assert "signature" in bad["message"]


def test_forged_upload_is_reported_apart_and_leaves_a_clean_chain_verified(
    db_session: Session, store: LocalObjectStore, segments: SegmentFactory
) -> None:
    """Anyone able to publish can send a forged manifest: refused and listed, the chain stays verified."""
    devices.register_device(db_session, segments.device_id, segments.public_key)
    for _ in range(2):
        _commit(db_session, store, segments)
    forged, path = segments.make(key=Ed25519PrivateKey.generate(), advance=False)
    with pytest.raises(BadSignature):
        commit_segment(db_session, store, forged, path)
    report = chain_report(db_session, segments.device_id)
    assert report["verified"] is True and report["segments"] == 2
    assert report["rejected_uploads"]["count"] == 1
    assert report["rejected_uploads"]["by_code"] == {"bad_signature": 1}


def test_first_segment_must_point_at_genesis(
    db_session: Session, store: LocalObjectStore, segments: SegmentFactory
) -> None:
    devices.register_device(db_session, segments.device_id, segments.public_key)
    _commit(db_session, store, segments, prev_hash="cd" * 32)
    report = chain_report(db_session, segments.device_id)
    assert report["breaks"] == [{"sequence": 0, "expected_prev": GENESIS_HASH, "actual_prev": "cd" * 32}]
    assert not report["verified"]


def test_leading_gap_and_tampered_row(
    db_session: Session, store: LocalObjectStore, segments: SegmentFactory
) -> None:
    from server.domain.evidence.models import Recording

    devices.register_device(db_session, segments.device_id, segments.public_key)
    _commit(db_session, store, segments, sequence=3, prev_hash="ef" * 32)
    _commit(db_session, store, segments)
    report = chain_report(db_session, segments.device_id)
    assert report["gaps"] == [{"from": 0, "to": 2}] and report["breaks"] == []
    row = db_session.query(Recording).filter_by(sequence=4).one()
    # Edited behind our back by an insider who first switched the append-only triggers off.
    disable_append_only_triggers(db_session)
    db_session.execute(
        text("UPDATE recordings SET manifest_text = :t WHERE id = :id"),
        {"t": row.manifest_text.replace("officer-7", "officer-8"), "id": row.id},
    )
    db_session.commit()
    db_session.expire_all()
    assert chain_report(db_session, segments.device_id)["unverified"] == [4]
    with pytest.raises(NotFound):
        chain_report(db_session, "nope")
