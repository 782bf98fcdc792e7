"""Scale-out benchmark: ingest processes and broker engines, measured in one run (docs/scaling.md).

Run ``.venv/bin/python bench/scale.py [options]``. In one run, on this machine:

1. per engine — Mosquitto (private, ``$share``), NATS with JetStream and its MQTT listener (a private
   nats-server), RabbitMQ's MQTT plugin (``--rabbitmq-url``, when it answers) — a raw paho baseline
   (QoS 1 publishers → one subscriber, separate processes, the same chunk size and volume) and ours:
   K recorder processes (``bench/_upload_agent.py``: the agent's Outbox, MqttLink, Uploader) draining
   their backlog into ``zfjl-server run`` (real processes, PostgreSQL, local object folder), timed from
   ``go`` to the last ``complete`` ack;
2. on Mosquitto: 1 vs 2 ingest processes (``--ingest-processes``), and 2 with one killed by SIGKILL
   after the first segment is stored (redelivery: the recorders re-send what it had in flight); on
   NATS also 2 ingest processes consuming core NATS natively as one queue group
   (``ZFJL_INGEST_NATS_URL``; the recorders still publish over MQTT);
3. the API: requests/s of ``GET /api/v1/recordings`` (authenticated, audited) with the server's CPU.

Every run checks that each segment is stored exactly once and each chain is clean. Figures are CPU
seconds of the server processes (runner + ingest children) and of the broker, so the per-core rates
hold on a shared machine; throughput is given with the same-run raw-broker baseline as a ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._procutil import proc_cpu_s  # noqa: E402
from bench.ingest import Child, _py  # noqa: E402
from bench.scale_rig import (  # noqa: E402
    NatsCluster,
    ServerProcess,
    find_nats_server,
    free_port,
    port_open,
    prepare_recorders,
    register_recorders,
    stale_staging,
    stored_summary,
    verify_exactly_once,
    wait_until,
)

MB = 1_000_000
MIB = 1024 * 1024
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _cpu(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError):
        return proc_cpu_s(pid)
    return 0.0


def _broker_pid(port: int) -> int | None:
    """The pid listening on a loopback TCP port (for its CPU seconds), from ``ss``."""
    with contextlib.suppress(Exception):
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
        match = re.search(r"pid=(\d+)", out)
        if match:
            return int(match[1])
    return None


class Database:
    """A throw-away PostgreSQL database per run (SQLite when none answers)."""

    def __init__(self, admin_url: str, workdir: Path) -> None:
        self.admin_url = admin_url
        self.workdir = workdir
        self.created: list[str] = []

    def new(self, tag: str) -> str:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"zfjl_scale_{tag}_{uuid.uuid4().hex[:6]}"
        try:
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
        except Exception:
            return f"sqlite:///{self.workdir / (name + '.db')}"
        self.created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        from sqlalchemy import create_engine, text

        if not self.created:
            return
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Bench:
    """The whole run; results in :attr:`result`."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.work = Path(tempfile.mkdtemp(prefix="zfjl-scale-"))
        self.db = Database(opts.postgres_url, self.work)
        self.result: dict[str, Any] = {"config": vars(opts).copy(), "runs": {}}
        self.mosquitto: subprocess.Popen[bytes] | None = None
        self.nats: NatsCluster | None = None

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # -- brokers -------------------------------------------------------------------------------

    def start_mosquitto(self) -> str:
        port = free_port()
        conf = self.work / "mosquitto.conf"
        conf.write_text(
            ("user root\n" if os.geteuid() == 0 else "")
            + f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_packet_size 2097152\nmax_queued_messages 10000\nmax_inflight_messages 100\n"
        )
        self.mosquitto = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: port_open("127.0.0.1", port), 10, "mosquitto")
        return f"mqtt://127.0.0.1:{port}"

    def start_nats(self) -> str | None:
        binary = find_nats_server()
        if binary is None:
            return None
        (self.work / "nats").mkdir()
        self.nats = NatsCluster(self.work / "nats", binary, nodes=1)
        self.nats.start()
        return self.nats.mqtt_url(0)

    def stop_brokers(self) -> None:
        if self.mosquitto is not None:
            self.mosquitto.terminate()
            self.mosquitto.wait(10)
        if self.nats is not None:
            self.nats.stop()

    # -- one measured run ----------------------------------------------------------------------

    def baseline(self, url: str, shared: bool) -> dict[str, Any]:
        """Raw paho QoS 1: ``pubs`` publishers → 1 subscriber, same chunk size and total volume."""
        o = self.opts
        port = int(url.rsplit(":", 1)[1])
        pubs = o.recorders
        per_pub = max(1, o.segments * o.segment_mib * MIB // o.chunk)
        topic = f"bench/{uuid.uuid4().hex[:6]}"
        common = ["--port", str(port), "--chunk", str(o.chunk), "--topic", topic]
        sub = Child(
            "paho-sub",
            _py(
                "bench._mqtt_baseline",
                "sub",
                "--count",
                str(per_pub * pubs),
                *common,
                *(["--shared"] if shared else []),
            ),
            self.work,
        )
        sub.expect("ready", 30)
        publishers = [
            Child(
                f"paho-pub{i}",
                _py("bench._mqtt_baseline", "pub", "--count", str(per_pub), "--index", str(i), *common),
                self.work,
            )
            for i in range(pubs)
        ]
        for pub in publishers:
            pub.expect("ready", 30)
        t0 = time.monotonic()
        for pub in publishers:
            pub.send("go")
        done = sub.expect("done", 600)
        for pub in publishers:
            pub.expect("done", 600)
            pub.stop()
        sub.stop()
        seconds = done["t_last"] - t0 if done["ok"] else float("nan")
        return {
            "mb_s": round(done["bytes"] / MB / seconds, 1),
            "seconds": round(seconds, 2),
            "ok": done["ok"],
        }

    def ingest(
        self, tag: str, url: str, *, processes: int, share: bool, kill: bool = False, nats_url: str = ""
    ) -> dict[str, Any]:
        """K recorder processes draining into ``zfjl-server run``; exactly-once verified. With
        ``nats_url`` the ingest processes consume that NATS node natively (a queue group)."""
        from edge_agent.config import AgentConfig
        from server.infra.config import load_settings
        from server.infra.ingest_key import IngestSigner

        o = self.opts
        home = self.work / tag
        home.mkdir()
        env = {
            "ZFJL_DATA_DIR": str(home / "server"),
            "ZFJL_DATABASE_URL": self.db.new(tag),
            "ZFJL_HTTP_PORT": "0",
            "ZFJL_MQTT_URL": url,
            "ZFJL_SCRUB_BYTES_PER_S": "0",
            "ZFJL_MQTT_SHARE_GROUP": "zfjl-ingest" if share else "",
            "ZFJL_INGEST_NATS_URL": nats_url,
        }
        settings = load_settings(environ=env)
        keys = tuple(IngestSigner.from_settings(settings).public_keys())
        recorders = prepare_recorders(home / "rec", o.recorders, o.segments, o.segment_mib * MIB, tag)
        register_recorders(settings.database_url, recorders)
        server = ServerProcess(home, env, ingest_processes=processes)
        agents: list[Child] = []
        try:
            server.wait_ready()
            pids = [server.proc.pid, *server.child_pids()]
            for recorder in recorders:
                config = AgentConfig(
                    device_id=recorder.device_id,
                    private_key_file=recorder.home / "device-key.pem",
                    data_dir=recorder.home / "data",
                    mqtt_url=url,
                    ingest_public_keys=keys,
                    chunk_bytes=o.chunk,
                    window=8,
                    ack_timeout_s=3.0,
                )
                config.write_toml(recorder.home / "agent.toml")
                agents.append(
                    Child(
                        f"agent-{recorder.device_id}",
                        _py("bench._upload_agent", str(recorder.home / "agent.toml")),
                        self.work,
                    )
                )
            for agent in agents:
                agent.expect("ready", 60)
            broker_pid = _broker_pid(int(url.rsplit(":", 1)[1]))
            cpu0 = {pid: _cpu(pid) for pid in pids}
            broker0 = _cpu(broker_pid) if broker_pid else 0.0
            t0 = time.monotonic()
            for agent in agents:
                agent.send("go")
            killed_at = None
            victim_cpu = 0.0
            if kill:
                wait_until(
                    lambda: stored_summary(settings.database_url) >= 1, 120, "a first segment", poll_s=0.02
                )
                victim = pids[1]
                victim_cpu = _cpu(victim) - cpu0.pop(victim)  # what it used before it died
                os.kill(victim, signal.SIGKILL)
                killed_at = stored_summary(settings.database_url)
            done = [agent.expect("done", 900) for agent in agents]
            seconds = max(d["t_done"] for d in done) - t0
            live = set(server.child_pids()) | {server.proc.pid}
            # A replacement child's start-up counts: it is what a crash costs.
            server_cpu = sum(_cpu(pid) - cpu0.get(pid, 0.0) for pid in live) + victim_cpu
            broker_cpu = (_cpu(broker_pid) - broker0) if broker_pid else float("nan")
        finally:
            for agent in agents:
                agent.stop()
            server.stop()
        problems = verify_exactly_once(env, recorders)
        stale = stale_staging(env)
        total = sum(len(r.segments) for r in recorders) * o.segment_mib * MIB
        segments = sum(len(r.segments) for r in recorders)
        return {
            "processes": processes,
            "mb_s": round(total / MB / seconds, 1),
            "seconds": round(seconds, 2),
            "segments": segments,
            "server_cpu_s": round(server_cpu, 2),
            "broker_cpu_s": round(broker_cpu, 2),
            "server_mb_per_cpu_s": round(total / MB / server_cpu, 1) if server_cpu > 0 else None,
            "server_segments_per_cpu_s": round(segments / server_cpu, 2) if server_cpu > 0 else None,
            "chunks_resent": sum(d["chunks_resent"] for d in done),
            "stored_at_kill": killed_at,
            "stale_staging": stale,
            "exactly_once": not problems,
            "problems": problems[:5],
        }

    def api(self, url: str) -> dict[str, Any]:
        """``GET /api/v1/recordings?limit=50`` from ``threads`` clients for ``seconds``; server CPU."""
        from sqlalchemy.orm import Session

        from server.domain.accounts.service import create_user
        from server.infra.config import load_settings
        from server.infra.db import make_engine

        home = self.work / "api"
        home.mkdir()
        env = {
            "ZFJL_DATA_DIR": str(home / "server"),
            "ZFJL_DATABASE_URL": self.db.new("api"),
            "ZFJL_HTTP_PORT": str(free_port()),
            "ZFJL_MQTT_URL": url,
            "ZFJL_SCRUB_BYTES_PER_S": "0",
        }
        settings = load_settings(environ=env)
        recorders = prepare_recorders(home / "rec", 1, 1, 1024, "api")
        register_recorders(settings.database_url, recorders)
        engine = make_engine(settings.database_url)
        with Session(engine) as session:
            create_user(session, "bench-admin", "bench-password-123456", "system_admin", actor="bench")
            session.commit()
        engine.dispose()
        server = ServerProcess(home, env, roles="api")
        base = f"http://127.0.0.1:{env['ZFJL_HTTP_PORT']}"
        try:
            server.wait_ready()
            request = urllib.request.Request(
                base + "/api/v1/auth/login",
                data=json.dumps({"username": "bench-admin", "password": "bench-password-123456"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                token = json.loads(response.read())["access_token"]
            count = [0]
            errors = [0]
            lock = threading.Lock()
            stop = threading.Event()

            def client() -> None:
                while not stop.is_set():
                    req = urllib.request.Request(
                        base + "/api/v1/recordings?limit=50", headers={"Authorization": f"Bearer {token}"}
                    )
                    try:
                        with urllib.request.urlopen(req, timeout=30) as response:
                            response.read()
                        with lock:
                            count[0] += 1
                    except Exception:
                        with lock:
                            errors[0] += 1

            threads = [threading.Thread(target=client) for _ in range(self.opts.api_threads)]
            cpu0, t0 = _cpu(server.proc.pid), time.monotonic()
            for thread in threads:
                thread.start()
            time.sleep(self.opts.api_seconds)
            stop.set()
            for thread in threads:
                thread.join()
            seconds, cpu = time.monotonic() - t0, _cpu(server.proc.pid) - cpu0
        finally:
            server.stop()
        return {
            "requests": count[0],
            "errors": errors[0],
            "req_s": round(count[0] / seconds, 1),
            "server_cpu_s": round(cpu, 2),
            "req_per_cpu_s": round(count[0] / cpu, 1) if cpu > 0 else None,
        }

    def run(self) -> dict[str, Any]:
        o = self.opts
        runs = self.result["runs"]
        mosquitto = self.start_mosquitto()
        self.log(f"mosquitto on {mosquitto}")
        runs["mosquitto_paho"] = self.baseline(mosquitto, shared=True)
        self.log(f"mosquitto paho baseline {runs['mosquitto_paho']}")
        for processes in (1, 2):
            runs[f"mosquitto_ours_{processes}p"] = self.ingest(
                f"mq{processes}", mosquitto, processes=processes, share=True
            )
            self.log(f"mosquitto ours {processes}p {runs[f'mosquitto_ours_{processes}p']}")
        runs["mosquitto_ours_2p_kill"] = self.ingest("mqkill", mosquitto, processes=2, share=True, kill=True)
        self.log(f"mosquitto ours 2p, one killed {runs['mosquitto_ours_2p_kill']}")
        nats = self.start_nats()
        if nats:
            runs["nats_paho"] = self.baseline(nats, shared=False)
            self.log(f"nats paho baseline {runs['nats_paho']}")
            runs["nats_ours_1p"] = self.ingest("nats1", nats, processes=1, share=False)
            self.log(f"nats ours {runs['nats_ours_1p']}")
            assert self.nats is not None
            runs["nats_ours_2p_native"] = self.ingest(
                "nats2n", nats, processes=2, share=False, nats_url=self.nats.client_url(0)
            )
            self.log(f"nats ours 2p, native queue group {runs['nats_ours_2p_native']}")
        rabbit = o.rabbitmq_url
        if rabbit and port_open("127.0.0.1", int(rabbit.rsplit(":", 1)[1])):
            runs["rabbitmq_paho"] = self.baseline(rabbit, shared=False)
            self.log(f"rabbitmq paho baseline {runs['rabbitmq_paho']}")
            runs["rabbitmq_ours_1p"] = self.ingest("rabbit1", rabbit, processes=1, share=False)
            self.log(f"rabbitmq ours {runs['rabbitmq_ours_1p']}")
        runs["api"] = self.api(mosquitto)
        self.log(f"api {runs['api']}")
        ratios: dict[str, float] = {}
        for engine in ("mosquitto", "nats", "rabbitmq"):
            base = runs.get(f"{engine}_paho")
            for name, value in runs.items():
                if name.startswith(f"{engine}_ours") and base:
                    ratios[f"{name}_vs_paho"] = round(value["mb_s"] / base["mb_s"], 3)
        if "mosquitto_ours_1p" in runs:
            ratios["mosquitto_2p_vs_1p"] = round(
                runs["mosquitto_ours_2p"]["mb_s"] / runs["mosquitto_ours_1p"]["mb_s"], 3
            )
        self.result["ratios"] = ratios
        return self.result

    def close(self) -> None:
        self.stop_brokers()
        with contextlib.suppress(Exception):
            self.db.drop_all()
        if not self.opts.keep:
            import shutil

            shutil.rmtree(self.work, ignore_errors=True)


def machine() -> dict[str, Any]:
    """CPU model, core count and load while the bench ran."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "load_1m": os.getloadavg()[0],
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recorders", type=int, default=4)
    p.add_argument("--segments", type=int, default=8, help="segments per recorder")
    p.add_argument("--segment-mib", type=int, default=2)
    p.add_argument("--chunk", type=int, default=256 * 1024)
    p.add_argument(
        "--rabbitmq-url", default="mqtt://127.0.0.1:1884", help="RabbitMQ's MQTT listener; empty = skip"
    )
    p.add_argument("--postgres-url", default=os.environ.get("ZFJL_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL))
    p.add_argument("--api-threads", type=int, default=4)
    p.add_argument("--api-seconds", type=float, default=8.0)
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    opts = p.parse_args(argv)
    bench = Bench(opts)
    try:
        result = bench.run()
    finally:
        bench.close()
    result["machine"] = machine()
    text = json.dumps(result, indent=2)
    print(text)
    if opts.json:
        Path(opts.json).write_text(text + "\n")
    return 0 if all(r.get("exactly_once", True) for r in result["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
