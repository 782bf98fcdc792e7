"""Prometheus ``/metrics``: stored evidence, ingest latency and refusals, device backlog (JL-17), alerts.

Figures that every process can see alike come from the database at scrape time (segments and bytes
stored, refusals by code, each device's latest backlog, open alerts by kind), so any API process answers
for the whole deployment. The ingest counters and queue depths are this process's own, or, for a runner
with ``--ingest-processes N``, the sum of its children's (registered by the runner,
``server.infra.metrics``); they reset when the process restarts, as Prometheus counters may.

Access (docs/operations.md, "Metrics"): with ``ZFJL_METRICS_TOKEN`` set, a request must carry
``Authorization: Bearer <token>``; without it, only a loopback client that did not come through a proxy
is answered. The figures name devices and their backlogs, which is fleet data, not public.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from server.domain import leases as job_leases
from server.domain import metrics as figures
from server.http.errors import error_response
from server.http.openapi import api_view
from server.infra.db import session_scope
from server.infra.metrics import ingest_source

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["LATENCY_BUCKETS_S", "ZfjlCollector", "bp"]

bp = Blueprint("metrics", __name__)
_REGISTRY_KEY = "zfjl.metrics_registry"
# From seconds (a recorder online) to the JL-17 limit of 24 h and beyond it.
LATENCY_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
# Rows read per scrape for the latency histogram, so one scrape after a long pause stays short.
_LATENCY_ROWS_PER_SCRAPE = 50_000
_PROXY_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


class ZfjlCollector(Collector):
    """Collects the figures at scrape time from the database and the registered ingest source."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        # The latency histogram counts segments stored since this process first looked (a counter that
        # starts at zero on restart): recordings with an id above the newest one seen so far.
        self._last_id: int | None = None
        self._buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._sum = 0.0

    def collect(self) -> Iterator[Metric]:
        """Every metric family, read now."""
        with session_scope(self.app) as session:
            count, total = figures.stored_totals(session)
            stored = GaugeMetricFamily("zfjl_segments_stored", "Segments stored (recordings in the database)")
            stored.add_metric([], count)
            yield stored
            size = GaugeMetricFamily("zfjl_bytes_stored", "Bytes of stored segments")
            size.add_metric([], total)
            yield size
            yield self._latency(session)
            rejections = CounterMetricFamily(
                "zfjl_ingest_rejections", "Refused uploads by code (the security log)", labels=["code"]
            )
            for code, occurrences in sorted(figures.rejections_by_code(session).items()):
                rejections.add_metric([code], occurrences)
            yield rejections
            yield from self._backlog(session)
            alerts = GaugeMetricFamily("zfjl_alerts_open", "Open device alerts by kind", labels=["kind"])
            for kind, open_count in sorted(figures.open_alerts_by_kind(session).items()):
                alerts.add_metric([kind], open_count)
            yield alerts
            yield from self._leases(session)
        yield from self._ingest()

    @staticmethod
    def _leases(session: Session) -> Iterator[Metric]:
        """Which process holds each singleton job's lease, its fencing token and the job's rounds."""
        holders = GaugeMetricFamily(
            "zfjl_job_lease_token",
            "Fencing token of each singleton job's lease, labelled with its holder (none: free or expired)",
            labels=["job", "holder"],
        )
        expires = GaugeMetricFamily(
            "zfjl_job_lease_expires_in_seconds",
            "Seconds until the lease expires unless renewed",
            labels=["job"],
        )
        runs = CounterMetricFamily(
            "zfjl_job_runs", "Rounds of each singleton job, all processes", labels=["job"]
        )
        last = GaugeMetricFamily(
            "zfjl_job_last_run_age_seconds", "Seconds since the job's last round started", labels=["job"]
        )
        for state in job_leases.lease_states(session):
            holders.add_metric([state.job, state.holder or ""], state.token)
            expires.add_metric([state.job], state.expires_in_s)
            runs.add_metric([state.job], state.runs)
            if state.last_run_age_s is not None:
                last.add_metric([state.job], state.last_run_age_s)
        yield from (holders, expires, runs, last)

    def _latency(self, session: Session) -> Metric:
        """JL-17: seconds from the end of a segment's recording (its signed manifest) to its commit here."""
        with self._lock:
            if self._last_id is None:
                self._last_id = figures.newest_recording_id(session)
            for rec_id, seconds in figures.stored_latencies(session, self._last_id, _LATENCY_ROWS_PER_SCRAPE):
                self._last_id = max(self._last_id, rec_id)
                index = next((i for i, bound in enumerate(LATENCY_BUCKETS_S) if seconds <= bound), -1)
                self._buckets[index] += 1
                self._sum += seconds
            cumulative, running = [], 0
            for bound, observed in zip((*LATENCY_BUCKETS_S, float("inf")), self._buckets, strict=True):
                running += observed
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
            total = self._sum
        return HistogramMetricFamily(
            "zfjl_ingest_latency_seconds",
            "Seconds from the end of a segment's recording to its commit on the server (JL-17: 24 h)",
            buckets=cumulative,
            sum_value=total,
        )

    def _backlog(self, session: Session) -> Iterator[Metric]:
        """Each device's unsent segments and bytes, and its oldest one's age, from its latest health."""
        segments = GaugeMetricFamily(
            "zfjl_device_backlog_segments", "Unsent segments per device (latest health)", labels=["device"]
        )
        size = GaugeMetricFamily(
            "zfjl_device_backlog_bytes", "Unsent bytes per device (latest health)", labels=["device"]
        )
        age = GaugeMetricFamily(
            "zfjl_device_oldest_pending_age_seconds",
            "Age of the oldest unsent segment per device (JL-17: 24 h)",
            labels=["device"],
        )
        for backlog in figures.latest_backlogs(session):
            segments.add_metric([backlog.device_id], backlog.segments)
            size.add_metric([backlog.device_id], backlog.size)
            if backlog.oldest_pending_age_s is not None:
                age.add_metric([backlog.device_id], backlog.oldest_pending_age_s)
        yield from (segments, size, age)

    def _ingest(self) -> Iterator[Metric]:
        """This process's (or its ingest children's summed) ingest counters and finalize queue depths."""
        source = ingest_source(self.app)
        if source is None:
            return
        stats = source.stats()
        messages = CounterMetricFamily(
            "zfjl_ingest_messages",
            "Uplink messages handled by this process and its ingest children, by kind",
            labels=["kind"],
        )
        for kind, number in sorted(stats.get("messages", {}).items()):
            messages.add_metric([kind], number)
        yield messages
        dropped = CounterMetricFamily(
            "zfjl_ingest_dropped",
            "Uplink messages dropped by this process and its ingest children, by reason",
            labels=["reason"],
        )
        for reason, number in sorted(stats.get("dropped", {}).items()):
            dropped.add_metric([reason], number)
        yield dropped
        for name, value in sorted(stats.items()):
            if isinstance(value, int) and not isinstance(value, bool):
                counter = CounterMetricFamily(
                    f"zfjl_ingest_{name}", f"Ingest counter {name} of this process and its ingest children"
                )
                counter.add_metric([], value)
                yield counter
        depth = GaugeMetricFamily(
            "zfjl_ingest_finalize_queue_depth",
            "Finalizes (hash, store, commit) waiting per ingest worker (p<index>/w<n> in an ingest child)",
            labels=["worker"],
        )
        for worker, waiting in sorted(source.queue_depths().items()):
            depth.add_metric([worker], waiting)
        yield depth
        if source.per_process is not None:
            yield from self._per_process(source.per_process())

    @staticmethod
    def _per_process(counts: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        """How the work spread over the ingest children (by index; a replaced child's counts stay)."""
        messages = CounterMetricFamily(
            "zfjl_ingest_process_messages", "Uplink messages handled per ingest child", labels=["process"]
        )
        committed = CounterMetricFamily(
            "zfjl_ingest_process_segments_committed",
            "Segments committed per ingest child",
            labels=["process"],
        )
        for process, stats in sorted(counts.items()):
            kinds = stats.get("messages", {})
            messages.add_metric([process], sum(v for v in kinds.values() if isinstance(v, int)))
            committed.add_metric([process], int(stats.get("segments_committed", 0)))
        yield from (messages, committed)


def _registry(app: Flask) -> CollectorRegistry:
    """One registry per app (tests run several apps in one process; the global one would mix them)."""
    registry: CollectorRegistry | None = app.extensions.get(_REGISTRY_KEY)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ZfjlCollector(app))
        app.extensions[_REGISTRY_KEY] = registry
    return registry


def _allowed() -> bool:
    """Bearer token when ZFJL_METRICS_TOKEN is set; otherwise a direct loopback client only."""
    token: str = current_app.extensions["zfjl.settings"].metrics_token
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    if any(header in request.headers for header in _PROXY_HEADERS):
        return False  # a reverse proxy on this host makes every client look local
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


@bp.get("/metrics")
@api_view(
    "metrics.metrics",
    "Prometheus 指标 / Prometheus metrics",
    auth="public",
    response_content_type="text/plain",
    responses={403: "需要 ZFJL_METRICS_TOKEN 或本机访问 / needs ZFJL_METRICS_TOKEN or a loopback client"},
)
def metrics() -> ResponseReturnValue:
    """The Prometheus text exposition of every figure."""
    if not _allowed():
        return error_response(
            403,
            "metrics_forbidden",
            "指标只对本机或持有令牌的采集器开放",
            "metrics are served to loopback clients or to a scraper with the bearer token only",
        )
    return Response(generate_latest(_registry(current_app)), mimetype=CONTENT_TYPE_LATEST)
