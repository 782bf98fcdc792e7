"""Prometheus /metrics: the figures an operator watches move when evidence is stored; access is guarded."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.domain.evidence.commit import commit_segment
from server.domain.evidence.models import IngestRejection
from server.domain.fleet import devices
from server.domain.fleet.models import DeviceAlert
from server.domain.fleet.telemetry_models import DeviceHealthSample
from server.infra.db import run_migrations, session_scope
from server.infra.metrics import ChildCounters, SnapshotWriter, add_counts, register_ingest_source
from server.infra.storage import STORE_KEY
from server.workers.leases import JobLeases
from tests.conftest import SegmentFactory

LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


def scrape(client: FlaskClient, **kwargs: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, keyed by (name, sorted labels)."""
    response = client.get("/metrics", environ_base=LOCAL, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_a_stored_segment_moves_the_stored_figures_and_the_latency_histogram(
    app: Flask, client: FlaskClient, segments: SegmentFactory
) -> None:
    with session_scope(app) as session:
        devices.register_device(session, segments.device_id, segments.public_key)
    before = scrape(client)
    assert before[("zfjl_segments_stored", ())] == 0
    assert before[("zfjl_ingest_latency_seconds_count", ())] == 0

    signed, path = segments.make(b"x" * 5000)
    with session_scope(app) as session:
        commit_segment(session, app.extensions[STORE_KEY], signed, path)
    after = scrape(client)
    assert after[("zfjl_segments_stored", ())] == 1
    assert after[("zfjl_bytes_stored", ())] == 5000
    # The factory's segments were recorded in January 2026: stored long after, beyond the JL-17 day.
    assert after[("zfjl_ingest_latency_seconds_count", ())] == 1
    assert after[("zfjl_ingest_latency_seconds_bucket", (("le", "86400.0"),))] == 0
    assert after[("zfjl_ingest_latency_seconds_bucket", (("le", "+Inf"),))] == 1
    assert after[("zfjl_ingest_latency_seconds_sum", ())] > 86400
    # Scraped again, nothing new: the histogram does not count the segment twice.
    assert scrape(client)[("zfjl_ingest_latency_seconds_count", ())] == 1


def test_refusals_backlog_alerts_and_ingest_queues_are_exported(app: Flask, client: FlaskClient) -> None:
    now = datetime.now(UTC)
    with session_scope(app) as session:
        session.add(IngestRejection(device_id="dev-9", code="bad_signature", message="x", occurrences=3))
        session.add(IngestRejection(device_id=None, code="unknown_device", message="y"))
        for at, backlog in ((datetime(2026, 1, 1, tzinfo=UTC), 40), (now, 7)):
            session.add(
                DeviceHealthSample(
                    device_id="dev-9",
                    at=at,
                    backlog_bytes=backlog * 1000,
                    backlog_segments=backlog,
                    oldest_pending_age_s=90.0,
                )
            )
        session.add(
            DeviceAlert(device_id="dev-9", kind="backlog", severity="warning", message="m", message_en="m")
        )
        session.add(
            DeviceAlert(
                device_id="dev-8",
                kind="offline",
                severity="warning",
                message="m",
                message_en="m",
                cleared_at=now,
            )
        )
    register_ingest_source(
        app,
        lambda: {"messages": {"file_chunk": 12}, "dropped": {}, "segments_committed": 2, "rejections": {}},
        lambda: {"w0": 3},
    )
    got = scrape(client)
    assert got[("zfjl_ingest_rejections_total", (("code", "bad_signature"),))] == 3
    assert got[("zfjl_ingest_rejections_total", (("code", "unknown_device"),))] == 1
    # The latest health report counts, not an older one.
    assert got[("zfjl_device_backlog_segments", (("device", "dev-9"),))] == 7
    assert got[("zfjl_device_backlog_bytes", (("device", "dev-9"),))] == 7000
    assert got[("zfjl_device_oldest_pending_age_seconds", (("device", "dev-9"),))] == 90
    assert got[("zfjl_alerts_open", (("kind", "backlog"),))] == 1
    assert ("zfjl_alerts_open", (("kind", "offline"),)) not in got  # cleared
    assert got[("zfjl_ingest_messages_total", (("kind", "file_chunk"),))] == 12
    assert got[("zfjl_ingest_segments_committed_total", ())] == 2
    assert got[("zfjl_ingest_finalize_queue_depth", (("worker", "w0"),))] == 3


def test_metrics_only_for_loopback_without_a_token(client: FlaskClient) -> None:
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.10"}).status_code == 403
    # Through a reverse proxy on this host every client looks local: refused too.
    proxied = client.get("/metrics", environ_base=LOCAL, headers={"X-Forwarded-For": "198.51.100.4"})
    assert proxied.status_code == 403
    body = proxied.get_json()["error"]
    assert body["code"] == "metrics_forbidden" and body["message"] and body["message_en"]
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_metrics_token_lets_a_remote_scraper_in_and_no_one_else(tmp_path: Path) -> None:
    token = "scrape-" + "t" * 30
    app = create_app(
        {
            "data_dir": str(tmp_path / "var"),
            "database_url": f"sqlite:///{tmp_path / 'zfjl.db'}",
            "metrics_token": token,
        }
    )
    run_migrations(f"sqlite:///{tmp_path / 'zfjl.db'}")
    client = app.test_client()
    remote = {"REMOTE_ADDR": "192.0.2.10"}
    assert client.get("/metrics", environ_base=remote).status_code == 403
    assert client.get("/metrics", environ_base=LOCAL).status_code == 403  # the token is needed locally too
    wrong = {"Authorization": "Bearer " + "x" * len(token)}
    assert client.get("/metrics", environ_base=remote, headers=wrong).status_code == 403
    right = client.get("/metrics", environ_base=remote, headers={"Authorization": f"Bearer {token}"})
    assert right.status_code == 200 and b"zfjl_segments_stored" in right.data
    assert token not in str(app.extensions["zfjl.settings"].safe_dict())


def test_job_leases_show_who_runs_each_singleton_job(app: Flask, client: FlaskClient) -> None:
    """docs/operations.md, section 13: the holder, its token and the rounds of every singleton job."""
    first, second = JobLeases(app, ttl_s=60, holder="zfjl-1:101:aaaaaa"), JobLeases(app, ttl_s=60)
    try:
        assert first.lease("archive").ensure() and first.lease("archive").claim_round(3600)
        assert not second.lease("archive").ensure()
        samples = scrape(client)
        assert samples[("zfjl_job_lease_token", (("holder", "zfjl-1:101:aaaaaa"), ("job", "archive")))] == 1
        assert samples[("zfjl_job_runs_total", (("job", "archive"),))] == 1
        assert 0 < samples[("zfjl_job_lease_expires_in_seconds", (("job", "archive"),))] <= 60
        assert samples[("zfjl_job_last_run_age_seconds", (("job", "archive"),))] >= 0
        first.stop()  # released: no holder any more, the token stays
        assert second.lease("archive").ensure()
        samples = scrape(client)
        assert samples[("zfjl_job_lease_token", (("holder", second.holder), ("job", "archive")))] == 2
        assert not any(name == "zfjl_job_lease_token" and ("holder", "zfjl-1:101:aaaaaa") in labels
                       for name, labels in samples)  # fmt: skip
    finally:
        first.stop()
        second.stop()
def _snapshot(folder: Path, index: int, pid: int, committed: int, chunks: int, waiting: int) -> None:
    """What an ingest child writes (``SnapshotWriter``), for a child with the given pid."""
    data = {
        "stats": {"messages": {"file_chunk": chunks}, "dropped": {}, "segments_committed": committed},
        "queue_depths": {"w0": waiting},
    }
    (folder / f"ingest-{index}-{pid}.json").write_text(json.dumps(data))


def test_a_runner_sums_its_children_and_keeps_a_dead_ones_counts(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """The runner's /metrics is the sum over its ingest children; when one dies its counts stay (a
    counter never goes back), its queue depth goes, and its replacement adds to the same process."""
    live: list[int] = [101, 102]
    # A folder left by a runner that died (no such pid) is removed; the new one is empty.
    stale = tmp_path / "run" / "ingest-metrics-4000001"
    stale.mkdir(parents=True)
    counters = ChildCounters(tmp_path / "run", lambda: list(live))
    assert not stale.exists() and list(counters.folder.iterdir()) == []
    register_ingest_source(app, counters.stats, counters.queue_depths, counters.per_process)
    _snapshot(counters.folder, 0, 101, committed=5, chunks=10, waiting=1)
    _snapshot(counters.folder, 1, 102, committed=3, chunks=6, waiting=2)
    got = scrape(client)
    assert got[("zfjl_ingest_segments_committed_total", ())] == 8
    assert got[("zfjl_ingest_messages_total", (("kind", "file_chunk"),))] == 16
    assert got[("zfjl_ingest_process_segments_committed_total", (("process", "1"),))] == 3
    assert got[("zfjl_ingest_finalize_queue_depth", (("worker", "p1/w0"),))] == 2

    live.remove(102)  # process 1 is killed, replaced by pid 103, which stores one segment
    counters.retire(102)
    live.append(103)
    _snapshot(counters.folder, 1, 103, committed=1, chunks=2, waiting=0)
    got = scrape(client)
    assert got[("zfjl_ingest_segments_committed_total", ())] == 9
    assert got[("zfjl_ingest_process_segments_committed_total", (("process", "1"),))] == 4
    assert got[("zfjl_ingest_process_messages_total", (("process", "1"),))] == 8
    assert got[("zfjl_ingest_finalize_queue_depth", (("worker", "p1/w0"),))] == 0
    assert sorted(p.name for p in counters.folder.iterdir()) == ["ingest-0-101.json", "ingest-1-103.json"]
    counters.close()
    assert not counters.folder.exists()


def test_add_counts_sums_nested_counters_and_ignores_the_rest() -> None:
    assert add_counts(
        {"a": 1, "m": {"x": 2}, "s": "text"}, {"a": 2, "m": {"x": 1, "y": 4}, "b": 3, "f": True, "g": 1.5}
    ) == {"a": 3, "m": {"x": 3, "y": 4}, "b": 3, "s": "text"}


def test_a_child_writes_its_counters_and_writes_them_last_at_stop(tmp_path: Path) -> None:
    counts = {"segments_committed": 1}
    writer = SnapshotWriter(tmp_path, 0, lambda: dict(counts), lambda: {"w0": 0}, interval_s=60)
    writer.start()
    assert json.loads(writer.path.read_text())["stats"] == {"segments_committed": 1}
    counts["segments_committed"] = 2  # committed while stopping: the final snapshot has it
    writer.stop()
    assert json.loads(writer.path.read_text())["stats"] == {"segments_committed": 2}
    assert writer.path.name == f"ingest-0-{os.getpid()}.json"
