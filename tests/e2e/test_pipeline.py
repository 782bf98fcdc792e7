"""End to end with every real part: recorder process → MQTT → server process → PostgreSQL / S3.

These tests start ``zfjl-server run`` and ``zfjl-agent run`` as separate processes, exactly as an
agency would run them, and judge the outcome only through the public API and the agent's status.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ServerProcess, agent, agent_status, provision, tune_agent, wait_for
from tests.fixtures.mqtt import MosquittoBroker
from tests.fixtures.s3 import S3Endpoint

pytestmark = pytest.mark.slow


def _require_ffprobe() -> str:
    path = shutil.which("ffprobe")
    if path is None:
        pytest.skip("ffprobe (Debian package ffmpeg) is not installed")
    return path


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    path = tmp_path / "server"
    path.mkdir()
    return path


@pytest.fixture
def make_server(server_dir: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(**settings: str) -> ServerProcess:
        server = ServerProcess(server_dir, settings)
        server.create_admin()
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def recordings_of(server: ServerProcess, token: str, device_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = server.request(
        "GET", f"/api/v1/recordings?device_id={device_id}&limit=200", token=token
    )["items"]
    return sorted(items, key=lambda item: item["sequence"])


def probe_streams(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [_require_ffprobe(), "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def assert_all_stored_exactly_once(
    server: ServerProcess, config: Path, device_id: str
) -> list[dict[str, Any]]:
    status = agent_status(config)
    assert status["segments_pending"] == 0, status
    assert status["segments_failed"] == 0, status
    token = server.token()
    items = recordings_of(server, token, device_id)
    assert [item["sequence"] for item in items] == list(range(status["segments_recorded"]))
    assert all(item["verified"] for item in items)
    chain = server.request("GET", f"/api/v1/devices/{device_id}/chain", token=token)
    assert chain["verified"] is True, chain
    assert (chain["segments"], chain["gaps"], chain["breaks"], chain["integrity"]) == (
        len(items),
        [],
        [],
        [],
    )
    return items


def test_jl17_recorder_offline_at_first_uploads_every_segment_exactly_once_to_postgres_and_s3(
    make_server: Any, mosquitto_broker: MosquittoBroker, pg_url: str, seaweedfs: S3Endpoint, tmp_path: Path
) -> None:
    """JL-17, JL-19: segments recorded while offline reach PostgreSQL + S3 once, verified and playable."""
    _require_ffprobe()
    server = make_server(
        ZFJL_DATABASE_URL=pg_url,
        ZFJL_MQTT_URL=mosquitto_broker.url,
        ZFJL_OBJECT_STORE="s3",
        ZFJL_S3_ENDPOINT=seaweedfs.url,
        ZFJL_S3_BUCKET=f"zfjl-e2e-{tmp_path.name[-8:].lower().replace('_', '-')}",
        ZFJL_S3_ACCESS_KEY=seaweedfs.access_key,
        ZFJL_S3_SECRET_KEY=seaweedfs.secret_key,
    )
    config = provision(server, "rec-e2e-1", tmp_path / "device", mosquitto_broker.url)
    tune_agent(config)
    run = agent(
        config, "run", "--simulate", "--segment-seconds", "1", "--duration", "4", "--offline-for", "2.5"
    )
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    items = assert_all_stored_exactly_once(server, config, "rec-e2e-1")
    assert len(items) >= 3
    token = server.token()
    for item in items[:2]:
        media = server.download(f"/api/v1/recordings/{item['id']}/media", token)
        assert hashlib.sha256(media).hexdigest() == item["sha256"] and len(media) == item["size"]
        path = tmp_path / f"{item['sequence']}.mp4"
        path.write_bytes(media)
        streams = {s["codec_type"]: s for s in probe_streams(path)["streams"]}
        assert streams["video"]["codec_name"] == "h264"
        assert streams["audio"]["codec_name"] == "aac"
        assert streams["video"]["pix_fmt"] == "yuv420p"  # what browsers play


def test_jl19_agent_killed_mid_segment_loses_nothing_on_embedded_defaults(
    make_server: Any, tmp_path: Path
) -> None:
    """kill -9 mid-segment: the partial segment is recovered, signed, uploaded; the chain has no gap."""
    _require_ffprobe()
    server = make_server()  # embedded broker, SQLite, local object folder
    health = server.request("GET", "/healthz")
    assert health  # the embedded defaults are up
    log = server.log_tail(200)
    mqtt_url = next(
        word
        for line in log.splitlines()
        if "MQTT for devices" in line
        for word in line.split()
        if word.startswith("mqtt://")
    )
    config = provision(server, "rec-e2e-2", tmp_path / "device", mqtt_url)
    tune_agent(config)
    first = agent(config, "run", "--simulate", "--segment-seconds", "2")
    segments_dir = tmp_path / "device" / "data" / "segments"
    assert wait_for(lambda: len(list(segments_dir.glob("*.mp4"))) >= 2, 60), first.stderr
    time.sleep(1.2)  # well inside the second segment
    first.kill()
    first.wait(10)
    second = agent(config, "run", "--simulate", "--segment-seconds", "2", "--duration", "1.5")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-3000:]
    items = assert_all_stored_exactly_once(server, config, "rec-e2e-2")
    assert len(items) >= 3
    assert not list(segments_dir.glob("*.unrecoverable"))
    token = server.token()
    recovered = items[1]  # the segment that was being written when the agent was killed
    path = tmp_path / "recovered.mp4"
    path.write_bytes(server.download(f"/api/v1/recordings/{recovered['id']}/media", token))
    fmt = probe_streams(path)["format"]
    assert float(fmt["duration"]) >= 0.5


@pytest.mark.parametrize("fault", ["server_kill9", "broker_restart"])
def test_jl19_upload_survives_server_kill9_and_broker_restart_exactly_once(
    make_server: Any, mosquitto_broker: MosquittoBroker, tmp_path: Path, fault: str
) -> None:
    """A fault mid-transfer delays the upload; every segment still arrives exactly once."""
    server = make_server(ZFJL_MQTT_URL=mosquitto_broker.url)
    config = provision(server, "rec-e2e-3", tmp_path / "device", mosquitto_broker.url)
    # Small chunks and a window of one make every segment a long, many-message transfer.
    tune_agent(config, chunk_bytes=4096, window=1, width=640, height=360, fps=15)
    run = agent(config, "run", "--simulate", "--segment-seconds", "1", "--duration", "3")
    token = server.token()
    assert wait_for(lambda: len(recordings_of(server, token, "rec-e2e-3")) >= 1, 60), server.log_tail()
    if fault == "server_kill9":
        server.kill9()
        time.sleep(1.0)
        server.start()
    else:
        mosquitto_broker.restart()
    _, err = run.communicate(timeout=180)
    assert run.returncode == 0, err[-3000:]
    items = assert_all_stored_exactly_once(server, config, "rec-e2e-3")
    assert len(items) >= 3
