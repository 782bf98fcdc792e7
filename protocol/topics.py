"""Every MQTT topic of protocol v1, built and parsed here and nowhere else.

Layout (``{d}`` is a device id, ``{f}`` a transfer's file id)::

    zfjl/v1/{d}/up/file/{f}/init                      device → server  signed manifest
    zfjl/v1/{d}/up/file/{f}/{offset}/{sha256}         device → server  chunk bytes
    zfjl/v1/{d}/up/file/{f}/fin/{size}/{sha256}       device → server  end of transfer
    zfjl/v1/{d}/up/file/{f}/abort                     device → server  give the transfer up
    zfjl/v1/{d}/up/file/{f}/status                    device → server  which ranges do you hold?
    zfjl/v1/{d}/up/presence                           device → server  retained online/offline (+ last will)
    zfjl/v1/{d}/up/health                             device → server  periodic health
    zfjl/v1/{d}/down/ack/{f}                          server → device  transfer acknowledgements
    zfjl/v1/{d}/up/session/{e}                        device → server  signed session event (JL-16)
    zfjl/v1/{d}/down/session-ack/{e}                  server → device  session event acknowledgement
    zfjl/v1/{d}/down/config                           server → device  retained desired configuration
    zfjl/v1/{d}/down/cmd/{c}                          server → device  one command (``{c}`` its id)
    zfjl/v1/{d}/up/cmd/{c}/status                     device → server  a command's progress
    zfjl/v1/{d}/up/config/reported                    device → server  the configuration applied
    zfjl/v1/{d}/up/event                              device → server  a signed case event (JL-2, JL-8)
    zfjl/v1/{d}/down/event-ack/{e}                    server → device  case event acknowledgement

On a NATS cluster the ingest workers read the same messages as core NATS subjects (nats-server's
MQTT listener maps each topic to a subject): :func:`topic_to_subject` and :func:`subject_to_topic` are
that mapping, exact both ways, and :func:`ingest_subject` is the workers' subscription.

The upload grammar mirrors EMQX's file transfer (``$file/{f}/...``) under our own prefix because EMQX
consumes ``$file/`` itself. Everything a device sends is under ``up/`` and everything it reads under
``down/``, so a broker ACL can give each device exactly its own two subtrees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from protocol.errors import LocalProtocolError, TopicError

__all__ = [
    "PREFIX",
    "VERSION",
    "Topic",
    "TopicKind",
    "ack",
    "case_event",
    "case_event_ack",
    "command",
    "command_status",
    "config_desired",
    "config_reported",
    "device_command_filter",
    "device_downlink_filter",
    "device_id_hint",
    "device_uplink_filter",
    "file_abort",
    "file_chunk",
    "file_fin",
    "file_init",
    "file_status",
    "fleet_downlink_filter",
    "health",
    "ingest_filter",
    "ingest_subject",
    "parse",
    "presence",
    "session_ack",
    "session_event",
    "subject_to_topic",
    "topic_to_subject",
    "valid_device_id",
    "valid_file_id",
]

PREFIX = "zfjl"
VERSION = "v1"
_ROOT = f"{PREFIX}/{VERSION}"

_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UINT = re.compile(r"0|[1-9][0-9]{0,15}")


class TopicKind(Enum):
    """What a topic carries."""

    FILE_INIT = "file_init"
    FILE_CHUNK = "file_chunk"
    FILE_FIN = "file_fin"
    FILE_ABORT = "file_abort"
    FILE_STATUS = "file_status"
    PRESENCE = "presence"
    HEALTH = "health"
    ACK = "ack"
    CONFIG_DESIRED = "config_desired"
    CONFIG_REPORTED = "config_reported"
    COMMAND = "command"
    COMMAND_STATUS = "command_status"
    CASE_EVENT = "case_event"
    CASE_EVENT_ACK = "case_event_ack"
    SESSION_EVENT = "session_event"
    SESSION_ACK = "session_ack"


@dataclass(frozen=True, kw_only=True)
class Topic:
    """A parsed topic: its kind and the values it names."""

    kind: TopicKind
    device_id: str
    file_id: str | None = None
    command_id: str | None = None
    event_id: str | None = None
    offset: int | None = None
    size: int | None = None
    sha256: str | None = None


def valid_device_id(device_id: str) -> bool:
    """Whether a device id may appear in a topic (1–64 of ``[A-Za-z0-9_-]``, no wildcards)."""
    return bool(_DEVICE_ID.fullmatch(device_id))


def valid_file_id(file_id: str) -> bool:
    """Whether a file id may appear in a topic."""
    return bool(_FILE_ID.fullmatch(file_id))


def _device(device_id: str) -> str:
    if not valid_device_id(device_id):
        raise LocalProtocolError(f"invalid device id {device_id!r}")
    return device_id


def _file(device_id: str, file_id: str) -> str:
    return f"{_ROOT}/{_device(device_id)}/up/file/{_id(file_id, 'file id')}"


def _id(value: str, what: str) -> str:
    """A file, event or command id checked for use as one topic level."""
    if not valid_file_id(value):
        raise LocalProtocolError(f"invalid {what} {value!r}")
    return value


def _uint(value: int, what: str) -> str:
    if value < 0 or value >= 10**16:
        raise LocalProtocolError(f"{what} out of range: {value}")
    return str(value)


def _sha(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise LocalProtocolError(f"not a lowercase sha256 hex digest: {value!r}")
    return value


def file_init(device_id: str, file_id: str) -> str:
    """Topic of a transfer's init message."""
    return f"{_file(device_id, file_id)}/init"


