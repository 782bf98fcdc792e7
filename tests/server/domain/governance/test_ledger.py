"""The evidence ledger end to end (JL-6, JL-23), on SQLite and PostgreSQL: stored rows are sequenced and
signed, ``zfjl-verify`` accepts the proofs, and each insider tampering is detected — an edited or deleted
evidence row, a deleted or edited leaf by the server's own check, a rebuilt and re-signed tree by the
offline verifier against a checkpoint a witness kept."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from server.domain.accounts.service import create_user
from server.domain.audit import write_audit
from server.domain.cases.models import CaseEvent
from server.domain.errors import Invalid, NotFound
from server.domain.evidence.commit import commit_segment
from server.domain.evidence.models import Recording
from server.domain.fleet import devices
from server.domain.fleet import service as fleet_service
from server.domain.fleet.assignments import check_in
from server.domain.fleet.models import DeviceAssignment, DeviceKey
from server.domain.governance import ledger
from server.domain.governance.models import LedgerCheckpoint, LedgerLeaf
from server.domain.people.models import Agency
from server.infra.db import make_engine
from server.infra.storage import LocalObjectStore
from tests.conftest import SegmentFactory
from tests.server.insider import disable_append_only_triggers
from zfjl_verify import leaf_hash

SCRIPT = Path(sys.executable).parent / "zfjl-verify"
LEDGER_TABLES = ("ledger_leaves", "ledger_checkpoints")


def _ingest_key() -> str:
    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


@dataclass
class Ledger:
    """A database with evidence rows, the ledger signer, and a folder for what a witness keeps."""

    session: Session
    signer: ledger.LedgerSigner
    segments: SegmentFactory
    store: LocalObjectStore
    folder: Path

    def store_segment(self) -> Recording:
        """Commit one signed segment (a ``recordings`` row) as ingest does."""
        signed, path = self.segments.make()
        commit_segment(self.session, self.store, signed, path)
        self.session.commit()
        return self.session.scalars(
            select(Recording).where(Recording.manifest_hash == signed.manifest_hash)
        ).one()

    def sequence_and_sign(self) -> LedgerCheckpoint:
        """One worker round: sequence new rows, sign the head."""
        ledger.sequence(self.session)
        signed = ledger.checkpoint(self.session, self.signer)
        self.session.commit()
        assert signed is not None
        return signed

    def write(self, name: str, content: str | bytes) -> Path:
        """A file handed to the auditor."""
        path = self.folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def key_file(self) -> Path:
        """The published verifier key."""
        return self.write("ledger.pub", self.signer.verifier.encode() + "\n")

    def insider_sql(self, statement: str, *, ledger_too: bool = False, **params: object) -> None:
        """SQL by someone with full database rights, who switches the append-only triggers off first."""
        disable_append_only_triggers(self.session)
        _disable_triggers(self.session, (*LEDGER_TABLES, "case_events") if ledger_too else ("case_events",))
        self.session.execute(text(statement), params)
        self.session.commit()
        self.session.expire_all()


def _disable_triggers(session: Session, tables: tuple[str, ...]) -> None:
    """Switch off the append-only triggers of more tables than the evidence ones (same naming)."""
    if session.get_bind().dialect.name == "postgresql":
        for table in tables:
            session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        return
    for table in tables:
        for action in ("update", "delete"):
            session.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{action}"))


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the offline verifier as an auditor would."""
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def env(db_session: Session, segments: SegmentFactory, tmp_path: Path) -> Ledger:
    devices.register_device(db_session, segments.device_id, segments.public_key)
    write_audit(
        db_session, actor="admin", action="device.register", target_type="device", target_id="dev-001"
    )
    db_session.commit()
    folder = tmp_path / "witness"
    folder.mkdir()
    env = Ledger(
        db_session,
        ledger.LedgerSigner.from_ingest_key(_ingest_key()),
        segments,
        LocalObjectStore(tmp_path / "o"),
        folder,
    )
    for _ in range(3):
        env.store_segment()
    return env


