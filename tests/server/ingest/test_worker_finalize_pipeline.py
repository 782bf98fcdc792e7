"""The finalize pipeline: a commit never holds up chunk handling, and its queue is bounded (JL-6, JL-19).

A fin goes to the worker's finalize threads; the MQTT network thread goes straight back to chunks. The
``complete`` ack still leaves only after the object store and the database committed.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from flask import Flask

from protocol.downlink import IngestKeyring, decode_public_key
from protocol.messages import AckState
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.infra.db import session_scope
from server.infra.storage import STORE_KEY
from server.ingest.service import IngestService
from server.ingest.worker import IngestWorker
from tests.conftest import SegmentFactory, pinned_ingest_keys
from tests.fixtures.mqtt import MosquittoBroker
from tests.server.infra.test_staging_broker import RawClient
from tests.server.ingest.test_ingest import CHUNK, chunk, count, fin, init


@pytest.fixture
def device(app: Flask, segments: SegmentFactory) -> SegmentFactory:
    """The segment factory's device, registered."""
    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    return segments


def hold_object_store(app: Flask, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make the object store's put wait: (set when a put is held, set this to let it go on)."""
    store = app.extensions[STORE_KEY]
    entered, release = threading.Event(), threading.Event()
    original = store.put_file

    def blocked(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30), "the test never released the object store"
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "put_file", blocked)
    return entered, release


@pytest.mark.mosquitto
def test_jl6_chunks_of_another_transfer_are_acked_while_a_finalize_waits_on_the_object_store(
    app: Flask, device: SegmentFactory, mosquitto_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object store blocks A's commit: B's init and chunks are still acked; A completes only after."""
    entered, release = hold_object_store(app, monkeypatch)
    service = IngestService.from_app(app)
    worker = IngestWorker(
        service.settings, service, "w0", mosquitto_broker.url, shared=True, finalize_threads=1
    )
    worker.start()
    keyring = IngestKeyring.of(decode_public_key(text) for text in pinned_ingest_keys(app))
    client = RawClient(mosquitto_broker, device.device_id, keyring)
    try:
        data_a, data_b = random.Random(21).randbytes(CHUNK + 10), random.Random(22).randbytes(3 * CHUNK)
        a, _ = device.make(data_a)
        b, _ = device.make(data_b)
        client.publish(*init(a))
        assert client.ack_for(a.file_id).state is AckState.READY
        for offset in (0, CHUNK):
            client.publish(*chunk(a, data_a, offset))
            assert client.ack_for(a.file_id).state is AckState.STORED
        client.publish(*fin(a))
        assert entered.wait(30), "A's finalize never reached the object store"
        # A's commit is held inside the object store; B flows through the same worker meanwhile.
        client.publish(*init(b))
        assert client.ack_for(b.file_id).state is AckState.READY
        for offset in range(0, len(data_b), CHUNK):
            client.publish(*chunk(b, data_b, offset))
            ack = client.ack_for(b.file_id)
            assert (ack.state, ack.offset) == (AckState.STORED, offset)
        client.publish(*fin(a))  # a repeated fin while the first is in the pipeline: not queued again
        assert count(app, Recording) == 0  # nothing committed, so nothing could have been acked complete
        release.set()
        done = client.ack_for(a.file_id)
        assert (done.state, done.sha256) == (AckState.COMPLETE, a.manifest.sha256)
        client.publish(*fin(b))
        assert client.ack_for(b.file_id).state is AckState.COMPLETE
        assert count(app, Recording) == 2
        assert worker.pipeline.dropped == 0
    finally:
        release.set()
        client.close()
        worker.stop()


def test_jl6_finalize_queue_is_bounded_and_a_repeated_fin_is_queued_once(
    app: Flask, device: SegmentFactory
) -> None:
    """Queue of one, threads not started: the same fin twice is one entry; another fin is dropped, counted."""
    service = IngestService.from_app(app)
    worker = IngestWorker(service.settings, service, "w0", "mqtt://127.0.0.1:1", finalize_queue_max=1)
    first, _ = device.make(b"1" * 100)
    second, _ = device.make(b"2" * 100)

    def deliver(topic: str) -> None:
        message = mqtt.MQTTMessage(topic=topic.encode())
        worker._on_message(worker.client, None, message)

    deliver(fin(first)[0])
    deliver(fin(first)[0])
    assert (worker.pipeline.queue_depth(), worker.pipeline.dropped) == (1, 0)
    deliver(fin(second)[0])  # never blocks the caller (the network thread)
    assert (worker.pipeline.queue_depth(), worker.pipeline.dropped) == (1, 1)
