"""Finding 8: names that belong to the system are reserved, and no broker secret reaches a log line."""

from __future__ import annotations

import base64
import logging
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session

from server.domain.base import utcnow
from server.domain.fleet.broker_accounts import BrokerAccountError, write_broker_files
from server.domain.fleet.devices import register_device
from server.domain.fleet.models import Device, DeviceCredential, SerialAllowlistEntry
from server.domain.fleet.service import issue_credential
from server.infra.config import load_settings
from server.infra.db import session_scope
from server.infra.mqtt_acl import hash_broker_password
from tests.conftest import raw_public_key
from tests.fixtures.mqtt import MosquittoBroker

INGEST_USER, INGEST_PASSWORD = "zfjl-ingest", "ingest-secret-123"
RESERVED = ["zfjl-ingest", "zfjl-service", "ZFJL-Ingest", "zfjl-anything"]


def _key() -> str:
    return base64.b64encode(raw_public_key(Ed25519PrivateKey.generate())).decode()


def _connects(broker: MosquittoBroker, username: str, password: str) -> bool:
    """Whether the broker accepts this login (CONNACK 0)."""
    result: list[bool] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{username}", protocol=mqtt.MQTTv311)
    client.username_pw_set(username, password)

    def on_connect(c: mqtt.Client, u: object, flags: object, reason: object, props: object) -> None:
        result.append(not getattr(reason, "is_failure", True))
        done.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


@pytest.mark.parametrize("device_id", RESERVED)
def test_finding8_allowlisted_serial_cannot_claim_a_system_name(
    client: FlaskClient, auth: dict[str, str], app: Flask, device_id: str
) -> None:
    """An allow-listed recorder (no admin token) asking to be ``zfjl-ingest`` is refused, serial unused."""
    client.post("/api/v1/fleet/allowlist", headers=auth, json={"serials": ["SN-1"]})
    answer = client.post(
        "/provisioning/v1/requests", json={"device_id": device_id, "public_key": _key(), "serial": "SN-1"}
    )
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["error"]["code"] == "device_id_reserved"
    assert "mqtt_password" not in answer.get_json()
    with session_scope(app) as session:
        assert session.get(Device, device_id) is None
        assert session.get(SerialAllowlistEntry, "SN-1").used_by_device is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/api/v1/fleet/provision", {}),  # admin token
        ("/provisioning/v1/requests", {"serial": "SN-not-listed"}),  # waits for an admin
        ("/api/v1/devices", {}),  # direct key registration
    ],
)
def test_finding8_every_provisioning_path_refuses_reserved_names(
    client: FlaskClient, auth: dict[str, str], path: str, extra: dict[str, str]
) -> None:
    """Admin-token provisioning, an approval request and direct registration all answer device_id_reserved."""
    answer = client.post(path, headers=auth, json={"device_id": "zfjl-ingest", "public_key": _key(), **extra})
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["error"]["code"] == "device_id_reserved"
    assert "zfjl-" in answer.get_json()["error"]["message"]
    assert client.get("/api/v1/fleet/provisioning-requests", headers=auth).get_json()["items"] == []


def test_finding8_reserved_names_refused_in_the_service_layer(db_session: Session) -> None:
    """register_device refuses a reserved id whoever calls it (CLI, scripts, the ingest worker)."""
    from server.domain.fleet.devices import DeviceIdReserved

    with pytest.raises(DeviceIdReserved):
        register_device(db_session, "zfjl-ingest", raw_public_key(Ed25519PrivateKey.generate()), actor="t")


def _legacy_device(session: Session, device_id: str) -> None:
    """A device row written before names were reserved (bypassing the service layer)."""
    key = raw_public_key(Ed25519PrivateKey.generate())
    session.add(
        Device(
            id=device_id,
            public_key=key,
            key_fingerprint="0" * 64,
            status="active",
            registered_at=utcnow(),
            registered_by="legacy",
        )
    )
    session.add(
        DeviceCredential(
            device_id=device_id,
            username=device_id,
            password_hash=hash_broker_password("device-password"),
            created_at=utcnow(),
            created_by="legacy",
            revoked_reason="",
        )
    )
    session.commit()


def test_finding8_generator_refuses_a_second_ingest_line(db_session: Session, tmp_path: Path) -> None:
    """A legacy device named like the service account: the files are refused and the old ones stay."""
    settings = load_settings(
        {"data_dir": str(tmp_path), "mqtt_url": f"mqtt://{INGEST_USER}:{INGEST_PASSWORD}@127.0.0.1:1"},
        environ={},
    )
    out = tmp_path / "broker"
    write_broker_files(db_session, settings, out)
    before = (out / "passwords").read_text()
    _legacy_device(db_session, "zfjl-ingest")
    with pytest.raises(BrokerAccountError, match="zfjl-ingest"):
        write_broker_files(db_session, settings, out)
    assert (out / "passwords").read_text() == before
    assert (out / "passwords").read_text().count("zfjl-ingest:") == 1


