"""Scale-out with real processes (issue #12, docs/scaling.md): ``zfjl-server run --ingest-processes 2``
behind Mosquitto's ``$share`` with one worker process killed by SIGKILL mid-transfer, a 3-node NATS
cluster losing a node for good while recorders drain their backlog (its recorders fail over to the
others), and a primary/standby pair of Mosquittos the recorder leaves and returns to in the middle of
an upload. Every segment must be stored exactly once and every recorder's chain must stay clean (JL-17:
nothing recorded is lost; JL-6: nothing is altered).

Both tests wait on conditions (rows stored, processes up), never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from bench.scale_rig import (
    NatsCluster,
    RecorderFleet,
    ServerProcess,
    find_nats_server,
    prepare_recorders,
    register_recorders,
    stale_staging,
    stored_summary,
    verify_exactly_once,
    wait_until,
)
from edge_agent.config import AgentConfig
from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox
from edge_agent.uploader import Uploader
from protocol import topics
from protocol.messages import FileChunk, Message, TransferAck
from server.infra.config import ConfigError, load_settings
from server.infra.ingest_key import IngestSigner
from tests.fixtures.mqtt import MosquittoBroker, find_mosquitto, hold_port

RECORDERS = 4
SEGMENTS_EACH = 4
SEGMENT_BYTES = 512 * 1024  # two 256 KiB chunks each: a kill lands in the middle of transfers
TOTAL = RECORDERS * SEGMENTS_EACH
# How long a recorder's broker must stay unreachable before it moves to the next (default 20 s).
FAILOVER_AFTER_S = 3.0


def _server_env(tmp_path: Path, mqtt_url: str, **extra: str) -> dict[str, str]:
    """``ZFJL_*`` of the server processes: SQLite and a local object folder in ``tmp_path``."""
    return {
        "ZFJL_DATA_DIR": str(tmp_path / "server"),
        "ZFJL_HTTP_PORT": "0",
        "ZFJL_MQTT_URL": mqtt_url,
        "ZFJL_SCRUB_BYTES_PER_S": "0",  # the bytes are checked below, once, after the run
        **extra,
    }


def _ingest_keys(env: dict[str, str]) -> tuple[str, ...]:
    """The ingest public keys the recorders pin (the key is generated in the data folder here)."""
    return tuple(IngestSigner.from_settings(load_settings(environ=env)).public_keys())


def _kill_one_ingest_process_mid_transfer(tmp_path: Path, env: dict[str, str], broker_url: str) -> None:
    """Two ingest processes; one gets SIGKILL after the first segment is stored while the four
    recorders still have 15 to send. The recorders' ack timeout, status query and resend recover what
    the dead process had in flight; the runner starts a replacement process and sweeps what the dead
    one left. Every segment stored once, chains clean, nothing left in staging."""
    database_url = load_settings(environ=env).database_url
    recorders = prepare_recorders(tmp_path / "rec", RECORDERS, SEGMENTS_EACH, SEGMENT_BYTES, "kill")
    register_recorders(database_url, recorders)
    # The runner supervises only: no API or background loops competing for the CPU in this test.
    server = ServerProcess(tmp_path, env, roles="ingest", ingest_processes=2)
    fleet: RecorderFleet | None = None
    try:
        server.wait_ready()
        children = server.child_pids()
        assert len(children) == 2, server.log_tail()
        fleet = RecorderFleet(recorders, [broker_url], _ingest_keys(env))
        fleet.connect()
        fleet.start()
        wait_until(lambda: stored_summary(database_url) >= 1, 60, "a first segment stored")
        os.kill(children[0], signal.SIGKILL)
        stored_at_kill = stored_summary(database_url)
        assert stored_at_kill < TOTAL, "the backlog was gone before the kill: nothing was in flight"
        assert fleet.drain(120), f"recorders did not drain: {fleet.stats()}\n{server.log_tail()}"
        stats = fleet.stats()
        assert stats["segments_failed"] == 0 and stats["pending"] == 0, stats
        assert stats["segments_completed"] == TOTAL, stats
        # The runner noticed the death and started a replacement in the same group.
        wait_until(
            lambda: len(server.child_pids()) == 2 and children[0] not in server.child_pids(),
            120,
            "a replacement ingest process",
        )
        # ...and removed what the dead process left half-written in the object store and in staging.
        wait_until(
            lambda: f"temporary object files of dead ingest pid {children[0]}" in server.log_text(),
            60,
            "the dead process's temporary files swept",
        )
        wait_until(
            lambda: f"staging leftovers of dead ingest pid {children[0]}" in server.log_text(),
            60,
            "the dead process's staging leftovers swept",
        )
        print(f"{stored_at_kill} stored at the kill; recorders:", stats)
    finally:
        if fleet is not None:
            fleet.close()
        exit_code = server.stop()
    assert exit_code == 0, server.log_tail()
    assert verify_exactly_once(env, recorders) == []
    # Nothing waits for the staging janitor (hours): the live processes discarded what they stored and
    # the runner swept what the dead one left (a stored segment's folder, a half-deleted one).
    assert stale_staging(env) == 0, server.log_tail()


@pytest.mark.mosquitto
def test_jl17_ingest_process_killed_mid_transfer_loses_and_duplicates_nothing(
    tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> None:
    """Two ingest processes share ``$share/zfjl-ingest`` on Mosquitto; one is killed mid-transfer."""
    env = _server_env(tmp_path, mosquitto_broker.url)
    _kill_one_ingest_process_mid_transfer(tmp_path, env, mosquitto_broker.url)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one ``/metrics`` scrape (from loopback: no token needed)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.mosquitto
def test_metrics_of_a_runner_sum_its_ingest_processes(
    tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> None:
    """``zfjl-server run --roles api,ingest --ingest-processes 2``: the runner ingests nothing itself,
    yet one scrape of its ``/metrics`` counts every segment its two children stored, and shows how the
    messages spread over them (docs/operations.md, "Metrics")."""
    env = _server_env(tmp_path, mosquitto_broker.url)
    database_url = load_settings(environ=env).database_url
    recorders = prepare_recorders(tmp_path / "rec", RECORDERS, SEGMENTS_EACH, SEGMENT_BYTES, "metrics")
    register_recorders(database_url, recorders)
    server = ServerProcess(tmp_path, env, roles="api,ingest", ingest_processes=2)
    fleet: RecorderFleet | None = None
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def committed_in_scrape() -> float:
        nonlocal scraped
        scraped = _scrape(server.http_url())
        return scraped.get(("zfjl_ingest_segments_committed_total", ()), 0.0)

    try:
        server.wait_ready()
        assert len(server.child_pids()) == 2, server.log_tail()
        fleet = RecorderFleet(recorders, [mosquitto_broker.url], _ingest_keys(env))
        fleet.connect()
        fleet.start()
        assert fleet.drain(180), f"recorders did not drain: {fleet.stats()}\n{server.log_tail()}"
        assert stored_summary(database_url) == TOTAL
        # The children write their counters every second: wait for the last ones, then compare.
        try:
            wait_until(lambda: committed_in_scrape() == TOTAL, 60, "every commit counted", poll_s=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {scraped}\n{server.log_tail()}") from None
        per_process = {
            labels[0][1]: value
            for (name, labels), value in scraped.items()
            if name == "zfjl_ingest_process_messages_total"
        }
        assert sorted(per_process) == ["0", "1"], scraped
        assert all(value > 0 for value in per_process.values()), per_process  # $share split the work
        messages = sum(v for (n, _), v in scraped.items() if n == "zfjl_ingest_messages_total")
        assert messages == sum(per_process.values())
        committed = {
            labels[0][1]: value
            for (name, labels), value in scraped.items()
            if name == "zfjl_ingest_process_segments_committed_total"
        }
        assert sum(committed.values()) == TOTAL, committed
        assert ("zfjl_segments_stored", ()) in scraped and scraped[("zfjl_segments_stored", ())] == TOTAL
        workers = {
            dict(labels)["worker"] for (n, labels) in scraped if n == "zfjl_ingest_finalize_queue_depth"
        }
        assert workers == {"p0/w0", "p1/w0"}, workers
        print("per ingest process: messages", per_process, "segments committed", committed)
    finally:
        if fleet is not None:
            fleet.close()
        exit_code = server.stop()
    assert exit_code == 0, server.log_tail()


@pytest.mark.nats
@pytest.mark.parametrize("ingest", ["mqtt", "nats-queue-group"])
def test_jl17_nats_cluster_node_killed_recorders_fail_over_and_finish(tmp_path: Path, ingest: str) -> None:
    """Three nats-server nodes (JetStream R3, MQTT on each), the recorders on nodes 1 and 2, each
    listing the other nodes after its own (``mqtt_urls``). Node 2 is killed (SIGKILL) after the first
    segment is stored and stays down: the recorders on node 1 keep storing through the two survivors,
    node 2's recorders move to a surviving node after their failover window, ask the status of their
    transfers in flight and finish. Exactly once, chains clean.

    ``mqtt``: NATS's MQTT has no ``$share`` (it grants the subscription but delivers nothing), so one
    ingest process on node 0 subscribes to the plain filter (``ZFJL_MQTT_SHARE_GROUP`` empty).
    ``nats-queue-group``: two ingest processes consume core NATS as one queue group
    (``ZFJL_INGEST_NATS_URL``). They are given node 2 only and learn the other nodes from the cluster,
    so the kill takes both their connections: they must reconnect to a survivor by themselves
    (docs/scaling.md).

    The cluster runs with the logins and permissions of docs/operations.md ("Ingest on NATS"): each
    recorder its own MQTT login, writing only its own uplink; the ingest its own; an anonymous client
    is refused by every node."""
    binary = find_nats_server()
    if binary is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    (tmp_path / "nats").mkdir()
    recorders = prepare_recorders(tmp_path / "rec", RECORDERS, SEGMENTS_EACH, SEGMENT_BYTES, "nats")
    logins = {r.device_id: (r.device_id, f"pw-{os.urandom(8).hex()}") for r in recorders}
    cluster = NatsCluster(tmp_path / "nats", binary, authorization=_nats_authorization(logins))
    server: ServerProcess | None = None
    fleet: RecorderFleet | None = None

    started = time.monotonic()
    phases: dict[str, float] = {}  # seconds from the start at which each phase ended

    def report() -> str:
        """What a failure needs: the phases passed, each recorder's broker and backlog, the server's log."""
        recorders_now = fleet.per_recorder() if fleet is not None else {}
        tail = server.log_tail() if server is not None else ""
        return (
            f"phases ended at (s): {phases}\nfleet: {fleet.stats() if fleet else {}}\n"
            f"recorders: {recorders_now}\nserver log:\n{tail}"
        )

    try:
        cluster.start()
        phases["cluster"] = time.monotonic() - started
        for index in range(3):
            assert _anonymous_mqtt_refused(cluster.mqtt_url(index)), f"node {index} took an anonymous client"
        ingest_mqtt = cluster.mqtt_url(0).replace("mqtt://", f"mqtt://ingest-mqtt:{NATS_INGEST_PASSWORD}@", 1)
        if ingest == "mqtt":
            env = _server_env(tmp_path, ingest_mqtt, ZFJL_MQTT_SHARE_GROUP="")
        else:
            nats_url = cluster.client_url(2).replace("nats://", f"nats://ingest:{NATS_INGEST_PASSWORD}@", 1)
            env = _server_env(tmp_path, ingest_mqtt, ZFJL_INGEST_NATS_URL=nats_url)
        database_url = load_settings(environ=env).database_url
        register_recorders(database_url, recorders)
        server = ServerProcess(tmp_path, env, roles="ingest", ingest_processes=1 if ingest == "mqtt" else 2)
        server.wait_ready()
        phases["server"] = time.monotonic() - started
        urls = [cluster.mqtt_url(1), cluster.mqtt_url(2), cluster.mqtt_url(0)]
        # Recorders on node 1 list [1, 2, 0], those on node 2 list [2, 0, 1].
        fleet = RecorderFleet(
            recorders,
            urls,
            _ingest_keys(env),
            failover_after_s=FAILOVER_AFTER_S,
            spread_over=2,
            logins=logins,
        )
        fleet.connect()
        fleet.start()
        try:
            wait_until(lambda: stored_summary(database_url) >= 1, 60, "a first segment stored")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{report()}") from None
        phases["first segment"] = time.monotonic() - started
        cluster.kill_node(2)
        killed_at = time.monotonic()
        stored_at_kill = stored_summary(database_url)
        assert stored_at_kill < TOTAL, "the backlog was gone before the kill"
        on_node_2 = [r.device_id for r in recorders if fleet.broker_of[r.device_id] == cluster.mqtt_url(2)]
        # Node 2 is never started again: its recorders must move to a surviving node by themselves.
        try:
            wait_until(
                lambda: (
                    all(fleet.current_brokers()[d] != cluster.mqtt_url(2) for d in on_node_2)
                    and all(fleet.per_recorder()[d]["connected"] for d in on_node_2)
                ),
                120,
                "node 2's recorders connected to a surviving node",
                poll_s=0.2,
            )
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{report()}") from None
        phases["failed over"] = time.monotonic() - started
        assert fleet.drain(240), f"recorders did not drain\n{report()}"
        phases["drained"] = time.monotonic() - started
        stats = fleet.stats()
        assert stats["segments_failed"] == 0 and stats["pending"] == 0, report()
        assert stats["segments_completed"] == TOTAL, report()
        assert stats["failovers"] >= len(on_node_2), report()
        assert cluster.procs[2] is not None and cluster.procs[2].poll() is not None  # still down
        if ingest != "mqtt":
            # Both ingest processes lost node 2 and carried on from a survivor, no restart.
            assert server.log_text().count("reconnected to NATS") >= 2, report()
            assert "exited with" not in server.log_text(), report()
        moved = {d: fleet.current_brokers()[d] for d in on_node_2}
        print(
            f"drained {time.monotonic() - killed_at:.1f} s after the kill ({stored_at_kill} stored then);",
            "recorders:",
            stats,
            "node 2's recorders now on:",
            moved,
            "phases ended at (s):",
            {name: round(at, 1) for name, at in phases.items()},
        )
    finally:
        exit_code = _stop_all(fleet, server, cluster)
    assert exit_code == 0, server.log_tail() if server else ""
    assert verify_exactly_once(env, recorders) == []


NATS_INGEST_PASSWORD = "ingest-Pw-5d2e7a"


def _nats_authorization(logins: dict[str, tuple[str, str]]) -> str:
    """docs/operations.md ("Ingest on NATS"): the ingest reads every uplink (natively only in its queue
    group) and writes only downlinks; a recorder, over MQTT only, writes only its own uplink and reads
    only its own downlink. ``ingest-mqtt`` is the ingest's login where it subscribes over MQTT."""
    users = [
        f"""{{ user: ingest, password: "{NATS_INGEST_PASSWORD}", allowed_connection_types: ["STANDARD"],
           permissions: {{ publish: ["zfjl.v1.*.down.>"], subscribe: ["zfjl.v1.*.up.> zfjl-ingest"] }} }}""",
        f"""{{ user: ingest-mqtt, password: "{NATS_INGEST_PASSWORD}", allowed_connection_types: ["MQTT"],
           permissions: {{ publish: ["zfjl.v1.*.down", "zfjl.v1.*.down.>"],
                          subscribe: ["zfjl.v1.*.up", "zfjl.v1.*.up.>", "$MQTT.sub.>"] }} }}""",
    ]
    for device_id, (user, password) in logins.items():
        users.append(
            f"""{{ user: {user}, password: "{password}", allowed_connection_types: ["MQTT"], permissions: {{
                 publish: ["zfjl.v1.{device_id}.up.>"],
                 subscribe: ["zfjl.v1.{device_id}.down", "zfjl.v1.{device_id}.down.>", "$MQTT.sub.>"] }} }}"""
        )
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"


