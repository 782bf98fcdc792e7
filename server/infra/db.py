"""Database engine per app, session scope and migrations (SQLite with WAL, or PostgreSQL)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from flask import Flask, Response, current_app
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from server.errors import ZfjlError
from server.infra import fsmode

_LOG = logging.getLogger(__name__)

__all__ = [
    "alembic_config",
    "db_ping",
    "get_engine",
    "init_app",
    "is_unique_violation",
    "make_engine",
    "register_database_errors",
    "run_migrations",
    "session_scope",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_ENGINE_KEY = "zfjl.engine"
_SESSIONMAKER_KEY = "zfjl.sessionmaker"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while ingest writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _private_sqlite_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use 0644); SQLite gives its -wal and
    -shm files the database file's mode, so they are 0600 too. Older, looser files are tightened."""
    fsmode.private_dir(path.parent)
    with suppress(FileExistsError):
        os.close(fsmode.create_private_file(path))
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        fsmode.tighten(name, fsmode.PRIVATE_FILE)


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite file databases make the directory and set pragmas on connect."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            database = Path(parsed.database)

            def _before_connect(*_args: Any) -> None:
                # Before each connection (not at engine creation: create_app touches no files).
                _private_sqlite_file(database)

            event.listen(engine, "do_connect", _before_connect)
    return engine


def init_app(app: Flask, url: str) -> Engine:
    """Attach a lazily-connecting engine and session factory to the app."""
    engine = make_engine(url)
    app.extensions[_ENGINE_KEY] = engine
    app.extensions[_SESSIONMAKER_KEY] = sessionmaker(engine, expire_on_commit=False)
    return engine


def get_engine(app: Flask | None = None) -> Engine:
    """The engine of the given (or current) app."""
    engine: Engine = (app or current_app).extensions[_ENGINE_KEY]
    return engine


@contextmanager
def session_scope(app: Flask | None = None) -> Iterator[Session]:
    """A session that commits on success, rolls back on error and always closes.

    An error that ``keeps_writes`` (``ZfjlError``: a refused login's throttle count and audit row) is
    committed before it propagates: the refusal is the outcome, and its bookkeeping must stay.
    """
    factory: sessionmaker[Session] = (app or current_app).extensions[_SESSIONMAKER_KEY]
    session = factory()
    try:
        yield session
        session.commit()
    except ZfjlError as exc:
        if exc.keeps_writes:
            session.commit()
        else:
            session.rollback()
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def db_ping(engine: Engine) -> bool:
    """Whether the database answers a trivial query."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def alembic_config(url: str) -> Config:
    """An Alembic config for our migrations against ``url`` (no alembic.ini lookup needed)."""
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def run_migrations(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


# Builds the web edge's JSON error response: (status, code, message in Chinese, message in English).
ErrorResponder = Callable[[int, str, str, str], Response]


def is_unique_violation(exc: IntegrityError) -> bool:
    """A duplicate value in a unique column: SQLite's message or PostgreSQL's SQLSTATE 23505."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return sqlstate == "23505" or "UNIQUE constraint failed" in str(orig)


def register_database_errors(app: Flask, respond: ErrorResponder) -> None:
    """Answer what the database refused with a 4xx, never a 500; ``session_scope`` rolled it back.

    A constraint the domain did not check first is a conflict; a value its column cannot hold (on
    PostgreSQL: a number past a 32-bit key column, NUL in text) is the request's fault. The edge checks
    (server.http.parsing) catch the known cases first with their own codes; this keeps a new column
    from ever turning into a 500.
    """

    @app.errorhandler(IntegrityError)
    def _integrity(exc: IntegrityError) -> Response:
        if is_unique_violation(exc):
            return respond(
                409, "duplicate", "与已有记录重复（值已被使用）", "duplicate value: already in use"
            )
        _LOG.warning("constraint refused a write: %s", exc.orig)
        return respond(
            409, "constraint_violation", "违反数据约束，未保存", "refused by a data constraint; nothing saved"
        )

    @app.errorhandler(DataError)
    def _data(exc: DataError) -> Response:
        _LOG.warning("database refused a value: %s", exc.orig)
        return respond(400, "invalid_value", "数据值不符合字段要求", "a value does not fit its field")
