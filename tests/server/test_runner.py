"""Ingest over a real broker (device SegmentSender ↔ IngestWorker) and the ``zfjl-server run`` process."""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from flask import Flask
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from protocol import topics
from protocol.downlink import IngestKeyring
from protocol.manifest import SignedManifest
from protocol.messages import (
    AckState,
    FileChunk,
    FileFin,
    FileInit,
    FileStatusQuery,
    TransferAck,
    decode,
    encode,
)
from protocol.transfer import (
    SegmentSender,
    SendChunk,
    SenderAction,
    SendFin,
    SendInit,
    SendStatus,
    TransferFailed,
    TransferFinished,
)
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.infra.db import session_scope
from server.infra.ingest_key import IngestSigner
from server.infra.staging import Staging
from server.ingest.service import IngestService
from server.ingest.worker import IngestWorker
from tests.conftest import SegmentFactory
from tests.fixtures.mqtt import MosquittoBroker, TestEmbeddedBroker, hold_port

REPO = Path(__file__).resolve().parents[2]
SIZE = 1_300_000


class DeviceLink:
    """The device's MQTT side: publishes what a SegmentSender asks for and feeds it the server's acks."""

    def __init__(
        self, host: str, port: int, device_id: str, keyring: IngestKeyring, password: str | None = None
    ) -> None:
        self.device_id = device_id
        self.keyring = keyring
        self.acks: queue.Queue[TransferAck] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{device_id}-{os.urandom(3).hex()}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if password is not None:
            self.client.username_pw_set(device_id, password)
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(
            topics.device_downlink_filter(device_id), qos=1
        )
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        assert subscribed.wait(10), "device got no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # The workers sign every ack with the ingest key (finding 1); the device verifies it first.
        ack = decode(message.topic, self.keyring.open(message.topic, bytes(message.payload)))
        assert isinstance(ack, TransferAck)
        self.acks.put(ack)

    def _perform(self, signed: SignedManifest, data: bytes, action: SenderAction) -> None:
        device_id, file_id = self.device_id, signed.file_id
        msg: FileInit | FileChunk | FileFin | FileStatusQuery
        if isinstance(action, SendInit):
            msg = FileInit(device_id=device_id, file_id=file_id, signed=signed)
        elif isinstance(action, SendChunk):
            part = data[action.offset : action.offset + action.length]
            msg = FileChunk(device_id=device_id, file_id=file_id, offset=action.offset, data=part)
        elif isinstance(action, SendFin):
            msg = FileFin(device_id=device_id, file_id=file_id, size=len(data), sha256=signed.manifest.sha256)
        else:
            assert isinstance(action, SendStatus)
            msg = FileStatusQuery(device_id=device_id, file_id=file_id)
        self.client.publish(*encode(msg), qos=1)

    def upload(
        self,
        signed: SignedManifest,
        data: bytes,
        *,
        timeout_s: float = 60.0,
        on_ack: Callable[[TransferAck], None] | None = None,
    ) -> TransferFinished | TransferFailed:
        """Drive a SegmentSender until the server confirms or refuses the segment."""
        sender = SegmentSender(signed.file_id, len(data), signed.manifest.sha256, ack_timeout_s=1.0)
        actions = sender.start(time.monotonic())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for action in actions:
                if isinstance(action, TransferFinished | TransferFailed):
                    return action
                self._perform(signed, data, action)
            try:
                ack = self.acks.get(timeout=0.1)
            except queue.Empty:
                actions = sender.tick(time.monotonic())
                continue
            if on_ack is not None:
                on_ack(ack)
            actions = sender.receive_ack(ack, time.monotonic())
        raise AssertionError(f"upload did not finish; sender state {sender.state}")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(app: Flask, segments: SegmentFactory) -> SegmentFactory:
    """The segment factory's device, registered."""
    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    return segments


def stored_once(app: Flask, service: IngestService, data: bytes) -> int:
    """Exactly one recording, holding exactly ``data``; its id."""
    with session_scope(app) as session:
        (recording,) = session.scalars(select(Recording)).all()
    assert b"".join(service.store.open_range(recording.object_key, 0, len(data) - 1)) == data
    return recording.id