def file_chunk(device_id: str, file_id: str, offset: int, sha256: str) -> str:
    """Topic of one chunk: its byte offset and its own SHA-256."""
    return f"{_file(device_id, file_id)}/{_uint(offset, 'offset')}/{_sha(sha256)}"


def file_fin(device_id: str, file_id: str, size: int, sha256: str) -> str:
    """Topic that ends a transfer, naming the whole file's size and SHA-256."""
    return f"{_file(device_id, file_id)}/fin/{_uint(size, 'size')}/{_sha(sha256)}"


def file_abort(device_id: str, file_id: str) -> str:
    """Topic that abandons a transfer."""
    return f"{_file(device_id, file_id)}/abort"


def file_status(device_id: str, file_id: str) -> str:
    """Topic of a status query (which byte ranges does the server hold?)."""
    return f"{_file(device_id, file_id)}/status"


def presence(device_id: str) -> str:
    """Retained presence topic (also the last will's topic)."""
    return f"{_ROOT}/{_device(device_id)}/up/presence"


def health(device_id: str) -> str:
    """Periodic health topic."""
    return f"{_ROOT}/{_device(device_id)}/up/health"


def ack(device_id: str, file_id: str) -> str:
    """Topic on which the server acknowledges a transfer."""
    return f"{_ROOT}/{_device(device_id)}/down/ack/{_id(file_id, 'file id')}"


def session_event(device_id: str, event_id: str) -> str:
    """Topic of one signed session event (protocol.session)."""
    return f"{_ROOT}/{_device(device_id)}/up/session/{_id(event_id, 'event id')}"


def session_ack(device_id: str, event_id: str) -> str:
    """Topic on which the server acknowledges a session event."""
    return f"{_ROOT}/{_device(device_id)}/down/session-ack/{_id(event_id, 'event id')}"


def config_desired(device_id: str) -> str:
    """Retained topic of a device's desired configuration."""
    return f"{_ROOT}/{_device(device_id)}/down/config"


def config_reported(device_id: str) -> str:
    """Topic on which a device reports the configuration it applied."""
    return f"{_ROOT}/{_device(device_id)}/up/config/reported"


def command(device_id: str, command_id: str) -> str:
    """Topic of one command sent to a device."""
    return f"{_ROOT}/{_device(device_id)}/down/cmd/{_id(command_id, 'command id')}"


def command_status(device_id: str, command_id: str) -> str:
    """Topic on which a device reports a command's progress."""
    return f"{_ROOT}/{_device(device_id)}/up/cmd/{_id(command_id, 'command id')}/status"


