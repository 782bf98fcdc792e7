"""An ingest worker asks again for a subscription the broker refused after it was running (JL-17).

A clustered broker refuses subscriptions while it re-elects after losing a node (NATS cannot create the
JetStream consumer in time; docs/scaling.md). An ingest worker that gave up then stayed connected and
deaf: every recorder's backlog grew until someone restarted the server. The embedded broker
refuses (SUBACK 0x80) a filter the login may not read, which makes the refusal reproducible here (Mosquitto
2.0 grants a denied filter under MQTT 3.1.1 and delivers nothing): the broker restarts with the read
right taken away, the worker reconnects, is refused and asks again on the same connection; the right
comes back and the worker is subscribed again and ingests, with no restart of its own.
"""

from __future__ import annotations

import os
import time

import pytest
from flask import Flask

from protocol.downlink import IngestKeyring, decode_public_key
from protocol.messages import AckState
from server.domain.fleet.devices import register_device
from server.infra.db import session_scope
from server.infra.mqtt_acl import AccountKind, BrokerAccount, hash_broker_password
from server.ingest import worker as worker_module
from server.ingest.service import IngestService
from server.ingest.worker import IngestWorker
from tests.conftest import SegmentFactory, pinned_ingest_keys
from tests.fixtures.mqtt import TestEmbeddedBroker
from tests.server.infra.test_staging_broker import RawClient
from tests.server.ingest.test_ingest import init


def _ingest_account(password: str, read: tuple[str, ...]) -> BrokerAccount:
    return BrokerAccount(
        username="ingest-retry",
        password_hash=hash_broker_password(password),
        write=("#",),
        read=read,
        kind=AccountKind.SERVICE,
    )


def test_jl17_subscription_refused_while_running_is_retried_until_granted(
    app: Flask,
    segments: SegmentFactory,
    embedded_broker: TestEmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "_RESUBSCRIBE_MIN_S", 0.05)
    monkeypatch.setattr(worker_module, "_RESUBSCRIBE_MAX_S", 0.2)
    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    password = "pw-" + os.urandom(6).hex()
    embedded_broker.table.add(_ingest_account(password, ("#",)))
    url = f"mqtt://ingest-retry:{password}@{embedded_broker.host}:{embedded_broker.port}"
    service = IngestService.from_app(app)
    worker = IngestWorker(service.settings, service, "w-retry", url, shared=False, finalize_threads=1)
    worker.start()
    keyring = IngestKeyring.of(decode_public_key(text) for text in pinned_ingest_keys(app))
    client: RawClient | None = None
    try:
        assert worker.subscribed and worker.subscribe_refusals == 0
        # The broker comes back unable to grant the subscription (as a NATS cluster re-electing).
        embedded_broker.table.add(_ingest_account(password, ("nothing/#",)))
        embedded_broker.restart()
        deadline = time.monotonic() + 20
        while worker.subscribe_refusals < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.subscribe_refusals >= 3, "the refused subscription was not asked for again"
        assert worker.client.is_connected() and not worker.subscribed  # asked again on one connection
        # The broker recovers: the worker is subscribed again without a restart of its own...
        embedded_broker.table.add(_ingest_account(password, ("#",)))
        embedded_broker.restart()
        deadline = time.monotonic() + 20
        while not worker.subscribed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.subscribed, "the worker never got its subscription back"
        # ...and it ingests again: a recorder's init is answered.
        client = RawClient(embedded_broker, segments.device_id, keyring, login=embedded_broker.login)
        segment, _ = segments.make(b"x" * 1000)
        client.publish(*init(segment))
        assert client.ack_for(segment.file_id).state is AckState.READY
    finally:
        if client is not None:
            client.close()
        worker.stop()