@pytest.fixture
def link_to(app: Flask) -> Iterator[Callable[..., DeviceLink]]:
    """Open device links (pinning the app's ingest key) that are closed after the test."""
    links: list[DeviceLink] = []
    keyring = IngestKeyring.of([IngestSigner.from_settings(app.extensions["zfjl.settings"]).public_key_raw])

    def make(host: str, port: int, device_id: str, password: str | None = None) -> DeviceLink:
        link = DeviceLink(host, port, device_id, keyring, password)
        links.append(link)
        return link

    yield make
    for link in links:
        link.close()


@pytest.mark.mosquitto
def test_upload_through_two_shared_workers(
    app: Flask, device: SegmentFactory, mosquitto_broker: MosquittoBroker, link_to: Callable[..., DeviceLink]
) -> None:
    """Two workers (own services, shared staging) split a transfer's chunks; it is stored exactly once."""
    services = [IngestService.from_app(app) for _ in range(2)]
    url = mosquitto_broker.url
    workers = [IngestWorker(svc.settings, svc, f"w{i}", url, shared=True) for i, svc in enumerate(services)]
    for worker in workers:
        worker.start()
    try:
        data = random.Random(1).randbytes(SIZE)
        signed, _ = device.make(data)
        link = link_to(mosquitto_broker.host, mosquitto_broker.port, device.device_id)
        result = link.upload(signed, data)
        # Not ``not result.duplicate``: when the commit outlasts the sender's ack timeout the device
        # asks for the status, and the other worker may answer first with "already stored" — the
        # device frees the segment either way. Exactly-once is the count of commits below.
        assert isinstance(result, TransferFinished)
        assert result.recording_id == stored_once(app, services[0], data)
        # Mosquitto round-robins a group: both stateless workers staged chunks of the same transfer.
        assert all(svc.stats()["chunks_staged"] > 0 for svc in services)
        assert sum(svc.stats()["segments_committed"] for svc in services) == 1
    finally:
        for worker in workers:
            worker.stop()


def test_upload_through_embedded_broker(
    app: Flask,
    device: SegmentFactory,
    embedded_broker: TestEmbeddedBroker,
    link_to: Callable[..., DeviceLink],
) -> None:
    """With the embedded broker one worker uses the plain filter (no $share) and stores the segment."""
    service = IngestService.from_app(app)
    password = embedded_broker.add_device(device.device_id)
    worker = IngestWorker(service.settings, service, "w0", embedded_broker.service_url)
    assert not worker.shared  # settings.mqtt_url is empty: the embedded broker
    worker.start()
    try:
        data = random.Random(2).randbytes(SIZE)
        signed, _ = device.make(data)
        link = link_to(embedded_broker.host, embedded_broker.port, device.device_id, password)
        result = link.upload(signed, data)
        assert isinstance(result, TransferFinished)
        stored_once(app, service, data)
    finally:
        worker.stop()


@pytest.mark.mosquitto
def test_worker_stopped_mid_transfer(
    app: Flask, device: SegmentFactory, mosquitto_broker: MosquittoBroker, link_to: Callable[..., DeviceLink]
) -> None:
    """The worker stops after two chunks; a new worker (new process state, same staging) finishes it once."""
    service = IngestService.from_app(app)
    first = IngestWorker(service.settings, service, "old", mosquitto_broker.url, shared=True)
    first.start()
    replacement: list[IngestWorker] = []
    swapper: list[threading.Thread] = []
    stored_acks = 0

    def swap_workers() -> None:
        first.stop()
        time.sleep(1.0)  # chunks the device sends meanwhile reach nobody: it must recover by itself
        fresh = IngestService(service.settings, app, service.store, Staging(service.settings.staging_dir))
        worker = IngestWorker(service.settings, fresh, "new", mosquitto_broker.url, shared=True)
        replacement.append(worker)
        worker.start()

    def on_ack(ack: TransferAck) -> None:
        nonlocal stored_acks
        if ack.state is AckState.STORED:
            stored_acks += 1
        if stored_acks == 2 and not swapper:
            # In the background, so the device keeps sending while no worker listens.
            swapper.append(threading.Thread(target=swap_workers))
            swapper[0].start()

    try:
        data = random.Random(3).randbytes(SIZE)
        signed, _ = device.make(data)
        link = link_to(mosquitto_broker.host, mosquitto_broker.port, device.device_id)
        result = link.upload(signed, data, on_ack=on_ack)
        assert isinstance(result, TransferFinished)
        assert replacement, "the worker was never replaced"
        # The device resumed from what the new worker found staged, asking for it with a status query.
        assert replacement[0].service.stats()["messages"].get("file_status", 0) >= 1
        stored_once(app, service, data)
        assert not service.staging.exists(device.device_id, signed.file_id)
    finally:
        for thread in swapper:
            thread.join(30)
        first.stop()
        for worker in replacement:
            worker.stop()