def case_event(device_id: str) -> str:
    """Topic on which a recorder reports a case event (protocol.case_events)."""
    return f"{_ROOT}/{_device(device_id)}/up/event"


def case_event_ack(device_id: str, event_id: str) -> str:
    """Topic on which the server acknowledges a case event (protocol.case_events)."""
    return f"{_ROOT}/{_device(device_id)}/down/event-ack/{_id(event_id, 'event id')}"


def device_command_filter(device_id: str) -> str:
    """Every command topic of one device (what its command handler subscribes to)."""
    return f"{_ROOT}/{_device(device_id)}/down/cmd/+"


def fleet_downlink_filter() -> str:
    """Every device's downlink: what the server's service account may publish to."""
    return f"{_ROOT}/+/down/#"


def device_uplink_filter(device_id: str) -> str:
    """Everything one device may publish."""
    return f"{_ROOT}/{_device(device_id)}/up/#"


def device_downlink_filter(device_id: str) -> str:
    """Everything one device may subscribe to."""
    return f"{_ROOT}/{_device(device_id)}/down/#"


def ingest_filter(share_group: str | None = None) -> str:
    """What the server's ingest workers subscribe to; with a group, a shared subscription (MQTT 5 §4.8.2)."""
    flt = f"{_ROOT}/+/up/#"
    if share_group:
        if not _DEVICE_ID.fullmatch(share_group):
            raise LocalProtocolError(f"invalid share group {share_group!r}")
        return f"$share/{share_group}/{flt}"
    return flt


def ingest_subject() -> str:
    """The core NATS subject the ingest workers subscribe to on a NATS cluster: ``ingest_filter()``
    as nats-server maps it (``+`` is ``*``, ``#`` is ``>``), every device's uplink."""
    return f"{PREFIX}.{VERSION}.*.up.>"


# nats-server's MQTT mapping (server/mqtt.go, mqttToNATSSubjectConversion): each topic level is one
# subject token, an empty level is the token "/", and a "." inside a level is "//" (nats-server 2.10
# and later; 2.9 refuses an MQTT topic with a "."). Protocol v1's topics have neither, but the mapping
# is exact anyway, so a subject that no MQTT topic produces is refused instead of misread.
_EMPTY_LEVEL_TOKEN = "/"
_DOT_IN_TOKEN = "//"
_TOKEN = re.compile(r"(?:[^/.\s]|//)+|/")
_LEVEL_FORBIDDEN = re.compile(r"[+#\s\x00]")


def topic_to_subject(topic: str) -> str:
    """The NATS subject of an MQTT topic name (what nats-server delivers it on, and what reaches the
    topic's MQTT subscribers when published on NATS). A topic with wildcards, whitespace, a level
    that is a NATS wildcard (``*``, ``>``), or no level at all has none: that is our bug."""
    levels = topic.split("/")
    if topic in ("", "/") or _LEVEL_FORBIDDEN.search(topic) or any(lvl in ("*", ">") for lvl in levels):
        raise LocalProtocolError(f"no NATS subject for the topic {topic!r}")
    return ".".join(lvl.replace(".", _DOT_IN_TOKEN) if lvl else _EMPTY_LEVEL_TOKEN for lvl in levels)


def subject_to_topic(subject: str) -> str:
    """The MQTT topic name a NATS subject stands for, the inverse of :func:`topic_to_subject`; raise
    :class:`TopicError` for a subject no topic maps to (the publisher's fault, never a crash)."""
    tokens = subject.split(".")
    if not all(_TOKEN.fullmatch(token) for token in tokens):
        raise TopicError(f"not the subject of an MQTT topic: {subject[:300]!r}")
    topic = "/".join("" if t == _EMPTY_LEVEL_TOKEN else t.replace(_DOT_IN_TOKEN, ".") for t in tokens)
    try:
        exact = topic_to_subject(topic) == subject
    except LocalProtocolError:
        exact = False
    if not exact:
        raise TopicError(f"not the subject of an MQTT topic: {subject[:300]!r}")
    return topic


def _parse_uint(text: str, what: str, topic: str) -> int:
    if not _UINT.fullmatch(text):
        raise TopicError(f"bad {what} {text!r} in topic {topic!r}")
    return int(text)