def test_jl6_every_evidence_row_becomes_one_leaf_in_id_order(env: Ledger) -> None:
    write_audit(env.session, actor="auditor", action="recording.view", target_type="recording", target_id="1")
    env.session.commit()
    appended = ledger.sequence(env.session)
    env.session.commit()
    leaves = env.session.scalars(select(LedgerLeaf).order_by(LedgerLeaf.leaf_index)).all()
    assert appended == len(leaves) >= 5
    assert [leaf.leaf_index for leaf in leaves] == list(range(len(leaves)))
    recordings = [leaf.ref_id for leaf in leaves if leaf.ref_table == "recordings"]
    assert recordings == sorted(recordings) and len(recordings) == 3
    audits = [leaf for leaf in leaves if leaf.kind == "audit"]
    assert any(json.loads(leaf.data)["row"]["action"] == "recording.view" for leaf in audits)
    for leaf in leaves:
        assert leaf.leaf_hash == leaf_hash(leaf.data.encode())
    # Sequencing again adds nothing; a new row adds exactly one leaf.
    assert ledger.sequence(env.session) == 0
    env.store_segment()
    assert ledger.sequence(env.session) >= 1


def test_jl6_checkpoint_is_signed_only_when_the_tree_grew(env: Ledger) -> None:
    first = env.sequence_and_sign()
    assert ledger.checkpoint(env.session, env.signer) is None
    env.store_segment()
    second = env.sequence_and_sign()
    assert second.tree_size > first.tree_size
    assert ledger.latest_checkpoint(env.session) == second


def test_jl23_zfjl_verify_accepts_the_servers_proofs(env: Ledger) -> None:
    key = env.key_file()
    first = env.sequence_and_sign()
    old = env.write("old.checkpoint", first.note)
    recording = env.store_segment()
    second = env.sequence_and_sign()
    new = env.write("new.checkpoint", second.note)

    assert verify("checkpoint", "--key", key, new).returncode == 0
    leaf = ledger.leaf_for(env.session, "recordings", recording.id)
    proof = env.write(
        "inclusion.json", json.dumps(ledger.inclusion_proof(env.session, leaf.leaf_index).to_json())
    )
    data = env.write("leaf.json", leaf.data.encode())
    result = verify(
        "--origin",
        env.signer.name,
        "inclusion",
        "--key",
        key,
        "--checkpoint",
        new,
        "--proof",
        proof,
        "--leaf-data",
        data,
    )
    assert result.returncode == 0, result.stderr

    consistency = ledger.consistency_proof(env.session, first.tree_size)
    proof = env.write("consistency.json", json.dumps(consistency.to_json()))
    result = verify("consistency", "--key", key, "--old", old, "--new", new, "--proof", proof)
    assert result.returncode == 0, result.stderr
    assert ledger.verify_ledger(env.session, env.signer.verifier).ok


def test_jl6_an_edited_recording_row_is_detected(env: Ledger) -> None:
    env.sequence_and_sign()
    recording = env.session.scalars(select(Recording).order_by(Recording.id)).first()
    assert recording is not None
    env.insider_sql(f"UPDATE recordings SET officer_id = 'someone-else' WHERE id = {recording.id}")
    report = ledger.verify_ledger(env.session, env.signer.verifier)
    changed = [p for p in report.problems if p.code == "row_changed"]
    assert len(changed) == 1 and "recordings" in changed[0].message_en
    # The leaf the auditor holds no longer matches what the server shows for the row.
    leaf = ledger.leaf_for(env.session, "recordings", recording.id)
    assert json.loads(leaf.data)["row"]["officer_id"] == "officer-7"


def test_jl6_a_deleted_recording_row_is_detected(env: Ledger) -> None:
    env.sequence_and_sign()
    recording = env.session.scalars(select(Recording).order_by(Recording.id.desc())).first()
    assert recording is not None
    env.insider_sql(f"DELETE FROM recordings WHERE id = {recording.id}")
    codes = [p.code for p in ledger.verify_ledger(env.session, env.signer.verifier).problems]
    assert codes == ["row_deleted"]


def test_jl6_a_deleted_leaf_is_detected_and_the_server_refuses_to_sign_over_it(env: Ledger) -> None:
    env.sequence_and_sign()
    env.insider_sql("DELETE FROM ledger_leaves WHERE leaf_index = 1", ledger_too=True)
    codes = {p.code for p in ledger.verify_ledger(env.session, env.signer.verifier).problems}
    assert {"leaf_missing", "checkpoint_mismatch"} <= codes
    with pytest.raises(ledger.LedgerCorrupt):
        ledger.checkpoint(env.session, env.signer)