@pytest.mark.slow
def _login_accepted(host: str, port: int, login: tuple[str, str] | None) -> bool:
    """Whether the broker answers CONNACK 0 to this login (None: anonymous)."""
    answered = threading.Event()
    outcome: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if login is not None:
        client.username_pw_set(*login)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        outcome.append(not reason_code.is_failure)
        answered.set()

    client.on_connect = on_connect
    client.connect(host, port)
    client.loop_start()
    try:
        assert answered.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome == [True]


def test_zfjl_server_run_smoke(tmp_path: Path) -> None:
    """``zfjl-server run`` on embedded defaults: /healthz is 200, the broker refuses anonymous clients and
    takes the service login kept 0600 in the data folder, SIGTERM exits 0."""
    held = hold_port()  # held until the end: nothing else can take it while the server starts
    http_port = int(held.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFJL_")}
    env.update(ZFJL_DATA_DIR=str(tmp_path / "var"), ZFJL_HTTP_PORT=str(http_port), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    running = threading.Event()

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "zfjl server running" in line:
                running.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        assert running.wait(60), "".join(lines)
        match = re.search(r"MQTT for devices mqtt://([\d.]+):(\d+)", "".join(lines))
        assert match, "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read())["status"] == "ok"
        credential = tmp_path / "var" / "mqtt-service-password"
        assert credential.stat().st_mode & 0o777 == 0o600
        password = credential.read_text().strip()
        assert password not in "".join(lines)
        assert not _login_accepted(match[1], int(match[2]), None)
        assert not _login_accepted(match[1], int(match[2]), ("zfjl-ingest", "wrong"))
        assert _login_accepted(match[1], int(match[2]), ("zfjl-ingest", password))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        held.close()
    assert "server stopped" in "".join(lines)


def _api(base: str, method: str, path: str, body: object = None, token: str = "") -> Any:
    """One JSON request to the runner's HTTP API."""
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_embedded_broker_follows_the_registry_provisioned_in_and_revoked_out(tmp_path: Path) -> None:
    """Provisioned over the API, a device logs in with its issued password; revoked, it is dropped."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.domain.accounts.service import create_user
    from server.runner import ServerRunner
    from tests.conftest import raw_public_key

    runner = ServerRunner({"data_dir": str(tmp_path / "var"), "http_port": 0}, embedded_mqtt_port=0)
    runner.start()
    device: mqtt.Client | None = None
    try:
        assert runner.http is not None and runner.broker is not None
        base, broker = runner.http.url, runner.broker
        with session_scope(runner.app) as session:
            create_user(session, "admin", "correct-horse-battery", "system_admin")
        token = _api(
            base, "POST", "/api/v1/auth/login", {"username": "admin", "password": "correct-horse-battery"}
        )["access_token"]
        key = base64.b64encode(raw_public_key(Ed25519PrivateKey.generate())).decode()
        issued = _api(
            base, "POST", "/api/v1/fleet/provision", {"device_id": "rec-7", "public_key": key}, token
        )
        login = (issued["mqtt_username"], issued["mqtt_password"])
        assert not _login_accepted(broker.host, broker.port, ("rec-7", "not-the-password"))
        assert _login_accepted(broker.host, broker.port, login)

        dropped = threading.Event()
        device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rec-7", protocol=mqtt.MQTTv311)
        device.username_pw_set(*login)
        device.reconnect_delay_set(30, 60)  # no reconnect within the test
        device.on_disconnect = lambda *args: dropped.set()
        device.connect(broker.host, broker.port)
        device.loop_start()
        deadline = time.monotonic() + 10
        while not device.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert device.is_connected()

        _api(base, "POST", "/api/v1/fleet/devices/rec-7/revoke", {"reason": "stolen"}, token)
        assert dropped.wait(10), "the revoked device is still connected"
        assert not _login_accepted(broker.host, broker.port, login)
    finally:
        if device is not None:
            device.loop_stop()
        runner.stop()