def _parse_sha(text: str, topic: str) -> str:
    if not _SHA256.fullmatch(text):
        raise TopicError(f"bad sha256 {text!r} in topic {topic!r}")
    return text


def parse(topic: str) -> Topic:
    """Parse any protocol v1 topic; raise :class:`TopicError` for anything else."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != PREFIX:
        raise TopicError(f"not a zfjl topic: {topic!r}")
    if parts[1] != VERSION:
        raise TopicError(f"unsupported protocol version {parts[1]!r} in {topic!r}")
    device_id, direction, rest = parts[2], parts[3], parts[4:]
    if not valid_device_id(device_id):
        raise TopicError(f"bad device id {device_id!r} in {topic!r}")
    if direction == "down" and len(rest) == 2 and rest[0] == "ack" and valid_file_id(rest[1]):
        return Topic(kind=TopicKind.ACK, device_id=device_id, file_id=rest[1])
    if direction == "down" and len(rest) == 2 and rest[0] == "session-ack" and valid_file_id(rest[1]):
        return Topic(kind=TopicKind.SESSION_ACK, device_id=device_id, event_id=rest[1])
    if direction == "down" and len(rest) == 2 and rest[0] == "event-ack" and valid_file_id(rest[1]):
        return Topic(kind=TopicKind.CASE_EVENT_ACK, device_id=device_id, event_id=rest[1])
    if direction == "up" and len(rest) == 2 and rest[0] == "session" and valid_file_id(rest[1]):
        return Topic(kind=TopicKind.SESSION_EVENT, device_id=device_id, event_id=rest[1])
    if direction == "down" and rest == ["config"]:
        return Topic(kind=TopicKind.CONFIG_DESIRED, device_id=device_id)
    if direction == "down" and len(rest) == 2 and rest[0] == "cmd" and valid_file_id(rest[1]):
        return Topic(kind=TopicKind.COMMAND, device_id=device_id, command_id=rest[1])
    if direction != "up":
        raise TopicError(f"unknown topic {topic!r}")
    if rest == ["presence"]:
        return Topic(kind=TopicKind.PRESENCE, device_id=device_id)
    if rest == ["health"]:
        return Topic(kind=TopicKind.HEALTH, device_id=device_id)
    if rest == ["event"]:
        return Topic(kind=TopicKind.CASE_EVENT, device_id=device_id)
    if rest == ["config", "reported"]:
        return Topic(kind=TopicKind.CONFIG_REPORTED, device_id=device_id)
    if len(rest) == 3 and rest[0] == "cmd" and rest[2] == "status" and valid_file_id(rest[1]):
        return Topic(kind=TopicKind.COMMAND_STATUS, device_id=device_id, command_id=rest[1])
    if len(rest) < 3 or rest[0] != "file" or not valid_file_id(rest[1]):
        raise TopicError(f"unknown topic {topic!r}")
    file_id, tail = rest[1], rest[2:]
    simple = {"init": TopicKind.FILE_INIT, "abort": TopicKind.FILE_ABORT, "status": TopicKind.FILE_STATUS}
    if len(tail) == 1 and tail[0] in simple:
        return Topic(kind=simple[tail[0]], device_id=device_id, file_id=file_id)
    if len(tail) == 3 and tail[0] == "fin":
        return Topic(
            kind=TopicKind.FILE_FIN,
            device_id=device_id,
            file_id=file_id,
            size=_parse_uint(tail[1], "size", topic),
            sha256=_parse_sha(tail[2], topic),
        )
    if len(tail) == 2:
        return Topic(
            kind=TopicKind.FILE_CHUNK,
            device_id=device_id,
            file_id=file_id,
            offset=_parse_uint(tail[0], "offset", topic),
            sha256=_parse_sha(tail[1], topic),
        )
    raise TopicError(f"unknown topic {topic!r}")


def device_id_hint(topic: str) -> str | None:
    """The device id of a topic that failed to parse, when it is at least under our prefix (for the log)."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[0] == PREFIX and valid_device_id(parts[2]):
        return parts[2]
    return None
