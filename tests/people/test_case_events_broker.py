"""A recorder's case event through a real Mosquitto broker into the case record (JL-8)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from flask import Flask
from sqlalchemy import select

from protocol import case_events
from protocol.case_events import CaseEventReport
from server.db import session_scope
from server.ingest import IngestService
from server.models import Device
from server.models_people import Case, CaseEvent
from server.mqtt import IngestWorker
from tests.fixtures.mqtt import MosquittoBroker
from tests.people.conftest import World


@pytest.mark.mosquitto
def test_jl8_case_event_published_by_a_recorder_reaches_the_record(
    app: Flask, world: World, mosquitto_broker: MosquittoBroker
) -> None:
    with session_scope(app) as session:
        session.add(
            Device(id="cam-5", public_key=b"k" * 32, key_fingerprint="f", status="active", registered_by="t")
        )
        case = Case(
            agency_id=world.agency_a,
            number="N-5",
            title="",
            act_kind="coercion",
            origin="ex_officio",
            party="",
            major=False,
            status="open",
            created_by="t",
        )
        session.add(case)
        session.flush()
        case_id = case.id
    service = IngestService.from_app(app)
    worker = IngestWorker(service.settings, service, "people", mosquitto_broker.url)
    worker.start()
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cam-5")
    try:
        publisher.connect(mosquitto_broker.host, mosquitto_broker.port)
        publisher.loop_start()
        report = CaseEventReport(
            device_id="cam-5",
            event_id="evt-77",
            event_type="investigation.coercive_measure",
            at=datetime.now(UTC).isoformat(),
            officer="AH-0001",
            case_id=case_id,
            text="查封",
        )
        topic, payload = case_events.encode(report)
        publisher.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
        deadline = time.monotonic() + 15
        stored: list[CaseEvent] = []
        while time.monotonic() < deadline and not stored:
            with session_scope(app) as session:
                stored = list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id)))
            time.sleep(0.1)
        assert [(e.event_type, e.device_id, e.device_event_id, e.text) for e in stored] == [
            ("investigation.coercive_measure", "cam-5", "evt-77", "查封")
        ]
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        worker.stop()
