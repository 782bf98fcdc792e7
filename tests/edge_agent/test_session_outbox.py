"""Session events in the outbox: signed, numbered, append-only, resent until acknowledged (JL-16)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.keys import generate_private_key, public_key_raw
from edge_agent.outbox import Outbox
from protocol.session import SessionEvent, SessionEventKind


def _builder(kind: SessionEventKind, event_id: str, **fields: object):  # type: ignore[no-untyped-def]
    def build(seq: int) -> SessionEvent:
        return SessionEvent(
            event_id=event_id,
            device_id="cam-1",
            session_id="s-1",
            kind=kind,
            at=datetime.now(UTC),
            mono_ns=1,
            seq=seq,
            **fields,  # type: ignore[arg-type]
        )

    return build


def test_jl16_session_events_are_signed_numbered_and_append_only(tmp_path: Path) -> None:
    """seq counts from 0; rows cannot be deleted or their signed facts changed; acks are recorded once."""
    key = generate_private_key()
    outbox = Outbox(tmp_path / "o.sqlite3")
    first = outbox.add_session_event(_builder(SessionEventKind.STARTED, "e1"), key)
    second = outbox.add_session_event(_builder(SessionEventKind.BOOKMARK, "e2", bookmark_type="items"), key)
    assert (first.event.seq, second.event.seq) == (0, 1)
    assert first.verify(public_key_raw(key))
    assert outbox.open_session_id() == "s-1"
    assert [s.event.event_id for s in outbox.unacked_session_events()] == ["e1", "e2"]
    assert outbox.mark_session_event_acked("e1", "stored")
    assert not outbox.mark_session_event_acked("e1", "duplicate")
    assert [s.event.event_id for s in outbox.unacked_session_events()] == ["e2"]
    conn = sqlite3.connect(tmp_path / "o.sqlite3")
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM session_events")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        conn.execute("UPDATE session_events SET event_text='{}'")
    conn.close()
    outbox.add_session_event(_builder(SessionEventKind.ENDED, "e3"), key)
    assert outbox.open_session_id() is None
    outbox.close()
