"""A recorder's signed case event through a real broker into the case record and back as an ack (JL-8).

Run once against a private Mosquitto and once against the embedded broker. The same broker carries a
forger's unsigned event naming another agency's officer and case (finding 2): it never reaches the
record, and the security log keeps it.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import select

from protocol import case_events, topics
from protocol.case_events import CaseEventReport, SignedCaseEvent
from protocol.downlink import IngestKeyring, decode_public_key
from protocol.session import EventAck, EventAckState
from server.domain.cases.models import Case, CaseEvent
from server.domain.evidence.models import IngestRejection
from server.domain.fleet.models import Device, DeviceAssignment
from server.infra.db import session_scope
from server.ingest.service import IngestService
from server.ingest.worker import IngestWorker
from tests.conftest import pinned_ingest_keys, raw_public_key
from tests.fixtures.mqtt import BrokerHandle
from tests.fixtures.people import World


def _case(agency_id: int, number: str) -> Case:
    return Case(
        agency_id=agency_id,
        number=number,
        title="",
        act_kind="coercion",
        origin="ex_officio",
        party="",
        major=False,
        status="open",
        created_by="t",
    )


def _wait(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_jl8_signed_case_event_through_the_broker_is_stored_and_acked_and_a_forgery_is_not(
    app: Flask, world: World, any_broker: BrokerHandle
) -> None:
    key = Ed25519PrivateKey.generate()
    with session_scope(app) as session:
        session.add(
            Device(
                id="cam-5",
                public_key=raw_public_key(key),
                key_fingerprint="f",
                status="active",
                registered_by="t",
            )
        )
        own, foreign = _case(world.agency_a, "N-5"), _case(world.agency_b, "B-5")
        session.add_all([own, foreign])
        session.flush()
        session.add(DeviceAssignment(device_id="cam-5", user_id=world.users["officer"], checked_out_by="t"))
        own_id, foreign_id = own.id, foreign.id
    service = IngestService.from_app(app)
    user, password = any_broker.login  # the embedded broker refuses anonymous clients
    worker = IngestWorker(
        service.settings, service, "people", f"mqtt://{user}:{password}@{any_broker.host}:{any_broker.port}"
    )
    worker.start()
    acks: queue.SimpleQueue[EventAck] = queue.SimpleQueue()
    # The recorder trusts an ack only under the server's ingest key, as a provisioned one does.
    keyring = IngestKeyring.of(decode_public_key(text) for text in pinned_ingest_keys(app))

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(message.topic)
        if parsed.kind is topics.TopicKind.CASE_EVENT_ACK and parsed.event_id is not None:
            body = keyring.open(message.topic, message.payload)
            acks.put(EventAck.from_payload(parsed.device_id, parsed.event_id, body))

    recorder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cam-5")
    recorder.on_message = on_message
    recorder.username_pw_set(*any_broker.login)
    try:
        recorder.connect(any_broker.host, any_broker.port)
        recorder.loop_start()
        recorder.subscribe(topics.device_downlink_filter("cam-5"), qos=1)
        # A forger publishes the old unsigned form: agency B's officer, agency B's case.
        forged = (
            b'{"at":"2026-03-02T09:00:00+00:00","case_id":%d,"case_number":null,"event_id":"x-1",'
            b'"event_type":"investigation.coercive_measure","officer":"WH-0001","place":"","text":"forged"}'
        ) % foreign_id
        recorder.publish(topics.case_event("cam-5"), forged, qos=1).wait_for_publish(timeout=10)
        report = CaseEventReport(
            device_id="cam-5",
            event_id="evt-77",
            event_type="investigation.coercive_measure",
            at=datetime.now(UTC),
            officer="AH-0001",
            case_id=own_id,
            text="查封",
        )
        # Wait for the forgery to be handled, so the security log below holds it.
        assert _wait(lambda: service.stats()["messages"].get("case_event", 0) >= 1)
        recorder.publish(*case_events.encode(SignedCaseEvent.sign(report, key)), qos=1).wait_for_publish(
            timeout=10
        )
        ack = acks.get(timeout=15)
        assert (ack.device_id, ack.event_id, ack.state) == ("cam-5", "evt-77", EventAckState.STORED)
        with session_scope(app) as session:
            stored = list(session.scalars(select(CaseEvent)))
            rejected = [(r.code, r.device_id) for r in session.scalars(select(IngestRejection))]
        assert [(e.case_id, e.event_type, e.device_id, e.device_event_id, e.text) for e in stored] == [
            (own_id, "investigation.coercive_measure", "cam-5", "evt-77", "查封")
        ]
        assert rejected == [("bad_case_event", "cam-5")]
    finally:
        recorder.loop_stop()
        recorder.disconnect()
        worker.stop()
