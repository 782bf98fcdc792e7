"""The ``bookmark`` command (JL-8(1), JL-15): protocol, server validation and the agent handler.

The path from the "出示证件" button over Mosquitto is in
tests/server/domain/people/test_credential_bookmark.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from edge_agent.commands import CommandHandler
from edge_agent.config import AgentConfig
from edge_agent.keys import generate_private_key, public_key_raw
from edge_agent.outbox import Outbox
from edge_agent.prompts import MemoryPrompter
from edge_agent.session import SessionController
from protocol import fleet
from protocol.errors import RemoteProtocolError
from protocol.fleet import BOOKMARK_TTL, Command, CommandKind, CommandState
from protocol.session import SessionEventKind
from server.domain.errors import Invalid
from server.domain.fleet import commands
from server.domain.fleet.devices import register_device
from tests.conftest import raw_public_key

DEVICE = "rec-bm"


def _bookmark_command(command_id: str = "c" * 32, expires_at: str = "2999-01-01T00:00:00Z") -> Command:
    return Command(
        device_id=DEVICE,
        command_id=command_id,
        kind=CommandKind.BOOKMARK,
        expires_at=expires_at,
        issued_at="2026-03-02T09:00:00Z",
        params={"bookmark_type": "credential_shown", "note": "出示执法证件 AH-0001", "case_id": 7},
    )


def test_bookmark_command_exact_bytes_and_round_trip() -> None:
    """Sorted compact UTF-8 JSON on down/cmd/{c}; decode gives the same message back."""
    cmd = _bookmark_command("c1")
    topic, payload = fleet.encode(cmd)
    assert topic == f"zfjl/v1/{DEVICE}/down/cmd/c1"
    assert (
        payload
        == (
            '{"expires_at":"2999-01-01T00:00:00Z","issued_at":"2026-03-02T09:00:00Z","kind":"bookmark",'
            '"params":{"bookmark_type":"credential_shown","case_id":7,"note":"出示执法证件 AH-0001"}}'
        ).encode()
    )
    assert fleet.decode(topic, payload) == cmd
    assert timedelta(minutes=2) == BOOKMARK_TTL


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"bookmark_type": "selfie"},
        {"bookmark_type": "credential_shown", "note": "x" * 501},
        {"bookmark_type": "credential_shown", "case_id": "7"},
        {"bookmark_type": "credential_shown", "case_id": True},
        {"bookmark_type": "credential_shown", "colour": "red"},
    ],
)
def test_invalid_bookmark_params_are_refused_when_built(params: dict[str, Any]) -> None:
    """Unknown types, long notes, bad case ids and unknown keys never become a command."""
    with pytest.raises(RemoteProtocolError):
        Command(device_id=DEVICE, command_id="c1", kind=CommandKind.BOOKMARK, expires_at="x", params=params)


def test_server_validates_bookmark_params_and_caps_its_ttl(db_session: Session) -> None:
    """create_command refuses bad parameters; a bookmark never lives longer than BOOKMARK_TTL."""
    register_device(db_session, DEVICE, raw_public_key(Ed25519PrivateKey.generate()), actor="t")
    with pytest.raises(Invalid):
        commands.create_command(db_session, DEVICE, "bookmark", params={"bookmark_type": "x"}, actor="a")
    row = commands.create_command(
        db_session, DEVICE, "bookmark", params={"bookmark_type": "scene"}, ttl=timedelta(days=1), actor="a"
    )
    assert row.expires_at - row.created_at == BOOKMARK_TTL


class FakeClient:
    """Records publishes; stands in for paho at the outermost edge."""

    def __init__(self) -> None:
        self.published: list[fleet.FleetMessage] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append(fleet.decode(topic, payload))


def agent_with_sessions(
    tmp_path: Path, client: Any, device_id: str = DEVICE, ingest_public_keys: tuple[str, ...] = ()
) -> tuple[SessionController, CommandHandler, Ed25519PrivateKey]:
    """A session controller (no link) and a command handler wired to its bookmark, as edge_agent/app.py.

    ``ingest_public_keys``: the server keys the handler trusts for commands that arrive over MQTT.
    """
    key = generate_private_key()
    config = AgentConfig(
        device_id=device_id,
        private_key_file=tmp_path / "k.pem",
        data_dir=tmp_path / "data",
        mqtt_url="mqtt://127.0.0.1:1",
        ingest_public_keys=ingest_public_keys,
    )
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    sessions = SessionController(config, outbox, key, MemoryPrompter())
    handler = CommandHandler(config, client, state_dir=config.data_dir, bookmark=sessions.bookmark)
    return sessions, handler, key


def _bookmarks(sessions: SessionController) -> list[Any]:
    return [s for s in sessions.outbox.session_events() if s.event.kind is SessionEventKind.BOOKMARK]


def test_agent_bookmarks_into_the_open_session_and_rejects_without_one(tmp_path: Path) -> None:
    """JL-15: a signed BOOKMARK event in the outbox, its id in the status; no session -> no_open_session."""
    client = FakeClient()
    sessions, handler, key = agent_with_sessions(tmp_path, client)

    refused = handler.run(_bookmark_command("c" * 32))
    assert refused.state is CommandState.REJECTED and refused.detail["reason"] == "no_open_session"
    assert sessions.outbox.session_events() == []

    sessions.begin(officer_id="AH-0001")
    done = handler.run(_bookmark_command("d" * 32))
    assert done.state is CommandState.SUCCEEDED
    signed = _bookmarks(sessions)
    assert len(signed) == 1 and signed[0].verify(public_key_raw(key))
    event = signed[0].event
    assert (event.bookmark_type, event.note) == ("credential_shown", "出示执法证件 AH-0001")
    assert done.detail == {"event_id": event.event_id, "bookmark_type": "credential_shown"}
    # Re-sent: answered with the stored outcome, not bookmarked twice.
    assert handler.run(_bookmark_command("d" * 32)).detail == done.detail
    assert len(_bookmarks(sessions)) == 1

    late = handler.run(_bookmark_command("e" * 32, expires_at="2000-01-01T00:00:00Z"))
    assert late.state is CommandState.REJECTED and late.detail == {"reason": "expired"}
    assert len(_bookmarks(sessions)) == 1
    sessions.outbox.close()


def test_agent_without_sessions_rejects_bookmark_as_unsupported(tmp_path: Path) -> None:
    """An agent that was not given the session controller says so instead of pretending."""
    config = AgentConfig(
        device_id=DEVICE, private_key_file=tmp_path / "k.pem", data_dir=tmp_path / "d", mqtt_url="mqtt://h:1"
    )
    handler = CommandHandler(config, FakeClient(), state_dir=config.data_dir)  # type: ignore[arg-type]
    status = handler.run(_bookmark_command())
    assert status.state is CommandState.REJECTED and "not supported" in status.detail["reason"]
