"""CLI subcommands and the migration matching the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.cli import main
from server.db import make_engine
from server.models import Base, User
from server.services.auth import verify_password


def _import_all_models() -> None:
    """Import every ``server.models*`` module so the metadata holds all tables, whatever ran before."""
    import importlib
    import pkgutil

    import server

    for module in pkgutil.iter_modules(server.__path__):
        if module.name.startswith("models"):
            importlib.import_module(f"server.{module.name}")


def test_migration_matches_models(db_url: str) -> None:
    _import_all_models()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


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