def _anonymous_mqtt_refused(url: str) -> bool:
    """Whether the MQTT listener at ``url`` refuses a client that gives no login."""
    port = int(url.rsplit(":", 1)[1])
    answered = threading.Event()
    codes: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"anonymous-{os.urandom(3).hex()}")

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        codes.append(int(reason.value))
        answered.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except OSError:
        return True
    client.loop_start()
    try:
        answered.wait(10)
    finally:
        client.loop_stop()
        client.disconnect()
    return not codes or codes[0] != 0


def _stop_all(fleet: RecorderFleet | None, server: ServerProcess | None, cluster: NatsCluster) -> int:
    """Close the recorders, stop the server (its exit code; 0 if it never started), stop the nodes."""
    try:
        if fleet is not None:
            fleet.close()
        return server.stop() if server is not None else 0
    finally:
        cluster.stop()


def _one_nats_node(tmp_path: Path) -> NatsCluster:
    """One nats-server with JetStream and its MQTT listener (skip where the binary is missing)."""
    binary = find_nats_server()
    if binary is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    (tmp_path / "nats").mkdir()
    return NatsCluster(tmp_path / "nats", binary, nodes=1)


def _per_process(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> dict[str, float]:
    """``{process index: value}`` of a per-ingest-child family of one scrape."""
    return {labels[0][1]: value for (metric, labels), value in scraped.items() if metric == name}


@pytest.mark.nats
def test_two_ingest_processes_split_the_uplink_as_one_nats_queue_group(tmp_path: Path) -> None:
    """nats-server's MQTT grants ``$share`` but delivers nothing on it; with ``ZFJL_INGEST_NATS_URL``
    the ingest children consume core NATS in one queue group instead. Recorders upload over MQTT to the
    node's MQTT listener: both children handle chunks, no chunk is handled twice (each message went to
    one member), every ack reaches its recorder, every segment is stored once and the chains are clean."""
    cluster = _one_nats_node(tmp_path)
    server: ServerProcess | None = None
    fleet: RecorderFleet | None = None
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def committed_in_scrape() -> float:
        nonlocal scraped
        assert server is not None
        scraped = _scrape(server.http_url())
        return scraped.get(("zfjl_ingest_segments_committed_total", ()), 0.0)

    try:
        cluster.start()
        env = _server_env(tmp_path, cluster.mqtt_url(0), ZFJL_INGEST_NATS_URL=cluster.client_url(0))
        database_url = load_settings(environ=env).database_url
        recorders = prepare_recorders(tmp_path / "rec", RECORDERS, SEGMENTS_EACH, SEGMENT_BYTES, "natsq")
        register_recorders(database_url, recorders)
        server = ServerProcess(tmp_path, env, roles="api,ingest", ingest_processes=2)
        server.wait_ready()
        assert len(server.child_pids()) == 2, server.log_tail()
        assert server.log_text().count("(queue group zfjl-ingest) on NATS 127.0.0.1:") == 2, server.log_tail()
        fleet = RecorderFleet(recorders, [cluster.mqtt_url(0)], _ingest_keys(env))
        fleet.connect()
        fleet.start()
        assert fleet.drain(120), f"recorders did not drain: {fleet.stats()}\n{server.log_tail()}"
        stats = fleet.stats()
        assert stats["segments_completed"] == TOTAL and stats["segments_failed"] == 0, stats
        try:
            wait_until(lambda: committed_in_scrape() == TOTAL, 60, "every commit counted", poll_s=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {scraped}\n{server.log_tail()}") from None
        per_process = _per_process(scraped, "zfjl_ingest_process_messages_total")
        committed = _per_process(scraped, "zfjl_ingest_process_segments_committed_total")
        assert sorted(per_process) == ["0", "1"] and all(v > 0 for v in per_process.values()), per_process
        assert sum(committed.values()) == TOTAL, committed
        # A queue group gives each message to one member: the chunks handled, summed over both
        # processes, are at most the chunks the recorders sent (a plain subscription in each would
        # have handled every chunk twice).
        chunks_handled = scraped.get(("zfjl_ingest_messages_total", (("kind", "file_chunk"),)), 0.0)
        assert 0 < chunks_handled <= stats["chunks_sent"], (chunks_handled, stats)
        print("per ingest process: messages", per_process, "segments committed", committed, "fleet", stats)
    finally:
        exit_code = _stop_all(fleet, server, cluster)
    assert exit_code == 0, server.log_tail() if server else ""
    assert verify_exactly_once(env, recorders) == []


@pytest.mark.nats
def test_jl17_nats_ingest_process_killed_mid_transfer_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Two ingest processes in the NATS queue group (``ZFJL_INGEST_NATS_URL``), recorders on the node's
    MQTT listener; one process is killed mid-transfer. Core NATS is at most once: what the dead process
    had received is gone, and the recorders recover it through the other member exactly as a clean
    MQTT session's losses are recovered."""
    cluster = _one_nats_node(tmp_path)
    try:
        cluster.start()
        env = _server_env(tmp_path, cluster.mqtt_url(0), ZFJL_INGEST_NATS_URL=cluster.client_url(0))
        _kill_one_ingest_process_mid_transfer(tmp_path, env, cluster.mqtt_url(0))
    finally:
        cluster.stop()


def test_roles_are_validated_and_put_in_order() -> None:
    """``ZFJL_ROLES`` / ``--roles`` takes api, ingest and workers only; an unknown role stops the server."""
    assert load_settings({"roles": "workers, api"}).roles == "api,workers"
    assert load_settings({"roles": "ingest"}).has_role("ingest")
    assert not load_settings({"roles": "ingest"}).has_role("api")
    for bad in ("", "api,broker", ","):
        with pytest.raises(ConfigError):
            load_settings({"roles": bad})
    with pytest.raises(ConfigError):
        load_settings({"ingest_processes": 0})


def test_split_roles_need_an_external_broker(tmp_path: Path) -> None:
    """The embedded broker lives in one process: an ingest-only process without ZFJL_MQTT_URL refuses to
    start (it would ingest from a broker no device can reach)."""
    from server.runner import ServerRunner

    runner = ServerRunner({"data_dir": str(tmp_path / "var"), "http_port": 0, "roles": "ingest"})
    with pytest.raises(ConfigError):
        runner.start()
    assert runner.broker is None and not runner.workers


class _GatedLink:
    """The recorder's real link, with a gate before one chunk: the test holds the upload there, in the
    middle of a segment, while the link moves back to the primary broker."""

    def __init__(self, link: MqttLink, hold_before_chunk: int) -> None:
        self._link = link
        self._hold_before = hold_before_chunk
        self.chunks = 0
        self.held = threading.Event()  # the uploader waits at the gate
        self.opened = threading.Event()

    def publish(self, msg: Message) -> bool:
        """Publish through the link; the ``hold_before_chunk``-th chunk waits until the gate opens."""
        if isinstance(msg, FileChunk):
            self.chunks += 1
            if self.chunks == self._hold_before:
                self.held.set()
                self.opened.wait(120)
        return self._link.publish(msg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)


@contextlib.contextmanager
def _downlink_watch(broker: MosquittoBroker, device_id: str) -> Iterator[threading.Event]:
    """An event set when the server answers ``device_id`` on ``broker`` (subscribed before it yields)."""
    answered, subscribed = threading.Event(), threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch-" + os.urandom(3).hex())
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = lambda *args: answered.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe(topics.device_downlink_filter(device_id), qos=1)
        assert subscribed.wait(30), "the watch was never subscribed"
        yield answered
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.mosquitto
def test_jl17_recorder_returns_to_the_primary_broker_mid_upload_and_stores_once(tmp_path: Path) -> None:
    """Primary and standby Mosquitto, each with its own ingest process, one database, object store and
    staging (docs/scaling.md). The primary dies; the recorder moves to the standby and stores its first
    segment there. Then the standby's server is stopped (SIGSTOP) and the recorder sends the whole second
    segment to the standby broker, where nobody acknowledges it; the primary comes back on the same port,
    the recorder moves back to it (downlink first, then the standby connection closed) with that segment
    unacknowledged, and its status query there makes it send the segment again. The standby's server then
    resumes and handles the stale copy it finds queued. Every segment is stored exactly once, the chain
    clean (JL-17)."""
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return_after_s = 2.0
    with hold_port() as held_primary, hold_port() as held_standby:
        primary = MosquittoBroker(tmp_path / "primary", binary=binary, port=held_primary.getsockname()[1])
        standby = MosquittoBroker(tmp_path / "standby", binary=binary, port=held_standby.getsockname()[1])
        primary.start()
        standby.start()
        # Two segments of four 256 KiB chunks each.
        recorders = prepare_recorders(tmp_path / "rec", 1, 2, 4 * 256 * 1024, "back")
        env = _server_env(tmp_path, primary.url)
        database_url = load_settings(environ=env).database_url
        register_recorders(database_url, recorders)
        servers = [
            ServerProcess(tmp_path, env, roles="ingest"),
            ServerProcess(tmp_path, {**env, "ZFJL_MQTT_URL": standby.url}, roles="ingest"),
        ]
        recorder = recorders[0]
        config = AgentConfig(
            device_id=recorder.device_id,
            private_key_file=recorder.home / "device-key.pem",
            data_dir=recorder.home / "data",
            mqtt_urls=(primary.url, standby.url),
            mqtt_failover_after_s=0.5,
            mqtt_return_to_first_s=return_after_s,
            ingest_public_keys=_ingest_keys(env),
            chunk_bytes=256 * 1024,
            window=8,
            ack_timeout_s=2.0,
        )
        outbox = Outbox(config.outbox_path)
        holder: list[Uploader] = []

        def on_ack(ack: TransferAck) -> None:
            holder[0].on_ack(ack)

        def on_connected() -> None:
            if holder:
                holder[0].on_connected()

        link = MqttLink(config, on_ack=on_ack, on_connected=on_connected)
        gated = _GatedLink(link, hold_before_chunk=5)  # the second segment's first chunk
        stopped: list[ServerProcess] = []
        uploader = Uploader(outbox, gated, config, max_active=1)  # type: ignore[arg-type]
        holder.append(uploader)
        try:
            for server in servers:
                server.wait_ready()
            link.connect()
            assert link.wait_connected(60) and link.broker_url == primary.url
            primary.kill()
            wait_until(lambda: link.broker_url == standby.url and link.connected, 60, "failover")
            assert link.wait_downlink(30)
            uploader.start()
            assert gated.held.wait(60), "the upload never reached the second segment"
            wait_until(lambda: stored_summary(database_url) == 1, 60, "the first segment stored via standby")
            # Stop the standby only between two messages of the second transfer: a process stopped while it
            # holds a transfer's staging lock would hold up the primary's worker on that transfer too. So
            # wait until the first segment's staging is discarded (after its commit) and the second's init
            # staged; then hold the second's lock ourselves across the SIGSTOP.
            second = max(outbox.pending(), key=lambda segment: segment.sequence)
            staging = load_settings(environ=env).staging_dir / recorder.device_id
            wait_until(
                lambda: (
                    sorted(p.name for p in staging.iterdir()) == [second.file_id]
                    and (staging / second.file_id / "manifest.json").is_file()
                ),
                60,
                "the first segment's staging discarded and the second's init staged",
            )
            with (staging / second.file_id / "lock").open("rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                os.killpg(servers[1].proc.pid, signal.SIGSTOP)  # the standby's ingest acknowledges nothing
                stopped.append(servers[1])
            gated.opened.set()
            wait_until(lambda: uploader.stats().chunks_sent >= 8, 60, "the second segment sent to standby")
            primary.start()
            back_at = time.monotonic()
            wait_until(lambda: link.rotation.returns == 1, 30, "the recorder back on the primary")
            took = time.monotonic() - back_at
            assert link.broker_url == primary.url and link.connected
            assert stored_summary(database_url) == 1  # the second segment is in the middle of its upload
            assert uploader.drain(120), f"not drained: {uploader.stats()}\n{servers[0].log_tail()}"
            assert stored_summary(database_url) == 2
            with _downlink_watch(standby, recorder.device_id) as answered:
                os.killpg(servers[1].proc.pid, signal.SIGCONT)  # the standby finds the stale copy queued
                stopped.clear()
                assert answered.wait(60), f"the standby never handled the stale copy\n{servers[1].log_tail()}"
            stats = uploader.stats()
            assert (stats.segments_completed, stats.segments_failed) == (2, 0), stats
            assert stats.chunks_resent >= 4, stats  # the unacknowledged segment was sent again
            assert link.broker_url == primary.url
            assert (link.rotation.failovers, link.rotation.returns) == (1, 1)
            wait_s = return_after_s * link.returner.backoff  # doubled by each try while it was down
            print(f"moved back {took:.2f} s after the primary returned (wait {wait_s:.0f} s); {stats}")
            assert took <= wait_s + 5.0, (took, wait_s)  # the probe interval, then a connect and a SUBACK
        finally:
            for server in stopped:
                os.killpg(server.proc.pid, signal.SIGCONT)
            gated.opened.set()
            uploader.stop()
            link.close()
            outbox.close()
            codes = [server.stop() for server in servers]
            primary.stop()
            standby.stop()
    assert codes == [0, 0], [server.log_tail() for server in servers]
    assert verify_exactly_once(env, recorders) == []
