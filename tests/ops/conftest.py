"""Fixtures for the operations tests: the loopback Redis, a throwaway redis-server, unique client networks."""

from __future__ import annotations

import random
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.mqtt import port_held_for, wait_for_port

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_available(url: str = REDIS_URL) -> tuple[bool, str]:
    """Whether a Redis answers PING at ``url``."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
        return True, ""
    except redis.RedisError as exc:
        return False, f"Redis not reachable at {url}: {exc}"
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    """The loopback Redis (CI starts it, .ci/run); skipped when none answers."""
    ok, reason = redis_available()
    if not ok:
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture
def network() -> str:
    """A client network no other test run uses, so buckets left in the shared Redis never interfere."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}"


class RedisServer:
    """A redis-server of our own on a free port, which a test may stop and start again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = port_held_for(self)  # redis listens with SO_REUSEADDR, so it can bind the held port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its redis:// URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start and wait until the port accepts connections."""
        binary = shutil.which("redis-server")
        assert binary is not None
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        assert wait_for_port("127.0.0.1", self.port, 10), "redis-server did not start"

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server (skipped without the binary); stopped at the end."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_pg_database() -> Iterator[Callable[[], str]]:
    """Makes throwaway PostgreSQL databases (as many as a test needs); all dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.fixtures.postgres import admin_url, postgres_available

    ok, reason = postgres_available()
    if not ok:
        pytest.skip(reason)
    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def make() -> str:
        name = f"zfjl_test_{uuid.uuid4().hex}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        names.append(name)
        return make_url(admin_url()).set(database=name).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
