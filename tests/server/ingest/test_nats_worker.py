"""The NATS ingest worker against a real nats-server with logins: a device's transfer over MQTT is
ingested from core NATS and acknowledged back to the device's MQTT subscription; a subject no MQTT
topic maps to is refused like a bad topic; the ingest account's password never reaches a log line or
an error (docs/operations.md, "Ingest on NATS")."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import nats
import pytest
from flask import Flask

from bench.scale_rig import NatsCluster, find_nats_server, wait_until
from protocol.downlink import IngestKeyring, decode_public_key
from protocol.messages import AckState
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.infra.db import session_scope
from server.ingest.nats_worker import NatsIngestWorker, NatsLogin, split_login
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory, pinned_ingest_keys
from tests.server.infra.test_staging_broker import RawClient
from tests.server.ingest.test_ingest import CHUNK, chunk, count, fin, init
from tests.server.ingest.test_worker_finalize_pipeline import hold_object_store

INGEST_PASSWORD = "ingest@Pw:7c,1e/9b"  # percent-encoded in the URL
DEVICE_PASSWORD = "device-Pw-2f80aa"
BRIDGE_PASSWORD = "bridge-Pw-44d0c3"  # a NATS client allowed to publish uplinks (a bridge, a mistake)
DEVICE = "dev-001"  # the segment factory's device
# The permissions docs/operations.md gives ("Ingest on NATS"): the ingest account reads every uplink,
# only as a member of its queue group, and writes only downlinks; a device (over MQTT) writes only its
# own uplink and reads only its own downlink.
AUTHORIZATION = f"""
authorization {{
  users = [
    {{ user: ingest, password: "{INGEST_PASSWORD}", allowed_connection_types: ["STANDARD"],
       permissions: {{ publish: ["zfjl.v1.*.down.>"], subscribe: ["zfjl.v1.*.up.> zfjl-ingest"] }} }}
    {{ user: {DEVICE}, password: "{DEVICE_PASSWORD}", allowed_connection_types: ["MQTT"], permissions: {{
         publish: ["zfjl.v1.{DEVICE}.up.>"],
         subscribe: ["zfjl.v1.{DEVICE}.down", "zfjl.v1.{DEVICE}.down.>", "$MQTT.sub.>"] }} }}
    {{ user: bridge, password: "{BRIDGE_PASSWORD}", permissions: {{ publish: ["zfjl.v1.*.up.>"] }} }}
    {{ user: no-queue, password: "{INGEST_PASSWORD}",
       permissions: {{ publish: ["zfjl.v1.*.down.>"], subscribe: ["zfjl.v1.*.up.> another-group"] }} }}
  ]
}}
"""


@dataclasses.dataclass(frozen=True)
class _MqttListener:
    """Where RawClient connects: the node's MQTT listener."""

    host: str
    port: int


@pytest.fixture
def nats_node(tmp_path: Path) -> Iterator[NatsCluster]:
    """One nats-server (JetStream, MQTT listener) that wants a login."""
    binary = find_nats_server()
    if binary is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    (tmp_path / "nats").mkdir()
    cluster = NatsCluster(tmp_path / "nats", binary, nodes=1, authorization=AUTHORIZATION)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _worker(app: Flask, node: NatsCluster, password: str, user: str = "ingest") -> NatsIngestWorker:
    service = IngestService.from_app(app)
    url = node.client_url(0).replace("nats://", f"nats://{user}:{quote(password, safe='')}@", 1)
    settings = dataclasses.replace(service.settings, ingest_nats_url=url, mqtt_url=node.mqtt_url(0))
    return NatsIngestWorker(settings, service, "n0", finalize_threads=1)


def _publish_raw(url: str, subject: str, payload: bytes) -> None:
    """A core NATS publish by someone who can log in, with the header nats-server puts on MQTT publishes."""

    async def publish() -> None:
        nc = await nats.connect(url)
        try:
            await nc.publish(subject, payload, headers={"Nmqtt-Pub": "1"})
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(publish())


