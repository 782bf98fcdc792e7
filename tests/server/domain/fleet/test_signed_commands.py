"""Commands and desired configuration are signed like acks: a forged ``session_end`` or config is ignored.

Anyone who can publish on a device's ``down/`` tree could otherwise end an officer's JL-16 session,
shorten its segments or rotate its broker password. The recorder runs only what the server's pinned
ingest key signed over that very topic (protocol.downlink).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands import CommandHandler
from edge_agent.config import AgentConfig
from protocol import fleet, topics
from protocol.downlink import seal
from protocol.fleet import Command, CommandKind, DesiredConfig
from tests.edge_agent.server_stub import INGEST_KEY, INGEST_PUBLIC_KEYS

DEVICE = "rec-1"


class FakeClient:
    """Records what the handler publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append((topic, payload))


class Message:
    """A paho message stand-in."""

    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic, self.payload = topic, payload


def _handler(tmp_path: Path, ended: list[str]) -> tuple[CommandHandler, FakeClient]:
    config = AgentConfig(
        device_id=DEVICE,
        private_key_file=tmp_path / "k.pem",
        data_dir=tmp_path / "data",
        mqtt_url="mqtt://127.0.0.1:1",
        ingest_public_keys=INGEST_PUBLIC_KEYS,
    )
    client = FakeClient()

    def session_control(action: str, params: dict[str, str]) -> str:
        ended.append(action)
        return "sess-1"

    handler = CommandHandler(
        config,
        client,  # type: ignore[arg-type]
        state_dir=config.data_dir,
        session_control=session_control,
        on_config=lambda version, settings: "",
    )
    return handler, client


def _end_session(device_id: str, command_id: str) -> tuple[str, bytes]:
    return fleet.encode(
        Command(
            device_id=device_id,
            command_id=command_id,
            kind=CommandKind.SESSION_END,
            expires_at="2999-01-01T00:00:00Z",
            params={"note": ""},
        )
    )


def test_forged_session_end_commands_are_not_run(tmp_path: Path) -> None:
    """JL-16: unsigned, attacker-signed and replayed-from-another-device commands end nothing."""
    ended: list[str] = []
    handler, client = _handler(tmp_path, ended)
    topic, body = _end_session(DEVICE, "c1")
    handler._on_command(None, None, Message(topic, body))  # type: ignore[arg-type]
    handler._on_command(None, None, Message(topic, seal(topic, body, Ed25519PrivateKey.generate())))  # type: ignore[arg-type]
    other_topic, other_body = _end_session("rec-2", "c1")
    handler._on_command(None, None, Message(topic, seal(other_topic, other_body, INGEST_KEY)))  # type: ignore[arg-type]
    assert ended == [] and client.published == [] and handler.untrusted == 3
    handler._on_command(None, None, Message(topic, seal(topic, body, INGEST_KEY)))  # type: ignore[arg-type]
    assert ended == ["end"]
    assert {t for t, _ in client.published} == {topics.command_status(DEVICE, "c1")}  # in progress, done


def test_forged_desired_configuration_is_not_applied(tmp_path: Path) -> None:
    """A configuration only the server's key signed is applied; anything else changes nothing."""
    handler, _ = _handler(tmp_path, [])
    topic, body = fleet.encode(DesiredConfig(device_id=DEVICE, version=5, settings={"segment_seconds": 10}))
    handler._on_config(None, None, Message(topic, body))  # type: ignore[arg-type]
    handler._on_config(None, None, Message(topic, seal(topic, body, Ed25519PrivateKey.generate())))  # type: ignore[arg-type]
    assert handler.applied == {"version": 0, "settings": {}} and handler.untrusted == 2
    handler._on_config(None, None, Message(topic, seal(topic, body, INGEST_KEY)))  # type: ignore[arg-type]
    assert handler.applied == {"version": 5, "settings": {"segment_seconds": 10}}
