"""Shared fixtures: app on a fresh migrated SQLite, logged-in admin, signed segments, database URLs."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from protocol.manifest import GENESIS_HASH, SegmentManifest, SignedManifest
from server.app import create_app
from server.domain.accounts.service import create_user
from server.infra.config import Settings
from server.infra.db import make_engine, run_migrations

pytest_plugins = [
    "tests.fixtures.mqtt",
    "tests.fixtures.s3",
    "tests.fixtures.postgres",
    "tests.fixtures.pulse",
    "tests.fixtures.skips",
    # Fixtures shared by the tests of people, cases, credentials and the pages.
    "tests.fixtures.people",
]

ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct-horse-battery"
TEST_JWT_SECRET = "test-secret-" + "x" * 32


@pytest.fixture(autouse=True)
def _clean_zfjl_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own server settings (ZFJL_*) out of tests; harness variables stay."""
    for _name, env, _default, _help in Settings.describe():
        monkeypatch.delenv(env, raising=False)


def pinned_ingest_keys(app: Flask) -> tuple[str, ...]:
    """What a recorder provisioned by this app pins: the app's ingest public key(s) (protocol.downlink)."""
    from server.infra.ingest_key import IngestSigner

    return tuple(IngestSigner.from_settings(app.extensions["zfjl.settings"]).public_keys())


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    """Raw 32-byte public key."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass
class SegmentFactory:
    """Makes a device's chain of real Ed25519-signed manifests with staged files."""

    directory: Path
    device_id: str = "dev-001"
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    sequence: int = 0
    prev_hash: str = GENESIS_HASH
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))

    @property
    def public_key(self) -> bytes:
        """The device's raw public key."""
        return raw_public_key(self.key)

    def make(
        self,
        data: bytes | None = None,
        *,
        sequence: int | None = None,
        prev_hash: str | None = None,
        key: Ed25519PrivateKey | None = None,
        advance: bool = True,
    ) -> tuple[SignedManifest, Path]:
        """Sign the next segment (or one with the given sequence/prev) and stage its bytes."""
        seq = self.sequence if sequence is None else sequence
        data = data if data is not None else f"segment {self.device_id} {seq} ".encode() * 50
        started = self.start + timedelta(minutes=seq)
        manifest = SegmentManifest(
            device_id=self.device_id,
            sequence=seq,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            started_at=started,
            ended_at=started + timedelta(seconds=59),
            started_mono_ns=seq * 60_000_000_000,
            ended_mono_ns=seq * 60_000_000_000 + 59_000_000_000,
            prev_manifest_hash=self.prev_hash if prev_hash is None else prev_hash,
            officer_id="officer-7",
            session_id="sess-1",
            boot_id="boot-1",
        )
        signed = SignedManifest.sign(manifest, key or self.key)
        path = self.directory / f"{self.device_id}-{seq}-{signed.manifest_hash[:8]}.mp4"
        path.write_bytes(data)
        if advance:
            self.sequence = seq + 1
            self.prev_hash = signed.manifest_hash
        return signed, path


@pytest.fixture
def segments(tmp_path: Path) -> SegmentFactory:
    """A segment factory for device ``dev-001``."""
    staging = tmp_path / "staged"
    staging.mkdir()
    return SegmentFactory(staging)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database URL under tmp_path."""
    return f"sqlite:///{tmp_path / 'zfjl.db'}"


@pytest.fixture(scope="session")
def _sqlite_migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to the newest revision once per test process, to copy for each test
    (a copy takes a millisecond, migrating a new file 0.7 s or more; see ``_pg_migrated_template``)."""
    path = tmp_path_factory.mktemp("migrated") / "zfjl.db"
    run_migrations(f"sqlite:///{path}")  # disposes its engine: no WAL is left beside the file
    return path


@pytest.fixture
def migrated_sqlite_url(tmp_path: Path, _sqlite_migrated_template: Path) -> str:
    """A fresh SQLite database migrated to the newest revision, under tmp_path."""
    path = tmp_path / "zfjl.db"
    shutil.copyfile(_sqlite_migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database URL: SQLite, then a throwaway PostgreSQL database."""
    fixture = "migrated_sqlite_url" if request.param == "sqlite" else "pg_migrated_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def db_session(db_url: str) -> Iterator[Session]:
    """A session on the migrated ``db_url`` database."""
    engine = make_engine(db_url)
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        engine.dispose()


def migrated_app(data_dir: Path, database_url: str) -> Flask:
    """The app over ``database_url`` migrated to the newest revision, its files under ``data_dir``."""
    app = create_app(
        {
            "data_dir": str(data_dir),
            "database_url": database_url,
            "jwt_secret": TEST_JWT_SECRET,
            "TESTING": True,
        }
    )
    run_migrations(database_url)
    return app


@pytest.fixture
def app(tmp_path: Path, migrated_sqlite_url: str) -> Iterator[Flask]:
    """App on a fresh migrated SQLite with local object store under tmp_path, and an admin user."""
    app = migrated_app(tmp_path / "var", migrated_sqlite_url)
    from server.infra.db import session_scope

    with session_scope(app) as session:
        create_user(session, ADMIN_USER, ADMIN_PASSWORD, "system_admin")
    yield app
    from server.infra.db import get_engine

    get_engine(app).dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Test client of ``app``."""
    return app.test_client()


@pytest.fixture
def auth(client: FlaskClient) -> dict[str, str]:
    """Authorization headers of the logged-in system_admin."""
    response = client.post("/api/v1/auth/login", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}
