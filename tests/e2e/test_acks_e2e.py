"""Signed acks and provisioning end to end: real `zfjl-server run`, `zfjl-fw provision`, `zfjl-agent run`.

* README "The recorder's life in five steps", step 2 exactly as written (no ``--mqtt-url``): the
  server tells the recorder the embedded broker's *actual* port and the ingest key to pin.
* Finding 1 with every real part: an attacker on the broker answers each upload with a forged
  ``complete``; the real agent process marks nothing stored, ``zfjl-agent status`` keeps it pending,
  and the real server later stores every segment exactly once.
"""

from __future__ import annotations

import base64
import json
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion

from protocol import topics
from protocol.downlink import seal
from protocol.messages import AckState, TransferAck, encode
from tests.e2e.harness import ServerProcess, agent, agent_status, provision, tune_agent, wait_for
from tests.fixtures.mqtt import MosquittoBroker

pytestmark = pytest.mark.slow


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(**settings: str) -> ServerProcess:
        folder = tmp_path / "server"
        folder.mkdir(exist_ok=True)
        server = ServerProcess(folder, settings)
        server.create_admin()
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _server_ingest_public_key(server: ServerProcess) -> str:
    raw = base64.b64decode((server.data_dir / "ingest-key").read_text().strip())
    public = (
        Ed25519PrivateKey.from_private_bytes(raw).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    return base64.b64encode(public).decode()


def _embedded_broker_url(server: ServerProcess) -> str:
    return next(
        word
        for line in server.log_tail(400).splitlines()
        if "embedded MQTT broker for devices" in line
        for word in line.split()
        if word.startswith("mqtt://")
    )


def _stored(server: ServerProcess, device_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = server.request(
        "GET", f"/api/v1/recordings?device_id={device_id}&limit=200", token=server.token()
    )["items"]
    return sorted(items, key=lambda item: item["sequence"])


def test_readme_step2_provision_pins_the_ingest_key_and_the_embedded_brokers_actual_port(
    make_server: Any, tmp_path: Path
) -> None:
    """Step 2 without --mqtt-url: agent.toml names the port the embedded broker really took; step 3 works."""
    server = make_server()  # ZFJL_MQTT_EMBEDDED_PORT=0: the broker's port is not 1883
    actual = _embedded_broker_url(server)
    config = provision(server, "rec-0001", tmp_path / "etc-zfjl")
    written = tomllib.loads(config.read_text())
    assert written["mqtt_url"] == actual != "mqtt://127.0.0.1:1883"
    assert written["ingest_public_keys"] == [_server_ingest_public_key(server)]
    assert "zfjl-ingest" not in config.read_text()  # the server's own broker login is never handed out
    tune_agent(config)
    run = agent(config, "run", "--simulate", "--segment-seconds", "1", "--duration", "3")
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    status = agent_status(config)
    assert status["segments_pending"] == 0 and status["segments_recorded"] >= 2, status
    items = _stored(server, "rec-0001")
    assert [item["sequence"] for item in items] == list(range(status["segments_recorded"]))


class ForgingClient:
    """A client on the broker answering every init and status query with an unsigned ``complete``."""

    def __init__(self, port: int, device_id: str) -> None:
        self.device_id = device_id
        self.answered = 0
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="forger", protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda client, *args: client.subscribe(
            f"zfjl/v1/{device_id}/up/file/#", qos=1
        )
        self.client.on_subscribe = lambda *args: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)
        self.attacker_key = Ed25519PrivateKey.generate()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(message.topic)
        if (
            parsed.kind not in (topics.TopicKind.FILE_INIT, topics.TopicKind.FILE_STATUS)
            or not parsed.file_id
        ):
            return
        topic = topics.ack(self.device_id, parsed.file_id)
        client.publish(topic, json.dumps({"state": "complete", "recording_id": 1}).encode(), qos=1)
        ack = TransferAck(
            device_id=self.device_id,
            file_id=parsed.file_id,
            state=AckState.COMPLETE,
            recording_id=1,
            sha256="0" * 64,
        )
        client.publish(topic, seal(topic, encode(ack)[1], self.attacker_key), qos=1)
        self.answered += 1

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def test_forged_complete_acks_on_the_broker_free_nothing_in_the_real_agent(
    make_server: Any, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Finding 1 end to end: server down, a forger answers every upload; nothing is marked stored."""
    server = make_server(ZFJL_MQTT_URL=mosquitto_broker.url)
    config = provision(server, "rec-forged", tmp_path / "device")
    tune_agent(config, drain_timeout_s=6)
    server.stop()  # only the forger answers now
    forger = ForgingClient(mosquitto_broker.port, "rec-forged")
    try:
        run = agent(config, "run", "--simulate", "--segment-seconds", "1", "--duration", "2")
        _, err = run.communicate(timeout=120)
        assert run.returncode == 2, err[-3000:]  # EXIT_DRAIN_TIMEOUT: still pending, kept for next time
        assert forger.answered >= 2
        assert "REFUSED untrusted ack" in err
        status = agent_status(config)
        assert status["segments_recorded"] >= 1
        assert status["segments_pending"] == status["segments_recorded"], status
        assert status["segments_complete"] == 0, status
    finally:
        forger.stop()
    server.start()
    run = agent(config, "run", "--simulate", "--segment-seconds", "1", "--duration", "1")
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    status = agent_status(config)
    assert status["segments_pending"] == 0, status
    items = _stored(server, "rec-forged")
    assert [item["sequence"] for item in items] == list(range(status["segments_recorded"]))


def test_a_command_sent_while_the_recorder_is_online_arrives_signed_and_runs(
    make_server: Any, tmp_path: Path
) -> None:
    """The fleet dispatcher signs what it pushes: the real agent runs a command created while it is online."""
    server = make_server()
    config = provision(server, "rec-cmd", tmp_path / "device")
    tune_agent(config)
    run = agent(config, "run", "--simulate", "--segment-seconds", "1", "--duration", "12")
    try:
        token = server.token()
        assert wait_for(lambda: bool(_stored(server, "rec-cmd")), 60)  # online and uploading
        made = server.request("POST", "/api/v1/fleet/devices/rec-cmd/commands", {"kind": "upload_now"}, token)

        def state() -> str:
            items = server.request("GET", "/api/v1/fleet/devices/rec-cmd/commands", token=token)["items"]
            return str(next(item["state"] for item in items if item["command_id"] == made["command_id"]))

        assert wait_for(lambda: state() == "succeeded", 30), state()
    finally:
        _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    assert "REFUSED untrusted" not in err
