"""What the scale-out tests and ``bench/scale.py`` share: recorders with a backlog, the server as real
processes (``zfjl-server run --ingest-processes N``), a loopback NATS cluster, and the exactly-once check.

Nothing here is a fake: the recorders are the agent's own Outbox, MqttLink and Uploader (in threads of
the calling process), the server is ``python -m server.cli run`` with its ingest children, the broker
is a real Mosquitto or nats-server. See docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = [
    "NatsCluster",
    "Recorder",
    "RecorderFleet",
    "ServerProcess",
    "free_port",
    "prepare_recorders",
    "register_recorders",
    "stale_staging",
    "stored_summary",
    "verify_exactly_once",
    "wait_until",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Whether a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    """Poll ``condition`` until it holds; raise naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(poll_s)


# --------------------------------------------------------------------------- recorders


@dataclass
class Recorder:
    """One simulated recorder: its key, data folder and the segments its outbox holds."""

    device_id: str
    home: Path
    public_key: bytes
    segments: dict[int, str] = field(default_factory=dict)  # sequence -> sha256


def prepare_recorders(
    root: Path, count: int, per_device: int, segment_bytes: int, prefix: str
) -> list[Recorder]:
    """``count`` outboxes, each holding ``per_device`` signed, chained segments of random bytes."""
    from bench.ingest import prepare_devices

    devices = prepare_devices(
        root, count, per_device, segment_bytes,
        prefix=prefix, officer_id="scale", start=datetime(2026, 3, 1, tzinfo=UTC),
    )  # fmt: skip
    return [Recorder(d.device_id, d.home, d.public_key, d.segments) for d in devices]


def register_recorders(database_url: str, recorders: list[Recorder]) -> None:
    """Migrate the database and register every recorder's public key (as provisioning would)."""
    from sqlalchemy.orm import Session

    from server.domain.fleet.devices import register_device
    from server.infra.db import make_engine, run_migrations

    run_migrations(database_url)
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            for recorder in recorders:
                register_device(session, recorder.device_id, recorder.public_key, actor="scale")
            session.commit()
    finally:
        engine.dispose()