def test_jl6_a_leaf_rewritten_to_match_an_edited_row_breaks_the_signed_root(env: Ledger) -> None:
    """The insider edits a row and rewrites its leaf (data and hash) to match: the signed root says no."""
    env.sequence_and_sign()
    recording = env.session.scalars(select(Recording).order_by(Recording.id)).first()
    assert recording is not None
    env.insider_sql(f"UPDATE recordings SET officer_id = 'someone-else' WHERE id = {recording.id}")
    leaf = ledger.leaf_for(env.session, "recordings", recording.id)
    stored = json.loads(leaf.data)
    row = {**stored["row"], "officer_id": "someone-else"}
    forged = ledger.canonical_leaf(stored["kind"], stored["table"], stored["id"], row)
    env.insider_sql(
        "UPDATE ledger_leaves SET data = :data, leaf_hash = :digest WHERE leaf_index = :index",
        ledger_too=True,
        data=forged.decode(),
        digest=leaf_hash(forged),
        index=leaf.leaf_index,
    )
    codes = [p.code for p in ledger.verify_ledger(env.session, env.signer.verifier).problems]
    assert codes == ["checkpoint_mismatch"]


def test_jl23_a_rebuilt_and_re_signed_tree_fails_against_a_witness_checkpoint(env: Ledger) -> None:
    """Even with the signing key, an insider who rewrites history cannot fool a witness's older checkpoint."""
    key = env.key_file()
    witnessed = env.sequence_and_sign()
    old, witnessed_size = env.write("witnessed.checkpoint", witnessed.note), witnessed.tree_size
    recording = env.session.scalars(select(Recording).order_by(Recording.id)).first()
    assert recording is not None
    env.insider_sql(f"UPDATE recordings SET officer_id = 'someone-else' WHERE id = {recording.id}")
    env.insider_sql("DELETE FROM ledger_checkpoints", ledger_too=True)
    env.insider_sql("DELETE FROM ledger_leaves", ledger_too=True)
    env.store_segment()
    rebuilt = env.sequence_and_sign()
    # The server's own check cannot see it: everything it holds agrees with itself.
    assert ledger.verify_ledger(env.session, env.signer.verifier).ok
    new = env.write("rebuilt.checkpoint", rebuilt.note)
    proof = env.write(
        "consistency.json", json.dumps(ledger.consistency_proof(env.session, witnessed_size).to_json())
    )
    result = verify("consistency", "--key", key, "--old", old, "--new", new, "--proof", proof)
    assert result.returncode == 1
    assert "rewritten" in result.stderr


def test_jl6_an_altered_checkpoint_row_is_detected(env: Ledger) -> None:
    env.sequence_and_sign()
    env.insider_sql(
        "UPDATE ledger_checkpoints SET note = replace(note, 'zfjl.ledger', 'zfjl.ledgeR')", ledger_too=True
    )
    codes = [p.code for p in ledger.verify_ledger(env.session, env.signer.verifier).problems]
    assert codes == ["checkpoint_signature"]


@pytest.mark.parametrize(
    "statement",
    ["UPDATE ledger_leaves SET kind = 'x'", "DELETE FROM ledger_leaves", "DELETE FROM ledger_checkpoints"],
)
def test_jl6_the_ledger_tables_are_append_only(env: Ledger, statement: str) -> None:
    env.sequence_and_sign()
    with pytest.raises(DBAPIError):
        env.session.execute(text(statement))
        env.session.flush()
    env.session.rollback()


def test_proofs_refuse_what_no_checkpoint_covers(env: Ledger) -> None:
    with pytest.raises(NotFound):
        ledger.inclusion_proof(env.session, 0)
    signed = env.sequence_and_sign()
    with pytest.raises(Invalid):
        ledger.inclusion_proof(env.session, signed.tree_size)
    with pytest.raises(NotFound):
        ledger.inclusion_proof(env.session, 0, signed.tree_size + 1)
    with pytest.raises(Invalid):
        ledger.consistency_proof(env.session, signed.tree_size + 1)
    with pytest.raises(Invalid):
        ledger.leaf_for(env.session, "users", 1)


