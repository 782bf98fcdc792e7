"""Signed acks (protocol.downlink, finding 1): exact bytes, and every way a forged ack is refused."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol import topics
from protocol.downlink import (
    DownlinkRefusal,
    IngestKeyring,
    UntrustedDownlink,
    decode_public_key,
    encode_public_key,
    is_signed_topic,
    key_id,
    seal,
    signing_input,
)
from protocol.errors import RemoteProtocolError
from protocol.messages import AckState, TransferAck, decode, encode
from protocol.session import EventAck, EventAckState
from protocol.transfer import SegmentSender, SenderState, TransferFinished

DEV, FID = "rec-0001", "f" * 32
INGEST = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
INGEST_RAW = INGEST.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
KEYRING = IngestKeyring.of([INGEST_RAW])
SHA = "ab" * 32
COMPLETE = TransferAck(device_id=DEV, file_id=FID, state=AckState.COMPLETE, recording_id=7, sha256=SHA)


def test_key_id_and_pinned_text_of_the_ingest_key() -> None:
    assert encode_public_key(INGEST_RAW) == "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
    assert decode_public_key("A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=") == INGEST_RAW
    assert key_id(INGEST_RAW) == "56475aa75463474c"
    with pytest.raises(ValueError):
        decode_public_key("AAAA")


def test_signed_complete_ack_exact_bytes() -> None:
    topic, body = encode(COMPLETE)
    assert topic == "zfjl/v1/rec-0001/down/ack/ffffffffffffffffffffffffffffffff"
    assert body == b'{"recording_id":7,"sha256":"' + SHA.encode() + b'","state":"complete"}'
    assert signing_input(topic, body) == b"zfjl/v1 signed downlink\n" + topic.encode() + b"\n" + body
    assert seal(topic, body, INGEST) == (
        b'{"body":"{\\"recording_id\\":7,\\"sha256\\":\\"'
        + SHA.encode()
        + b'\\",\\"state\\":\\"complete\\"}",'
        b'"kid":"56475aa75463474c",'
        b'"sig":"sh5mqWRCT06qLSbiBG0s0nil3NOrCZJ/vEjGkQV9DYiIc7LBQ6tMbL4U9dNqEJQZtdatYSwCgJu87fGkdA54DA==",'
        b'"v":1}'
    )
    assert decode(topic, KEYRING.open(topic, seal(topic, body, INGEST))) == COMPLETE


def refusal(topic: str, payload: bytes, keyring: IngestKeyring = KEYRING) -> DownlinkRefusal:
    with pytest.raises(UntrustedDownlink) as caught:
        keyring.open(topic, payload)
    return caught.value.reason


def test_forged_unsigned_complete_is_refused() -> None:
    topic = topics.ack(DEV, FID)
    assert refusal(topic, b'{"recording_id":1,"state":"complete"}') is DownlinkRefusal.UNSIGNED
    assert refusal(topic, b"not json") is DownlinkRefusal.UNSIGNED
    assert refusal(topic, b"") is DownlinkRefusal.UNSIGNED


def test_ack_signed_by_an_unpinned_key_is_refused() -> None:
    topic, body = encode(COMPLETE)
    attacker = Ed25519PrivateKey.generate()
    assert refusal(topic, seal(topic, body, attacker)) is DownlinkRefusal.UNKNOWN_KEY
    # The attacker names the pinned key's id but signs with its own key.
    forged = json.loads(seal(topic, body, attacker))
    forged["kid"] = key_id(INGEST_RAW)
    payload = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    assert refusal(topic, payload) is DownlinkRefusal.BAD_SIGNATURE
    # With no key pinned at all, even the genuine ack is not trusted.
    assert refusal(topic, seal(topic, body, INGEST), IngestKeyring.of([])) is DownlinkRefusal.UNKNOWN_KEY


def test_genuine_ack_replayed_to_another_file_device_or_kind_is_refused() -> None:
    topic, body = encode(COMPLETE)
    genuine = seal(topic, body, INGEST)
    assert KEYRING.open(topic, genuine) == body
    assert refusal(topics.ack(DEV, "e" * 32), genuine) is DownlinkRefusal.BAD_SIGNATURE
    assert refusal(topics.ack("rec-0002", FID), genuine) is DownlinkRefusal.BAD_SIGNATURE
    assert refusal(topics.session_ack(DEV, FID), genuine) is DownlinkRefusal.BAD_SIGNATURE


def test_tampered_body_and_malformed_envelopes_are_refused() -> None:
    topic, body = encode(COMPLETE)
    envelope = json.loads(seal(topic, body, INGEST))
    envelope["body"] = envelope["body"].replace('"recording_id":7', '"recording_id":8')
    tampered = json.dumps(envelope).encode()
    assert refusal(topic, tampered) is DownlinkRefusal.BAD_SIGNATURE
    envelope = json.loads(seal(topic, body, INGEST))
    assert refusal(topic, json.dumps({**envelope, "v": 2}).encode()) is DownlinkRefusal.MALFORMED
    assert refusal(topic, json.dumps({**envelope, "extra": 1}).encode()) is DownlinkRefusal.MALFORMED
    assert refusal(topic, json.dumps({**envelope, "sig": "!!"}).encode()) is DownlinkRefusal.MALFORMED
    assert refusal(topic, json.dumps({**envelope, "body": "\ud800"}).encode()) is DownlinkRefusal.MALFORMED
    assert refusal(topic, b" " * (64 * 1024 + 1)) is DownlinkRefusal.MALFORMED


def test_session_event_acks_are_signed_over_their_own_topic() -> None:
    ack = EventAck(device_id=DEV, event_id="ev-1", state=EventAckState.STORED)
    topic = topics.session_ack(DEV, "ev-1")
    sealed = seal(topic, ack.to_payload(), INGEST)
    assert EventAck.from_payload(DEV, "ev-1", KEYRING.open(topic, sealed)) == ack
    assert refusal(topics.session_ack(DEV, "ev-2"), sealed) is DownlinkRefusal.BAD_SIGNATURE


def test_case_event_acks_are_signed_and_not_interchangeable_with_session_acks() -> None:
    ack = EventAck(device_id=DEV, event_id="ev-1", state=EventAckState.STORED)
    topic = topics.case_event_ack(DEV, "ev-1")
    sealed = seal(topic, ack.to_payload(), INGEST)
    assert EventAck.from_payload(DEV, "ev-1", KEYRING.open(topic, sealed)) == ack
    # A session-event ack for the same id cannot be passed off as a case-event ack, or the reverse.
    assert refusal(topics.session_ack(DEV, "ev-1"), sealed) is DownlinkRefusal.BAD_SIGNATURE
    assert refusal(topic, ack.to_payload()) is DownlinkRefusal.UNSIGNED


def test_everything_a_recorder_acts_on_is_a_signed_topic_and_nothing_it_sends() -> None:
    assert is_signed_topic(topics.ack(DEV, FID))
    assert is_signed_topic(topics.session_ack(DEV, "ev-1"))
    assert is_signed_topic(topics.case_event_ack(DEV, "ev-1"))
    assert is_signed_topic(topics.command(DEV, "c1"))
    assert is_signed_topic(topics.config_desired(DEV))
    assert not is_signed_topic(topics.file_init(DEV, FID))
    assert not is_signed_topic(topics.command_status(DEV, "c1"))
    assert not is_signed_topic("not/a/topic")


def test_a_complete_ack_must_name_a_sha256() -> None:
    with pytest.raises(RemoteProtocolError, match="sha256"):
        decode(topics.ack(DEV, FID), b'{"recording_id":1,"state":"complete"}')
    with pytest.raises(RemoteProtocolError, match="sha256"):
        decode(topics.ack(DEV, FID), b'{"recording_id":1,"sha256":"XY","state":"complete"}')


def test_sender_frees_nothing_on_a_complete_naming_another_segments_hash() -> None:
    data = b"evidence" * 100
    own = hashlib.sha256(data).hexdigest()
    sender = SegmentSender(file_id=FID, size=len(data), sha256=own)
    sender.start(0.0)
    other = TransferAck(device_id=DEV, file_id=FID, state=AckState.COMPLETE, recording_id=1, sha256=SHA)
    assert sender.receive_ack(other, 1.0) == []
    assert sender.state is SenderState.AWAIT_READY and sender.mismatched_completes == 1
    right = TransferAck(device_id=DEV, file_id=FID, state=AckState.COMPLETE, recording_id=1, sha256=own)
    assert sender.receive_ack(right, 2.0) == [TransferFinished(recording_id=1, duplicate=False)]
    assert sender.state is SenderState.COMPLETE
