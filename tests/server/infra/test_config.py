"""Settings: defaults, env, overrides, validation, generated JWT secret."""

from __future__ import annotations

import stat
from dataclasses import fields
from pathlib import Path

import pytest

from server.app import create_app
from server.infra.config import ConfigError, Settings, load_settings


def test_defaults_under_data_dir(tmp_path: Path) -> None:
    s = load_settings({"data_dir": str(tmp_path)}, environ={})
    assert s.database_url == f"sqlite:///{tmp_path / 'zfjl.db'}"
    assert s.object_store == "local"
    assert s.object_dir == tmp_path / "objects"
    assert s.staging_dir == tmp_path / "staging"
    assert s.retention_days == 184
    assert s.http_host == "127.0.0.1" and s.http_port == 8080
    assert s.max_segment_bytes == 2 * 1024**3 and s.max_chunk_bytes == 1024**2
    assert s.mqtt_share_group == "zfjl-ingest" and s.mqtt_url == ""


def test_env_then_overrides(tmp_path: Path) -> None:
    env = {"ZFJL_DATA_DIR": str(tmp_path), "ZFJL_HTTP_PORT": "9000", "ZFJL_RETENTION_DAYS": "30"}
    s = load_settings({"ZFJL_HTTP_PORT": 9001}, environ=env)
    assert s.http_port == 9001
    assert s.retention_days == 30


@pytest.mark.parametrize(
    ("overrides", "env", "needle"),
    [
        ({"no_such_setting": 1}, {}, "unknown setting"),
        ({}, {"ZFJL_TYPO": "1", "ZFJL_REQUIRE_ALL": "1"}, "unknown environment variable ZFJL_TYPO"),
        ({"http_port": "eighty"}, {}, "ZFJL_HTTP_PORT must be an integer"),
        ({"http_port": 70000}, {}, "ZFJL_HTTP_PORT"),
        ({"object_store": "ftp"}, {}, "ZFJL_OBJECT_STORE must be one of"),
        ({"object_store": "s3"}, {}, "ZFJL_S3_ENDPOINT"),
        ({"database_url": "mysql://x"}, {}, "ZFJL_DATABASE_URL"),
        ({"jwt_secret": "short"}, {}, "at least 16"),
    ],
)
def test_invalid_refused(
    tmp_path: Path, overrides: dict[str, object], env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings({"data_dir": str(tmp_path), **overrides}, environ=env)


def test_generated_jwt_secret_is_private_and_stable(tmp_path: Path) -> None:
    first = load_settings({"data_dir": str(tmp_path)}, environ={})
    second = load_settings({"data_dir": str(tmp_path)}, environ={})
    assert first.jwt_secret == second.jwt_secret and len(first.jwt_secret) >= 32
    assert stat.S_IMODE((tmp_path / "jwt-secret").stat().st_mode) == 0o600


def test_describe_covers_every_field() -> None:
    described = {
        name
        for name, env, _default, help_text in Settings.describe()
        if env.startswith("ZFJL_") and help_text
    }
    assert described == {f.name for f in fields(Settings)}


def test_create_app_is_offline_and_frozen(tmp_path: Path) -> None:
    app = create_app({"data_dir": str(tmp_path), "object_store": "s3", "s3_endpoint": "http://127.0.0.1:9"})
    settings = app.extensions["zfjl.settings"]
    with pytest.raises(AttributeError):
        settings.http_port = 1
    assert not (tmp_path / "zfjl.db").exists()  # no migrations or connections at create time


def test_harness_variables_are_not_settings(tmp_path: Path) -> None:
    env = {"ZFJL_REQUIRE_ALL": "1", "ZFJL_TEST_POSTGRES_URL": "x", "ZFJL_AGENT_DEVICE_ID": "d"}
    assert load_settings({"data_dir": str(tmp_path)}, environ=env).http_port == 8080


def test_jl6_the_crypto_suite_is_checked_at_start_up(tmp_path: Path) -> None:
    assert load_settings({"data_dir": str(tmp_path)}, environ={}).crypto_suite == "sha256-ed25519"
    chosen = load_settings({"data_dir": str(tmp_path)}, environ={"ZFJL_CRYPTO_SUITE": "sm3-ed25519"})
    assert chosen.crypto_suite == "sm3-ed25519"
    with pytest.raises(
        ConfigError, match="ZFJL_CRYPTO_SUITE must be one of sha256-ed25519, sm3-ed25519, sm3-sm2"
    ):
        load_settings({"data_dir": str(tmp_path), "crypto_suite": "sm3-rsa"}, environ={})
    # The SM2 seal needs the optional gmssl (installed with the dev extras); here it is.
    assert load_settings({"data_dir": str(tmp_path), "crypto_suite": "sm3-sm2"}, environ={}).crypto_suite == (
        "sm3-sm2"
    )


def test_ingest_on_nats_takes_a_list_of_node_urls_and_never_shows_their_password(tmp_path: Path) -> None:
    """ZFJL_INGEST_NATS_URL: empty = MQTT ingest; else the cluster's nodes, whose logins stay secret."""
    base = {"data_dir": str(tmp_path), "mqtt_url": "mqtt://nats-1:1883"}
    assert load_settings(base, environ={}).ingest_nats_url == ""
    assert load_settings(base, environ={}).ingest_nats_queue == "zfjl-ingest"
    env = {"ZFJL_INGEST_NATS_URL": " nats://ingest:pw-1@nats-1:4222 ,nats://ingest:pw-1@nats-2:4222 "}
    settings = load_settings(base, environ=env)
    assert settings.ingest_nats_url == "nats://ingest:pw-1@nats-1:4222,nats://ingest:pw-1@nats-2:4222"
    shown = settings.safe_dict()["ingest_nats_url"]
    assert shown == "nats://ingest:***@nats-1:4222,nats://ingest:***@nats-2:4222"
    assert load_settings({**base, "ingest_nats_url": "tls://n1:4222"}, environ={}).ingest_nats_url


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"ingest_nats_url": "mqtt://ingest:pw-2@n1:1883"}, "nats://"),
        ({"ingest_nats_url": "nats://ingest:pw-2@n1:port"}, "nats://"),
        ({"ingest_nats_url": "nats://"}, "nats://"),
        ({"ingest_nats_url": "nats://ingest:pw-2@n1/subject"}, "nats://"),
        ({"ingest_nats_url": "nats://n1:4222,tls://n2:4222"}, "must not mix"),
        ({"ingest_nats_url": "nats://a:pw-2@n1:4222,nats://b:pw-2@n2:4222"}, "same login"),
        ({"ingest_nats_queue": "zfjl ingest"}, "ZFJL_INGEST_NATS_QUEUE"),
        ({"ingest_nats_queue": "zfjl.ingest"}, "ZFJL_INGEST_NATS_QUEUE"),
        ({"ingest_nats_url": "nats://n1:4222", "mqtt_url": ""}, "needs ZFJL_MQTT_URL"),
    ],
)
def test_invalid_ingest_on_nats_is_refused_without_its_password(
    tmp_path: Path, overrides: dict[str, object], needle: str
) -> None:
    base = {"data_dir": str(tmp_path), "mqtt_url": "mqtt://nats-1:1883"}
    with pytest.raises(ConfigError, match=needle) as refused:
        load_settings({**base, **overrides}, environ={})
    assert "pw-2" not in str(refused.value)