class RecorderFleet:
    """The recorders' real uploaders (Outbox + MqttLink + Uploader), each in threads of this process."""

    def __init__(
        self,
        recorders: list[Recorder],
        broker_urls: list[str],
        ingest_public_keys: tuple[str, ...],
        *,
        chunk_bytes: int = 256 * 1024,
        window: int = 8,
        ack_timeout_s: float = 2.0,
        max_active: int = 2,
        failover_after_s: float | None = None,
        spread_over: int | None = None,
        logins: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """Recorder i connects to ``broker_urls[i % n]``, n = ``spread_over`` (all URLs by default); with
        ``failover_after_s`` it lists every URL, its own first and then the ones after it in order
        (``mqtt_urls``), and moves on when its broker stays down. ``logins``: device id -> (user,
        password) on the brokers (none: anonymous)."""
        from edge_agent.config import AgentConfig
        from edge_agent.mqtt_link import MqttLink
        from edge_agent.outbox import Outbox
        from edge_agent.uploader import Uploader
        from protocol.messages import TransferAck

        self.recorders = recorders
        self.broker_of: dict[str, str] = {}
        self._parts: list[tuple[Any, Any, Any]] = []
        for index, recorder in enumerate(recorders):
            first = index % (spread_over or len(broker_urls))
            url = broker_urls[first]
            self.broker_of[recorder.device_id] = url
            urls = (*broker_urls[first:], *broker_urls[:first]) if failover_after_s is not None else ()
            username, password = (logins or {}).get(recorder.device_id, ("", ""))
            config = AgentConfig(
                device_id=recorder.device_id,
                private_key_file=recorder.home / "device-key.pem",
                data_dir=recorder.home / "data",
                mqtt_url=url,
                mqtt_urls=urls,
                mqtt_failover_after_s=failover_after_s or 20.0,
                ingest_public_keys=ingest_public_keys,
                chunk_bytes=chunk_bytes,
                window=window,
                ack_timeout_s=ack_timeout_s,
                mqtt_username=username,
                mqtt_password=password,
            )
            outbox = Outbox(config.outbox_path)
            holder: list[Any] = []

            def on_ack(ack: TransferAck, holder: list[Any] = holder) -> None:
                holder[0].on_ack(ack)

            def on_connected(holder: list[Any] = holder) -> None:
                if holder:
                    holder[0].on_connected()

            link = MqttLink(config, on_ack=on_ack, on_connected=on_connected)
            uploader = Uploader(outbox, link, config, max_active=max_active)
            holder.append(uploader)
            self._parts.append((outbox, link, uploader))

    def connect(self, timeout_s: float = 30.0) -> None:
        """Connect every recorder's link (nothing is uploaded before :meth:`start`)."""
        for _, link, _ in self._parts:
            link.connect()
        for _, link, _ in self._parts:
            if not link.wait_connected(timeout_s):
                raise ConnectionError(f"{link.device_id}: not connected to {link.config.mqtt_url}")

    def start(self) -> None:
        """Start draining every outbox."""
        for _, _, uploader in self._parts:
            uploader.start()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every outbox is drained (every segment acknowledged ``complete``)."""
        deadline = time.monotonic() + timeout_s
        return all(uploader.drain(max(0.1, deadline - time.monotonic())) for _, _, uploader in self._parts)

    def stats(self) -> dict[str, int]:
        """Summed uploader counters."""
        out: dict[str, int] = {}
        for _, link, uploader in self._parts:
            stats = uploader.stats()
            for name in (
                "bytes_sent",
                "chunks_sent",
                "chunks_resent",
                "segments_completed",
                "segments_failed",
            ):
                out[name] = out.get(name, 0) + int(getattr(stats, name))
            out["reconnects"] = out.get("reconnects", 0) + link.disconnects
            out["failovers"] = out.get("failovers", 0) + link.rotation.failovers
            out["subscribe_refusals"] = out.get("subscribe_refusals", 0) + link.subscribe_refusals
            out["pending"] = out.get("pending", 0) + self._outbox_pending(uploader)
        return out

    def current_brokers(self) -> dict[str, str]:
        """The broker URL each recorder's link is connected (or connecting) to now."""
        return {link.device_id: link.broker_url for _, link, _ in self._parts}

    def per_recorder(self) -> dict[str, dict[str, Any]]:
        """Each recorder's broker now, reconnects, failovers and pending segments (for failure reports)."""
        return {
            link.device_id: {
                "broker": link.broker_url,
                "connected": link.connected,
                "reconnects": link.disconnects,
                "failovers": link.rotation.failovers,
                "pending": int(outbox.stats().segments_pending),
                "completed": int(uploader.stats().segments_completed),
            }
            for outbox, link, uploader in self._parts
        }

    def _outbox_pending(self, uploader: Any) -> int:
        for outbox, _, candidate in self._parts:
            if candidate is uploader:
                return int(outbox.stats().segments_pending)
        return 0

    def close(self) -> None:
        """Stop the uploaders, close the links and outboxes."""
        for outbox, link, uploader in self._parts:
            with contextlib.suppress(Exception):
                uploader.stop()
            with contextlib.suppress(Exception):
                link.close()
            with contextlib.suppress(Exception):
                outbox.close()


# --------------------------------------------------------------------------- the server


class ServerProcess:
    """``python -m server.cli run`` with the given roles and ingest processes; its log in a file."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        *,
        roles: str = "api,ingest,workers",
        ingest_processes: int = 1,
    ) -> None:
        self.log_path = workdir / f"server-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        read_fd, write_fd = os.pipe()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ZFJL_")}
        argv = [
            sys.executable,
            "-m",
            "server.cli",
            "run",
            "--roles",
            roles,
            "--ingest-processes",
            str(ingest_processes),
            "--ready-fd",
            str(write_fd),
        ]
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**clean, **env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        self._ready_fd = read_fd

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the runner (and its ingest children) are up; raise with the log otherwise."""
        import select

        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self._ready_fd], [], [], 0.2)
                if readable:
                    if os.read(self._ready_fd, 1) == b"1":
                        return
                    break
                if self.proc.poll() is not None:
                    break
            raise RuntimeError(f"server not ready (exit {self.proc.poll()}):\n{self.log_tail()}")
        finally:
            os.close(self._ready_fd)

    def child_pids(self) -> list[int]:
        """Ingest children alive now, from the runner's ``ingest process N running (pid P)`` lines."""
        pids = [int(p) for p in re.findall(r"ingest process \d+ running \(pid (\d+)\)", self.log_text())]
        alive = []
        for pid in pids:
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat[stat.rindex(")") + 2] != "Z":
                    alive.append(pid)
        return alive

    def http_url(self) -> str:
        """``http://host:port`` of the runner's API, from its ``HTTP API listening on`` line ("" if none)."""
        found = re.search(r"HTTP API listening on (http://\S+)", self.log_text())
        return found.group(1) if found else ""

    def log_text(self) -> str:
        """The whole log so far."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (the runner stops its children), wait; SIGKILL the group if it hangs. Exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)


# --------------------------------------------------------------------------- NATS cluster


def find_nats_server() -> str | None:
    """The ``nats-server`` binary (Debian's package puts it in /usr/sbin)."""
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/local/bin/nats-server") if os.access(p, os.X_OK)), None
    )