def test_ledger_key_is_derived_apart_from_the_ingest_key() -> None:
    ingest = _ingest_key()
    one, two = ledger.LedgerSigner.from_ingest_key(ingest), ledger.LedgerSigner.from_ingest_key(ingest)
    assert one.verifier == two.verifier  # every process of a deployment signs with the same key
    ingest_public = Ed25519PrivateKey.from_private_bytes(base64.b64decode(ingest)).public_key()
    assert one.verifier.public_key != ingest_public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert (
        one.name.startswith("zfjl.ledger/")
        and one.name != ledger.LedgerSigner.from_ingest_key(_ingest_key()).name
    )


def test_jl6_a_case_event_with_structured_data_round_trips_and_its_edit_is_detected(env: Ledger) -> None:
    """JSON columns, Chinese text and times read back identically on both databases, so only an edit shows."""
    agency = Agency(name="某市城市管理局")
    env.session.add(agency)
    env.session.flush()
    event = CaseEvent(
        agency_id=agency.id,
        event_type="notice_served",
        occurred_at=datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
        text="送达《责令改正通知书》",
        officer_ids=[2, 1],
        recording_ids=[],
        data={"z": 1.5, "a": {"收件人": "张三", "list": [3, 2, 1]}},
        recorded_by="1",
    )
    env.session.add(event)
    env.session.commit()
    env.sequence_and_sign()
    leaf = ledger.leaf_for(env.session, "case_events", event.id)
    assert leaf.kind == "case_event" and "送达" in leaf.data
    assert ledger.verify_ledger(env.session, env.signer.verifier).ok
    env.insider_sql(f"UPDATE case_events SET text = '未送达' WHERE id = {event.id}")
    problems = ledger.verify_ledger(env.session, env.signer.verifier).problems
    assert [(p.code, p.leaf_index) for p in problems] == [("row_changed", leaf.leaf_index)]


def test_two_sequencers_racing_leave_one_consistent_ledger(env: Ledger, db_url: str) -> None:
    """Two server processes run a round at once: the second one's insert fails, nothing is duplicated."""
    first = env.session
    assert ledger.sequence(first) > 0  # flushed, not committed: the first round holds its leaves
    engine = make_engine(db_url)
    outcome: list[BaseException | int] = []

    def second_round() -> None:
        with Session(engine) as second:
            try:
                outcome.append(ledger.sequence(second))
                second.commit()
            except DBAPIError as exc:
                second.rollback()
                outcome.append(exc)

    racer = threading.Thread(target=second_round)
    racer.start()
    time.sleep(0.5)  # let the second round read the same pending rows and try to write
    first.commit()
    racer.join(30)
    engine.dispose()
    assert len(outcome) == 1
    # Either it lost the race outright, or it ran after the commit and found nothing left to add.
    assert isinstance(outcome[0], DBAPIError) or outcome[0] == 0
    report = ledger.verify_ledger(first, env.signer.verifier)
    assert report.ok and report.leaves == len(first.scalars(select(LedgerLeaf)).all())
    assert ledger.checkpoint(first, env.signer) is not None


def test_a_held_tree_is_extended_with_new_leaves_and_reloaded_after_a_rebuild(env: Ledger) -> None:
    """The API's kept tree gives the same proofs as a full read, and never serves a tree the DB dropped."""
    env.sequence_and_sign()
    held = ledger.load_tree(env.session)
    env.store_segment()
    env.sequence_and_sign()
    grown = ledger.load_tree(env.session, held)
    assert grown is held and grown.root() == ledger.load_tree(env.session).root()
    size = grown.size
    assert ledger.inclusion_proof(env.session, 1, held=grown) == ledger.inclusion_proof(env.session, 1)
    # The insider rebuilds a shorter ledger: the held tree is dropped, not trusted.
    env.insider_sql("DELETE FROM ledger_checkpoints", ledger_too=True)
    env.insider_sql(f"DELETE FROM ledger_leaves WHERE leaf_index >= {size - 2}", ledger_too=True)
    reloaded = ledger.load_tree(env.session, grown)
    assert reloaded is not grown and reloaded.size == size - 2
    assert reloaded.root() == ledger.load_tree(env.session).root()