def test_finding8_generator_refuses_a_device_named_like_a_custom_service_account(
    db_session: Session, tmp_path: Path
) -> None:
    """With ZFJL_MQTT_URL naming ``ingest``, a device ``ingest`` would duplicate it: refused."""
    settings = load_settings(
        {"data_dir": str(tmp_path), "mqtt_url": "mqtt://ingest:pw-123@127.0.0.1:1"}, environ={}
    )
    register_device(db_session, "ingest", raw_public_key(Ed25519PrivateKey.generate()), actor="t")
    issue_credential(db_session, "ingest", actor="t")
    db_session.commit()
    with pytest.raises(BrokerAccountError, match="twice"):
        write_broker_files(db_session, settings, tmp_path / "broker")


@pytest.mark.mosquitto
def test_finding8_allowlisted_recorder_cannot_lock_out_the_ingest_account(
    client: FlaskClient, auth: dict[str, str], app: Flask, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """The takeover: provisioned as zfjl-ingest via an allow-listed serial, then the files are generated.

    Before the fix Mosquitto took the device's (last) ``zfjl-ingest`` line: the device read every upload
    and the real server was refused. Now the request is refused and the server keeps its login.
    """
    client.post("/api/v1/fleet/allowlist", headers=auth, json={"serials": ["SN-1"]})
    answer = client.post(
        "/provisioning/v1/requests", json={"device_id": "zfjl-ingest", "public_key": _key(), "serial": "SN-1"}
    )
    stolen_password = (answer.get_json() or {}).get("mqtt_password") or "none"
    settings = load_settings(
        {"data_dir": str(tmp_path), "mqtt_url": f"mqtt://{INGEST_USER}:{INGEST_PASSWORD}@127.0.0.1:1"},
        environ={},
    )
    with session_scope(app) as session:
        pw, acl = write_broker_files(session, settings, tmp_path / "broker")
    mosquitto_broker.password_file, mosquitto_broker.acl_file = pw, acl
    mosquitto_broker.restart()
    assert _connects(mosquitto_broker, INGEST_USER, INGEST_PASSWORD)
    assert not _connects(mosquitto_broker, INGEST_USER, stolen_password)


def test_finding8_no_broker_password_in_server_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mosquitto_broker: MosquittoBroker
) -> None:
    """ZFJL_MQTT_URL's password and the embedded service password never appear in a log line."""
    from server.runner import ServerRunner

    secret = "TopSecret-ingest-pw-4711"
    caplog.set_level(logging.DEBUG)
    external = ServerRunner(
        {
            "data_dir": str(tmp_path / "ext"),
            "http_port": 0,
            "mqtt_url": f"mqtt://zfjl-ingest:{secret}@{mosquitto_broker.host}:{mosquitto_broker.port}",
            "database_url": f"postgresql://zfjl:{secret}@127.0.0.1:1/none",
        }
    )
    # safe_dict is logged before anything connects; the database is unreachable on purpose.
    with pytest.raises(Exception):  # noqa: B017 - any failure to reach the fake database is fine
        external.start()
    embedded = ServerRunner({"data_dir": str(tmp_path / "emb"), "http_port": 0}, embedded_mqtt_port=0)
    embedded.start()
    try:
        assert embedded.service_login is not None
        service_password = embedded.service_login[1]
        assert service_password in embedded.ingest_url
        assert embedded.mqtt_url == embedded.broker.url  # type: ignore[union-attr]
    finally:
        embedded.stop()
    assert "settings:" in caplog.text and "zfjl-ingest:***@" in caplog.text
    assert secret not in caplog.text
    assert service_password not in caplog.text
    mode = (tmp_path / "emb" / "mqtt-service-password").stat().st_mode & 0o777
    assert mode == 0o600


def test_finding8_a_refused_file_generation_is_no_500_and_keeps_the_old_files(
    client: FlaskClient, auth: dict[str, str], app: Flask, tmp_path: Path
) -> None:
    """A legacy reserved device in the registry: provisioning still answers 201, the old files stay."""
    import dataclasses

    out = tmp_path / "acl-dir"
    settings = app.extensions["zfjl.settings"]
    app.extensions["zfjl.settings"] = dataclasses.replace(settings, broker_acl_dir=str(out))
    made = client.post(
        "/api/v1/fleet/provision", headers=auth, json={"device_id": "rec-1", "public_key": _key()}
    )
    assert made.status_code == 201
    before = (out / "passwords").read_text()
    with session_scope(app) as session:
        _legacy_device(session, "zfjl-legacy")
    again = client.post(
        "/api/v1/fleet/provision", headers=auth, json={"device_id": "rec-2", "public_key": _key()}
    )
    assert again.status_code == 201, again.get_json()
    assert (out / "passwords").read_text() == before
    from server.cli import main as server_main

    code = server_main(
        ["--database-url", settings.database_url, "broker-acl", "--out", str(tmp_path / "cli")]
    )
    assert code == 1
    assert not (tmp_path / "cli" / "passwords").exists()
