"""Provisioning answers pin the ingest key and name the broker devices must use (finding 1, README step 2)."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.app import create_app
from server.infra.config import ConfigError, load_settings
from server.infra.db import get_engine, run_migrations
from server.infra.ingest_key import IngestSigner, note_embedded_broker
from tests.conftest import TEST_JWT_SECRET, pinned_ingest_keys


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_token_and_allowlist_provisioning_return_the_ingest_key_and_the_embedded_brokers_actual_port(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """Both ways in name the pinned key(s) and, with the embedded broker up, its real port on our host."""
    note_embedded_broker(app, "mqtt://127.0.0.1:41883")  # what ServerRunner records after starting it
    keys = list(pinned_ingest_keys(app))
    token = client.post(
        "/api/v1/fleet/provision", headers=auth, json={"device_id": "rec-1", "public_key": _key()}
    ).get_json()
    assert token["ingest_public_keys"] == keys and len(keys) == 1
    assert token["mqtt_urls"] == ["mqtt://localhost:41883"] and token["mqtt_url"] == "mqtt://localhost:41883"
    client.post("/api/v1/fleet/allowlist", headers=auth, json={"serials": ["SN-1"]})
    allowed = client.post(
        "/provisioning/v1/requests",
        json={"device_id": "rec-a", "public_key": _key(), "serial": "SN-1"},
        base_url="http://10.0.0.5:8080",
    )
    assert allowed.status_code == 201
    assert allowed.get_json()["ingest_public_keys"] == keys
    assert allowed.get_json()["mqtt_urls"] == ["mqtt://10.0.0.5:41883"]


@pytest.fixture
def configured_app(tmp_path: Path) -> Iterator[Flask]:
    """An app with an external broker (with the ingest login in its URL), advertised URLs and a next key."""
    url = f"sqlite:///{tmp_path / 'z.db'}"
    app = create_app(
        {
            "data_dir": str(tmp_path / "var"),
            "database_url": url,
            "jwt_secret": TEST_JWT_SECRET,
            "mqtt_url": "mqtt://zfjl-ingest:s3cret@broker.internal:1883",
            "ingest_extra_public_keys": "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=",
            "TESTING": True,
        }
    )
    run_migrations(url)
    yield app
    get_engine(app).dispose()


def test_external_broker_is_advertised_without_its_login_and_the_next_key_is_pinned_too(
    configured_app: Flask,
) -> None:
    """The ingest password never reaches a device; rotation: the extra public key is pinned after ours."""
    from server.infra.ingest_key import provisioning_trust

    with configured_app.test_request_context(base_url="http://zfjl.example:8080"):
        trust = provisioning_trust(configured_app, "zfjl.example")
    assert trust["mqtt_urls"] == ["mqtt://broker.internal:1883"]
    assert "s3cret" not in repr(trust)
    signer = IngestSigner.from_settings(configured_app.extensions["zfjl.settings"])
    assert trust["ingest_public_keys"] == [
        base64.b64encode(signer.public_key_raw).decode(),
        "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=",
    ]


def test_ingest_key_is_generated_once_0600_and_kept_across_restarts(tmp_path: Path) -> None:
    """Like the JWT secret: one key in the data folder, mode 0600, the same on every start."""
    first = load_settings({"data_dir": str(tmp_path)}, environ={})
    second = load_settings({"data_dir": str(tmp_path)}, environ={})
    assert first.ingest_key == second.ingest_key
    assert stat.S_IMODE((tmp_path / "ingest-key").stat().st_mode) == 0o600
    assert first.safe_dict()["ingest_key"] == "***"
    given = base64.b64encode(bytes(range(32))).decode()
    assert load_settings({"data_dir": str(tmp_path), "ingest_key": given}, environ={}).ingest_key == given


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("ingest_key", "not-base64!"),
        ("ingest_key", base64.b64encode(b"short").decode()),
        ("ingest_extra_public_keys", "AAAA"),
        ("mqtt_advertised_urls", "http://broker:1883"),
    ],
)
def test_bad_ingest_settings_stop_the_server_with_a_message(tmp_path: Path, setting: str, value: str) -> None:
    """A wrong key or URL is refused at start-up, in Chinese and English."""
    with pytest.raises(ConfigError, match="/"):
        load_settings({"data_dir": str(tmp_path), setting: value}, environ={})


def test_advertised_urls_setting_wins(tmp_path: Path) -> None:
    """ZFJL_MQTT_ADVERTISED_URLS is what devices are told, in order."""
    from server.infra.ingest_key import advertised_broker_urls

    settings = load_settings(
        {"data_dir": str(tmp_path), "mqtt_advertised_urls": "mqtts://a.example:8883, mqtt://b.example:1883"},
        environ={},
    )
    assert advertised_broker_urls(settings, "mqtt://127.0.0.1:1883", "h") == [
        "mqtts://a.example:8883",
        "mqtt://b.example:1883",
    ]


def test_ingest_key_command_prints_what_provisioning_pins(
    app: Flask, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`zfjl-server ingest-key` shows the same public key(s) devices are given; `--new` makes a usable key."""
    import json

    from server.cli import main

    monkeypatch.setenv("ZFJL_DATA_DIR", str(app.extensions["zfjl.settings"].data_dir))
    assert main(["ingest-key"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ingest_public_keys"] == list(pinned_ingest_keys(app))
    assert main(["ingest-key", "--new"]) == 0
    new = json.loads(capsys.readouterr().out)
    settings = load_settings(
        {"data_dir": str(app.extensions["zfjl.settings"].data_dir), "ingest_key": new["private_key"]},
        environ={},
    )
    assert IngestSigner.from_settings(settings).public_keys() == [new["public_key"]]


def test_provision_refuses_an_answer_that_pins_no_key() -> None:
    """An older or impostor server that names no ingest key gets no agent.toml that could trust anyone."""
    from firmware_tools.provision import ProvisionError, _advertised_broker, _advertised_brokers, _ingest_keys

    with pytest.raises(ProvisionError, match="ingest public key"):
        _ingest_keys({"mqtt_username": "rec-1", "mqtt_password": "x"})
    with pytest.raises(ProvisionError, match="invalid ingest public key"):
        _ingest_keys({"ingest_public_keys": ["AAAA"]})
    assert _advertised_broker({"mqtt_urls": ["mqtt://b:41883"]}, "http://s:8080") == "mqtt://b:41883"
    assert _advertised_broker({}, "http://s:8080") == "mqtt://s:1883"
    # Several advertised brokers become the agent's failover list (one scheme: the first one's).
    answer: dict[str, object] = {
        "mqtt_urls": ["mqtt://n0:1883", "mqtt://n1:1883", "mqtts://n2", "mqtt://n0:1883"]
    }
    assert _advertised_brokers(answer, "http://s:8080") == ["mqtt://n0:1883", "mqtt://n1:1883"]
    assert _advertised_brokers({}, "http://s:8080") == ["mqtt://s:1883"]
