"""The agent tells systemd it is ready and alive (sd_notify over NOTIFY_SOCKET), so WatchdogSec= works."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.app import AgentApp
from edge_agent.config import AgentConfig
from edge_agent.keys import generate_private_key, save_private_key
from edge_agent.watchdog import SystemdNotifier
from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket standing in for systemd's (a short path: AF_UNIX paths are limited to 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="zfjl-notify-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    try:
        yield path, sock
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = SystemdNotifier.from_environ({})
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.ping() is False


def test_pings_at_half_the_watchdog_period_and_only_for_this_pid(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, sock = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier.from_environ(env).ping_interval_s == 2.0
    now = [100.0]
    notifier = SystemdNotifier(path, watchdog_usec=4_000_000, clock=lambda: now[0])
    # WATCHDOG_USEC meant for another process (the unit's main pid is not us): no period taken from it.
    assert SystemdNotifier.from_environ({**env, "WATCHDOG_PID": "1"}).ping_interval_s == 0.0
    assert notifier.ping() is True
    now[0] += 1.0
    assert notifier.ping() is False  # not due yet
    now[0] += 1.5
    assert notifier.ping() is True
    assert [sock.recv(64), sock.recv(64)] == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_abstract_socket_names_are_understood() -> None:
    name = f"@zfjl-test-{os.getpid()}-{threading.get_ident()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:])
        sock.settimeout(10)
        assert SystemdNotifier(name).ready() is True
        assert sock.recv(64) == b"READY=1"


def test_a_vanished_socket_is_logged_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier("/nonexistent-zfjl/notify")
    assert notifier.notify("WATCHDOG=1") is False
    assert notifier.notify("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


def test_agent_main_loop_sends_ready_then_keepalives_then_stopping(
    tmp_path: Path, notify_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    key = generate_private_key()
    save_private_key(key, tmp_path / "k.pem")
    config = AgentConfig(
        device_id="rec-1",
        private_key_file=tmp_path / "k.pem",
        data_dir=tmp_path / "data",
        mqtt_url="mqtt://127.0.0.1:1",
        ingest_public_keys=INGEST_PUBLIC_KEYS,
    )
    app = AgentApp(config)

    def start_without_camera_or_broker() -> None:
        app._load_key()
        app._open_outbox()

    monkeypatch.setattr(app, "start", start_without_camera_or_broker)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(app.run()))
    runner.start()
    try:
        received = [sock.recv(64) for _ in range(3)]
        assert received == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1"]
    finally:
        app.stop_event.set()
        runner.join(30)
    assert codes == [0]
    tail = []
    sock.settimeout(1)
    while True:
        try:
            tail.append(sock.recv(64))
        except TimeoutError:
            break
    assert tail[-1] == b"STOPPING=1"
