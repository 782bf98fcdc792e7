"""Config loading and the ``zfjl-agent`` command line, including an end-to-end simulated run."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, ConfigError
from edge_agent.keys import KeyFileError, load_private_key, public_key_raw, save_private_key
from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS, StubIngest, wait_until
from tests.fixtures.mqtt import MosquittoBroker

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MINIMAL = (
    'device_id = "dev-1"\nprivate_key_file = "k.pem"\ndata_dir = "data"\nmqtt_url = "mqtt://broker:1884"\n'
)
# The stub server's ingest key, pinned as zfjl-fw provision pins the real server's.
PINNED = f"ingest_public_keys = {json.dumps(list(INGEST_PUBLIC_KEYS))}\n"


def test_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    """Relative paths are taken from the config's folder; defaults match the documentation."""
    config = AgentConfig.load(_write(tmp_path / "a.toml", MINIMAL))
    assert config.private_key_file == (tmp_path / "k.pem").resolve()
    assert config.data_dir == (tmp_path / "data").resolve()
    assert (config.mqtt_host, config.mqtt_port, config.mqtt_tls) == ("broker", 1884, False)
    assert (config.segment_seconds, config.chunk_bytes, config.window, config.mqtt_protocol) == (
        60.0,
        262144,
        8,
        "3.1.1",
    )
    assert AgentConfig.load(_write(tmp_path / "b.toml", MINIMAL.replace("mqtt:", "mqtts:"))).mqtt_port == 1884


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("colour = 1\n", "unknown key(s) colour"),
        ('mqtt_protocol = "4"\n', "mqtt_protocol"),
        ("window = 0\n", "window must be positive"),
        ('window = "8"\n', "window must be an integer"),
        ("chunk_bytes = 4194304\n", "chunk_bytes"),
    ],
)
def test_config_rejects_bad_values(tmp_path: Path, extra: str, message: str) -> None:
    """Unknown keys and invalid values are refused with a message naming them."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        AgentConfig.load(_write(tmp_path / "a.toml", MINIMAL + extra))
    with pytest.raises(ConfigError, match="missing required key"):
        AgentConfig.load(_write(tmp_path / "b.toml", 'device_id = "x"\n'))
    with pytest.raises(ConfigError, match="mqtt_url"):
        AgentConfig.load(_write(tmp_path / "c.toml", MINIMAL.replace("mqtt://broker:1884", "http://x")))


def test_config_write_toml_round_trips(tmp_path: Path) -> None:
    """What the provisioning tool writes loads back identically (paths relative, file mode 0600)."""
    config = AgentConfig.load(
        _write(tmp_path / "a.toml", MINIMAL + 'camera = 0\nmqtt_password = "p\\"w"\nmqtt_username = "u"\n')
    )
    config.write_toml(tmp_path / "out.toml")
    assert (tmp_path / "out.toml").stat().st_mode & 0o777 == 0o600
    assert 'data_dir = "data"' in (tmp_path / "out.toml").read_text()
    assert AgentConfig.load(tmp_path / "out.toml") == config


def test_keygen_and_key_files(tmp_path: Path) -> None:
    """keygen writes a 0600 PEM and refuses to overwrite an existing key."""
    out = tmp_path / "dev.pem"
    result = _cli("keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert out.stat().st_mode & 0o777 == 0o600
    assert bytes.fromhex(info["public_key_hex"]) == public_key_raw(load_private_key(out))
    assert _cli("keygen", "--out", str(out)).returncode != 0
    with pytest.raises(KeyFileError):
        save_private_key(load_private_key(out), out)
    with pytest.raises(KeyFileError):
        load_private_key(_write(tmp_path / "bad.pem", "nope"))


def test_status_without_outbox(tmp_path: Path) -> None:
    """status on a fresh device reports an empty outbox."""
    result = _cli("status", "--config", str(_write(tmp_path / "a.toml", MINIMAL)))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["segments_recorded"] == 0 and report["segments_pending"] == 0
    assert report["oldest_pending_age_s"] is None and report["outbox_exists"] is False


def test_status_while_the_agent_is_still_creating_its_outbox(tmp_path: Path) -> None:
    """JL-17: status polled during the agent's start (outbox file made, tables not yet) is not an error."""
    config = _write(tmp_path / "a.toml", MINIMAL)
    outbox_path = AgentConfig.load(config).outbox_path
    outbox_path.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(outbox_path).close()  # what exists between sqlite's open and the first CREATE TABLE
    result = _cli("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["segments_recorded"] == 0 and report["outbox_exists"] is True
    # An outbox that is really damaged still fails, and says so.
    outbox_path.write_bytes(b"not a database at all" * 100)
    broken = _cli("status", "--config", str(config))
    assert broken.returncode != 0


@pytest.fixture
def broker(mosquitto_broker: MosquittoBroker) -> MosquittoBroker:
    """A private Mosquitto for one test (never the system one)."""
    return mosquitto_broker


def test_run_refuses_to_start_without_a_pinned_ingest_key(tmp_path: Path) -> None:
    """Finding 1: no pinned ingest key, no uploading: a clear error before anything connects."""
    assert _cli("keygen", "--out", str(tmp_path / "k.pem")).returncode == 0
    config = _write(tmp_path / "agent.toml", MINIMAL.replace("mqtt://broker:1884", "mqtt://127.0.0.1:1"))
    run = _cli("run", "--config", str(config), "--simulate", "--duration", "1", timeout=60)
    assert run.returncode != 0
    assert "ingest_public_keys" in run.stderr
    assert not (tmp_path / "data" / "outbox.sqlite3").exists()


@pytest.mark.mosquitto
@pytest.mark.slow
def test_run_simulated_end_to_end(tmp_path: Path, broker: MosquittoBroker) -> None:
    """``run --simulate --duration 4 --segment-seconds 1`` uploads everything; status then shows 0 pending."""
    assert _cli("keygen", "--out", str(tmp_path / "k.pem")).returncode == 0
    key = load_private_key(tmp_path / "k.pem")
    config = tmp_path / "agent.toml"
    _write(
        config,
        MINIMAL.replace("mqtt://broker:1884", broker.url)
        + PINNED
        + "width = 320\nheight = 180\nfps = 10\nack_timeout_s = 2\ndrain_timeout_s = 40\n"
        + "health_interval_s = 1\n",
    )
    stub = StubIngest(broker.port, {"dev-1": public_key_raw(key)})
    stub.start()
    try:
        run = _cli(
            "run",
            "--config",
            str(config),
            "--simulate",
            "--duration",
            "4",
            "--segment-seconds",
            "1",
            timeout=120,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        status = _cli("status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["segments_pending"] == 0 and report["segments_failed"] == 0
        assert report["segments_recorded"] >= 3
        assert report["oldest_pending_age_s"] is None
        assert len(stub.stored) == report["segments_recorded"]
        assert set(stub.commits.values()) == {1}
        assert stub.health and stub.health[-1].device_id == "dev-1"
    finally:
        stub.stop()


@pytest.mark.mosquitto
@pytest.mark.slow
def test_kill_9_then_restart_recovers_and_uploads_everything(tmp_path: Path, broker: MosquittoBroker) -> None:
    """SIGKILL the agent mid-segment while offline; the next run journals the cut segment and uploads all."""
    assert _cli("keygen", "--out", str(tmp_path / "k.pem")).returncode == 0
    key = load_private_key(tmp_path / "k.pem")
    config = tmp_path / "agent.toml"
    _write(
        config,
        MINIMAL.replace("mqtt://broker:1884", broker.url)
        + PINNED
        + "width = 320\nheight = 180\nfps = 10\nack_timeout_s = 2\ndrain_timeout_s = 40\n",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--config", str(config), "--simulate", "--segment-seconds", "4", "--offline-for", "600"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        segdir = tmp_path / "data" / "segments"

        def second_segment_has_a_fragment() -> bool:
            files = sorted(segdir.glob("*.mp4"))
            # ~20 kB per second at this size: header plus at least one whole fragment is on disk.
            return len(files) >= 2 and files[-1].stat().st_size > 15_000

        assert wait_until(second_segment_has_a_fragment, 30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = json.loads(_cli("status", "--config", str(config)).stdout)
    assert before["segments_pending"] == before["segments_recorded"] >= 1
    stub = StubIngest(broker.port, {"dev-1": public_key_raw(key)})
    stub.start()
    try:
        run = _cli("run", "--config", str(config), "--simulate", "--duration", "1", timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "recovered 1 segment" in run.stderr
        report = json.loads(_cli("status", "--config", str(config)).stdout)
        assert report["segments_pending"] == 0 and report["segments_failed"] == 0
        assert report["segments_recorded"] >= before["segments_recorded"] + 2
        assert set(stub.commits.values()) == {1} and len(stub.commits) == report["segments_recorded"]
    finally:
        stub.stop()
