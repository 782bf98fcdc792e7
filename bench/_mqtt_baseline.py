"""Raw paho-mqtt baseline for ``bench/ingest.py``: one role per process (``pub`` or ``sub``).

``sub`` subscribes (optionally through a ``$share`` group), prints ``ready`` and reports when it has
received ``--count`` messages; with ``--sha256`` it also feeds every payload to a running SHA-256 per
publisher in a hashing thread, as the ingest does, and reports when the last byte is hashed (the least an
ingest that checks every byte once must add).
``pub`` connects, prints ``ready``, waits for ``go`` on stdin and
publishes ``--count`` QoS 1 messages of ``--chunk`` bytes, then reports when every PUBACK is in.

``--floor`` (both roles) adds the work that every zfjl upload must do and nothing else, in the
cheapest form we know, so that its cost is measured on the same machine in the same run: the publisher
hashes each segment once and keeps a window of unanswered chunks (``--inflight``), the subscriber
writes every chunk into its segment's file (``pwrite``), hashes it once (a hashing thread, as the ingest),
answers each chunk with an ack sealed by the ingest key's envelope (``protocol.downlink``, Ed25519) and,
when a segment is whole, fsyncs the file (and, given ``BENCH_FLOOR_S3``, puts it into that bucket the
way the boto3 baseline does, four puts at a time like the ingest's finalize threads) and answers a
sealed ``complete`` naming its SHA-256; the publisher verifies every answer's signature, and a
``complete``'s hash against its own. No manifest, no database, no index, no resume: a floor, not an
ingest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from bench._procutil import emit
from protocol import downlink

ACK_TOPIC = "bench-ack"


def floor_s3_setting(endpoint: Any, bucket: str) -> str:
    """``BENCH_FLOOR_S3`` for the floor's subscriber: an S3 endpoint (``url``, keys, ``region``, as
    ``tests.fixtures.s3.S3Endpoint``) and a bucket that exists."""
    fields = ("url", "access_key", "secret_key", "region")
    return json.dumps({**{name: getattr(endpoint, name) for name in fields}, "bucket": bucket})


def _client(name: str) -> mqtt.Client:
    """A clean-session MQTT 3.1.1 client like the ingest worker's (logged in from the environment)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-{name}-{os.getpid()}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    # The embedded broker refuses anonymous clients; its bench login comes in the environment.
    if os.environ.get("BENCH_MQTT_USERNAME"):
        client.username_pw_set(os.environ["BENCH_MQTT_USERNAME"], os.environ.get("BENCH_MQTT_PASSWORD"))
    return client


