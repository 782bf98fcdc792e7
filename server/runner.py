"""``zfjl-server run``: migrate, then start the embedded broker, the ingest workers and the HTTP API.

One :class:`ServerRunner` owns every loop it starts and stops them in reverse order (HTTP, workers,
broker), so a SIGTERM ends with every committed segment acknowledged and nothing half-written.

Roles (``ZFJL_ROLES`` / ``--roles``) split one deployment over processes: ``api`` (waitress),
``ingest`` (MQTT ingest workers) and ``workers`` (scrubber, ledger, housekeeping, fleet pushes). Several
processes may run ``workers``: each singleton job runs in the one process holding its lease, and
another takes over when that process stops or dies (``server.workers.leases``, docs/scaling.md). With
``ZFJL_INGEST_PROCESSES=N`` (N > 1) the runner does not ingest itself but starts N child processes
``zfjl-server run --roles ingest`` sharing the broker's ``$share`` group (or, with
``ZFJL_INGEST_NATS_URL``, one core NATS queue group), restarts any that dies (a
``kill -9`` loses only the messages in its flight, which the recorders re-send: docs/scaling.md) and
stops them with SIGTERM when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import paho.mqtt.client as mqtt
from flask import Flask
from paho.mqtt.enums import CallbackAPIVersion
from waitress import wasyncore
from waitress.server import create_server

from server.app import create_app
from server.domain.fleet.broker_accounts import (
    add_live_broker,
    embedded_service_password,
    registry_accounts,
    remove_live_broker,
)
from server.infra.broker import EmbeddedBroker
from server.infra.config import ENV_PREFIX, ConfigError, Settings, load_settings, url_without_credentials
from server.infra.db import get_engine, run_migrations
from server.infra.ingest_key import IngestSigner, note_embedded_broker
from server.infra.metrics import ChildCounters, SnapshotWriter, register_ingest_source
from server.infra.mqtt_acl import DEFAULT_SERVICE_USERNAME, hash_broker_password, service_account
from server.infra.storage import ARCHIVE_STORE_KEY
from server.ingest.nats_worker import NatsIngestWorker
from server.ingest.service import IngestService
from server.ingest.worker import IngestWorker, parse_broker_url
from server.workers.leases import JobLeases
from server.workers.loops import (
    AlertsWorker,
    ArchiveWorker,
    FleetDispatcher,
    LedgerWorker,
    PublicityWorker,
    RetentionLockWorker,
    Scrubber,
)

__all__ = ["IngestProcesses", "ServerRunner"]

_LOG = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 3600.0
# Abandoned staging and flood summaries are handled more often than the hourly rest.
STAGING_SWEEP_INTERVAL_S = 600.0
HTTP_POLL_S = 0.5
CHILD_READY_TIMEOUT_S = 120.0
CHILD_STOP_TIMEOUT_S = 60.0
CHILD_POLL_S = 0.2
# A child that dies at once again and again (bad settings) is restarted no faster than this.
CHILD_RESTART_BACKOFF_S = (0.5, 30.0)


class _HttpServer:
    """waitress on its own thread; the thread polls the socket map so it alone ever closes it."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        self._socket_map: dict[int, Any] = {}
        self._server = create_server(app, map=self._socket_map, host=host, port=port, ident="zfjl")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="zfjl-http", daemon=True)

    @property
    def url(self) -> str:
        """``http://host:port`` of the (first) listening socket."""
        server: Any = self._server
        if not hasattr(server, "effective_port"):
            server = next(iter(server.map.values()))  # MultiSocketServer: one of its listening sockets
        host, port = server.effective_host, server.effective_port
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set() and self._socket_map:
            wasyncore.loop(timeout=HTTP_POLL_S, map=self._socket_map, count=1)
        wasyncore.close_all(self._socket_map)
        self._server.task_dispatcher.shutdown()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, let running requests finish (up to the dispatcher's timeout), join."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        else:
            wasyncore.close_all(self._socket_map)
            self._server.task_dispatcher.shutdown()


class _Publisher:
    """A publish-only MQTT connection for the fleet pushes of a process that runs no ingest worker."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.address = parse_broker_url(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"zfjl-fleet-{os.getpid()}-{os.urandom(3).hex()}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
            transport="websockets" if self.address.websockets else "tcp",
        )
        if self.address.websockets:
            self.client.ws_set_options(path=self.address.path)
        if self.address.tls:
            self.client.tls_set(ca_certs=settings.mqtt_ca_file or None)
        if self.address.username is not None:
            self.client.username_pw_set(self.address.username, self.address.password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)

    def start(self) -> None:
        """Connect in the background (paho queues QoS 1 publishes until connected)."""
        self.client.connect_async(self.address.host, self.address.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def _child_env(overrides: Mapping[str, Any]) -> dict[str, str]:
    """The environment of an ingest child: ours, with the runner's overrides as ``ZFJL_*`` variables."""
    env = dict(os.environ)
    for name, value in overrides.items():
        key = name if name.startswith(ENV_PREFIX) else ENV_PREFIX + name.upper()
        env[key] = str(value)
    env[ENV_PREFIX + "ROLES"] = "ingest"
    env[ENV_PREFIX + "INGEST_PROCESSES"] = "1"
    return env


def _die_with_parent_hook() -> Any:
    """A pre-exec hook giving the child SIGTERM when the runner dies, so no orphan keeps ingesting.

    libc is loaded here, in the parent: the hook runs between fork and exec, where importing (taking
    the import lock another thread may hold) could deadlock. None where prctl does not exist.
    """
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    term = int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, term)

    return hook


