"""Through the real ingest and the HTTP API: forged uploads are reported apart from a clean chain, and
missing or corrupt evidence is answered with a clear error and an alert, never a 500 (JL-6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from protocol.messages import AckState
from server.domain.evidence.models import Recording
from server.domain.fleet.models import DeviceAlert
from server.infra.db import session_scope
from server.infra.storage import STORE_KEY, LocalObjectStore
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory
from tests.server.ingest.test_ingest import init, one, upload


@pytest.fixture
def service(app: Flask) -> IngestService:
    """An ingest service over the test app."""
    return IngestService.from_app(app)


@pytest.fixture
def stored(app: Flask, service: IngestService, segments: SegmentFactory) -> list[int]:
    """Three segments of a registered device uploaded through the real ingest; their recording ids."""
    from server.domain.fleet.devices import register_device

    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    for _ in range(3):
        signed, path = segments.make()
        assert upload(service, signed, path.read_bytes()).state is AckState.COMPLETE
    with session_scope(app) as session:
        return list(session.scalars(select(Recording.id).order_by(Recording.sequence)))


def _object_path(app: Flask, recording_id: int) -> Path:
    store = app.extensions[STORE_KEY]
    assert isinstance(store, LocalObjectStore)
    with session_scope(app) as session:
        rec = session.get(Recording, recording_id)
        assert rec is not None
        path = store.root / rec.object_key
    path.chmod(0o600)
    return path


def _alerts(app: Flask) -> list[tuple[str, str]]:
    with session_scope(app) as session:
        return [
            (a.kind, a.severity)
            for a in session.scalars(select(DeviceAlert).where(DeviceAlert.cleared_at.is_(None)))
        ]


def test_forged_signature_upload_does_not_flip_a_clean_chain(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    service: IngestService,
    segments: SegmentFactory,
    stored: list[int],
) -> None:
    """Finding 5: anyone who can publish sends a forged manifest; it is a rejected upload, not a bad chain."""
    forged, _ = segments.make(b"forged" * 100, key=Ed25519PrivateKey.generate(), advance=False)
    ack = one(service, *init(forged))
    assert (ack.state, ack.code) == (AckState.REJECTED, "bad_signature")
    report = client.get(f"/api/v1/devices/{segments.device_id}/chain", headers=auth).get_json()
    assert report["verified"] is True and report["segments"] == 3, report
    assert report["rejected_uploads"]["by_code"] == {"bad_signature": 1}
    (item,) = report["rejected_uploads"]["items"]
    assert item["file_id"] == forged.file_id
    # A refused forgery is the system working; it is not an evidence-integrity alert.
    assert ("evidence_integrity", "critical") not in _alerts(app)


@pytest.mark.parametrize("ranged", [False, True], ids=["full", "range"])
def test_jl6_missing_object_is_410_evidence_missing_with_alert(
    app: Flask, client: FlaskClient, auth: dict[str, str], stored: list[int], ranged: bool
) -> None:
    _object_path(app, stored[1]).unlink()
    headers = {**auth, "Range": "bytes=0-9"} if ranged else auth
    response = client.get(f"/api/v1/recordings/{stored[1]}/media", headers=headers)
    assert response.status_code == 410, response.data[:300]
    error = response.get_json()["error"]
    assert error["code"] == "evidence_missing" and "证据" in error["message"] and error["message_en"]
    assert ("evidence_integrity", "critical") in _alerts(app)
    report = client.get(f"/api/v1/devices/{'dev-001'}/chain", headers=auth).get_json()
    assert report["verified"] is False
    assert {"object_missing"} <= {f["code"] for f in report["integrity"]}
    # The other segments are still served.
    assert client.get(f"/api/v1/recordings/{stored[0]}/media", headers=auth).status_code == 200


@pytest.mark.parametrize("ranged", [False, True], ids=["full", "range"])
def test_jl6_truncated_object_is_410_evidence_corrupt(
    app: Flask, client: FlaskClient, auth: dict[str, str], stored: list[int], ranged: bool
) -> None:
    path = _object_path(app, stored[2])
    path.write_bytes(path.read_bytes()[:-5])
    headers = {**auth, "Range": "bytes=5-"} if ranged else auth
    response = client.get(f"/api/v1/recordings/{stored[2]}/media", headers=headers)
    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "evidence_corrupt"
    assert ("evidence_integrity", "critical") in _alerts(app)


def test_jl6_flipped_bytes_full_read_is_410_ranged_read_after_scrub(
    app: Flask, client: FlaskClient, auth: dict[str, str], stored: list[int]
) -> None:
    """Same size, other bytes: a full read (download, export) is hashed first and refused with 410; a
    ranged read checks the size only until the scrubber has seen the object, then it is refused too."""
    path = _object_path(app, stored[0])
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))
    ranged = {**auth, "Range": "bytes=0-1"}
    assert client.get(f"/api/v1/recordings/{stored[1]}/media", headers=auth).status_code == 200
    full = client.get(f"/api/v1/recordings/{stored[0]}/media", headers=auth)
    assert full.status_code == 410 and full.get_json()["error"]["code"] == "evidence_corrupt"
    again = client.get(f"/api/v1/recordings/{stored[0]}/media", headers=ranged)
    assert again.status_code == 410 and again.get_json()["error"]["code"] == "evidence_corrupt"
    assert ("evidence_integrity", "critical") in _alerts(app)


def test_jl6_flipped_bytes_ranged_read_is_refused_once_scrubbed(
    app: Flask, client: FlaskClient, auth: dict[str, str], stored: list[int]
) -> None:
    path = _object_path(app, stored[2])
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    ranged = {**auth, "Range": "bytes=0-1"}
    # Documented trade-off: a ranged read of the same size is served until the scrubber hashes the object.
    assert client.get(f"/api/v1/recordings/{stored[2]}/media", headers=ranged).status_code == 206
    assert client.post("/api/v1/integrity/scrub", headers=auth, json={}).status_code == 200
    refused = client.get(f"/api/v1/recordings/{stored[2]}/media", headers=ranged)
    assert refused.status_code == 410 and refused.get_json()["error"]["code"] == "evidence_corrupt"


def test_scrub_endpoint_and_cli_find_flipped_bytes(
    app: Flask, client: FlaskClient, auth: dict[str, str], stored: list[int]
) -> None:
    path = _object_path(app, stored[1])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x80
    path.write_bytes(bytes(data))
    response = client.post("/api/v1/integrity/scrub", headers=auth, json={"device_id": "dev-001"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["recordings"] == 3 and body["new_findings"] == 1
    assert [f["code"] for f in body["findings"]] == ["object_hash_mismatch"]
    assert ("evidence_integrity", "critical") in _alerts(app)
    report = client.get("/api/v1/devices/dev-001/chain", headers=auth).get_json()
    assert report["verified"] is False
    # Officers may not start a scrub.
    assert client.post("/api/v1/integrity/scrub", json={}).status_code == 401


def _flip_last_byte(app: Flask, recording_id: int) -> None:
    path = _object_path(app, recording_id)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_cli_scrub_exits_1_and_names_the_tampered_segment(
    app: Flask,
    stored: list[int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from server.cli import main

    settings = app.extensions["zfjl.settings"]
    monkeypatch.setenv("ZFJL_DATA_DIR", str(settings.data_dir))
    args = ["--database-url", settings.database_url, "scrub"]
    assert main(args) == 0
    assert "findings: 0" in capsys.readouterr().out
    _flip_last_byte(app, stored[1])
    assert main([*args, "--device", "dev-001"]) == 1
    out = capsys.readouterr().out
    assert "dev-001 #1 object_hash_mismatch" in out
    assert ("evidence_integrity", "critical") in _alerts(app)


def test_background_scrubber_finds_tampering_and_stops_cleanly(app: Flask, stored: list[int]) -> None:
    import threading
    import time

    from server.domain.evidence.models import ScrubFinding
    from server.workers.loops import Scrubber

    _flip_last_byte(app, stored[2])
    scrubber = Scrubber(app, app.extensions[STORE_KEY], bytes_per_s=1024 * 1024, pause_s=3600)
    scrubber.start()
    try:
        assert [t.name for t in threading.enumerate()].count("zfjl-scrubber") == 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and scrubber.passes == 0:
            time.sleep(0.05)
        assert scrubber.passes == 1
    finally:
        scrubber.stop()
    assert "zfjl-scrubber" not in [t.name for t in threading.enumerate()]  # joined, even mid-pause
    with session_scope(app) as session:
        codes = list(session.scalars(select(ScrubFinding.code)))
    assert codes == ["object_hash_mismatch"]
    assert ("evidence_integrity", "critical") in _alerts(app)


def test_background_scrubber_is_off_at_rate_zero(app: Flask) -> None:
    from server.workers.loops import Scrubber

    scrubber = Scrubber(app, app.extensions[STORE_KEY], bytes_per_s=0, pause_s=1)
    scrubber.start()
    assert scrubber._thread is None
    scrubber.stop()


def test_runner_owns_one_scrubber_thread_and_joins_it_at_stop(tmp_path: Path) -> None:
    import threading

    from server.runner import ServerRunner
    from tests.conftest import TEST_JWT_SECRET

    runner = ServerRunner(
        {"data_dir": str(tmp_path / "var"), "http_port": 0, "jwt_secret": TEST_JWT_SECRET},
        embedded_mqtt_port=0,
    )
    runner.start()
    try:
        assert [t.name for t in threading.enumerate()].count("zfjl-scrubber") == 1
    finally:
        runner.stop()
    assert "zfjl-scrubber" not in [t.name for t in threading.enumerate()]