@pytest.mark.nats
def test_a_transfer_over_mqtt_is_ingested_from_nats_and_a_bad_subject_is_refused(
    app: Flask, segments: SegmentFactory, nats_node: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert segments.device_id == DEVICE
    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    worker = _worker(app, nats_node, INGEST_PASSWORD)
    worker.start()
    keyring = IngestKeyring.of(decode_public_key(text) for text in pinned_ingest_keys(app))
    listener = _MqttListener("127.0.0.1", nats_node.mqtt_ports[0])
    device = RawClient(listener, segments.device_id, keyring, login=(DEVICE, DEVICE_PASSWORD))  # type: ignore[arg-type]
    try:
        assert worker.subscribed
        data = random.Random(5).randbytes(2 * CHUNK + 17)
        signed, _ = segments.make(data)
        device.publish(*init(signed))
        assert device.ack_for(signed.file_id).state is AckState.READY
        for offset in range(0, len(data), CHUNK):
            device.publish(*chunk(signed, data, offset))
            ack = device.ack_for(signed.file_id)
            assert (ack.state, ack.offset) == (AckState.STORED, offset)
        # A NATS client allowed to publish uplinks sends what no MQTT topic maps to (a level "///"),
        # with nats-server's MQTT header: refused and counted, the worker carries on.
        url = nats_node.client_url(0).replace("nats://", f"nats://bridge:{BRIDGE_PASSWORD}@", 1)
        _publish_raw(url, f"zfjl.v1.{segments.device_id}.up.file.///.init", b"{}")
        wait_until(lambda: worker.bad_subjects == 1, 10, "the bad subject refused")
        assert worker.service.stats()["dropped"] == {"bad_topic": 1}
        # The fin is finalized on a finalize thread, whose ack goes out through the event loop.
        device.publish(*fin(signed))
        done = device.ack_for(signed.file_id)
        assert (done.state, done.sha256) == (AckState.COMPLETE, signed.manifest.sha256)
        assert count(app, Recording) == 1
    finally:
        device.close()
        worker.stop()
    assert not worker.subscribed
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "queue group zfjl-ingest" in logged
    assert INGEST_PASSWORD not in logged and quote(INGEST_PASSWORD, safe="") not in logged


@pytest.mark.nats
def test_a_refused_login_fails_the_start_without_showing_the_password(
    app: Flask, nats_node: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-Pw-91d3"
    worker = _worker(app, nats_node, wrong)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as refused:
        worker.start(timeout_s=20)
    assert time.monotonic() - started < 15, "a refused login must not wait for the start timeout"
    assert "refused the login" in str(refused.value)
    assert wrong not in str(refused.value)
    assert wrong not in "\n".join(record.getMessage() for record in caplog.records)


@pytest.mark.nats
def test_a_refused_queue_subscription_fails_the_start(app: Flask, nats_node: NatsCluster) -> None:
    """A login that may read the uplink only in another queue group: the server refuses the
    subscription, and the worker says so at start instead of running deaf."""
    worker = _worker(app, nats_node, INGEST_PASSWORD, user="no-queue")
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="refused the subscription"):
        worker.start(timeout_s=20)
    assert time.monotonic() - started < 15


def test_the_login_is_taken_out_of_the_urls_and_decoded() -> None:
    """nats-py sends a URL's password as written and tries nodes it discovers without one: the worker
    gives it the decoded login once, for every node."""
    urls = ["nats://ingest:a%40b%3Ac%2Cd@n1:4222", "nats://ingest:a%40b%3Ac%2Cd@n2:4222", "nats://n3:4222"]
    assert split_login(urls) == NatsLogin(
        servers=["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"], user="ingest", password="a@b:c,d"
    )
    assert split_login(["tls://s3cr%2Ft@n1:4222"]) == NatsLogin(servers=["tls://n1:4222"], token="s3cr/t")
    assert split_login(["nats://n1:4222"]) == NatsLogin(servers=["nats://n1:4222"])


@pytest.mark.nats
def test_stop_finishes_a_queued_finalize_and_its_complete_still_reaches_the_device(
    app: Flask, segments: SegmentFactory, nats_node: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM of an ingest process: the worker stops taking messages, but a fin already in its
    finalize pipeline is committed and its ``complete`` published before the connection closes."""
    entered, release = hold_object_store(app, monkeypatch)
    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    worker = _worker(app, nats_node, INGEST_PASSWORD)
    worker.start()
    keyring = IngestKeyring.of(decode_public_key(text) for text in pinned_ingest_keys(app))
    listener = _MqttListener("127.0.0.1", nats_node.mqtt_ports[0])
    device = RawClient(listener, DEVICE, keyring, login=(DEVICE, DEVICE_PASSWORD))  # type: ignore[arg-type]
    stopper = threading.Thread(target=worker.stop, name="stopper")
    try:
        data = random.Random(9).randbytes(CHUNK + 3)
        signed, _ = segments.make(data)
        device.publish(*init(signed))
        assert device.ack_for(signed.file_id).state is AckState.READY
        for offset in (0, CHUNK):
            device.publish(*chunk(signed, data, offset))
            assert device.ack_for(signed.file_id).state is AckState.STORED
        device.publish(*fin(signed))
        assert entered.wait(30), "the finalize never reached the object store"
        stopper.start()
        wait_until(worker._stopping.is_set, 10, "stop() begun")
        assert count(app, Recording) == 0
        release.set()
        done = device.ack_for(signed.file_id)
        assert (done.state, done.sha256) == (AckState.COMPLETE, signed.manifest.sha256)
        stopper.join(30)
        assert not stopper.is_alive(), "stop() did not return"
        assert count(app, Recording) == 1 and not worker.subscribed
    finally:
        release.set()
        device.close()
        if not stopper.is_alive() and not worker._stopping.is_set():
            worker.stop()
