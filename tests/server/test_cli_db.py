"""CLI subcommands and the migration matching the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from server.cli import main
from server.domain.accounts.models import User
from server.domain.accounts.service import verify_password
from server.infra.db import make_engine

ROOT = Path(__file__).resolve().parents[2]


def test_autogenerate_against_the_migrated_database_finds_no_difference(db_url: str) -> None:
    """``alembic check`` (autogenerate through ``migrations/env.py``) on a migrated database: no diff.

    Run in a fresh interpreter so the metadata is only what ``env.py`` imports itself, not whatever
    models earlier tests happened to import: a table, column, index, type or server default that the
    migrations create but the models lack (or the reverse) fails here.
    """
    script = (
        "import sys\n"
        "from alembic import command\n"
        "from server.infra.db import alembic_config\n"
        "command.check(alembic_config(sys.argv[1]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, db_url],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_one_import_holds_every_table_the_migrations_create(db_url: str) -> None:
    """``server.domain.models`` alone (a fresh interpreter) maps every table of the migrated schema."""
    script = "from server.domain.models import Base\nprint('\\n'.join(sorted(Base.metadata.tables)))\n"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    engine = make_engine(db_url)
    try:
        migrated = set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert len(migrated) > 30
    assert set(result.stdout.split()) == migrated


def test_create_admin_and_db_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZFJL_DATA_DIR", str(tmp_path / "var"))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["--database-url", url, "db", "upgrade"]) == 0
    assert main(["--database-url", url, "db", "upgrade"]) == 0  # idempotent
    assert (
        main(["--database-url", url, "create-admin", "--username", "root", "--password", "root-password"])
        == 0
    )
    assert (
        main(["--database-url", url, "create-admin", "--username", "root", "--password", "root-password"])
        == 1
    )
    assert "already exists" in capsys.readouterr().err
    engine = make_engine(url)
    with Session(engine) as session:
        user = session.scalars(select(User)).one()
        assert user.role == "system_admin" and verify_password("root-password", user.password_hash)
    engine.dispose()


def test_bad_config_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZFJL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ZFJL_HTTP_PORT", "not-a-port")
    assert main(["db", "upgrade"]) == 2
    assert "ZFJL_HTTP_PORT" in capsys.readouterr().err
