"""Portal search indexes for kind + dates and for document numbers (issue #10, GS-8).

Revision ID: 0029
Revises: 0034

* ``ix_publication_items_kind_order`` replaces ``ix_publication_items_kind_date``: (kind, decision date,
  id), the portal's order, so a page is read backwards from it; on PostgreSQL it also holds the state
  and the end of disclosure (``INCLUDE``), so counting the matches of a kind over a month (up to
  ``COUNT_CAP``) is an index-only scan instead of a heap read per match.
* ``ix_publication_items_document_year_on`` (PostgreSQL only): the document number from its year
  bracket on (``〔2025〕1234号``), with ``text_pattern_ops`` so that a ``LIKE '〔2025〕1234号%'`` is a
  range scan; ``ix_publication_items_document_brackets``: the numbers with two year brackets, which the
  first index does not cover. See ``server.domain.publicity.portal``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0034"
branch_labels = None
depends_on = None

_TABLE = "publication_items"
# Written out rather than imported: a migration stays what it was when the models change.
_BRACKETS_TWICE = sa.text("document_number LIKE '%〔%〔%'")


def upgrade() -> None:
    """Replace the kind + date index; add the document-number indexes."""
    op.drop_index("ix_publication_items_kind_date", table_name=_TABLE)
    op.create_index(
        "ix_publication_items_kind_order",
        _TABLE,
        ["act_kind", "decided_on", "id"],
        postgresql_include=["state", "disclosure_ends"],
    )
    op.create_index(
        "ix_publication_items_document_brackets",
        _TABLE,
        ["id"],
        postgresql_where=_BRACKETS_TWICE,
        sqlite_where=_BRACKETS_TWICE,
    )
    if op.get_bind().dialect.name == "postgresql":
        # strpos is PostgreSQL's; SQLite searches without this index (and cannot reflect an expression
        # index, so the model's declaration of it is not compared there).
        op.execute(
            "CREATE INDEX ix_publication_items_document_year_on ON publication_items "
            "(substr(document_number, strpos(document_number, '〔')) text_pattern_ops)"
        )


def downgrade() -> None:
    """Back to the kind + date index of 0017."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_publication_items_document_year_on", table_name=_TABLE)
    op.drop_index("ix_publication_items_document_brackets", table_name=_TABLE)
    op.drop_index("ix_publication_items_kind_order", table_name=_TABLE)
    op.create_index("ix_publication_items_kind_date", _TABLE, ["act_kind", "decided_on"])
