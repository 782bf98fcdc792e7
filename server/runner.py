"""``zfjl-server run``: migrate, then start the embedded broker, the ingest workers and the HTTP API.

One :class:`ServerRunner` owns every loop it starts and stops them in reverse order (HTTP, workers,
broker), so a SIGTERM ends with every committed segment acknowledged and nothing half-written.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask
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
from server.infra.config import Settings, url_without_credentials
from server.infra.db import get_engine, run_migrations
from server.infra.ingest_key import note_embedded_broker
from server.infra.metrics import register_ingest_source
from server.infra.mqtt_acl import DEFAULT_SERVICE_USERNAME, hash_broker_password, service_account
from server.ingest.service import IngestService
from server.ingest.worker import IngestWorker
from server.workers.loops import (
    FleetDispatcher,
    LedgerWorker,
    PublicityWorker,
    Scrubber,
    run_fleet_housekeeping,
)

__all__ = ["ServerRunner"]

_LOG = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 3600.0
# Abandoned staging and flood summaries are handled more often than the hourly rest.
STAGING_SWEEP_INTERVAL_S = 600.0
HTTP_POLL_S = 0.5


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


class ServerRunner:
    """Owns the app, the embedded broker, the ingest workers, the HTTP server and housekeeping."""

    def __init__(
        self, overrides: Mapping[str, Any] | None = None, *, embedded_mqtt_port: int | None = None
    ) -> None:
        self.overrides = dict(overrides or {})
        self.embedded_mqtt_port = embedded_mqtt_port
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
        self.workers: list[IngestWorker] = []
        self.http: _HttpServer | None = None
        self._stop = threading.Event()
        self._housekeeping: threading.Thread | None = None
        self.fleet_dispatcher: FleetDispatcher | None = None
        self.scrubber: Scrubber | None = None
        self.ledger_worker: LedgerWorker | None = None
        self.publicity_worker: PublicityWorker | None = None

    def start(self) -> None:
        """Migrate and start everything; on any failure stop what was started and re-raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        app = create_app(self.overrides)
        settings: Settings = app.extensions["zfjl.settings"]
        self.app, self.settings = app, settings
        _LOG.info("settings: %s", settings.safe_dict())
        run_migrations(settings.database_url)
        service = IngestService.from_app(app)
        self.service = service
        ensure_bucket = getattr(service.store, "ensure_bucket", None)
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
        self._start_workers(settings, service)
        register_ingest_source(app, service.stats, self._queue_depths)
        self._start_fleet_dispatch(app)
        self.http = _HttpServer(app, settings.http_host, settings.http_port)
        self.http.start()
        _LOG.info("HTTP API listening on %s", self.http.url)
        self._housekeeping = threading.Thread(target=self._housekeep, name="zfjl-housekeeping", daemon=True)
        self._housekeeping.start()
        # JL-6: stored evidence is re-checked against the signed manifests at a bounded rate.
        self.scrubber = Scrubber(
            app, service.store, bytes_per_s=settings.scrub_bytes_per_s, pause_s=settings.scrub_pause_s
        )
        self.scrubber.start()
        # JL-6, JL-23: every stored row becomes a ledger leaf; the tree head is signed (docs/ledger.md).
        self.ledger_worker = LedgerWorker(app)
        self.ledger_worker.start()
        # GS-13, GS-23: items past their disclosure period leave; deadline alerts open before a deadline.
        self.publicity_worker = PublicityWorker(app)
        self.publicity_worker.start()

    def _start_fleet_dispatch(self, app: Flask) -> None:
        """Push new commands and desired configs to devices through the first ingest worker's client."""
        client, signer = self.workers[0].client, self.workers[0].signer

        def publish(topic: str, payload: bytes, retain: bool) -> None:
            # Commands and desired configs are signed with the ingest key, like acks (protocol.downlink).
            client.publish(topic, signer.seal(topic, payload), qos=1, retain=retain)

        self.fleet_dispatcher = FleetDispatcher(app, publish)
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

    def _queue_depths(self) -> dict[str, int]:
        """Finalizes waiting per ingest worker, for /metrics."""
        return {worker.name: worker.finalize_queue_depth() for worker in self.workers}

    def _housekeep(self) -> None:
        """Every 10 minutes clean abandoned staging (ZFJL_STAGING_ABANDON_HOURS) and write flood
        summaries; hourly also log the ingest counters and evaluate fleet alerts."""
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
            try:
                assert self.app is not None
                _LOG.info("fleet alerts: %s", run_fleet_housekeeping(self.app))
            except Exception:
                _LOG.exception("fleet alert evaluation failed")

    def wait(self, stop_event: threading.Event) -> None:
        """Block until ``stop_event`` is set (by a signal handler)."""
        while not stop_event.wait(1.0):
            pass

    def stop(self) -> None:
        """Stop in reverse order of start: HTTP, ingest workers, broker; safe to call twice."""
        self._stop.set()
        if self.publicity_worker is not None:
            self.publicity_worker.stop()
            self.publicity_worker = None
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
        for worker in reversed(self.workers):
            try:
                worker.stop()
            except Exception:
                _LOG.exception("stopping ingest worker %s failed", worker.name)
        self.workers.clear()
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
