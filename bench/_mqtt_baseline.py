"""Raw paho-mqtt baseline for ``bench/ingest.py``: one role per process (``pub`` or ``sub``).

``sub`` subscribes (optionally through a ``$share`` group), prints ``ready`` and reports when it has
received ``--count`` messages; with ``--sha256`` it also feeds every payload to a running SHA-256 per
publisher in a hashing thread, as the ingest does, and reports when the last byte is hashed (the least an
ingest that checks every byte once must add).
``pub`` connects, prints ``ready``, waits for ``go`` on stdin and
publishes ``--count`` QoS 1 messages of ``--chunk`` bytes, then reports when every PUBACK is in.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench._procutil import emit


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


def run_sub(args: argparse.Namespace) -> int:
    """Receive ``count`` messages (hashing them with ``--sha256``) and report first/last times."""
    client = _client("sub")
    state = {"count": 0, "bytes": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()
    subscribed = threading.Event()
    flt = f"$share/bench/{args.topic}/#" if args.shared else f"{args.topic}/#"
    to_hash: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()

    def hash_payloads() -> None:
        running: dict[str, Any] = {}  # publisher topic level -> its running SHA-256
        while (item := to_hash.get()) is not None:
            running.setdefault(item[0], hashlib.sha256()).update(item[1])
            state["hashed"] = state.get("hashed", 0) + 1
            if state["hashed"] >= args.count:
                state["last"] = time.monotonic()
                done.set()

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe(flt, qos=1)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if not state["count"]:
            state["first"] = now
        state["count"] += 1
        state["bytes"] += len(message.payload)
        if args.sha256:
            to_hash.put((message.topic.split("/")[-2], message.payload))
            return
        state["last"] = now
        if state["count"] >= args.count:
            done.set()

    hasher = threading.Thread(target=hash_payloads, daemon=True)
    if args.sha256:
        hasher.start()
    client.on_connect = on_connect
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
    to_hash.put(None)
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
    args = parser.parse_args()
    return run_sub(args) if args.role == "sub" else run_pub(args)


if __name__ == "__main__":
    sys.exit(main())
