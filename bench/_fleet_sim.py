"""Simulated recorders for ``bench/fleet.py``: many paho clients in one process, one selector, no threads.

Each simulated device is its own MQTT connection with its own client id (its device id), a retained
``offline`` last will, a retained ``online`` presence on connect and a subscription to its ``down/#``
tree, like the real agent. After ``go`` on stdin every device sends a presence heartbeat every
``--heartbeat-s`` and a :class:`~protocol.messages.DeviceHealth` every ``--health-s``, each with its own
random phase (staggered). ``stop`` (or EOF) ends the sending; the process reports what it sent and
disconnects.

paho is driven without its threads: ``loop_read`` when the selector says a socket is readable,
``loop_write`` only while paho still holds unsent bytes (publish writes directly otherwise), and
``loop_misc`` (keepalive pings) once a second per client.

JSON lines on stdout: ``ready`` (all connected), ``done`` (counts, CPU seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import os
import random
import selectors
import sys
import time
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench._procutil import emit
from protocol import topics
from protocol.messages import DeviceHealth, Presence, PresenceState, encode

AGENT_VERSION = "bench-fleet/1"
HEARTBEAT, HEALTH = 0, 1


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Sim:
    """``count`` devices ``fleet-{first..}`` on one broker, served by one selector loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.first)
        self.ids = [f"{args.prefix}{i:05d}" for i in range(args.first, args.first + args.count)]
        self.sel = selectors.DefaultSelector()
        self.clients: list[mqtt.Client] = []
        self.socks: list[Any] = [None] * args.count
        self.connected = [False] * args.count
        self.pending_write: set[int] = set()
        self.sent = {"presence": 0, "health": 0, "publish_errors": 0}
        self.received = 0
        self.disconnects = 0
        self.reconnects = 0
        self.last_reconnect = [0.0] * args.count
        self.stdin_lines: list[str] = []
        self.stdin_eof = False
        self._stdin_buf = b""

    # -- paho callbacks ------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, idx: int, _flags: Any, rc: Any, _props: Any) -> None:
        if rc.is_failure:
            return
        self.connected[idx] = True
        client.subscribe(topics.device_downlink_filter(self.ids[idx]), qos=1)
        self._publish(
            idx,
            Presence(
                device_id=self.ids[idx],
                state=PresenceState.ONLINE,
                at=_now_iso(),
                agent_version=AGENT_VERSION,
            ),
            count=False,
        )

    def _on_disconnect(self, _c: mqtt.Client, idx: int, _flags: Any, _rc: Any, _props: Any) -> None:
        if self.connected[idx]:
            self.disconnects += 1
        self.connected[idx] = False

    def _on_message(self, _c: mqtt.Client, _idx: int, _msg: Any) -> None:
        self.received += 1

    # -- plumbing ------------------------------------------------------------------------------

    def _register(self, idx: int) -> None:
        """Keep the selector in step with the client's current socket."""
        sock = self.clients[idx].socket()
        old = self.socks[idx]
        if sock is old:
            return
        if old is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(old)
        self.socks[idx] = None
        if sock is not None:
            self.sel.register(sock, selectors.EVENT_READ, idx)
            self.socks[idx] = sock

    def _publish(self, idx: int, msg: Presence | DeviceHealth, *, count: bool = True) -> None:
        topic, payload = encode(msg)
        qos = 0 if isinstance(msg, DeviceHealth) else 1
        info = self.clients[idx].publish(topic, payload, qos=qos, retain=isinstance(msg, Presence))
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.sent["publish_errors"] += 1
            return
        if count:
            self.sent["health" if isinstance(msg, DeviceHealth) else "presence"] += 1
        if self.clients[idx].want_write():
            self.pending_write.add(idx)

    def _health(self, idx: int) -> DeviceHealth:
        r = self.rng
        return DeviceHealth(
            device_id=self.ids[idx],
            at=_now_iso(),
            backlog_bytes=r.randrange(0, 2 * 10**9),
            backlog_segments=r.randrange(0, 40),
            oldest_pending_age_s=r.choice([None, r.uniform(0, 30 * 3600)]),
            free_bytes=r.randrange(10**9, 64 * 10**9),
            battery_pct=r.randrange(5, 101),
            recording=r.random() < 0.3,
            extra={"bench": True},
        )

    def _read_stdin(self) -> None:
        data = os.read(sys.stdin.fileno(), 4096)
        if not data:
            self.stdin_eof = True
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(sys.stdin)
            return
        self._stdin_buf += data
        *lines, self._stdin_buf = self._stdin_buf.split(b"\n")
        self.stdin_lines += [line.decode().strip() for line in lines]

    def _service(self, timeout: float) -> None:
        """One selector round: reads, pending writes."""
        for key, _mask in self.sel.select(timeout):
            if key.data is None:
                self._read_stdin()
                continue
            idx = key.data
            rc = self.clients[idx].loop_read()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._register(idx)
            elif self.clients[idx].want_write():
                self.pending_write.add(idx)
        for idx in list(self.pending_write):
            client = self.clients[idx]
            if client.socket() is None or client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                self.pending_write.discard(idx)
                self._register(idx)
            elif not client.want_write():
                self.pending_write.discard(idx)

    def _misc(self, now: float) -> None:
        """Keepalive for everyone; reconnect dropped clients (at most every 5 s each)."""
        for idx, client in enumerate(self.clients):
            client.loop_misc()
            if client.want_write():
                self.pending_write.add(idx)
            if client.socket() is None and now - self.last_reconnect[idx] > 5.0:
                self.last_reconnect[idx] = now
                self.reconnects += 1
                with contextlib.suppress(OSError):
                    client.reconnect()
                self._register(idx)
            elif self.socks[idx] is not client.socket():
                self._register(idx)

    # -- phases --------------------------------------------------------------------------------

    def connect_all(self) -> float:
        """Connect every device, ``--connect-rate`` per second; return seconds until all are connected."""
        a = self.args
        self.sel.register(sys.stdin, selectors.EVENT_READ, None)
        t0 = time.monotonic()
        for idx, device_id in enumerate(self.ids):
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=device_id,
                clean_session=True,
                userdata=idx,
                protocol=mqtt.MQTTv311,
            )
            client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
            client.on_message = self._on_message
            topic, payload = encode(
                Presence(device_id=device_id, state=PresenceState.OFFLINE, agent_version=AGENT_VERSION)
            )
            client.will_set(topic, payload, qos=1, retain=True)
            self.clients.append(client)
            client.connect(a.host, a.port, keepalive=a.keepalive_s)
            self._register(idx)
            if client.want_write():
                self.pending_write.add(idx)
            # Pace the connects and serve CONNACKs meanwhile.
            while time.monotonic() < t0 + (idx + 1) / a.connect_rate:
                self._service(0.005)
        deadline = time.monotonic() + a.connect_timeout_s
        last_misc = time.monotonic()
        while not all(self.connected):
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"{self.connected.count(False)} of {len(self.ids)} devices not connected")
            if now - last_misc > 1.0:
                self._misc(now)
                last_misc = now
            self._service(0.05)
        return time.monotonic() - t0

    def run(self) -> dict[str, Any]:
        """Heartbeats and health until ``stop``/EOF or the safety limit."""
        a = self.args
        t_go = time.monotonic()
        queue: list[tuple[float, int, int]] = []
        for idx in range(len(self.ids)):
            queue.append((t_go + self.rng.uniform(0, a.heartbeat_s), HEARTBEAT, idx))
            queue.append((t_go + self.rng.uniform(0, a.health_s), HEALTH, idx))
        heapq.heapify(queue)
        last_misc, late_max = t_go, 0.0
        hard_stop = t_go + a.max_s
        while "stop" not in self.stdin_lines and not self.stdin_eof:
            now = time.monotonic()
            if now > hard_stop:
                break
            while queue and queue[0][0] <= now:
                due, kind, idx = heapq.heappop(queue)
                late_max = max(late_max, now - due)
                if self.connected[idx]:
                    if kind == HEARTBEAT:
                        self._publish(
                            idx,
                            Presence(
                                device_id=self.ids[idx],
                                state=PresenceState.ONLINE,
                                at=_now_iso(),
                                agent_version=AGENT_VERSION,
                            ),
                        )
                    else:
                        self._publish(idx, self._health(idx))
                period = a.heartbeat_s if kind == HEARTBEAT else a.health_s
                heapq.heappush(queue, (due + period, kind, idx))
            if now - last_misc > 1.0:
                self._misc(now)
                last_misc = now
            wait = max(0.0, min(0.05, (queue[0][0] - time.monotonic()) if queue else 0.05))
            self._service(wait)
        seconds = time.monotonic() - t_go
        # Flush what paho still holds before reporting.
        flush_deadline = time.monotonic() + 5.0
        while self.pending_write and time.monotonic() < flush_deadline:
            self._service(0.01)
        return {
            "seconds": round(seconds, 3),
            "presence_sent": self.sent["presence"],
            "health_sent": self.sent["health"],
            "publish_errors": self.sent["publish_errors"],
            "downlink_received": self.received,
            "disconnects": self.disconnects,
            "reconnects": self.reconnects,
            "connected_at_end": self.connected.count(True),
            "schedule_late_max_s": round(late_max, 3),
        }

    def close(self) -> None:
        """Disconnect everyone cleanly (no last will), close the selector."""
        for idx, client in enumerate(self.clients):
            with contextlib.suppress(Exception):
                if self.connected[idx]:
                    client.disconnect()
                    client.loop_write()
            with contextlib.suppress(Exception):
                sock = client.socket()
                if sock is not None:
                    sock.close()
        self.sel.close()