def _assignment(env: Ledger, agency_id: int) -> DeviceAssignment:
    """The recorder handed to an officer of ``agency_id`` (as fleet check-out writes it)."""
    user = create_user(env.session, f"officer-{agency_id}", "a long enough password 1", "officer")
    row = DeviceAssignment(
        device_id=env.segments.device_id,
        user_id=user.id,
        agency_id=agency_id,
        checked_out_by="admin",
        battery_at_checkout=90,
    )
    env.session.add(row)
    env.session.commit()
    return row


def test_jl6_a_device_assignment_and_its_check_in_are_leaves_and_an_edited_agency_is_detected(
    env: Ledger,
) -> None:
    own, other = Agency(name="甲局"), Agency(name="乙局")
    env.session.add_all([own, other])
    env.session.commit()
    row = _assignment(env, own.id)
    env.sequence_and_sign()
    checkout = ledger.leaf_for(env.session, "device_assignments", row.id)
    assert checkout.kind == "device_checkout"
    assert json.loads(checkout.data)["row"]["agency_id"] == own.id
    with pytest.raises(NotFound):  # not checked in yet: no check-in leaf
        ledger.leaf_for(env.session, "device_assignments.check_in", row.id)
    # The check-in completes the row; it is a fact of its own, and the check-out leaf still holds.
    check_in(env.session, env.segments.device_id, actor="admin")
    env.session.commit()
    env.sequence_and_sign()
    checkin = ledger.leaf_for(env.session, "device_assignments.check_in", row.id)
    assert checkin.kind == "device_checkin" and json.loads(checkin.data)["row"]["checked_in_by"] == "admin"
    assert ledger.verify_ledger(env.session, env.signer.verifier).ok

    # The insider moves the recorder's evidence to another agency, or stretches the window.
    env.insider_sql(f"UPDATE device_assignments SET agency_id = {other.id} WHERE id = {row.id}")
    env.insider_sql(f"UPDATE device_assignments SET checked_in_at = checked_out_at WHERE id = {row.id}")
    problems = ledger.verify_ledger(env.session, env.signer.verifier).problems
    changed = sorted((p.code, p.leaf_index) for p in problems)
    assert changed == sorted([("row_changed", checkout.leaf_index), ("row_changed", checkin.leaf_index)])


def test_jl6_a_forged_key_history_row_is_detected(env: Ledger) -> None:
    """An insider adds a key of his own to a recorder's history, dated back so forged recordings fit."""
    env.sequence_and_sign()
    registered = env.session.scalars(select(DeviceKey.id)).one()
    key = ledger.leaf_for(env.session, "device_keys", registered)
    assert key.kind == "device_key" and json.loads(key.data)["row"]["event"] == "provisioned"
    env.store_segment()
    env.sequence_and_sign()
    forged_key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    env.session.add(
        DeviceKey(
            device_id=env.segments.device_id,
            public_key=forged_key,
            key_fingerprint="forged",
            valid_from=datetime(2024, 1, 1, tzinfo=UTC),
            event="reinstated",
            recorded_by="admin",
            recorded_at=datetime(2024, 1, 1, tzinfo=UTC),
        )
    )
    env.session.commit()
    # Reported before the next round sequences it, and after: its leaf dates it; and nothing authorises it.
    codes = [p.code for p in ledger.verify_ledger(env.session, env.signer.verifier).problems]
    assert codes == ["key_history_backdated", "key_history_unauthorised"]
    env.sequence_and_sign()
    problems = ledger.verify_ledger(env.session, env.signer.verifier).problems
    assert [p.code for p in problems] == ["key_history_backdated", "key_history_unauthorised"]
    assert problems[0].leaf_index is not None and env.segments.device_id in problems[0].message_en
    assert problems[1].leaf_index == problems[0].leaf_index
    # An entry the server writes itself (a revocation now) is neither.
    fleet_service.revoke_device(env.session, env.segments.device_id, status="lost", actor="admin")
    env.session.commit()
    env.sequence_and_sign()
    assert len(ledger.verify_ledger(env.session, env.signer.verifier).problems) == 2
