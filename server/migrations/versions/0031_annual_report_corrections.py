"""Corrected annual reports (GS-17, GS-19) and the figures an agency enters itself (GS-17 (1), (4)).

A published report is corrected by a new revision of the same agency and year: ``annual_reports``
gains ``revision``, ``corrects_report_id``, ``correction_reason``, ``superseded_by_id`` and
``superseded_at``, and its unique key becomes (agency, year, revision). ``annual_figure_entries`` holds
the posts and complaint figures the agency enters, append-only like the report's history.

SQLite cannot drop a table constraint: the table is rebuilt. Its history rows reference it and foreign
keys are on, so the rows are set aside, the old table dropped under deferred foreign keys, the new one
renamed into place and the rows inserted back, which re-adopts the history rows before the commit
checks them (an ``INSERT … SELECT`` into a renamed copy would leave them counted as orphans).

Revision ID: 0031
Revises: 0029
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0029"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
_PG_FUNCTION = "zfjl_annual_figures_append_only"
_OLD_COLUMNS = (
    "id, agency_id, year, state, author, submitted_by, figures, due_on, generated_at, published_at, "
    "updated_at"
)
_NEW_COLUMNS = ("revision", "corrects_report_id", "correction_reason", "superseded_by_id", "superseded_at")


def _report_columns(*, corrections: bool) -> list[sa.Column[object]]:
    columns: list[sa.Column[object]] = [
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("submitted_by", sa.String(64), nullable=True),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("generated_at", TS, nullable=False),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    ]
    if corrections:
        columns += [
            sa.Column("revision", sa.Integer(), nullable=False, server_default="1"),
            sa.Column("corrects_report_id", sa.Integer(), sa.ForeignKey("annual_reports.id"), nullable=True),
            sa.Column("correction_reason", sa.Text(), nullable=True),
            sa.Column("superseded_by_id", sa.Integer(), nullable=True),
            sa.Column("superseded_at", TS, nullable=True),
        ]
    return columns


def _rebuild_sqlite(*, corrections: bool) -> None:
    """Rebuild ``annual_reports`` with or without the correction columns (see the module docstring)."""
    columns = _OLD_COLUMNS + (", " + ", ".join(_NEW_COLUMNS) if corrections else "")
    op.execute("CREATE TABLE _annual_reports_rows AS SELECT * FROM annual_reports WHERE 0")
    # A data change opens the driver's transaction if none is open; the pragma holds until its commit.
    op.execute("INSERT INTO _annual_reports_rows SELECT * FROM annual_reports")
    op.execute("PRAGMA defer_foreign_keys = ON")
    unique = ("agency_id", "year", "revision") if corrections else ("agency_id", "year")
    name = "uq_annual_reports_agency_year_revision" if corrections else "uq_annual_reports_agency_year"
    op.create_table(
        "_annual_reports_new",
        *_report_columns(corrections=corrections),
        sa.UniqueConstraint(*unique, name=name),
    )
    op.execute("DROP INDEX IF EXISTS ix_annual_reports_agency_id")
    op.execute("DROP TABLE annual_reports")
    op.execute("ALTER TABLE _annual_reports_new RENAME TO annual_reports")
    if corrections:
        op.execute(
            f"INSERT INTO annual_reports ({columns}) SELECT {_OLD_COLUMNS}, 1, NULL, NULL, NULL, NULL "
            "FROM _annual_reports_rows"
        )
    else:
        op.execute(f"INSERT INTO annual_reports ({columns}) SELECT {_OLD_COLUMNS} FROM _annual_reports_rows")
    op.execute("DROP TABLE _annual_reports_rows")
    op.create_index("ix_annual_reports_agency_id", "annual_reports", ["agency_id"])


def _figures_table() -> None:
    op.create_table(
        "annual_figure_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("entered_by", sa.String(64), nullable=False),
        sa.Column("entered_at", TS, nullable=False),
    )
    op.create_index(
        "ix_annual_figure_entries_agency_year", "annual_figure_entries", ["agency_id", "year", "key"]
    )
    table = "annual_figure_entries"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'zfjl: % is append-only', TG_TABLE_NAME; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
        return
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'zfjl: {table} is append-only'); END"
        )


def upgrade() -> None:
    """Add the correction columns, key reports by revision, and create the entered figures."""
    if op.get_bind().dialect.name == "postgresql":
        op.add_column(
            "annual_reports", sa.Column("revision", sa.Integer(), nullable=False, server_default="1")
        )
        op.add_column(
            "annual_reports",
            sa.Column("corrects_report_id", sa.Integer(), sa.ForeignKey("annual_reports.id"), nullable=True),
        )
        op.add_column("annual_reports", sa.Column("correction_reason", sa.Text(), nullable=True))
        op.add_column("annual_reports", sa.Column("superseded_by_id", sa.Integer(), nullable=True))
        op.add_column("annual_reports", sa.Column("superseded_at", TS, nullable=True))
        op.drop_constraint("uq_annual_reports_agency_year", "annual_reports", type_="unique")
        op.create_unique_constraint(
            "uq_annual_reports_agency_year_revision", "annual_reports", ["agency_id", "year", "revision"]
        )
    else:
        _rebuild_sqlite(corrections=True)
    _figures_table()


def downgrade() -> None:
    """Drop the entered figures and the correction columns; refused (unique key) while a year has
    more than one revision, since the history of a correction is never deleted."""
    table = "annual_figure_entries"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    op.drop_index("ix_annual_figure_entries_agency_year", table)
    op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("uq_annual_reports_agency_year_revision", "annual_reports", type_="unique")
        for column in reversed(_NEW_COLUMNS):
            op.drop_column("annual_reports", column)
        op.create_unique_constraint("uq_annual_reports_agency_year", "annual_reports", ["agency_id", "year"])
    else:
        _rebuild_sqlite(corrections=False)
