"""The transfer machines on staging guards: `no_manifest`, `staging_quota` (sans-IO, exact acks)."""

from __future__ import annotations

import os

from protocol.messages import AckState, FileChunk, FileInit, TransferAck, decode, encode
from protocol.ranges import RangeSet
from protocol.transfer import (
    RETRY_LATER_CODES,
    ReceiverView,
    Reply,
    SegmentReceiver,
    SegmentSender,
    SendChunk,
    SenderState,
    SendInit,
    StageChunk,
    StageOutcome,
    StoreManifest,
    TransferFailed,
)
from tests.protocol.test_transfer import CHUNK, DEV, PUB, FakeDevice, FakeServer, run_link, signed_for


def view(**overrides: object) -> ReceiverView:
    """A receiver view of a registered device's transfer ``"a" * 32``."""
    values: dict[str, object] = {"device_id": DEV, "file_id": "a" * 32, "device_key": PUB, "manifest": None}
    values.update(overrides)
    return ReceiverView(**values)  # type: ignore[arg-type]


def test_chunk_without_an_accepted_manifest_is_answered_no_manifest_and_not_staged() -> None:
    """No StageChunk without a manifest: the ack is `unknown` with code `no_manifest` and the offset."""
    chunk = FileChunk(device_id=DEV, file_id="a" * 32, offset=CHUNK, data=b"x" * 100)
    (reply,) = SegmentReceiver(view()).receive(chunk)
    assert isinstance(reply, Reply)
    assert encode(reply.ack)[1] == (
        b'{"code":"no_manifest","length":100,"message":"no accepted init for this transfer; send init again",'
        b'"offset":262144,"state":"unknown"}'
    )


def test_stage_outcome_no_manifest_is_answered_no_manifest() -> None:
    """Staging found the manifest gone under its lock: the same `no_manifest` answer."""
    signed = signed_for(b"q" * 100)
    chunk = FileChunk(device_id=DEV, file_id=signed.file_id, offset=0, data=b"q" * 100)
    receiver = SegmentReceiver(view(file_id=signed.file_id, manifest=signed))
    assert receiver.receive(chunk) == [StageChunk(chunk)]
    (reply,) = receiver.chunk_staged(chunk, StageOutcome.NO_MANIFEST)
    assert isinstance(reply, Reply) and (reply.ack.state, reply.ack.code) == (AckState.UNKNOWN, "no_manifest")


def test_sender_sends_init_once_at_the_first_no_manifest_of_its_window() -> None:
    """A whole window answered `no_manifest`: one init at once (no timeout), the stale answers ignored."""
    sender = SegmentSender(file_id="a" * 32, size=4 * CHUNK, sha256="b" * 64, chunk_size=CHUNK, window=4)
    sender.start(0.0)
    actions = sender.receive_ack(
        TransferAck(device_id=DEV, file_id="a" * 32, state=AckState.READY, ranges=RangeSet()), 0.0
    )
    assert [a for a in actions if isinstance(a, SendChunk)] == [SendChunk(i * CHUNK, CHUNK) for i in range(4)]
    answers = [
        sender.receive_ack(
            TransferAck(
                device_id=DEV,
                file_id="a" * 32,
                state=AckState.UNKNOWN,
                offset=i * CHUNK,
                length=CHUNK,
                code="no_manifest",
            ),
            0.5,
        )
        for i in range(4)
    ]
    assert answers == [[SendInit()], [], [], []]
    assert sender.state is SenderState.AWAIT_READY


def test_quota_refuses_an_init_that_does_not_fit_beside_the_devices_other_transfers() -> None:
    """Init reserves the whole segment: others + size > quota is `staging_quota`, nothing stored."""
    data = b"d" * 1000
    signed = signed_for(data)
    init = FileInit(device_id=DEV, file_id=signed.file_id, signed=signed)
    fits = SegmentReceiver(view(file_id=signed.file_id, staging_quota_bytes=5000, staged_elsewhere=4000))
    assert isinstance(fits.receive(init)[0], StoreManifest)
    full = SegmentReceiver(view(file_id=signed.file_id, staging_quota_bytes=5000, staged_elsewhere=4001))
    (reply,) = full.receive(init)
    assert isinstance(reply, Reply) and (reply.ack.state, reply.ack.code) == (
        AckState.REJECTED,
        "staging_quota",
    )


def test_quota_refused_chunk_fails_the_transfer_at_once_for_a_later_retry() -> None:
    """A chunk refused for the quota is not resent 5 times: the transfer ends `staging_quota`."""
    assert "staging_quota" in RETRY_LATER_CODES
    sender = SegmentSender(file_id="a" * 32, size=2 * CHUNK, sha256="b" * 64, chunk_size=CHUNK, window=2)
    sender.start(0.0)
    sender.receive_ack(
        TransferAck(device_id=DEV, file_id="a" * 32, state=AckState.READY, ranges=RangeSet()), 0.0
    )
    (action,) = sender.receive_ack(
        TransferAck(
            device_id=DEV,
            file_id="a" * 32,
            state=AckState.REJECTED,
            offset=0,
            length=CHUNK,
            code="staging_quota",
        ),
        0.1,
    )
    assert isinstance(action, TransferFailed) and action.code == "staging_quota"


def test_quota_full_device_ends_with_staging_quota_and_the_uploader_retries_it() -> None:
    """Paired machines: a full quota ends the transfer with a retry-later code, never a refusal for good."""
    from edge_agent.uploader import RETRYABLE_REFUSALS

    data = os.urandom(3 * CHUNK)
    device = FakeDevice(data, signed_for(data))
    server = FakeServer()
    original = server.handle

    def handle(topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        msg = decode(topic, payload)
        if isinstance(msg, FileInit):
            quota = SegmentReceiver(
                view(file_id=msg.file_id, staging_quota_bytes=len(data), staged_elsewhere=1)
            )
            return [encode(a.ack) for a in quota.receive(msg) if isinstance(a, Reply)]
        return original(topic, payload)

    server.handle = handle  # type: ignore[method-assign]
    run_link(device, server)
    assert isinstance(device.outcome, TransferFailed) and device.outcome.code == "staging_quota"
    assert device.outcome.code in RETRYABLE_REFUSALS
    assert server.committed == {}
