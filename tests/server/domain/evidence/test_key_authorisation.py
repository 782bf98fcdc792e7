"""Key-history entries must be authorised (JL-6), on SQLite and PostgreSQL: an insider who writes a key change
into ``device_keys`` dated now is flagged by the chain report, the scrubber (and its alert) and the ledger
check, and what the forged key signs does not verify; a rotation the recorder's own key signed is not."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from protocol.key_rotation import KeyRotation
from server.domain.base import utcnow
from server.domain.evidence.commit import commit_segment
from server.domain.evidence.keys import AuditFact, Unauthorised, authorize
from server.domain.evidence.queries import chain_report
from server.domain.evidence.scrub import scrub
from server.domain.fleet import devices
from server.domain.fleet.alerts import evaluate_alerts
from server.domain.fleet.models import DeviceAlert, DeviceKey, KeyHistoryBaseline
from server.domain.governance import ledger
from server.infra.storage import LocalObjectStore
from tests.conftest import SegmentFactory, raw_public_key

T = datetime(2026, 5, 1, tzinfo=UTC)
KEY_A, KEY_B, KEY_C = (Ed25519PrivateKey.generate() for _ in range(3))


def _entry(
    entry_id: int,
    event: str,
    key: Ed25519PrivateKey,
    audit_id: int | None,
    signature: bytes | None = None,
    device_id: str = "dev-001",
) -> DeviceKey:
    public = raw_public_key(key)
    return DeviceKey(
        id=entry_id,
        device_id=device_id,
        public_key=public,
        key_fingerprint=hashlib.sha256(public).hexdigest(),
        valid_from=T,
        valid_until=T if event == "revoked" else None,
        event=event,
        recorded_by="admin",
        recorded_at=T,
        audit_id=audit_id,
        rotation_signature=signature,
    )


def _fact(audit_id: int, action: str, key: Ed25519PrivateKey | None, device_id: str = "dev-001") -> AuditFact:
    fingerprint = None if key is None else hashlib.sha256(raw_public_key(key)).hexdigest()
    return AuditFact(audit_id=audit_id, device_id=device_id, action=action, key_fingerprint=fingerprint)


def _rotation(old: Ed25519PrivateKey, new: Ed25519PrivateKey, signer: Ed25519PrivateKey) -> bytes:
    statement = KeyRotation(
        device_id="dev-001", old_public_key=raw_public_key(old), new_public_key=raw_public_key(new)
    )
    return statement.sign(signer)


AUDITS = {
    1: _fact(1, "device.register", KEY_A),
    2: _fact(2, "device.revoke", KEY_A),
    3: _fact(3, "device.status", KEY_A),
    4: _fact(4, "device.key_rotate", KEY_B),
    5: _fact(5, "device.register", KEY_A, device_id="dev-002"),
    6: _fact(6, "device.status", KEY_C),  # an insider's own audit row naming his key
}
PROVISIONED = _entry(10, "provisioned", KEY_A, 1)

E, U = _entry, Unauthorised
SIGNED_A_TO_B = _rotation(KEY_A, KEY_B, KEY_A)
# (history after the provisioning, baseline, the entries refused with why)
CASES = [
    pytest.param(
        [E(11, "revoked", KEY_A, 2), E(12, "reinstated", KEY_A, 3)], None, {}, id="revoke-reinstate"
    ),
    pytest.param(
        [E(11, "revoked", KEY_A, 4), E(12, "rotated", KEY_B, 4, SIGNED_A_TO_B)],
        None,
        {},
        id="signed-rotation",
    ),
    pytest.param([E(11, "reinstated", KEY_A, None)], None, {11: U.NO_AUTHORISATION}, id="names-no-act"),
    pytest.param([E(11, "reinstated", KEY_A, None)], 11, {}, id="old-entry-up-to-the-baseline"),
    pytest.param([E(11, "reinstated", KEY_A, 5)], None, {11: U.AUDIT_MISSING}, id="act-of-another-device"),
    pytest.param([E(11, "reinstated", KEY_A, 99)], None, {11: U.AUDIT_MISSING}, id="act-that-does-not-exist"),
    pytest.param([E(11, "reinstated", KEY_A, 1)], None, {11: U.AUDIT_MISMATCH}, id="another-kind-of-act"),
    pytest.param(
        [E(11, "revoked", KEY_A, 2), E(12, "revoked", KEY_A, 2)],
        None,
        {12: U.AUDIT_REUSED},
        id="act-claimed-twice",
    ),
    pytest.param(
        [E(11, "reinstated", KEY_C, 6)],
        None,
        {11: U.KEY_CHANGE_UNSIGNED},
        id="new-key-with-an-act-but-unsigned",
    ),
    pytest.param(
        [E(11, "rotated", KEY_B, 4, _rotation(KEY_A, KEY_B, KEY_B))],
        None,
        {11: U.KEY_CHANGE_UNSIGNED},
        id="rotation-signed-by-the-new-key",
    ),
    pytest.param(
        [
            E(11, "revoked", KEY_A, 4),
            E(12, "rotated", KEY_B, 4, SIGNED_A_TO_B),
            E(13, "rotated", KEY_B, 4, SIGNED_A_TO_B),
        ],
        None,
        {13: U.AUDIT_REUSED},
        id="rotation-replayed",
    ),
]


@pytest.mark.parametrize(("history", "baseline", "refused"), CASES)
def test_jl6_a_key_history_entry_counts_only_when_its_act_and_for_a_new_key_the_old_key_authorise_it(
    history: list[DeviceKey], baseline: int | None, refused: dict[int, Unauthorised]
) -> None:
    found = authorize([PROVISIONED, *history], AUDITS, baseline)
    assert {u.entry_id: u.reason for u in found} == refused


def _insider_inserts_a_key_change_dated_now(session: Session, device_id: str, forged: bytes) -> None:
    """As someone with database access: a history entry for a key of his own, valid from now, naming a
    real audit row of the device to look plausible; and the key written over ``devices.public_key`` so
    that the ingest path takes his recordings."""
    registration = session.scalars(select(DeviceKey.audit_id).where(DeviceKey.device_id == device_id)).first()
    now = utcnow()
    session.execute(
        text(
            "INSERT INTO device_keys (device_id, public_key, key_fingerprint, valid_from, valid_until, "
            "event, recorded_by, recorded_at, audit_id) "
            "VALUES (:d, :k, :f, :now, NULL, 'reinstated', 'admin', :now, :a)"
        ),
        {"d": device_id, "k": forged, "f": hashlib.sha256(forged).hexdigest(), "now": now, "a": registration},
    )
    session.execute(
        text("UPDATE devices SET public_key = :k, key_fingerprint = :f WHERE id = :d"),
        {"k": forged, "f": hashlib.sha256(forged).hexdigest(), "d": device_id},
    )
    session.commit()


def test_jl6_a_key_change_forged_in_the_database_with_the_current_time_is_flagged_a_signed_rotation_is_not(
    db_session: Session, tmp_path: Path, segments: SegmentFactory
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    device_id = segments.device_id
    # A fresh database trusts no entry unauthorised, and the insider cannot raise the baseline in place.
    assert db_session.scalars(select(KeyHistoryBaseline.through_id)).all() == [0]
    with pytest.raises(DBAPIError, match="append-only"):
        db_session.execute(text("UPDATE key_history_baselines SET through_id = 1000000"))
    db_session.rollback()
    devices.register_device(db_session, device_id, segments.public_key)
    db_session.commit()
    commit_segment(db_session, store, *segments.make())

    # A legitimate rotation: the recorder's current key signs the change to its new key.
    new_key = Ed25519PrivateKey.generate()
    rotation = KeyRotation(
        device_id=device_id, old_public_key=segments.public_key, new_public_key=raw_public_key(new_key)
    )
    refused_by = Ed25519PrivateKey.generate()
    with pytest.raises(devices.RotationUnsigned):
        devices.rotate_key(
            db_session, device_id, raw_public_key(new_key), rotation.sign(refused_by), actor="admin"
        )
    db_session.rollback()
    devices.rotate_key(
        db_session, device_id, raw_public_key(new_key), rotation.sign(segments.key), actor="admin"
    )
    db_session.commit()
    segments.key = new_key
    commit_segment(db_session, store, *segments.make())
    scrub(db_session, store, checkpoint=db_session.commit)
    clean = chain_report(db_session, device_id)
    assert clean["verified"] is True and clean["integrity"] == [], clean
    signer = ledger.LedgerSigner.from_ingest_key(base64.b64encode(bytes(range(32))).decode())
    ledger.sequence(db_session)
    ledger.checkpoint(db_session, signer)
    db_session.commit()
    assert ledger.verify_ledger(db_session, signer.verifier).problems == ()

    # The insider's key change, dated now (nothing "backdated" to find), and a recording signed with it.
    forged_key = Ed25519PrivateKey.generate()
    _insider_inserts_a_key_change_dated_now(db_session, device_id, raw_public_key(forged_key))
    segments.key = forged_key
    commit_segment(db_session, store, *segments.make())

    report = chain_report(db_session, device_id)
    codes = {f["code"] for f in report["integrity"]}
    assert report["verified"] is False
    assert "key_history_unauthorised" in codes
    # The forged key counts for nothing: what it signed does not verify, and the registry key is not one
    # the authorised history knows.
    assert report["unverified"] == [2] and {"bad_signature", "key_replaced"} <= codes
    result = scrub(db_session, store, checkpoint=db_session.commit)
    assert "key_history_unauthorised" in {f.code for f in result.findings} and result.new_findings >= 1
    evaluate_alerts(db_session, offline_after=timedelta(days=3650))
    db_session.commit()
    alerts = db_session.scalars(select(DeviceAlert).where(DeviceAlert.device_id == device_id)).all()
    assert "evidence_integrity" in {a.kind for a in alerts}
    ledger.sequence(db_session)
    ledger.checkpoint(db_session, signer)
    db_session.commit()
    problems = [p.code for p in ledger.verify_ledger(db_session, signer.verifier).problems]
    assert problems == ["key_history_unauthorised"]  # dated now: only the missing authorisation tells
