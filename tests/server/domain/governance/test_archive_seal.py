"""The agency's electronic seal over an archive package (JL-18) and the reference BagIt validator.

The seal's rule is in the bag, not the database: SQLite only, one package built for the module.
bagit-python (the Library of Congress reference implementation) must accept a package and refuse it once
a recording's byte changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bagit
import pytest
from flask import Flask
from sqlalchemy import select

from server.cli import main as server_main
from server.domain.audit import AuditLog
from server.domain.governance import archives
from server.domain.governance.archives import BuiltArchive
from server.domain.people.models import Agency
from server.infra.agency_keys import AgencyKeyring
from server.infra.db import get_engine, session_scope
from server.infra.storage import STORE_KEY
from tests.conftest import migrated_app
from tests.server.domain.governance.test_archive import CaseScene, _rehash, build_case, seal, signer
from zfjl_verify.cli import main as verify_main
from zfjl_verify.seal import SEAL_FILE
from zfjl_verify.suite import get_suite


@dataclass(frozen=True)
class Sealed:
    """One ended case's package, built once for the module (the tests copy it before changing it)."""

    app: Flask
    scene: CaseScene
    built: BuiltArchive


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sealed]:
    """The app over a migrated SQLite database and one sealed package of a closed case."""
    tmp = tmp_path_factory.mktemp("sealed")
    app = migrated_app(tmp / "var", f"sqlite:///{tmp / 'zfjl.db'}")
    scene = build_case(app, tmp)
    yield Sealed(app, scene, seal(app, scene, tmp / "out"))
    get_engine(app).dispose()


def _verify(app: Flask, tmp: Path, package: Path, agency_key: str | None) -> int:
    (tmp / "ledger.pub").write_text(signer(app).verifier.encode() + "\n")
    argv = ["package", "--key", str(tmp / "ledger.pub")]
    if agency_key is not None:
        (tmp / "agency.pub").write_text(agency_key + "\n")
        argv += ["--agency-key", str(tmp / "agency.pub")]
    return verify_main([*argv, str(package)])


def _copy(bag: Path, tmp: Path, name: str) -> Path:
    return Path(shutil.copytree(bag, tmp / name))


def _segment(bag: Path, recording_id: int) -> Path:
    return next((bag / f"data/recordings/{recording_id}").glob("segment.*"))