def main() -> int:
    """Connect, wait for ``go``, send until ``stop``, report."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", default="fleet-")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--heartbeat-s", type=float, default=10.0)
    p.add_argument("--health-s", type=float, default=60.0)
    p.add_argument("--keepalive-s", type=int, default=60)
    p.add_argument("--connect-rate", type=float, default=200.0, help="connects per second")
    p.add_argument("--connect-timeout-s", type=float, default=60.0)
    p.add_argument("--max-s", type=float, default=1800.0, help="safety limit of the sending phase")
    args = p.parse_args()
    sim = Sim(args)
    try:
        try:
            connect_s = sim.connect_all()
        except Exception as exc:
            emit(event="error", message=repr(exc))
            return 1
        emit(event="ready", count=len(sim.ids), connect_s=round(connect_s, 3))
        # Keep connections alive until told to go (the parent starts every process's load at once).
        last_misc = time.monotonic()
        while "go" not in sim.stdin_lines and "stop" not in sim.stdin_lines and not sim.stdin_eof:
            if time.monotonic() - last_misc > 1.0:
                sim._misc(time.monotonic())
                last_misc = time.monotonic()
            sim._service(0.05)
        if "go" not in sim.stdin_lines:
            return 0
        cpu0 = time.process_time()
        result = sim.run()
        emit(event="done", cpu_s=round(time.process_time() - cpu0, 3), **result)
        return 0
    finally:
        sim.close()


if __name__ == "__main__":
    sys.exit(main())
