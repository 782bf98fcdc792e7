"""Real processes for end-to-end tests: ``zfjl-server run``, ``zfjl-fw provision``, ``zfjl-agent run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.mqtt import port_held_for

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN, ADMIN_PASSWORD = "e2e-admin", "e2e-password-1234"


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFJL_") or k.startswith("ZFJL_TEST_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _script(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


@dataclass
class ServerProcess:
    """A ``zfjl-server run`` subprocess on free ports, with its own data folder."""

    data_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    http_port: int = 0  # 0: a port held for this object's life (see __post_init__)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.http_port:
            # Held, not merely found free (waitress listens with SO_REUSEADDR): nothing else can take
            # the port while the server starts or while a test has killed it.
            self.http_port = port_held_for(self)

    @property
    def env(self) -> dict[str, str]:
        """The server's environment."""
        return _env(
            {
                "ZFJL_DATA_DIR": str(self.data_dir),
                "ZFJL_HTTP_PORT": str(self.http_port),
                "ZFJL_MQTT_EMBEDDED_PORT": "0",
                **self.settings,
            }
        )

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.http_port}"

    def create_admin(self) -> None:
        """Create the test admin (runs migrations first)."""
        subprocess.run(
            [_script("zfjl-server"), "create-admin", "--username", ADMIN, "--password", ADMIN_PASSWORD],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until /healthz answers 200 and the server says it is running.

        /healthz answers as soon as the HTTP role is up, while the runner still starts its background
        roles; the "zfjl server running" line (with the devices' MQTT address) comes after all of them.
        """
        path = self.data_dir / "server.log"
        started_at = path.stat().st_size if path.exists() else 0  # a restart appends to the same log
        log = open(path, "ab")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen([_script("zfjl-server"), "run"], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        healthy = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if not healthy:
                try:
                    with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                        healthy = response.status == 200
                except OSError:
                    pass
            if healthy:
                with path.open("rb") as written:
                    written.seek(started_at)
                    if b"zfjl server running" in written.read():
                        return
            time.sleep(0.2)
        raise RuntimeError(f"server did not become healthy:\n{self.log_tail()}")

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def service_login(self) -> tuple[str, str]:
        """The embedded broker's ingest login (``zfjl-ingest``, password kept 0600 in the data folder)."""
        return "zfjl-ingest", (self.data_dir / "mqtt-service-password").read_text(encoding="ascii").strip()

    def log_tail(self, lines: int = 60) -> str:
        """The end of the server's log."""
        path = self.data_dir / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def token(self) -> str:
        """An admin access token."""
        body = self.request("POST", "/api/v1/auth/login", {"username": ADMIN, "password": ADMIN_PASSWORD})
        return str(body["access_token"])

    def request(self, method: str, path: str, body: object = None, token: str | None = None) -> Any:
        """JSON request to the API."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())

    def download(self, path: str, token: str) -> bytes:
        """Raw bytes of a GET."""
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=60) as response:
            return bytes(response.read())


def provision(server: ServerProcess, device_id: str, out_dir: Path, mqtt_url: str | None = None) -> Path:
    """Run ``zfjl-fw provision`` and return the agent config path (no ``mqtt_url``: the server's advice)."""
    argv = [
        _script("zfjl-fw"),
        "provision",
        "--server",
        server.url,
        "--token",
        server.token(),
        "--device-id",
        device_id,
        "--out",
        str(out_dir),
    ]
    if mqtt_url is not None:
        argv += ["--mqtt-url", mqtt_url]
    result = subprocess.run(argv, env=_env({}), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["config"])


def tune_agent(config: Path, **settings: object) -> None:
    """Append agent settings (small synthetic video keeps tests fast on two cores)."""
    defaults: dict[str, object] = {
        "width": 320,
        "height": 180,
        "fps": 10,
        "ack_timeout_s": 3,
        "drain_timeout_s": 60,
    }
    defaults.update(settings)
    lines = [f"{k} = {json.dumps(v)}" for k, v in defaults.items()]
    config.write_text(config.read_text() + "\n".join(lines) + "\n")


def agent(config: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``zfjl-agent`` with arguments."""
    return subprocess.Popen(
        [_script("zfjl-agent"), *args[:1], "--config", str(config), *args[1:]],
        env=_env({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def agent_status(config: Path) -> dict[str, Any]:
    """``zfjl-agent status`` as JSON."""
    result = subprocess.run(
        [_script("zfjl-agent"), "status", "--config", str(config)],
        env=_env({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def wait_for(predicate: Any, timeout: float, interval: float = 0.3) -> bool:
    """Poll until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
