"""Messages encode to exact bytes and decode back; bad payloads are refused with a reason."""

from __future__ import annotations

import hashlib

import pytest

from protocol import topics
from protocol.errors import ChunkHashMismatch, RemoteProtocolError
from protocol.messages import (
    AckState,
    DeviceHealth,
    FileAbort,
    FileChunk,
    FileFin,
    FileStatusQuery,
    Presence,
    PresenceState,
    TransferAck,
    decode,
    encode,
    qos_of,
    retain_of,
)
from protocol.ranges import RangeSet

DEV, FID = "rec-0001", "f" * 32


def test_chunk_is_raw_bytes_addressed_by_offset_and_hash() -> None:
    data = b"\x00\x01evidence"
    topic, payload = encode(FileChunk(device_id=DEV, file_id=FID, offset=524288, data=data))
    assert topic == topics.file_chunk(DEV, FID, 524288, hashlib.sha256(data).hexdigest())
    assert payload == data
    assert decode(topic, payload) == FileChunk(device_id=DEV, file_id=FID, offset=524288, data=data)


def test_chunk_whose_bytes_do_not_match_the_topic_hash_is_refused() -> None:
    topic, _ = encode(FileChunk(device_id=DEV, file_id=FID, offset=0, data=b"original"))
    with pytest.raises(ChunkHashMismatch) as caught:
        decode(topic, b"tampered")
    assert (caught.value.device_id, caught.value.file_id, caught.value.offset) == (DEV, FID, 0)


def test_ack_payload_is_compact_sorted_json() -> None:
    ack = TransferAck(device_id=DEV, file_id=FID, state=AckState.READY, ranges=RangeSet.of([(0, 262144)]))
    topic, payload = encode(ack)
    assert topic == f"zfjl/v1/{DEV}/down/ack/{FID}"
    assert payload == b'{"ranges":[[0,262144]],"state":"ready"}'
    assert decode(topic, payload) == ack
    done = TransferAck(
        device_id=DEV,
        file_id=FID,
        state=AckState.COMPLETE,
        recording_id=42,
        code="duplicate",
        sha256="ab" * 32,
    )
    assert encode(done)[1] == (
        b'{"code":"duplicate","recording_id":42,"sha256":"' + b"ab" * 32 + b'","state":"complete"}'
    )
    assert decode(*encode(done)) == done


def test_empty_payload_messages_round_trip_and_refuse_a_body() -> None:
    for msg in (
        FileFin(device_id=DEV, file_id=FID, size=10, sha256="0" * 64),
        FileAbort(device_id=DEV, file_id=FID),
        FileStatusQuery(device_id=DEV, file_id=FID),
    ):
        topic, payload = encode(msg)
        assert payload == b""
        assert decode(topic, payload) == msg
        with pytest.raises(RemoteProtocolError, match="empty payload"):
            decode(topic, b"x")


def test_presence_is_retained_and_health_is_qos0() -> None:
    online = Presence(device_id=DEV, state=PresenceState.ONLINE, at="2026-11-26T08:00:00.000000Z")
    assert retain_of(online) and qos_of(online) == 1
    assert decode(*encode(online)) == online
    health = DeviceHealth(
        device_id=DEV,
        at="2026-11-26T08:00:00.000000Z",
        backlog_bytes=10,
        backlog_segments=1,
        oldest_pending_age_s=3.5,
        free_bytes=1 << 30,
        battery_pct=80,
    )
    assert qos_of(health) == 0 and not retain_of(health)
    assert decode(*encode(health)) == health


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        (topics.ack(DEV, FID), b"{", "not JSON"),
        (topics.ack(DEV, FID), b'{"state":"eaten"}', "unknown ack state"),
        (topics.ack(DEV, FID), b'{"state":"ready","ranges":[[5,1]]}', "bad range"),
        (topics.ack(DEV, FID), b'{"state":"stored","offset":-1}', "non-negative"),
        (topics.presence(DEV), b'{"state":"asleep"}', "unknown presence"),
        (topics.health(DEV), b'{"backlog_bytes":1}', "backlog_segments"),
        (topics.health(DEV), b'{"backlog_bytes":1,"backlog_segments":0,"battery_pct":101}', "0–100"),
        (topics.health(DEV), b"[" + b" " * 70000 + b"]", "too large"),
        (topics.file_init(DEV, FID), b"\xff\xfe", "not JSON"),
    ],
)
def test_bad_payloads_are_refused_with_a_reason(topic: str, payload: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        decode(topic, payload)


def test_oversized_init_is_refused_before_parsing() -> None:
    with pytest.raises(RemoteProtocolError, match="init payload too large"):
        decode(topics.file_init(DEV, FID), b"{" + b" " * 70000 + b"}")
