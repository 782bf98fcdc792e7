"""Where an uplink goes: one table from the decoded message's type to the domain call that handles it.

:func:`decode_uplink` is the one place an uplink payload is decoded (with ``protocol/``); everything
after it works on typed messages. Each handler opens the transaction, calls one domain function, and
returns the answers to publish only after the commit (an ack never runs ahead of what it confirms).
Segment transfers (``init``/chunks/``fin``/``status``/``abort``) go to the transfer engine of
:class:`~server.ingest.service.IngestService`, which stages, commits and acks them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from protocol import case_events, fleet
from protocol.case_events import SignedCaseEvent
from protocol.fleet import CommandStatus, ReportedConfig
from protocol.messages import (
    DeviceHealth,
    FileAbort,
    FileChunk,
    FileFin,
    FileInit,
    FileStatusQuery,
    Presence,
    PresenceState,
    TransferAck,
    decode,
)
from protocol.session import EventAck, EventAckState, SignedSessionEvent
from protocol.topics import Topic, TopicKind, case_event_ack, session_ack
from server.domain.base import utcnow
from server.domain.cases.device_events import record_device_event
from server.domain.fleet import commands as command_service
from server.domain.fleet import telemetry
from server.domain.sessions.events import receive_event

if TYPE_CHECKING:
    from server.ingest.service import IngestService

__all__ = ["HANDLERS", "MALFORMED_CODES", "Outgoing", "Uplink", "decode_uplink", "handle_uplink"]

_LOG = logging.getLogger(__name__)

Outgoing = tuple[str, bytes]
Uplink = (
    FileInit
    | FileChunk
    | FileFin
    | FileStatusQuery
    | FileAbort
    | Presence
    | DeviceHealth
    | SignedSessionEvent
    | SignedCaseEvent
    | CommandStatus
    | ReportedConfig
)
Handler = Callable[["IngestService", Topic, Any], list[Outgoing]]

# The security-log code of an uplink that does not decode, by topic kind.
MALFORMED_CODES: Mapping[TopicKind, str] = {
    TopicKind.SESSION_EVENT: "bad_session_event",
    TopicKind.CASE_EVENT: "bad_case_event",
    TopicKind.COMMAND_STATUS: "bad_fleet_report",
    TopicKind.CONFIG_REPORTED: "bad_fleet_report",
}


def decode_uplink(topic: str, parsed: Topic, payload: bytes) -> Uplink:
    """Decode one uplink into its typed message; raises :class:`~protocol.errors.ProtocolError`."""
    if parsed.kind is TopicKind.SESSION_EVENT:
        return SignedSessionEvent.from_envelope(payload)
    if parsed.kind is TopicKind.CASE_EVENT:
        return case_events.decode(topic, payload)
    if parsed.kind in (TopicKind.COMMAND_STATUS, TopicKind.CONFIG_REPORTED):
        report = fleet.decode(topic, payload)
        if not isinstance(report, CommandStatus | ReportedConfig):
            raise TypeError(f"not an uplink kind: {type(report).__name__}")  # unreachable for these kinds
        return report
    # A chunk's SHA-256 is checked by staging, only where the running whole-file hash does not cover
    # its bytes (docs/protocol.md, "Chunk hashes"): each byte is hashed once on the server.
    msg = decode(topic, payload, check_chunk_hash=False)
    if isinstance(msg, TransferAck):
        raise TypeError("a transfer ack is a downlink")  # unreachable: downlink kinds never get here
    return msg


def refuse_malformed(ctx: IngestService, parsed: Topic, code: str, message: str) -> list[Outgoing]:
    """An uplink that does not decode: the security log, and a rejection where there is an id to answer."""
    if parsed.kind is TopicKind.SESSION_EVENT and parsed.event_id:
        ctx.note_rejection(code, message, parsed.device_id, parsed.event_id)
        ack = EventAck(
            device_id=parsed.device_id,
            event_id=parsed.event_id,
            state=EventAckState.REJECTED,
            code=code,
            message=message[:500],
        )
        return [(session_ack(parsed.device_id, parsed.event_id), ack.to_payload())]
    # Unsigned or malformed case events and fleet reports have no id to answer on: the security log only.
    _LOG.warning("ingest: %s from %s refused: %s", parsed.kind.value, parsed.device_id, message)
    ctx.note_rejection(code, f"{_WHAT[parsed.kind]} refused: {message}", parsed.device_id, None)
    return []


_WHAT = {
    TopicKind.CASE_EVENT: "case event",
    TopicKind.COMMAND_STATUS: "command status",
    TopicKind.CONFIG_REPORTED: "reported config",
}


# -- handlers ---------------------------------------------------------------------------------


def on_transfer(ctx: IngestService, parsed: Topic, msg: Any) -> list[Outgoing]:
    """A segment transfer message: the transfer engine stages, commits and acks it."""
    return ctx.transfer(msg)


def on_presence(ctx: IngestService, parsed: Topic, msg: Presence) -> list[Outgoing]:
    """Online/offline: keep the latest presence; on ``online``, re-send desired config and queued commands."""
    if ctx.presence_repeated(msg):
        return []
    if ctx.device(msg.device_id) is None:
        ctx.count_dropped("unknown_device_presence")
        return []
    received = utcnow()
    _with_insert_retry(ctx, lambda session: telemetry.record_presence(session, msg, received=received))
    if msg.state is not PresenceState.ONLINE:
        return []
    with ctx.session() as session:
        publications = command_service.on_presence(session, msg.device_id)
    return [(topic, payload) for topic, payload, _retain in publications]


def on_health(ctx: IngestService, parsed: Topic, msg: DeviceHealth) -> list[Outgoing]:
    """A health sample, and the signed chain head it carries (a forged head goes to the security log)."""
    device = ctx.device(msg.device_id)
    if device is None:
        ctx.count_dropped("unknown_device_health")
        return []
    head = msg.chain_head
    if head is not None:
        if head.verify(device.public_key):
            now = utcnow()
            _with_insert_retry(ctx, lambda session: telemetry.record_chain_head(session, head, now=now))
        else:
            ctx.note_rejection(
                "bad_chain_head",
                f"chain head {head.sequence} in health does not verify with the device's key",
                head.device_id,
                None,
            )
    received = utcnow()
    with ctx.session() as session:
        telemetry.record_health(session, msg, received=received)
    return []


def on_session_event(ctx: IngestService, parsed: Topic, signed: SignedSessionEvent) -> list[Outgoing]:
    """Store one signed session event (JL-16) and ack it after the commit; refusals to the security log."""
    device_id, event_id = parsed.device_id, parsed.event_id or ""
    device = ctx.device(device_id)
    with ctx.session() as session:
        outcome = receive_event(
            session,
            device_id=device_id,
            event_id=event_id,
            signed=signed,
            device_key=None if device is None else device.public_key,
            device_status=None if device is None else device.status,
        )
    # The commit is done: only now may the device forget the event (stored/duplicate).
    for code, message, rejected_id, text in outcome.rejections:
        _LOG.warning("ingest: session event %s/%s: %s (%s)", device_id, rejected_id, code, message)
        ctx.note_rejection(code, message, device_id, rejected_id, text)
    return [(session_ack(device_id, event_id), outcome.ack.to_payload())]


def on_case_event(ctx: IngestService, parsed: Topic, signed: SignedCaseEvent) -> list[Outgoing]:
    """Store one signed case event (JL-2, JL-8) and ack it after the commit; refusals to the security log."""
    device_id, event_id = parsed.device_id, signed.report.event_id
    # The device row is read in the same transaction, not from the cache: a device revoked a moment ago
    # must not write into a case record, which is append-only.
    with ctx.session() as session:
        outcome = record_device_event(session, device_id, signed)
    if outcome.refusal is not None:
        code, message = outcome.refusal
        _LOG.warning("ingest: case event %s/%s refused: %s (%s)", device_id, event_id, code, message)
        ctx.note_rejection(code, message, device_id, event_id, signed.event_text)
    return [(case_event_ack(device_id, event_id), outcome.ack.to_payload())]


def on_fleet_report(ctx: IngestService, parsed: Topic, msg: CommandStatus | ReportedConfig) -> list[Outgoing]:
    """A command's status or the reported configuration: update the command or the shadow; no answer."""
    with ctx.session() as session:
        result = command_service.apply_uplink(session, msg)
        rotated = command_service.credentials_rotated(result)
    if rotated:
        # The device's new credential is committed: regenerate the broker's files and reload it.
        ctx.sync_broker()
    return []


HANDLERS: Mapping[type, Handler] = {
    FileInit: on_transfer,
    FileChunk: on_transfer,
    FileFin: on_transfer,
    FileStatusQuery: on_transfer,
    FileAbort: on_transfer,
    Presence: on_presence,
    DeviceHealth: on_health,
    SignedSessionEvent: on_session_event,
    SignedCaseEvent: on_case_event,
    CommandStatus: on_fleet_report,
    ReportedConfig: on_fleet_report,
}


def handle_uplink(ctx: IngestService, parsed: Topic, msg: Uplink) -> list[Outgoing]:
    """Hand a decoded uplink to its handler."""
    return HANDLERS[type(msg)](ctx, parsed, msg)


def _with_insert_retry(ctx: IngestService, write: Callable[[Any], None]) -> None:
    """Run ``write`` in its own transaction, once more if two workers inserted the same first row at once."""
    for attempt in range(2):
        try:
            with ctx.session() as session:
                write(session)
            return
        except IntegrityError:
            if attempt:
                raise  # the retry sees the other worker's row and updates it