class IngestProcesses:
    """N ``zfjl-server run --roles ingest`` children in one ``$share`` (or NATS queue) group, restarted
    when they die."""

    def __init__(
        self,
        count: int,
        overrides: Mapping[str, Any],
        on_death: Callable[[int], None] | None = None,
        metrics_dir: Path | None = None,
    ) -> None:
        """``on_death(pid)`` runs (on the monitor thread) after a dead child was replaced; each child
        writes its counters to ``metrics_dir`` (``server.infra.metrics``) when it is given."""
        self.count = count
        self.on_death = on_death
        self.metrics_dir = metrics_dir
        self.env = _child_env(overrides)
        self._preexec = _die_with_parent_hook()
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self._launched: list[tuple[subprocess.Popen[bytes], int]] = []
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._monitor = threading.Thread(target=self._watch, name="zfjl-ingest-procs", daemon=True)

    @property
    def pids(self) -> list[int]:
        """Process ids of the running children."""
        with self._lock:
            return [proc.pid for proc in self.procs if proc is not None and proc.poll() is None]

    def start(self) -> None:
        """Start every child (in parallel) and return once each has subscribed; then watch them."""
        self.launch()
        self.await_ready()

    def launch(self) -> None:
        """Start every child without waiting (the runner sets itself up meanwhile)."""
        self._launched = [self._launch(index) for index in range(self.count)]

    def await_ready(self) -> None:
        """Wait until every launched child has subscribed (or raise); then watch them."""
        launched, self._launched = self._launched, []
        try:
            for index, (proc, read_fd) in enumerate(launched):
                self._await_ready(index, proc, read_fd)
                launched[index] = (proc, -1)
        finally:
            for _, read_fd in launched:
                if read_fd >= 0:
                    os.close(read_fd)
        self._monitor.start()

    def _launch(self, index: int) -> tuple[subprocess.Popen[bytes], int]:
        """Start child ``index``; return it and the read end of its ready pipe."""
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-m", "server.cli", "run", "--ready-fd", str(write_fd)]
        if self.metrics_dir is not None:
            argv += ["--metrics-dir", str(self.metrics_dir), "--ingest-index", str(index)]
        try:
            proc = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                pass_fds=(write_fd,),
                preexec_fn=self._preexec,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        with self._lock:
            self.procs[index] = proc  # stop() reaches it even if it never becomes ready
        return proc, read_fd

    def _await_ready(self, index: int, proc: subprocess.Popen[bytes], read_fd: int) -> None:
        """Wait until the child reports ready on its pipe, or raise."""
        try:
            ready = _wait_ready(read_fd, proc, CHILD_READY_TIMEOUT_S, self._stop)
        finally:
            os.close(read_fd)
        if not ready:
            raise RuntimeError(f"ingest process {index} (pid {proc.pid}) did not become ready")
        _LOG.info("ingest process %d running (pid %d)", index, proc.pid)

    def _spawn(self, index: int) -> None:
        """(Re)start child ``index`` and wait until it is ready."""
        self._await_ready(index, *self._launch(index))

    def _watch(self) -> None:
        """Restart a child that exited while we run (kill -9, out of memory, a crash)."""
        backoff = CHILD_RESTART_BACKOFF_S[0]
        while not self._stop.wait(CHILD_POLL_S):
            for index, proc in enumerate(list(self.procs)):
                if proc is None or proc.poll() is None or self._stop.is_set():
                    continue
                _LOG.error(
                    "ingest process %d (pid %d) exited with %s; restarting", index, proc.pid, proc.returncode
                )
                self.restarts += 1
                try:
                    self._spawn(index)
                    backoff = CHILD_RESTART_BACKOFF_S[0]
                    if self.on_death is not None:
                        self.on_death(proc.pid)
                except Exception:
                    _LOG.exception("restarting ingest process %d failed; retrying in %.1f s", index, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, CHILD_RESTART_BACKOFF_S[1])

    def stop(self) -> None:
        """SIGTERM every child (each finishes its queued finalizes), wait, SIGKILL what hangs."""
        self._stop.set()
        if self._monitor.is_alive():
            self._monitor.join(CHILD_READY_TIMEOUT_S)
        for _, read_fd in self._launched:  # launched, never awaited (the runner failed to start)
            os.close(read_fd)
        self._launched = []
        with self._lock:
            procs = [proc for proc in self.procs if proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _LOG.error("ingest process pid %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()


def _wait_ready(read_fd: int, proc: subprocess.Popen[bytes], timeout_s: float, stop: threading.Event) -> bool:
    """Wait for the child's ready byte; False if it exited, timed out or we are stopping."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        readable, _, _ = select.select([read_fd], [], [], CHILD_POLL_S)
        if readable:
            return os.read(read_fd, 1) == b"1"
        if proc.poll() is not None:
            return False
    return False


class ServerRunner:
    """Owns the app, the embedded broker, the ingest workers, the HTTP server and housekeeping."""

    def __init__(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        embedded_mqtt_port: int | None = None,
        metrics_dir: Path | None = None,
        ingest_index: int = 0,
    ) -> None:
        """``metrics_dir`` and ``ingest_index`` are given to an ingest child by its runner: the child
        writes its counters there for the runner's ``/metrics``."""
        self.overrides = dict(overrides or {})
        self.embedded_mqtt_port = embedded_mqtt_port
        self.metrics_dir = metrics_dir
        self.ingest_index = ingest_index
        self.snapshot_writer: SnapshotWriter | None = None
        self.child_counters: ChildCounters | None = None
        """The ingest children's counters, summed for /metrics (with ZFJL_INGEST_PROCESSES > 1)."""
        self.app: Flask | None = None
        self.settings: Settings | None = None
        self.service: IngestService | None = None
        self.broker: EmbeddedBroker | None = None
        self.mqtt_url = ""
        """The broker URL devices use (no credentials in it)."""
        self.ingest_url = ""
        """The URL the ingest workers log in with (carries the service password: never log it)."""
        self.service_login: tuple[str, str] | None = None
        """The embedded broker's service account (user, password); None with an external broker."""
        self._revalidate: Any = None
        self.workers: list[IngestWorker | NatsIngestWorker] = []
        self.ingest_processes: IngestProcesses | None = None
        """The ingest children when ZFJL_INGEST_PROCESSES > 1 (this process then ingests nothing)."""
        self.publisher: _Publisher | None = None
        self.http: _HttpServer | None = None
        self._stop = threading.Event()
        self._housekeeping: threading.Thread | None = None
        self.fleet_dispatcher: FleetDispatcher | None = None
        self.scrubber: Scrubber | None = None
        self.ledger_worker: LedgerWorker | None = None
        self.archive_worker: ArchiveWorker | None = None
        self.publicity_worker: PublicityWorker | None = None
        self.alerts_worker: AlertsWorker | None = None
        self.leases: JobLeases | None = None
        """This process's job leases (the ``workers`` role)."""
        self.retention_lock_worker: RetentionLockWorker | None = None

    def start(self) -> None:
        """Migrate and start everything; on any failure stop what was started and re-raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        settings = load_settings(self.overrides)  # also makes the data folder's keys before any child
        # Logged first, before anything connects, so a failing start still shows what it was given.
        _LOG.info("settings: %s", settings.safe_dict())
        if settings.roles != "api,ingest,workers" and not settings.mqtt_url:
            # The embedded broker lives in one process; split roles must meet at an external broker.
            raise ConfigError(
                "ZFJL_ROLES 拆分角色时需要外部代理 ZFJL_MQTT_URL / "
                f"roles {settings.roles!r} need an external broker (ZFJL_MQTT_URL)"
            )
        run_migrations(settings.database_url)
        processes = self._ingest_process_count(settings)
        if processes > 1:
            self.child_counters = ChildCounters(Path(settings.data_dir) / "run", self._ingest_child_pids)
            # Launched before this process builds its app, so the children start up meanwhile.
            self.ingest_processes = IngestProcesses(
                processes,
                self.overrides,
                on_death=self._after_ingest_death,
                metrics_dir=self.child_counters.folder,
            )
            self.ingest_processes.launch()
        app = create_app(self.overrides)
        settings = app.extensions["zfjl.settings"]
        self.app, self.settings = app, settings
        service = IngestService.from_app(app)
        self.service = service
        for store in (service.store, app.extensions[ARCHIVE_STORE_KEY]):
            ensure_bucket = getattr(store, "ensure_bucket", None)
            if ensure_bucket is not None:
                ensure_bucket()
        if settings.mqtt_url:
            self.ingest_url = settings.mqtt_url
            self.mqtt_url = url_without_credentials(settings.mqtt_url)
        else:
            self.broker = self._start_embedded_broker(app, settings)
            self.mqtt_url = self.broker.url
            note_embedded_broker(app, self.broker.url)  # provisioning advertises its actual port
            assert self.service_login is not None
            user, password = self.service_login
            self.ingest_url = self.broker.url.replace(
                "mqtt://", f"mqtt://{quote(user, safe='')}:{quote(password, safe='')}@", 1
            )
            _LOG.info("embedded MQTT broker for devices: %s", self.mqtt_url)
        if self.ingest_processes is not None:
            self.ingest_processes.await_ready()
        elif settings.has_role("ingest"):
            self._start_workers(settings, service)
            if self.metrics_dir is not None:
                self.snapshot_writer = SnapshotWriter(
                    self.metrics_dir, self.ingest_index, service.stats, self._queue_depths
                )
                self.snapshot_writer.start()
        if self.child_counters is not None:
            counters = self.child_counters
            register_ingest_source(app, counters.stats, counters.queue_depths, counters.per_process)
        else:
            register_ingest_source(app, service.stats, self._queue_depths)
        if settings.has_role("workers"):
            # One lease per singleton job, renewed by a keeper thread while this process holds it.
            self.leases = JobLeases(app, ttl_s=float(settings.lease_ttl_s))
            self.leases.start()
            self._start_fleet_dispatch(app, settings)
        if settings.has_role("api"):
            self.http = _HttpServer(app, settings.http_host, settings.http_port)
            self.http.start()
            _LOG.info("HTTP API listening on %s", self.http.url)
        if settings.has_role("workers"):
            self._housekeeping = threading.Thread(
                target=self._housekeep, name="zfjl-housekeeping", daemon=True
            )
            self._housekeeping.start()
            # JL-6: stored evidence is re-checked against the signed manifests at a bounded rate.
            leases = self.leases
            assert leases is not None
            self.scrubber = Scrubber(
                app, service.store, bytes_per_s=settings.scrub_bytes_per_s, pause_s=settings.scrub_pause_s,
                lease=leases.lease(Scrubber.JOB),
            )  # fmt: skip
            self.scrubber.start()
            # JL-6, JL-23: every stored row becomes a ledger leaf; the tree head is signed (docs/ledger.md).
            self.ledger_worker = LedgerWorker(app, lease=leases.lease(LedgerWorker.JOB))
            self.ledger_worker.start()
            # JL-18: ended acts are archived by a job, well within their 30 days (docs/archives.md).
            self.archive_worker = ArchiveWorker(app, lease=leases.lease(ArchiveWorker.JOB))
            self.archive_worker.start()
            # GS-13, GS-23: items past their disclosure period leave; deadline alerts open before a deadline.
            self.publicity_worker = PublicityWorker(app, lease=leases.lease(PublicityWorker.JOB))
            self.publicity_worker.start()
            # Fleet alerts and annual-report drafts (GS-17), hourly.
            self.alerts_worker = AlertsWorker(
                app, interval_s=HOUSEKEEPING_INTERVAL_S, lease=leases.lease(AlertsWorker.JOB)
            )
            self.alerts_worker.start()
            # JL-19: a lengthened retention period reaches the store locks through a resumable job.
            self.retention_lock_worker = RetentionLockWorker(app)
            self.retention_lock_worker.start()

    def _start_fleet_dispatch(self, app: Flask, settings: Settings) -> None:
        """Push new commands and desired configs to devices through the first ingest worker's client
        (or a publish-only connection when this process ingests nothing itself)."""
        first = self.workers[0] if self.workers else None
        if isinstance(first, IngestWorker):
            client, signer = first.client, first.signer
        else:
            # Also with ingest on NATS: a desired config is a retained MQTT message, which core NATS
            # cannot publish (nats-server keeps MQTT retained messages for MQTT publishers only).
            self.publisher = _Publisher(settings, self.ingest_url)
            self.publisher.start()
            client, signer = self.publisher.client, IngestSigner.from_settings(settings)

        def publish(topic: str, payload: bytes, retain: bool) -> None:
            # Commands and desired configs are signed with the ingest key, like acks (protocol.downlink).
            client.publish(topic, signer.seal(topic, payload), qos=1, retain=retain)

        assert self.leases is not None
        self.fleet_dispatcher = FleetDispatcher(app, publish, lease=self.leases.lease(FleetDispatcher.JOB))
        self.fleet_dispatcher.start()

    def _start_embedded_broker(self, app: Flask, settings: Settings) -> EmbeddedBroker:
        """Start the embedded broker enforcing the registry (the same model as the Mosquitto files)."""
        password = embedded_service_password(Path(settings.data_dir))
        self.service_login = (DEFAULT_SERVICE_USERNAME, password)
        accounts = registry_accounts(
            get_engine(app), service_account(DEFAULT_SERVICE_USERNAME, hash_broker_password(password))
        )
        port = self.embedded_mqtt_port
        if port is None:
            port = settings.mqtt_embedded_port
        broker = EmbeddedBroker(host="127.0.0.1", port=port, accounts=accounts)
        try:
            broker.start()
        except RuntimeError as exc:
            if port == 0:
                raise
            # Typically another broker already holds the port; devices must use the URL logged below.
            _LOG.warning("embedded MQTT broker cannot use port %d (%s); picking a free port", port, exc)
            broker = EmbeddedBroker(host="127.0.0.1", port=0, accounts=accounts)
            broker.start()

        engine = get_engine(app)

        def revalidate(session: Any) -> None:
            # After a registry change: drop connected devices whose login was revoked or rotated.
            if session.get_bind().url == engine.url:  # not another app's registry (tests run several)
                broker.revalidate()

        self._revalidate = revalidate
        add_live_broker(revalidate)
        return broker

    def _start_workers(self, settings: Settings, service: IngestService) -> None:
        if settings.ingest_nats_url:
            # A core NATS queue group: every connection is a member, each message goes to one of them.
            for index in range(settings.ingest_workers):
                nats_worker = NatsIngestWorker(settings, service, f"w{index}")
                self.workers.append(nats_worker)
                nats_worker.start()
            return
        first = IngestWorker(settings, service, "w0", self.ingest_url)
        count = settings.ingest_workers
        if not first.shared and count > 1:
            # Without $share every worker would receive every message.
            _LOG.warning("no shared subscription on this broker: running 1 ingest worker, not %d", count)
            count = 1
        self.workers.append(first)
        first.start()
        for index in range(1, count):
            worker = IngestWorker(settings, service, f"w{index}", self.ingest_url)
            self.workers.append(worker)
            worker.start()

    @staticmethod
    def _ingest_process_count(settings: Settings) -> int:
        """How many ingest children to start: 0 when this process ingests itself (or not at all)."""
        if not settings.has_role("ingest") or settings.ingest_processes <= 1:
            return 0
        if settings.ingest_nats_url:
            return settings.ingest_processes  # one NATS queue group over every process
        if not (settings.mqtt_url and settings.mqtt_share_group):
            # Without $share every process would receive (and store) every message.
            _LOG.warning(
                "no shared subscription (embedded broker or empty ZFJL_MQTT_SHARE_GROUP): "
                "ingesting in this process, not in %d processes",
                settings.ingest_processes,
            )
            return 0
        return settings.ingest_processes

    def _ingest_child_pids(self) -> list[int]:
        """The running ingest children (their queue depths are current; a dead one's are not)."""
        processes = self.ingest_processes
        return processes.pids if processes is not None else []

    def _after_ingest_death(self, pid: int) -> None:
        """Keep a killed ingest process's last counts; clean what it left in the object store and in
        staging (the transfer itself is redone by the recorder through another process)."""
        if self.child_counters is not None:
            self.child_counters.retire(pid)
        if self.service is None:
            return
        sweep = getattr(self.service.store, "sweep_temp_files", None)
        if sweep is not None:
            _LOG.info("swept %d temporary object files of dead ingest pid %d", sweep(pid), pid)
        try:
            done = self.service.sweep_after_death(pid)
        except Exception:
            # The janitor (ZFJL_STAGING_ABANDON_HOURS) still removes them later; never stop the monitor.
            _LOG.exception("sweeping the staging leftovers of dead ingest pid %d failed", pid)
            return
        _LOG.info(
            "swept the staging leftovers of dead ingest pid %d: %d of stored segments, %d half-deleted, "
            "%d left to a live process",
            pid,
            done.stored_leftovers,
            done.trash_folders,
            done.busy,
        )

    def _queue_depths(self) -> dict[str, int]:
        """Finalizes waiting per ingest worker, for /metrics."""
        return {worker.name: worker.pipeline.queue_depth() for worker in self.workers}

    def _housekeep(self) -> None:
        """Every 10 minutes clean abandoned staging (ZFJL_STAGING_ABANDON_HOURS) and write flood
        summaries; hourly also log the ingest counters. Every process does this for itself (no lease):
        the flood counters are this process's own, and removing an abandoned transfer's staging is
        harmless twice. Fleet alerts and annual reports are the :class:`AlertsWorker`'s (a singleton)."""
        sweeps_per_hour = max(1, round(HOUSEKEEPING_INTERVAL_S / STAGING_SWEEP_INTERVAL_S))
        sweep = 0
        while not self._stop.wait(STAGING_SWEEP_INTERVAL_S):
            assert self.service is not None
            try:
                done = self.service.housekeep()
                if done["staging_abandoned"]:
                    _LOG.info("staging janitor cleaned %d abandoned transfers", done["staging_abandoned"])
            except Exception:
                _LOG.exception("staging janitor failed")
            sweep += 1
            if sweep % sweeps_per_hour:
                continue
            _LOG.info("ingest stats: %s", self.service.stats())

    def wait(self, stop_event: threading.Event) -> None:
        """Block until ``stop_event`` is set (by a signal handler)."""
        while not stop_event.wait(1.0):
            pass

    def stop(self) -> None:
        """Stop in reverse order of start: HTTP, ingest workers and processes, broker; safe to call twice."""
        self._stop.set()
        if self.alerts_worker is not None:
            self.alerts_worker.stop()
            self.alerts_worker = None
        if self.retention_lock_worker is not None:
            self.retention_lock_worker.stop()
            self.retention_lock_worker = None
        if self.publicity_worker is not None:
            self.publicity_worker.stop()
            self.publicity_worker = None
        if self.archive_worker is not None:
            self.archive_worker.stop()
            self.archive_worker = None
        if self.ledger_worker is not None:
            self.ledger_worker.stop()
            self.ledger_worker = None
        if self.scrubber is not None:
            self.scrubber.stop()
            self.scrubber = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.fleet_dispatcher is not None:
            self.fleet_dispatcher.stop()
            self.fleet_dispatcher = None
        if self.leases is not None:
            # Every singleton loop has stopped: release its lease so a standby takes over at once.
            self.leases.stop()
            self.leases = None
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher = None
        if self.ingest_processes is not None:
            self.ingest_processes.stop()
            self.ingest_processes = None
        for worker in reversed(self.workers):
            try:
                worker.stop()
            except Exception:
                _LOG.exception("stopping ingest worker %s failed", worker.name)
        self.workers.clear()
        if self.snapshot_writer is not None:
            self.snapshot_writer.stop()  # the final counts, after the workers' last finalizes
            self.snapshot_writer = None
        if self.child_counters is not None:
            self.child_counters.close()
            self.child_counters = None
        if self._revalidate is not None:
            remove_live_broker(self._revalidate)
            self._revalidate = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self._housekeeping is not None:
            self._housekeeping.join(5)
            self._housekeeping = None
        if self.service is not None:
            # The workers are stopped: write what a flood left unsummarised, so nothing vanishes.
            self.service.flush_rejections(everything=True)
            _LOG.info("ingest stats at shutdown: %s", self.service.stats())
        if self.app is not None:
            with contextlib.suppress(Exception):
                get_engine(self.app).dispose()
        _LOG.info("server stopped")
