"""Alembic environment: runs on a connection passed in by server.infra.db, or on ``sqlalchemy.url``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from server.domain.models import Base  # every models module, so autogenerate sees all tables
from server.infra.db import make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        # Column types are compared by default; server defaults too, because a migration's DEFAULT
        # that the model does not declare is drift (a row inserted outside the ORM differs).
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate on the given connection, or open one for the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("ZFJL_DATABASE_URL", "")
    if not url:
        raise SystemExit("没有数据库地址 / no database URL: set sqlalchemy.url or ZFJL_DATABASE_URL")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("离线迁移不受支持 / offline migrations are not supported")
run_migrations_online()
