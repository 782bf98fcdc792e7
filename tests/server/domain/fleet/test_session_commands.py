"""JL-16: a session can start on arrival from the backend (dispatch) and end the same way."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from edge_agent.keys import public_key_raw
from protocol.errors import RemoteProtocolError
from protocol.fleet import BOOKMARK_TTL, Command, CommandKind, CommandState, decode, encode
from protocol.session import SessionEventKind
from server.domain.errors import Invalid
from server.domain.fleet import commands
from server.domain.fleet.devices import register_device
from tests.conftest import raw_public_key
from tests.server.domain.fleet.test_bookmark import FakeClient, agent_with_sessions


def _command(kind: CommandKind, command_id: str, **params: Any) -> Command:
    return Command(
        device_id="rec-1", command_id=command_id, kind=kind, expires_at="2999-01-01T00:00:00Z", params=params
    )


def test_session_commands_round_trip_and_refuse_bad_params() -> None:
    start = _command(CommandKind.SESSION_START, "a" * 32, officer_id="AH-0001", case_id="C-7")
    assert decode(*encode(start)) == start
    with pytest.raises(RemoteProtocolError, match="unknown session_start parameter"):
        _command(CommandKind.SESSION_START, "b" * 32, volume=3)
    with pytest.raises(RemoteProtocolError, match="note"):
        _command(CommandKind.SESSION_END, "c" * 32, note="x" * 501)


def test_jl16_backend_starts_and_ends_a_session_with_signed_events(tmp_path: Path) -> None:
    client = FakeClient()
    sessions, handler, key = agent_with_sessions(tmp_path, client)
    handler.session_control = sessions.remote
    started = handler.run(_command(CommandKind.SESSION_START, "d" * 32, officer_id="AH-0001", case_id="C-7"))
    assert started.state is CommandState.SUCCEEDED and started.detail["session_id"] == sessions.session_id
    again = handler.run(_command(CommandKind.SESSION_START, "e" * 32))
    assert again.state is CommandState.REJECTED and again.detail["reason"] == "session_state"
    ended = handler.run(_command(CommandKind.SESSION_END, "f" * 32, note="执法结束"))
    assert ended.state is CommandState.SUCCEEDED and ended.detail == started.detail
    events = sessions.outbox.session_events()
    assert [e.event.kind for e in events] == [SessionEventKind.STARTED, SessionEventKind.ENDED]
    first = events[0]
    assert first.verify(public_key_raw(key))
    assert (first.event.officer_id, first.event.case_id) == ("AH-0001", "C-7")
    sessions.outbox.close()


def test_agent_without_sessions_rejects_session_commands(tmp_path: Path) -> None:
    sessions, handler, _ = agent_with_sessions(tmp_path, FakeClient())
    status = handler.run(_command(CommandKind.SESSION_START, "a" * 32))
    assert status.state is CommandState.REJECTED and "not supported" in status.detail["reason"]
    sessions.outbox.close()


def test_server_caps_the_lifetime_of_session_commands(db_session: Session) -> None:
    """A session start that arrives late would start recording at the wrong moment: it expires fast."""
    register_device(db_session, "rec-1", raw_public_key(Ed25519PrivateKey.generate()), actor="t")
    row = commands.create_command(
        db_session, "rec-1", "session_start", params={"officer_id": "AH-1"}, ttl=timedelta(days=1), actor="a"
    )
    assert row.expires_at - row.created_at == BOOKMARK_TTL
    with pytest.raises(Invalid):
        commands.create_command(db_session, "rec-1", "session_end", params={"volume": 1}, actor="a")
