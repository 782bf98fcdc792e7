"""The server side for ``bench/ingest.py``: a :class:`ServerRunner` configured from ``ZFJL_*`` env vars.

Prints ``{"event": "ready", "mqtt_url": ...}``, runs until a ``stop`` line (or EOF) on stdin, then
prints per-thread CPU seconds, time spent in ``IngestService.handle`` by message kind and the
ingest counters. ``--profile FILE`` also runs cProfile around every ``handle`` call (one profiler
per thread, merged) and writes the pstats dump to FILE. ``--broker-only`` runs just the embedded
broker (the baseline for ``--broker embedded``).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from bench._procutil import emit, threads_cpu


class _HandleTimer:
    """Wraps ``IngestService.handle``: wall and thread-CPU seconds per message kind, optional cProfile."""

    def __init__(self, handle: Any, profile: bool) -> None:
        self._handle = handle
        self._profile = profile
        self._lock = threading.Lock()
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.profilers: dict[int, cProfile.Profile] = {}

    @staticmethod
    def _kind(topic: str) -> str:
        tail = topic.rsplit("/", 3)
        if "/up/file/" not in topic:
            return tail[-1]  # presence, health
        if tail[-1] in ("init", "status", "abort"):
            return tail[-1]
        return "fin" if tail[-3] == "fin" else "chunk"

    def __call__(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        kind = self._kind(topic)
        profiler = None
        if self._profile:
            ident = threading.get_ident()
            profiler = self.profilers.get(ident)
            if profiler is None:
                profiler = self.profilers.setdefault(ident, cProfile.Profile())
        c0, w0 = time.thread_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        try:
            out: list[tuple[str, bytes]] = self._handle(topic, payload)
        finally:
            if profiler is not None:
                profiler.disable()
            w1, c1 = time.perf_counter(), time.thread_time()
            with self._lock:
                self.wall[kind] += w1 - w0
                self.cpu[kind] += c1 - c0
                self.calls[kind] += 1
        return out


def _broker_only() -> int:
    """Run the embedded broker alone until told to stop, with one throw-away login for the baseline."""
    import secrets

    from server.infra.broker import EmbeddedBroker
    from server.infra.broker_access import StaticAccounts
    from server.infra.mqtt_acl import AccountKind, BrokerAccount, hash_broker_password

    password = secrets.token_urlsafe(16)
    bench = BrokerAccount(
        username="bench",
        password_hash=hash_broker_password(password),
        # bench-ack/#: the floor baseline's signed answers to its publishers (bench/_mqtt_baseline.py).
        write=("bench/#", "bench-ack/#"),
        read=("bench/#", "bench-ack/#"),
        kind=AccountKind.SERVICE,
    )
    broker = EmbeddedBroker(host="127.0.0.1", port=0, accounts=StaticAccounts([bench]))
    broker.start()
    emit(event="ready", mqtt_url=broker.url, username=bench.username, password=password)
    sys.stdin.readline()
    broker.stop()
    return 0


def main() -> int:
    """Start the server, wait for ``stop``, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", help="write merged cProfile stats of ingest handling here")
    parser.add_argument("--broker-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="server %(levelname)s %(name)s: %(message)s")
    if args.broker_only:
        return _broker_only()

    from server.runner import ServerRunner

    runner = ServerRunner(embedded_mqtt_port=0)
    runner.start()
    assert runner.service is not None
    timer = _HandleTimer(runner.service.handle, profile=bool(args.profile))
    # Workers call self.service.handle(...) on each message, so an instance attribute intercepts it.
    runner.service.handle = timer  # type: ignore[method-assign]
    emit(event="ready", mqtt_url=runner.mqtt_url, workers=len(runner.workers))
    try:
        for line in sys.stdin:
            if line.strip() == "mark":
                emit(event="mark", threads=threads_cpu())
            elif line.strip() == "stop":
                break
        threads = threads_cpu()
        stats = runner.service.stats()
    finally:
        runner.stop()
    if args.profile and timer.profilers:
        import pstats

        merged = pstats.Stats(*timer.profilers.values())
        merged.dump_stats(args.profile)
    emit(
        event="stats",
        threads=threads,
        handle_wall_s={k: round(v, 3) for k, v in timer.wall.items()},
        handle_cpu_s={k: round(v, 3) for k, v in timer.cpu.items()},
        handle_calls=dict(timer.calls),
        ingest=stats,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
