"""Fleet scale benchmark (issue #5): N simulated recorders on a real Mosquitto against the real server.

Run ``.venv/bin/python bench/fleet.py [options]``. It starts a private Mosquitto on a free loopback port,
registers ``--devices`` devices (and an admin user) through the service layer in a fresh database, starts
the server (``bench/_server_proc.py``: ``ServerRunner`` with ingest and HTTP) and ``--procs`` simulator
processes (``bench/_fleet_sim.py``, many paho clients each, one connection and client id per device).
Once every device is connected, each sends a presence heartbeat every ``--heartbeat-s`` and a health
report every ``--health-s`` (random phases) for ``--duration`` seconds. During that window it measures:

* server and broker CPU (% of one core, from ``/proc/<pid>/stat``), and the simulators' own CPU;
* the fleet page: ``GET /api/v1/fleet/devices`` (and ``/admin/devices`` when the server has it)
  every ``--http-interval`` seconds, median and p95 (goal < 300 ms);
* health ingest: samples sent per second against rows stored per second, verified in the database
  after the senders stopped and ingest drained, plus the send → stored delay.

Every process and the temp dir are removed at the end, also on Ctrl-C. See docs/performance.md (Fleet).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import ingest as _ingest  # noqa: E402  (Child, _py, _cpu, ABORTING are reused from there)
from bench.ingest import Child, _cpu, _py  # noqa: E402

ADMIN_USER = "bench-admin"
GOAL_MS = 300.0


def _pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class FleetBench:
    """Owns every process and the temp dir of one run; ``close()`` removes them all."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.work = Path(tempfile.mkdtemp(prefix="zfjl-fleet-bench-"))
        self.stack = contextlib.ExitStack()
        self.stack.callback(self._remove_work)
        self.result: dict[str, Any] = {}
        self.ids = [f"fleet-{i:05d}" for i in range(opts.devices)]
        self.admin_password = secrets.token_urlsafe(16)

    def _remove_work(self) -> None:
        if self.opts.keep:
            self.log(f"kept work dir {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def close(self) -> None:
        """Stop everything started, in reverse order, and delete the work dir."""
        self.stack.close()

    @staticmethod
    def log(text: str) -> None:
        """Progress on stderr (stdout stays clean for --json)."""
        print(text, file=sys.stderr, flush=True)

    def child(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        """A child process stopped when the run ends."""
        proc = Child(name, argv, self.work, env)
        self.stack.callback(proc.stop)
        return proc

    # -- setup -----------------------------------------------------------------------------------

    def start_broker(self) -> tuple[str, int, int]:
        """A private Mosquitto; returns (url, port, pid)."""
        from tests.fixtures.mqtt import MosquittoBroker, find_mosquitto

        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto is not installed")
        broker = MosquittoBroker(self.work / "mosquitto", binary=binary)
        broker.extra_config.append("max_connections -1")
        broker.start()
        self.stack.callback(broker.stop)
        assert broker._proc is not None
        self.broker_log = broker.log_path
        self.log(f"mosquitto on {broker.url}")
        return broker.url, broker.port, broker._proc.pid

    def server_env(self, mqtt_url: str, http_port: int) -> dict[str, str]:
        """``ZFJL_*`` environment of the server process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZFJL_")}
        env.update(
            ZFJL_DATA_DIR=str(self.work / "server"),
            ZFJL_HTTP_HOST="127.0.0.1",
            ZFJL_HTTP_PORT=str(http_port),
            ZFJL_INGEST_WORKERS=str(self.opts.workers),
            ZFJL_OBJECT_STORE="local",
            ZFJL_MQTT_URL=mqtt_url,
        )
        return env

    def register(self, env: dict[str, str]) -> float:
        """Migrate; register every device and the admin user through the service layer (not timed)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        from sqlalchemy.orm import Session

        from server.domain.accounts.service import create_user
        from server.domain.fleet.devices import register_device
        from server.infra.config import load_settings
        from server.infra.db import make_engine, run_migrations

        t0 = time.monotonic()
        settings = load_settings(environ=env)
        run_migrations(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            with Session(engine) as session:
                create_user(session, ADMIN_USER, self.admin_password, "system_admin", actor="bench")
                for i, device_id in enumerate(self.ids):
                    key = (
                        Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                    )
                    register_device(session, device_id, key, f"SN-{device_id}", "bench-model", actor="bench")
                    if i % 500 == 499:
                        session.commit()
                session.commit()
        finally:
            engine.dispose()
        return time.monotonic() - t0

    def start_server(self, env: dict[str, str]) -> Child:
        """The server process (ingest + HTTP)."""
        server = self.child("server", _py("bench._server_proc"), env)
        ready = server.expect("ready", 120)
        self.log(f"server up ({ready['workers']} ingest worker(s)), HTTP {self.base_url}")
        return server

    def login(self) -> str:
        """An access token of the bench admin."""
        body = json.dumps({"username": ADMIN_USER, "password": self.admin_password}).encode()
        req = urllib.request.Request(
            f"{self.base_url}/api/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            token: str = json.loads(resp.read())["access_token"]
        return token

    def admin_login(self) -> Any:
        """A urllib opener holding the admin console's session cookie (form login with its CSRF cookie)."""
        import http.cookiejar
        import re
        import urllib.parse

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def plain_http() -> None:  # the console's cookies are Secure; this run is plain HTTP on loopback
            for cookie in jar:
                cookie.secure = False

        with opener.open(f"{self.base_url}/admin/login", timeout=30) as resp:
            html = resp.read().decode("utf-8", "replace")
        plain_http()
        found = re.search(r'name="login_csrf"\s+value="([^"]+)"', html) or re.search(
            r'value="([^"]+)"\s+name="login_csrf"', html
        )
        if found is None:
            raise RuntimeError("no login_csrf field on /admin/login")
        form = urllib.parse.urlencode(
            {
                "login_csrf": found.group(1),
                "username": ADMIN_USER,
                "password": self.admin_password,
                "next": "",
            }
        ).encode()
        with opener.open(f"{self.base_url}/admin/login", data=form, timeout=30) as resp:
            resp.read()
        plain_http()
        return opener

    def start_sims(self, port: int) -> list[Child]:
        """``--procs`` simulator processes sharing the devices; wait until every device is connected."""
        o = self.opts
        per = -(-o.devices // o.procs)
        sims = []
        for p in range(o.procs):
            first, count = p * per, min(per, o.devices - p * per)
            if count <= 0:
                break
            argv = _py(
                "bench._fleet_sim", "--port", str(port), "--first", str(first), "--count", str(count),
                "--heartbeat-s", str(o.heartbeat_s), "--health-s", str(o.health_s),
                "--connect-rate", str(max(20.0, o.connect_rate / o.procs)),
                "--max-s", str(o.duration + 120),
            )  # fmt: skip
            sims.append(self.child(f"sim{p}", argv))
        t0 = time.monotonic()
        readies = [sim.expect("ready", 60 + o.devices / o.connect_rate * 3) for sim in sims]
        self.result["connect"] = {
            "devices": sum(r["count"] for r in readies),
            "seconds": round(time.monotonic() - t0, 2),
        }
        self.log(
            f"{self.result['connect']['devices']} devices connected in {self.result['connect']['seconds']} s"
        )
        return sims

    # -- HTTP ------------------------------------------------------------------------------------

    def get(self, path: str, token: str) -> tuple[int, float, int, Any]:
        """(status, ms, bytes, parsed JSON or None) of one GET; /admin/ pages use the console session."""
        opener = self.admin_opener if path.startswith("/admin/") and self.admin_opener else None
        headers = {} if opener else {"Authorization": f"Bearer {token}"}
        req = urllib.request.Request(f"{self.base_url}{path}", headers=headers)
        t0 = time.perf_counter()
        try:
            with opener.open(req, timeout=60) if opener else urllib.request.urlopen(req, timeout=60) as resp:
                data = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            data, status = exc.read(), exc.code
        ms = (time.perf_counter() - t0) * 1000
        if path.startswith("/admin/") and status == 200 and b'id="logout"' not in data:
            status = 401  # the console answered with its login form: this page was not measured
        parsed = None
        if status == 200 and data[:1] in (b"{", b"["):
            with contextlib.suppress(ValueError):
                parsed = json.loads(data)
        return status, ms, len(data), parsed

    def poll_pages(
        self, token: str, paths: list[str], stop: threading.Event, out: dict[str, list[dict[str, Any]]]
    ) -> None:
        """GET each page every ``--http-interval`` s until ``stop`` (sequentially, one client)."""
        interval = self.opts.http_interval
        next_at = time.monotonic() + self.opts.http_warmup
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + interval
            for path in paths:
                try:
                    status, ms, size, body = self.get(path, token)
                except (OSError, urllib.error.URLError) as exc:
                    out[path].append({"status": -1, "ms": float("nan"), "error": repr(exc)})
                    continue
                items = len(body["items"]) if isinstance(body, dict) and "items" in body else None
                if items is None and status == 200 and path.startswith("/admin/"):
                    items = -1  # HTML: not counted
                out[path].append({"status": status, "ms": ms, "bytes": size, "items": items})

    # -- run -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Every phase; returns the result dict."""
        from tests.fixtures.mqtt import free_port

        o = self.opts
        self.result["config"] = {
            "devices": o.devices,
            "procs": o.procs,
            "duration_s": o.duration,
            "heartbeat_s": o.heartbeat_s,
            "health_s": o.health_s,
            "workers": o.workers,
            "http_interval_s": o.http_interval,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(),
            "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        }
        mqtt_url, port, broker_pid = self.start_broker()
        http_port = free_port()
        self.base_url = f"http://127.0.0.1:{http_port}"
        env = self.server_env(mqtt_url, http_port)
        self.log(f"registering {o.devices} devices (not timed)")
        self.result["register_s"] = round(self.register(env), 2)
        server = self.start_server(env)
        token = self.login()
        sims = self.start_sims(port)
        time.sleep(2.0)  # let the connect-time presence settle

        # Which pages exist right now (the admin console is built in parallel).
        paths = ["/api/v1/fleet/devices"]
        self.admin_opener = None
        try:
            self.admin_opener = self.admin_login()
        except Exception as exc:  # the console may not exist yet
            self.log(f"admin console login not possible: {exc!r}")
        status, _ms, _size, _body = self.get("/admin/devices", token)
        admin_status = status
        if status != 404:
            paths.append("/admin/devices")
        self.result["admin_devices_probe_status"] = admin_status

        pages: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
        stop = threading.Event()
        poller = threading.Thread(target=self.poll_pages, args=(token, paths, stop, pages), daemon=True)
        server.send("mark")
        threads0 = server.expect("mark", 30)["threads"]
        cpu0 = {"server": _cpu(server.pid), "broker": _cpu(broker_pid)}
        t0 = time.monotonic()
        for sim in sims:
            sim.send("go")
        poller.start()
        self.log(
            f"load: {o.devices} devices, heartbeat {o.heartbeat_s:g} s, health {o.health_s:g} s, "
            f"{o.duration:g} s"
        )
        end = t0 + o.duration
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            for sim in sims:
                if sim.proc.poll() is not None:
                    raise RuntimeError(f"{sim.name} exited early\n{sim.log_tail()}")
        window = time.monotonic() - t0
        cpu1 = {"server": _cpu(server.pid), "broker": _cpu(broker_pid)}
        stop.set()
        for sim in sims:
            sim.send("stop")
        done = [sim.expect("done", 60) for sim in sims]
        poller.join(120)
        for sim in sims:
            sim.stop()
        drain = self.drain(env, sum(d["health_sent"] for d in done))
        server.send("stop")
        stats = server.expect("stats", 60)
        server.stop()
        self.result["window_s"] = round(window, 2)
        self.result["cpu"] = {
            name: {
                "cpu_s": round(cpu1[name] - cpu0[name], 2),
                "pct_of_one_core": round(100 * (cpu1[name] - cpu0[name]) / window, 1),
            }
            for name in cpu0
        }
        sim_cpu = sum(d["cpu_s"] for d in done)
        self.result["cpu"]["simulators"] = {
            "cpu_s": round(sim_cpu, 2),
            "pct_of_one_core": round(100 * sim_cpu / window, 1),
        }
        self.result["server_threads_cpu_s"] = {
            k: round(v - threads0.get(k, 0.0), 2)
            for k, v in stats["threads"].items()
            if v - threads0.get(k, 0.0) >= 0.05
        }
        self.result["server_handle"] = {
            "calls": stats["handle_calls"], "cpu_s": stats["handle_cpu_s"], "wall_s": stats["handle_wall_s"],
            "ingest_errors": stats["ingest"]["errors"], "dropped": stats["ingest"]["dropped"],
        }  # fmt: skip
        self.result["sent"] = {
            "presence": sum(d["presence_sent"] for d in done),
            "health": sum(d["health_sent"] for d in done),
            "publish_errors": sum(d["publish_errors"] for d in done),
            "disconnects": sum(d["disconnects"] for d in done),
            "reconnects": sum(d["reconnects"] for d in done),
            "connected_at_end": sum(d["connected_at_end"] for d in done),
            "schedule_late_max_s": max(d["schedule_late_max_s"] for d in done),
            "seconds": max(d["seconds"] for d in done),
        }
        self.result["broker_drop_warnings"] = self.broker_drops()
        self.result["pages"] = {path: self.page_summary(rows) for path, rows in pages.items()}
        self.result["health_ingest"] = self.verify(env, drain)
        return self.result

    def broker_drops(self) -> list[str]:
        """Mosquitto's "messages are being dropped" warnings (a subscriber's queue overflowed)."""
        with contextlib.suppress(OSError):
            text = self.broker_log.read_text(errors="replace")
            return [line[:200] for line in text.splitlines() if "dropped" in line.lower()][:10]
        return []

    def page_summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Median / p95 / max of the successful requests."""
        ok = [r["ms"] for r in rows if r["status"] == 200]
        return {
            "requests": len(rows),
            "ok": len(ok),
            "statuses": sorted({r["status"] for r in rows}),
            "median_ms": round(statistics.median(ok), 1) if ok else None,
            "p95_ms": round(_pct(ok, 0.95), 1) if ok else None,
            "max_ms": round(max(ok), 1) if ok else None,
            "items_last": next((r.get("items") for r in reversed(rows) if r["status"] == 200), None),
            "bytes_last": next((r.get("bytes") for r in reversed(rows) if r["status"] == 200), None),
            "goal_ms": GOAL_MS,
            "p95_meets_goal": bool(ok) and _pct(ok, 0.95) < GOAL_MS,
        }

    def _health_count(self, env: dict[str, str]) -> int:
        from sqlalchemy import func, select

        from server.domain.fleet.telemetry_models import DeviceHealthSample
        from server.infra.config import load_settings
        from server.infra.db import make_engine

        engine = make_engine(load_settings(environ=env).database_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(DeviceHealthSample)).scalar_one())
        finally:
            engine.dispose()

    def drain(self, env: dict[str, str], sent: int) -> dict[str, Any]:
        """Wait until every sent health sample is stored, or the count stops moving for 5 s (max 60 s)."""
        t0 = time.monotonic()
        last, last_change = -1, t0
        while True:
            count = self._health_count(env)
            now = time.monotonic()
            if count != last:
                last, last_change = count, now
            if count >= sent or now - last_change > 5.0 or now - t0 > 60.0:
                return {"drain_s": round(now - t0, 2), "stored_at_drain": count}
            time.sleep(0.5)

    def verify(self, env: dict[str, str], drain: dict[str, Any]) -> dict[str, Any]:
        """Health rows in the DB against what was sent; send → stored delay; presence rows."""
        from sqlalchemy import select

        from server.domain.fleet.telemetry_models import DeviceHealthSample, DevicePresence
        from server.infra.config import load_settings
        from server.infra.db import make_engine

        engine = make_engine(load_settings(environ=env).database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(
                        DeviceHealthSample.device_id, DeviceHealthSample.at, DeviceHealthSample.received_at
                    )
                ).all()
                presence = conn.execute(select(DevicePresence.device_id, DevicePresence.state)).all()
        finally:
            engine.dispose()
        sent = self.result["sent"]["health"]
        seconds = self.result["sent"]["seconds"]
        delays = [(r[2] - r[1]).total_seconds() * 1000 for r in rows]
        stored = len(rows)
        return {
            "sent": sent,
            "stored": stored,
            "stored_ratio": round(stored / sent, 4) if sent else None,
            "sent_per_s": round(sent / seconds, 2),
            "stored_per_s": round(stored / seconds, 2),
            "devices_with_health": len({r[0] for r in rows}),
            "delay_median_ms": round(statistics.median(delays), 1) if delays else None,
            "delay_p95_ms": round(_pct(delays, 0.95), 1) if delays else None,
            "delay_max_ms": round(max(delays), 1) if delays else None,
            "presence_rows": len(presence),
            "presence_online": sum(1 for p in presence if p[1] == "online"),
            **drain,
        }


def report(r: dict[str, Any]) -> str:
    """Human-readable summary."""
    c, cpu, h, s = r["config"], r["cpu"], r["health_ingest"], r["sent"]
    lines = [
        f"zfjl fleet benchmark — {c['date']}, {c['cpus']} CPUs, load {c['loadavg_1m_at_start']} at start; "
        f"{c['devices']} devices in {c['procs']} simulator processes, heartbeat {c['heartbeat_s']:g} s, "
        f"health {c['health_s']:g} s, window {r['window_s']} s, {c['workers']} ingest worker(s)",
        f"  connect: {r['connect']['devices']} devices in {r['connect']['seconds']} s; "
        f"register (service layer) {r['register_s']} s; "
        f"/admin/devices probe → HTTP {r['admin_devices_probe_status']}",
        f"  CPU (% of one core): server {cpu['server']['pct_of_one_core']}% ({cpu['server']['cpu_s']} s), "
        f"broker {cpu['broker']['pct_of_one_core']}% ({cpu['broker']['cpu_s']} s), "
        f"simulators {cpu['simulators']['pct_of_one_core']}% ({cpu['simulators']['cpu_s']} s)",
    ]
    for path, p in r["pages"].items():
        lines.append(
            f"  GET {path}: {p['ok']}/{p['requests']} ok {p['statuses']}, median {p['median_ms']} ms, "
            f"p95 {p['p95_ms']} ms, max {p['max_ms']} ms, {p['items_last']} items / {p['bytes_last']} bytes "
            f"→ goal p95 < {p['goal_ms']:g} ms: {'MET' if p['p95_meets_goal'] else 'NOT MET'}"
        )
    lines += [
        f"  sent: {s['presence']} heartbeats ({s['presence'] / s['seconds']:.1f}/s), {s['health']} health "
        f"({h['sent_per_s']}/s); publish errors {s['publish_errors']}, disconnects {s['disconnects']}, "
        f"connected at end {s['connected_at_end']}, schedule late max {s['schedule_late_max_s']} s",
        f"  health ingest: stored {h['stored']}/{h['sent']} = {h['stored_ratio']} "
        f"({h['stored_per_s']}/s stored vs {h['sent_per_s']}/s sent), {h['devices_with_health']} devices; "
        f"send→stored delay median {h['delay_median_ms']} ms, p95 {h['delay_p95_ms']} ms, "
        f"max {h['delay_max_ms']} ms; "
        f"drain {h['drain_s']} s",
        f"  presence rows {h['presence_rows']} ({h['presence_online']} online); broker drop warnings: "
        f"{r['broker_drop_warnings'] or 'none'}",
        f"  server handle() calls {r['server_handle']['calls']}, CPU s {r['server_handle']['cpu_s']}, "
        f"wall s {r['server_handle']['wall_s']}, errors {r['server_handle']['ingest_errors']}, "
        f"dropped {r['server_handle']['dropped']}",
        f"  server threads CPU s in window: {r['server_threads_cpu_s']}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="zfjl fleet scale benchmark (see docs/performance.md, Fleet)")
    p.add_argument("--devices", type=int, default=2000, help="simulated recorders (default 2000)")
    p.add_argument("--duration", type=float, default=90.0, help="load window in seconds (default 90)")
    p.add_argument("--heartbeat-s", type=float, default=10.0, help="presence heartbeat period (default 10)")
    p.add_argument("--health-s", type=float, default=60.0, help="health report period (default 60)")
    p.add_argument("--procs", type=int, default=4, help="simulator processes (default 4)")
    p.add_argument("--workers", type=int, default=1, help="ingest workers (ZFJL_INGEST_WORKERS)")
    p.add_argument("--connect-rate", type=float, default=400.0, help="device connects per second, total")
    p.add_argument("--http-interval", type=float, default=3.0, help="seconds between fleet page GETs")
    p.add_argument("--http-warmup", type=float, default=5.0, help="seconds of load before the first GET")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", dest="as_json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    if a.devices < 1 or a.procs < 1 or a.duration <= 0 or a.heartbeat_s <= 0 or a.health_s <= 0:
        p.error("counts and periods must be positive")
    if a.duration > 3600:
        p.error("--duration is limited to 3600 s")
    return a


def main(argv: list[str] | None = None) -> int:
    """Run once and print the result."""
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _ingest.raise_interrupt)
    bench = FleetBench(opts)
    try:
        result = bench.run()
    except KeyboardInterrupt:
        _ingest.ABORTING.set()
        bench.log("interrupted; cleaning up")
        return 130
    except Exception as exc:
        _ingest.ABORTING.set()
        bench.log(f"benchmark failed: {exc!r}")
        return 1
    finally:
        bench.close()
    print(json.dumps(result, indent=2) if opts.as_json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
