"""The recorder's link asks again for a downlink subscription the broker refused (JL-17).

A clustered broker can refuse a subscription while it re-elects after losing a node, without dropping
the connection (seen with NATS, docs/scaling.md); a recorder that gave up would never hear an ack again
and its backlog would stall. The embedded broker refuses (SUBACK 0x80) a filter the login may not read,
which makes the refusal reproducible here.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from edge_agent import mqtt_link
from edge_agent.config import AgentConfig
from edge_agent.keys import generate_private_key, save_private_key
from edge_agent.mqtt_link import MqttLink
from server.infra.mqtt_acl import AccountKind, BrokerAccount, hash_broker_password
from tests.fixtures.mqtt import TestEmbeddedBroker


def test_jl17_refused_downlink_subscription_is_retried_with_backoff(
    tmp_path: Path, embedded_broker: TestEmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt_link, "_RESUBSCRIBE_MIN_S", 0.05)
    password = "pw-" + os.urandom(6).hex()
    # A login that may connect as rec-9 but read nothing of rec-9's downlink.
    embedded_broker.table.add(
        BrokerAccount(
            username="rec-9",
            password_hash=hash_broker_password(password),
            write=("#",),
            read=("nothing/#",),
            kind=AccountKind.SERVICE,
        )
    )
    save_private_key(generate_private_key(), tmp_path / "device-key.pem")
    config = AgentConfig(
        device_id="rec-9",
        private_key_file=tmp_path / "device-key.pem",
        data_dir=tmp_path / "data",
        mqtt_url=embedded_broker.url,
        mqtt_username="rec-9",
        mqtt_password=password,
        ingest_public_keys=(base64.b64encode(os.urandom(32)).decode(),),
    )
    link = MqttLink(config, on_ack=lambda ack: None)
    try:
        link.connect()
        assert link.wait_connected(10)
        deadline = time.monotonic() + 10
        while link.subscribe_refusals < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert link.subscribe_refusals >= 3, "the refused subscription was not asked for again"
        assert link.connected  # retried on the same connection, no reconnect needed
        assert not link.downlink_subscribed  # nothing granted: acks would not reach the recorder
        assert link.disconnects == 0
    finally:
        link.close()