def test_jl18_a_package_is_sealed_with_its_agencys_published_key(
    sealed: Sealed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, scene, built = sealed.app, sealed.scene, sealed.built
    agency_id = scene.callers["reviewer"].agency_id
    # The public half as a verifier fetches it: no login, outside /api/.
    answer = app.test_client().get(f"/ledger/v1/agencies/{agency_id}/seal-key")
    assert answer.status_code == 200
    key = answer.get_json()["verifier_key"]
    assert key.startswith(f"zfjl-agency-{agency_id}+")
    assert app.test_client().get("/ledger/v1/agencies/999999/seal-key").status_code == 404
    assert (built.bag_dir / SEAL_FILE).read_text().startswith("zfjl.package-seal/1\n")
    capsys.readouterr()
    assert _verify(app, tmp_path, built.bag_dir, key) == 0
    assert _verify(app, tmp_path, built.zip_path, key) == 0
    assert f"the agency seal verifies (zfjl-agency-{agency_id})" in capsys.readouterr().out


def test_jl18_an_altered_manifest_or_a_seal_by_another_key_fails(
    sealed: Sealed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, scene, bag = sealed.app, sealed.scene, sealed.built.bag_dir
    keyring = AgencyKeyring.from_settings(app.extensions["zfjl.settings"])
    own = keyring.verifier(scene.callers["reviewer"].agency_id).encode()
    capsys.readouterr()

    # The case record is not a ledger leaf's bytes: a forger who edits it and recomputes every BagIt
    # manifest passes the ledger checks. Only the agency's seal catches it.
    forged = _copy(bag, tmp_path, "forged")
    record = forged / "data/case/record.json"
    record.write_text(record.read_text().replace("检查完毕", "未经检查"))
    _rehash(forged)
    assert _verify(app, tmp_path, forged, None) == 0
    capsys.readouterr()
    assert _verify(app, tmp_path, forged, own) == 1
    err = capsys.readouterr().err
    assert "[seal_mismatch] tagmanifest-sha256.txt is not what the agency sealed" in err

    # A seal made with another agency's key (or a key the forger generated) is not this agency's.
    other = keyring.verifier(scene.callers["other"].agency_id).encode()
    assert _verify(app, tmp_path, bag, other) == 1
    assert "[seal_signature]" in capsys.readouterr().err

    unsealed = _copy(bag, tmp_path, "unsealed")
    (unsealed / SEAL_FILE).unlink()
    assert _verify(app, tmp_path, unsealed, own) == 1
    assert "[seal_missing]" in capsys.readouterr().err


def test_jl18_the_reference_bagit_validator_accepts_a_package_and_refuses_a_changed_recording(
    sealed: Sealed, tmp_path: Path
) -> None:
    app, scene, bag_dir = sealed.app, sealed.scene, sealed.built.bag_dir
    own = AgencyKeyring.from_settings(app.extensions["zfjl.settings"]).verifier(
        scene.callers["reviewer"].agency_id
    )
    bagit.Bag(str(bag_dir)).validate()  # raises BagValidationError on any problem
    assert _verify(app, tmp_path, bag_dir, own.encode()) == 0

    changed = _copy(bag_dir, tmp_path, "changed")
    video = _segment(changed, scene.recording_ids[0])
    raw = bytearray(video.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    video.write_bytes(bytes(raw))
    with pytest.raises(bagit.BagValidationError):
        bagit.Bag(str(changed)).validate()
    assert _verify(app, tmp_path, changed, own.encode()) == 1


def test_jl6_an_sm3_suite_package_verifies_under_bagit_and_fails_on_its_sm3_manifest(
    sealed: Sealed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, scene = sealed.app, sealed.scene
    settings = app.extensions["zfjl.settings"]
    keyring = AgencyKeyring(settings.agency_keys_dir, get_suite("sm3-ed25519"))
    with session_scope(app) as session:
        built = archives.build_archive(
            session, scene.callers["reviewer"], scene.case_id, store=app.extensions[STORE_KEY],
            signer=signer(app), keyring=keyring, work_dir=tmp_path / "sm",
        )  # fmt: skip
    bag = built.bag_dir
    for name in ("manifest-sm3.txt", "tagmanifest-sm3.txt", "manifest-sha256.txt", "tagmanifest-sha512.txt"):
        assert (bag / name).is_file()
    assert "\nsuite sm3-ed25519\n" in (bag / SEAL_FILE).read_text()
    assert "manifest-sm3.txt" in (bag / "tagmanifest-sha256.txt").read_text()
    bagit.Bag(str(bag)).validate()  # the reference validator still accepts the bag
    own = keyring.verifier(scene.callers["reviewer"].agency_id).encode()
    capsys.readouterr()
    assert _verify(app, tmp_path, built.zip_path, own) == 0
    assert "the digests of crypto suite sm3-ed25519 hold" in capsys.readouterr().out

    # One byte changed and only the SHA-2 manifests recomputed: the SM3 manifest catches it.
    changed = _copy(bag, tmp_path, "changed")
    record = changed / "data/case/record.json"
    raw = bytearray(record.read_bytes())
    raw[-2] ^= 0x01
    record.write_bytes(bytes(raw))
    _rehash(changed)
    assert _verify(app, tmp_path, changed, None) == 1
    err = capsys.readouterr().err
    assert "data/case/record.json does not match its sm3 in manifest-sm3.txt" in err
    assert "[seal_mismatch]" not in err  # the seal was not asked for: the SM3 manifest alone caught it
    assert _verify(app, tmp_path, changed, own) == 1
    assert "[seal_mismatch] tagmanifest-sha256.txt is not what the agency sealed" in capsys.readouterr().err


def _rehash_every_suite_manifest(bag: Path, algorithms: tuple[str, ...]) -> None:
    """Recompute every manifest and tag manifest of the suite, as a forger who edited the payload would."""
    for algorithm in algorithms:
        lines = []
        for path in sorted(p for p in (bag / "data").rglob("*") if p.is_file()):
            digest = hashlib.new(algorithm, path.read_bytes()).hexdigest()
            lines.append(f"{digest}  {path.relative_to(bag).as_posix()}\n")
        (bag / f"manifest-{algorithm}.txt").write_text("".join(lines))
    tags = ("bagit.txt", "bag-info.txt", *(f"manifest-{a}.txt" for a in algorithms))
    for algorithm in algorithms:
        (bag / f"tagmanifest-{algorithm}.txt").write_text(
            "".join(f"{hashlib.new(algorithm, (bag / t).read_bytes()).hexdigest()}  {t}\n" for t in tags)
        )


def test_jl6_an_sm3_sm2_sealed_package_verifies_and_fails_after_a_one_byte_change(
    sealed: Sealed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, scene = sealed.app, sealed.scene
    settings = app.extensions["zfjl.settings"]
    keyring = AgencyKeyring(settings.agency_keys_dir, get_suite("sm3-sm2"))
    agency_id = scene.callers["reviewer"].agency_id
    ed25519_key = AgencyKeyring(settings.agency_keys_dir).verifier(agency_id).encode()
    with session_scope(app) as session:
        built = archives.build_archive(
            session, scene.callers["reviewer"], scene.case_id, store=app.extensions[STORE_KEY],
            signer=signer(app), keyring=keyring, work_dir=tmp_path / "sm2",
        )  # fmt: skip
        published = archives.agency_seal_key(session, keyring, agency_id)
    bag = built.bag_dir
    assert "\nsuite sm3-sm2\n" in (bag / SEAL_FILE).read_text()
    assert (settings.agency_keys_dir / f"agency-{agency_id}.sm2.key").is_file()  # its own secret
    assert published["algorithm"] == "SM2"
    own = published["verifier_key"]
    assert own != ed25519_key  # the agency's Ed25519 key stays for its older seals
    bagit.Bag(str(bag)).validate()
    capsys.readouterr()
    assert _verify(app, tmp_path, built.zip_path, own) == 0
    out = capsys.readouterr().out
    assert "the agency seal verifies (zfjl-agency-" in out and "crypto suite sm3-sm2" in out
    # The agency's Ed25519 key did not make this seal.
    assert _verify(app, tmp_path, built.zip_path, ed25519_key) == 1
    assert "[seal_signature]" in capsys.readouterr().err

    # One byte of the seal's SM2 signature changed: the pinned SM2 key refuses it.
    forged = _copy(bag, tmp_path, "forged")
    note = (forged / SEAL_FILE).read_text()
    prefix, blob = note.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 0x01
    (forged / SEAL_FILE).write_text(f"{prefix} {base64.b64encode(bytes(raw)).decode()}\n")
    assert _verify(app, tmp_path, forged, own) == 1
    assert "[seal_signature]" in capsys.readouterr().err

    # One byte of the record changed and every manifest recomputed, SM3 included: only the seal holds.
    changed = _copy(bag, tmp_path, "changed")
    record = changed / "data/case/record.json"
    data = bytearray(record.read_bytes())
    data[-2] ^= 0x01
    record.write_bytes(bytes(data))
    _rehash_every_suite_manifest(changed, ("sha256", "sha512", "sm3"))
    assert _verify(app, tmp_path, changed, own) == 1
    assert "[seal_mismatch]" in capsys.readouterr().err
def test_jl18_a_rotated_seal_key_seals_from_then_on_and_packages_sealed_before_still_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'zfjl.db'}"
    app = migrated_app(tmp_path / "var", url)
    try:
        before = seal(app, build_case(app, tmp_path, device_id="rec-rot-1"), tmp_path / "out1")
        with session_scope(app) as session:
            agency_id = session.scalars(select(Agency.id).where(Agency.name == "某市市场监督管理局")).one()
        client = app.test_client()
        first = client.get(f"/ledger/v1/agencies/{agency_id}/seal-key").get_json()
        assert first["previous_keys"] == [] and first["valid_from"] is None

        # The operator rotates the key at the console; the rotation is audited.
        monkeypatch.setenv("ZFJL_DATA_DIR", str(tmp_path / "var"))
        capsys.readouterr()
        assert server_main(["--database-url", url, "agency-key", "rotate", "--agency", str(agency_id)]) == 0
        rotated = json.loads(capsys.readouterr().out)
        assert rotated["retired"]["verifier_key"] == first["verifier_key"]
        assert server_main(["--database-url", url, "agency-key", "rotate", "--agency", "999999"]) == 1

        after = seal(app, build_case(app, tmp_path, device_id="rec-rot-2"), tmp_path / "out2")
        published = client.get(f"/ledger/v1/agencies/{agency_id}/seal-key").get_json()
        new_key = published["verifier_key"]
        (old,) = published["previous_keys"]
        assert new_key != first["verifier_key"] == old["verifier_key"]
        assert published["valid_from"] == old["valid_until"] == rotated["current"]["valid_from"]
        with session_scope(app) as session:
            audits = session.scalars(
                select(AuditLog).where(AuditLog.action == "agency.seal_key_rotate")
            ).all()
            assert [a.target_id for a in audits] == [str(agency_id)]

        capsys.readouterr()
        # The new key seals from now on; the package sealed before verifies with the retired key, which
        # stays published, and an archive office pins both in one file.
        assert _verify(app, tmp_path, after.bag_dir, new_key) == 0
        assert _verify(app, tmp_path, before.bag_dir, new_key) == 1
        assert _verify(app, tmp_path, before.bag_dir, old["verifier_key"]) == 0
        assert _verify(app, tmp_path, before.bag_dir, f"{new_key}\n{old['verifier_key']}") == 0
    finally:
        get_engine(app).dispose()


def test_jl18_seal_key_rotations_keep_every_period_and_a_crashed_rotation_writes_no_key_twice(
    tmp_path: Path,
) -> None:
    keyring = AgencyKeyring(tmp_path / "keys")
    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    original = keyring.verifier(7).encode()
    one = keyring.rotate(7, now=t1)
    two = keyring.rotate(7, now=t2)
    keys = keyring.seal_keys(7)
    assert [k.verifier.encode() for k in keys] == [
        original,
        one.current.verifier.encode(),
        keyring.verifier(7).encode(),
    ]
    assert [(k.valid_from, k.valid_until) for k in keys] == [(None, t1), (t1, t2), (t2, None)]
    assert two.retired.verifier.encode() == one.current.verifier.encode()
    assert oct((tmp_path / "keys" / "agency-7.key").stat().st_mode & 0o777) == "0o600"
    # A rotation that crashed after writing its history line, before replacing the key: the next one
    # does not retire the same key twice.
    current = keyring.verifier(7).encode()
    with (tmp_path / "keys" / "agency-7.history").open("a") as history:
        history.write(
            json.dumps({"verifier_key": current, "valid_from": t2.isoformat(), "valid_until": t2.isoformat()})
            + "\n"
        )
    keyring.rotate(7)
    retired = [k.verifier.encode() for k in keyring.retired_keys(7)]
    assert retired.count(current) == 1 and len(keyring.seal_keys(7)) == 4