class NatsCluster:
    """Three (or N) nats-server nodes on loopback: JetStream, cluster routes and an MQTT listener each.

    NATS keeps MQTT sessions and QoS 1 messages in JetStream streams; with ``stream_replicas`` = 3 they
    survive the loss of one node (Raft quorum 2 of 3).
    """

    def __init__(self, workdir: Path, binary: str, nodes: int = 3, authorization: str = "") -> None:
        """``authorization``: an ``authorization { … }`` block for every node (none: no logins)."""
        self.workdir = workdir
        self.binary = binary
        self.authorization = authorization
        self.names = [f"n{i}" for i in range(nodes)]
        # Each port stays held (bound with SO_REUSEADDR, not listening) for the cluster's life, as
        # tests/fixtures/mqtt.py's hold_port does for Mosquitto: nats-server (Go sets SO_REUSEADDR on its
        # listeners) can still listen on it, but neither another process's bind(0) nor the local end of
        # an outgoing connection can take it between our choosing it and a node binding it, or while a
        # killed node is down. A port freed and then taken that way left a node unable to listen.
        from tests.fixtures.mqtt import hold_port

        self._held = [hold_port() for _ in range(3 * nodes)]
        ports = [int(sock.getsockname()[1]) for sock in self._held]
        self.client_ports = ports[:nodes]
        self.route_ports = ports[nodes : 2 * nodes]
        self.mqtt_ports = ports[2 * nodes :]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes

    def mqtt_url(self, index: int) -> str:
        """``mqtt://127.0.0.1:PORT`` of node ``index``."""
        return f"mqtt://127.0.0.1:{self.mqtt_ports[index]}"

    def client_url(self, index: int) -> str:
        """``nats://127.0.0.1:PORT``: node ``index``'s core NATS port (the ingest workers' queue group)."""
        return f"nats://127.0.0.1:{self.client_ports[index]}"

    def _config(self, index: int) -> Path:
        if len(self.names) == 1:
            # One node: no cluster block (a lone clustered node never elects a JetStream leader).
            return self._write_config(
                index,
                f"""
server_name: {self.names[index]}
listen: 127.0.0.1:{self.client_ports[index]}
max_payload: 8MB
jetstream {{ store_dir: "{self.workdir / "js-n0"}", max_memory_store: 256MB, max_file_store: 4GB }}
mqtt {{ listen: 127.0.0.1:{self.mqtt_ports[index]} }}
{self.authorization}
""",
            )
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.route_ports)
        store = self.workdir / f"js-{self.names[index]}"
        text = f"""
server_name: {self.names[index]}
listen: 127.0.0.1:{self.client_ports[index]}
max_payload: 8MB
jetstream {{ store_dir: "{store}", max_memory_store: 256MB, max_file_store: 4GB }}
cluster {{ name: zfjl, listen: 127.0.0.1:{self.route_ports[index]}, routes: [{routes}] }}
mqtt {{ listen: 127.0.0.1:{self.mqtt_ports[index]}, stream_replicas: {min(3, len(self.names))} }}
{self.authorization}
"""
        return self._write_config(index, text)

    def _write_config(self, index: int, text: str) -> Path:
        path = self.workdir / f"{self.names[index]}.conf"
        path.write_text(text)
        return path

    def start_node(self, index: int) -> None:
        """Start node ``index`` (again, on the same ports and store)."""
        log = (self.workdir / f"{self.names[index]}.log").open("ab")
        self.procs[index] = subprocess.Popen(
            [self.binary, "-c", str(self._config(index))],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every node; return once each MQTT listener answers and JetStream has a meta leader."""
        for index in range(len(self.names)):
            self.start_node(index)

        def listening() -> bool:
            exited = [i for i, proc in enumerate(self.procs) if proc is not None and proc.poll() is not None]
            if exited:
                raise RuntimeError(f"nats-server node(s) {exited} exited while starting:\n{self.log_tails()}")
            return all(port_open("127.0.0.1", p) for p in self.mqtt_ports)

        try:
            wait_until(listening, timeout_s, "NATS MQTT listeners")
            if len(self.names) > 1:
                wait_until(self.has_meta_leader, timeout_s, "a JetStream meta leader", poll_s=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tails()}") from None

    def log_tails(self, lines: int = 15) -> str:
        """The last ``lines`` lines of each node's log (what a failed start needs)."""
        tails = []
        for name in self.names:
            path = self.workdir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            tails.append(f"--- {name}:\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(tails)

    def has_meta_leader(self) -> bool:
        """Whether a node's log names a JetStream cluster meta leader."""
        return any(
            "new metadata leader" in p.read_text(errors="replace") for p in self.workdir.glob("n*.log")
        )

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index`` (a crashed broker host)."""
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop every node."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for sock in self._held:
            sock.close()


# --------------------------------------------------------------------------- the verdict


def stored_summary(database_url: str) -> int:
    """How many recordings the database holds now."""
    from sqlalchemy import func, select

    from server.domain.evidence.models import Recording
    from server.infra.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Recording)).scalar_one())
    finally:
        engine.dispose()


def verify_exactly_once(env: Mapping[str, str], recorders: list[Recorder]) -> list[str]:
    """Every segment stored exactly once (one row, one object whose bytes hash to the manifest), no
    unfinished transfer left in staging, and each recorder's chain report verified. The problems found."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from server.domain.evidence.models import Recording
    from server.domain.evidence.queries import chain_report
    from server.infra.config import load_settings
    from server.infra.db import make_engine

    settings = load_settings(environ=dict(env))
    engine = make_engine(settings.database_url)
    problems: list[str] = []
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(Recording.device_id, Recording.sequence, Recording.sha256, Recording.object_key)
            ).all()
            stored_files = {
                (row[0], row[1]) for row in session.execute(select(Recording.device_id, Recording.file_id))
            }
            reports = {r.device_id: chain_report(session, r.device_id) for r in recorders}
    finally:
        engine.dispose()
    expected = {(r.device_id, seq): sha for r in recorders for seq, sha in r.segments.items()}
    keys = [(row[0], row[1]) for row in rows]
    if len(keys) != len(set(keys)):
        problems.append(f"{len(keys) - len(set(keys))} duplicate recording rows")
    if set(keys) != set(expected):
        problems.append(f"rows for {len(set(keys))} segments, expected {len(expected)}")
    objects = [p for p in settings.object_dir.rglob("*") if p.is_file()]
    if len(objects) != len(expected):
        problems.append(f"{len(objects)} stored objects, expected {len(expected)}")
    for device_id, sequence, sha256, object_key in rows:
        if expected.get((device_id, sequence)) != sha256:
            problems.append(f"{device_id}/{sequence}: row sha256 differs from the manifest")
        elif hashlib.sha256((settings.object_dir / object_key).read_bytes()).hexdigest() != sha256:
            problems.append(f"{device_id}/{sequence}: object bytes differ from the manifest")
    # A process killed between its commit and clearing staging leaves the staged bytes of a STORED
    # segment; the staging janitor removes them (ZFJL_STAGING_ABANDON_HOURS). Anything else is a fault.
    left = [p for p in settings.staging_dir.glob("*/*") if p.is_dir() and not p.name.startswith(".")]
    unfinished = [p for p in left if (p.parent.name, p.name) not in stored_files]
    if unfinished:
        problems.append(f"{len(unfinished)} unfinished transfers left in staging")
    for device_id, report in reports.items():
        if not report["verified"] or report["segments"] != len([k for k in expected if k[0] == device_id]):
            problems.append(f"{device_id}: chain not clean: {report}")
    return problems


def stale_staging(env: Mapping[str, str]) -> int:
    """Transfer folders still in staging (after a run: those of stored segments, for the janitor)."""
    from server.infra.config import load_settings

    staging = load_settings(environ=dict(env)).staging_dir
    return len([p for p in staging.glob("*/*") if p.is_dir() and not p.name.startswith(".")])