def _serve(
    args: argparse.Namespace,
    client: mqtt.Client,
    on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None],
    state: dict[str, Any],
    done: threading.Event,
    before_disconnect: Callable[[], None],
) -> int:
    """A subscriber's life: subscribe, say ``ready``, wait until ``done``, report, clean up."""
    subscribed = threading.Event()
    flt = f"$share/bench/{args.topic}/#" if args.shared else f"{args.topic}/#"
    client.on_connect = lambda c, *_: c.subscribe(flt, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    client.max_inflight_messages_set(100)
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(15):
        emit(event="error", message="no SUBACK")
        return 1
    emit(event="ready")
    cpu0 = time.process_time()
    ok = done.wait(args.timeout)
    emit(
        event="done",
        ok=ok,
        count=state["count"],
        bytes=state["bytes"],
        t_first=state["first"],
        t_last=state["last"],
        cpu_s=time.process_time() - cpu0,
    )
    before_disconnect()
    client.disconnect()
    client.loop_stop()
    return 0 if ok else 1


def run_sub(args: argparse.Namespace) -> int:
    """Receive ``count`` messages (hashing them with ``--sha256``) and report first/last times."""
    client = _client("sub")
    state = {"count": 0, "bytes": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()
    to_hash: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()

    def hash_payloads() -> None:
        running: dict[str, Any] = {}  # publisher topic level -> its running SHA-256
        while (item := to_hash.get()) is not None:
            running.setdefault(item[0], hashlib.sha256()).update(item[1])
            state["hashed"] = state.get("hashed", 0) + 1
            if state["hashed"] >= args.count:
                state["last"] = time.monotonic()
                done.set()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if not state["count"]:
            state["first"] = now
        state["count"] += 1
        state["bytes"] += len(message.payload)
        if args.sha256:
            to_hash.put((message.topic.split("/")[-2], bytes(message.payload)))
            return
        state["last"] = now
        if state["count"] >= args.count:
            done.set()

    hasher = threading.Thread(target=hash_payloads, daemon=True)
    if args.sha256:
        hasher.start()
    return _serve(args, client, on_message, state, done, lambda: to_hash.put(None))


def run_sub_floor(args: argparse.Namespace) -> int:
    """The floor's receiving side: write, hash once, seal an ack per chunk, fsync and seal ``complete``."""
    client = _client("sub")
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(os.environ["BENCH_FLOOR_KEY"]))
    per_segment = args.segment_bytes // args.chunk
    segments_expected = args.count // per_segment
    state = {"count": 0, "bytes": 0, "first": 0.0, "last": 0.0, "completed": 0}
    done = threading.Event()
    files: dict[tuple[str, int], int] = {}
    to_hash: queue.SimpleQueue[tuple[str, int, bytes, bool] | None] = queue.SimpleQueue()

    completes: list[mqtt.MQTTMessageInfo] = []
    counted = threading.Lock()
    to_store: queue.SimpleQueue[tuple[str, int, str, str] | None] = queue.SimpleQueue()
    s3 = json.loads(os.environ["BENCH_FLOOR_S3"]) if os.environ.get("BENCH_FLOOR_S3") else None

    def answer(publisher: str, body: dict[str, Any]) -> mqtt.MQTTMessageInfo:
        topic = f"{ACK_TOPIC}/{publisher}"
        text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return client.publish(topic, downlink.seal(topic, text, key), qos=1)

    def hash_and_complete() -> None:
        running: dict[tuple[str, int], Any] = {}
        while (item := to_hash.get()) is not None:
            publisher, segment, data, last = item
            sha = running.setdefault((publisher, segment), hashlib.sha256())
            sha.update(data)
            if last:
                fd = files.pop((publisher, segment))
                os.fsync(fd)
                os.close(fd)
                path = os.path.join(args.floor_dir, f"{publisher}-{segment}")
                hexdigest = running.pop((publisher, segment)).hexdigest()
                if s3 is None:
                    complete(publisher, segment, hexdigest)
                else:
                    to_store.put((publisher, segment, path, hexdigest))

    def complete(publisher: str, segment: int, hexdigest: str) -> None:
        info = answer(publisher, {"segment": segment, "sha256": hexdigest, "state": "complete"})
        with counted:
            completes.append(info)
            state["completed"] += 1
            if state["completed"] >= segments_expected:
                state["last"] = time.monotonic()
                done.set()

    def store() -> None:
        """Put whole segments into the object store the way the boto3 baseline does, then answer."""
        from boto3.s3.transfer import TransferConfig

        from server.infra.storage import MIN_PART_SIZE, make_s3_client

        assert s3 is not None
        s3_client = make_s3_client(s3["url"], s3["access_key"], s3["secret_key"], s3["region"])
        config = TransferConfig(
            multipart_threshold=MIN_PART_SIZE, multipart_chunksize=MIN_PART_SIZE, use_threads=False
        )
        while (item := to_store.get()) is not None:
            publisher, segment, path, hexdigest = item
            s3_client.upload_file(path, s3["bucket"], f"floor/{publisher}/{segment:06d}", Config=config)
            complete(publisher, segment, hexdigest)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if not state["count"]:
            state["first"] = time.monotonic()
        state["count"] += 1
        _, publisher, seq = message.topic.rsplit("/", 2)
        index = int(seq)
        segment, offset = divmod(index * args.chunk, args.segment_bytes)
        fd = files.get((publisher, segment))
        if fd is None:
            path = os.path.join(args.floor_dir, f"{publisher}-{segment}")
            fd = files[(publisher, segment)] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        payload = bytes(message.payload)  # paho gives bytes: no copy
        os.pwrite(fd, payload, offset)
        state["bytes"] += len(payload)
        last = offset + len(payload) >= args.segment_bytes
        to_hash.put((publisher, segment, payload, last))
        if not args.no_chunk_acks:
            answer(publisher, {"offset": offset, "segment": segment, "state": "staged"})

    def flush() -> None:
        to_hash.put(None)
        for _ in storers:
            to_store.put(None)
        for info in completes:  # a disconnect would drop answers paho has not sent yet
            info.wait_for_publish(5)

    threading.Thread(target=hash_and_complete, daemon=True).start()
    # As many puts at once as the ingest's finalize threads (4): an S3 put is mostly waiting.
    storers = [threading.Thread(target=store, daemon=True) for _ in range(4 if s3 else 0)]
    for thread in storers:
        thread.start()
    return _serve(args, client, on_message, state, done, flush)


def run_pub_floor(args: argparse.Namespace) -> int:
    """The floor's sending side: hash each segment once, a window of unanswered chunks, verify answers."""
    client = _client(f"pub{args.index}")
    name = f"p{args.index}"
    ack_topic = f"{ACK_TOPIC}/{name}"
    public_raw = bytes.fromhex(os.environ["BENCH_FLOOR_PUB"])
    trusted = {downlink.key_id(public_raw): public_raw}
    per_segment = args.segment_bytes // args.chunk
    segments = args.count // per_segment
    window = threading.Semaphore(args.inflight)
    sent_hashes: dict[int, str] = {}
    state = {"completed": 0, "bad": 0}
    subscribed = threading.Event()
    completed = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(downlink.open_signed(message.topic, bytes(message.payload), trusted))
        except downlink.UntrustedDownlink:
            state["bad"] += 1
            return
        if body["state"] == "staged":
            window.release()
            return
        if body["sha256"] != sent_hashes.get(body["segment"]):
            state["bad"] += 1
        state["completed"] += 1
        if state["completed"] >= segments:
            completed.set()

    client.on_connect = lambda c, *_: c.subscribe(ack_topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    client.max_inflight_messages_set(args.inflight)
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(15):
        emit(event="error", message="no SUBACK")
        return 1
    payload = os.urandom(args.chunk)
    emit(event="ready")
    if sys.stdin.readline().strip() != "go":
        return 1
    cpu0, t0 = time.process_time(), time.monotonic()
    deadline = t0 + args.timeout
    opened = True
    for segment in range(segments):
        sha = hashlib.sha256()
        for k in range(per_segment):
            sha.update(payload)
            if k == per_segment - 1:
                sent_hashes[segment] = sha.hexdigest()  # before the last chunk: its complete may come at once
            # Without chunk acks only paho's in-flight limit holds the sender back.
            if not args.no_chunk_acks and not window.acquire(timeout=max(0.0, deadline - time.monotonic())):
                opened = False  # no answer verified in time: give up, reported below
                break
            client.publish(f"{args.topic}/{name}/{segment * per_segment + k}", payload, qos=1)
        if not opened:
            break
    ok = opened and completed.wait(max(0.0, deadline - time.monotonic())) and not state["bad"]
    emit(
        event="done",
        ok=ok,
        t_first=t0,
        t_acked=time.monotonic(),
        cpu_s=time.process_time() - cpu0,
        completed=state["completed"],
        bad_answers=state["bad"],
    )
    client.disconnect()
    client.loop_stop()
    return 0 if ok else 1


def run_pub(args: argparse.Namespace) -> int:
    """Publish ``count`` QoS 1 messages after ``go``; report when all are acknowledged."""
    client = _client(f"pub{args.index}")
    connected = threading.Event()
    acked = threading.Event()
    state = {"acked": 0}

    def on_publish(*_: Any) -> None:
        state["acked"] += 1
        if state["acked"] >= args.count:
            acked.set()

    client.on_connect = lambda *_: connected.set()
    client.on_publish = on_publish
    client.max_inflight_messages_set(args.inflight)
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not connected.wait(15):
        emit(event="error", message="not connected")
        return 1
    payload = os.urandom(args.chunk)
    emit(event="ready")
    if sys.stdin.readline().strip() != "go":
        return 1
    cpu0, t0 = time.process_time(), time.monotonic()
    for i in range(args.count):
        client.publish(f"{args.topic}/p{args.index}/{i}", payload, qos=1)
    ok = acked.wait(args.timeout)
    emit(event="done", ok=ok, t_first=t0, t_acked=time.monotonic(), cpu_s=time.process_time() - cpu0)
    client.disconnect()
    client.loop_stop()
    return 0 if ok else 1


def main() -> int:
    """Dispatch to the role."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["pub", "sub"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--chunk", type=int, default=256 * 1024)
    parser.add_argument("--topic", default="bench")
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--sha256", action="store_true", help="sub: hash every payload once")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--floor", action="store_true", help="the least work of a zfjl upload (see above)")
    parser.add_argument("--floor-dir", default=".", help="sub --floor: where the segment files go")
    parser.add_argument("--segment-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument(
        "--no-chunk-acks", action="store_true", help="--floor: a sealed complete per segment, no chunk acks"
    )
    args = parser.parse_args()
    if args.floor and (args.segment_bytes % args.chunk or args.count * args.chunk % args.segment_bytes):
        parser.error("--floor needs whole segments of whole chunks")
    if args.floor:
        return run_sub_floor(args) if args.role == "sub" else run_pub_floor(args)
    return run_sub(args) if args.role == "sub" else run_pub(args)


if __name__ == "__main__":
    sys.exit(main())
