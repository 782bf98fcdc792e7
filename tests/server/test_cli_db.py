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


def test_gs9_calendar_load_cli_makes_provisional_2027_deadlines_official(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``zfjl-server calendar load``: the API's schedule format and domain function, from the console.

    A penalty decided and a duty change taking effect on Friday 25 December 2026 are counted into 2027
    on weekends only; loading a 2027 schedule with 1–3 January off makes both deadlines official and
    one day later, and the command prints each change.
    """
    from datetime import date

    from server.domain.people.models import Agency
    from server.domain.people.service import Caller
    from server.domain.publicity import catalogue_service, service
    from server.domain.publicity.catalogue import CatalogueKind, ChangeCause, content_from_mapping
    from server.domain.publicity.codes import EnforcementAct
    from server.domain.publicity.inputs import CatalogueChange, NewCatalogueEntry
    from server.domain.publicity.models import CatalogueUpdate, PublicationItem

    monkeypatch.setenv("ZFJL_DATA_DIR", str(tmp_path / "var"))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["--database-url", url, "db", "upgrade"]) == 0
    engine = make_engine(url)
    with Session(engine) as session:
        agency = Agency(name="合肥市市场监督管理局", head="", duties="", address="", contacts="")
        session.add(agency)
        session.flush()
        officer = Caller("11", "officer", agency.id)
        item = service.collect(
            session,
            officer,
            service.CollectInput(
                agency_id=agency.id, act=EnforcementAct.PENALTY, decided_on=date(2026, 12, 25)
            ),
        )
        right = {"right": "hearing", "description": "听证", "how_to_exercise": "五个工作日内提出"}
        catalogue_service.create_entry(
            session,
            officer,
            NewCatalogueEntry(
                agency_id=agency.id,
                kind=CatalogueKind.PARTY_RIGHT,
                content=content_from_mapping(CatalogueKind.PARTY_RIGHT, right),
                change=CatalogueChange(
                    cause=ChangeCause.LAW, effective_on=date(2026, 12, 25), reference="修正案"
                ),
            ),
        )
        session.commit()
        item_id = item.id
        update = session.scalars(select(CatalogueUpdate)).one()
        assert (item.due_on, item.deadline_provisional) == (date(2027, 1, 5), True)
        assert (update.due_on, update.deadline_provisional) == (date(2027, 1, 22), True)
        update_id = update.id
    capsys.readouterr()

    bad = tmp_path / "bad.json"
    bad.write_text('{"year": 2027, "source": "x", "holidays": ["2027-02-30"]}', encoding="utf-8")
    assert main(["--database-url", url, "calendar", "load", str(bad)]) == 1
    assert "2027-02-30" in capsys.readouterr().err
    assert main(["--database-url", url, "calendar", "load", str(tmp_path / "missing.json")]) == 1

    schedule = tmp_path / "2027.json"
    schedule.write_text(
        '{"year": 2027, "source": "国务院办公厅关于2027年部分节假日安排的通知（测试用）", '
        '"holidays": [["2027-01-01", "2027-01-03"]], "workdays": []}',
        encoding="utf-8",
    )
    assert main(["--database-url", url, "calendar", "load", str(schedule)]) == 0
    out = capsys.readouterr().out
    assert f"publication_item #{item_id}: 2027-01-05 -> 2027-01-06 [正式 / official]" in out
    assert f"catalogue_update #{update_id}: 2027-01-22 -> 2027-01-25 [正式 / official]" in out
    assert "deadlines recounted: 2" in out
    with Session(engine) as session:
        item = session.get(PublicationItem, item_id)
        update = session.get(CatalogueUpdate, update_id)
        assert item is not None and update is not None
        assert (item.due_on, item.deadline_provisional) == (date(2027, 1, 6), False)
        assert (update.due_on, update.deadline_provisional) == (date(2027, 1, 25), False)
        assert "weekends-only" not in update.calendar_version
    # Loading the same schedule again changes nothing.
    assert main(["--database-url", url, "calendar", "load", str(schedule)]) == 0
    assert "deadlines recounted: 0" in capsys.readouterr().out
    engine.dispose()
