"""Publication items and their append-only history (GS-7, GS-11 – GS-13, GS-18, GS-19); migration 0017.

Annual reports (GS-17) and their append-only history: migration 0021; the before-enforcement
catalogue and its update items (GS-9): migration 0022; deadline alerts (GS-22, GS-23): migration 0023;
deadline alerts about a case (the JL-18 archive deadline): migration 0028; the portal search's indexes for
kind + dates and for document numbers (issue #10): migration 0029; GS-12 withdrawal orders with the
reconsideration or litigation record they come from: migration 0030.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Date,
    ForeignKey,
    Index,
    Integer,
    SQLColumnExpression,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = [
    "BRACKETS_TWICE",
    "YEAR_BRACKET",
    "AnnualFigureEntry",
    "AnnualReport",
    "AnnualReportHistory",
    "CatalogueEntry",
    "CatalogueHistory",
    "CatalogueUpdate",
    "CorrectionRequest",
    "DeadlineAlert",
    "HolidayScheduleRow",
    "PublicationHistory",
    "PublicationItem",
    "WithdrawalOrder",
    "document_year_on",
]


# The opening bracket of a document number's year (GB/T 9704: 合市监罚决〔2025〕1234号).
YEAR_BRACKET = "〔"
# LIKE pattern of a document number with two year brackets or more.
BRACKETS_TWICE = f"%{YEAR_BRACKET}%{YEAR_BRACKET}%"


def document_year_on(number: SQLColumnExpression[str]) -> ColumnElement[str]:
    """The document number from its first year bracket on; the whole number if it has none.

    PostgreSQL only (``strpos``); the index on it and the portal's query must use this same expression.
    """
    return func.substr(number, func.strpos(number, YEAR_BRACKET))


class PublicationItem(Base):
    """One thing an agency must publish, with its state, deadline and disclosure window.

    ``content`` is the source record the collector typed; it is never redacted in place. ``published``
    is the redacted copy the portal shows, made when the item is published or corrected (GS-14).
    """

    __tablename__ = "publication_items"
    __table_args__ = (
        # One publication item per recorded decision event.
        UniqueConstraint("source_event_id", name="uq_publication_items_source_event"),
        Index("ix_publication_items_portal", "state", "disclosure_ends"),
        Index("ix_publication_items_agency_state", "agency_id", "state"),
        # The portal lists newest decisions first: a backward scan of this index serves the first pages.
        Index("ix_publication_items_portal_order", "decided_on", "id"),
        # A search by kind of act over a range of decision dates (migration 0029): the page reads it
        # backwards in the portal's order (decision date, id), and on PostgreSQL the state and the end
        # of disclosure ride along (INCLUDE) so that counting a month's matches never reads the table.
        Index(
            "ix_publication_items_kind_order",
            "act_kind",
            "decided_on",
            "id",
            postgresql_include=["state", "disclosure_ends"],
        ),
        # Substring search of party names and document numbers (the portal's search box): trigram GIN
        # indexes on PostgreSQL (pg_trgm handles Chinese text under a UTF-8 database); plain elsewhere.
        Index(
            "ix_publication_items_party_trgm",
            "party_name",
            postgresql_using="gin",
            postgresql_ops={"party_name": "gin_trgm_ops"},
        ),
        # A query shorter than a trigram (a two-character personal name) matches the start of the name.
        Index(
            "ix_publication_items_party_prefix",
            "party_name",
            postgresql_ops={"party_name": "varchar_pattern_ops"},
        ),
        Index(
            "ix_publication_items_document_trgm",
            "document_number",
            postgresql_using="gin",
            postgresql_ops={"document_number": "gin_trgm_ops"},
        ),
        # The few numbers with a second year bracket, which ix_publication_items_document_year_on (below)
        # does not cover (migration 0029).
        Index(
            "ix_publication_items_document_brackets",
            "id",
            postgresql_where=text(f"document_number LIKE '{BRACKETS_TWICE}'"),
            sqlite_where=text(f"document_number LIKE '{BRACKETS_TWICE}'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    case_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("cases.id"), nullable=True, index=True)
    source_event_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("case_events.id"), nullable=True)
    act_kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300), default="")
    party_name: Mapped[str] = mapped_column(String(300), default="")
    document_number: Mapped[str] = mapped_column(String(128), default="")
    decided_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    redactions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    published: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="draft")
    author: Mapped[str] = mapped_column(String(64))
    due_on: Mapped[date] = mapped_column(Date)
    deadline_rule: Mapped[str] = mapped_column(String(32))
    deadline_provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    calendar_version: Mapped[str] = mapped_column(String(200))
    disclosure_earliest_end: Mapped[date | None] = mapped_column(Date, nullable=True)
    disclosure_ends: Mapped[date | None] = mapped_column(Date, nullable=True)
    excluded_grounds: Mapped[list[str]] = mapped_column(JSON, default=list)
    excluded_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    withdrawal_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    withdrawal_due_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    replaces_item_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("publication_items.id"), nullable=True
    )
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    corrected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# A document number from its first year bracket on: 〔2025〕1234号 of 合市监罚决〔2025〕1234号 (GB/T 9704
# puts the year of a document number in 〔〕). The portal's search by the part of a number that a user
# copies from a letter narrows on a prefix of this (migration 0029, PostgreSQL only): the trigram index
# alone would read the posting lists of 〔20xx〕's trigrams, which nearly every number has.
Index(
    "ix_publication_items_document_year_on",
    document_year_on(PublicationItem.document_number).label("document_year_on"),
    postgresql_ops={"document_year_on": "text_pattern_ops"},
)


class PublicationHistory(Base):
    """One append-only transition of an item: who, when, why (GS-7, GS-18); the database refuses changes."""

    __tablename__ = "publication_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer, ForeignKey("publication_items.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WithdrawalOrder(Base):
    """GS-12: a published decision was revoked, found illegal or is to be redone, and must come off the
    portal within 3 working days of ``revoked_on``; recorded before the withdrawal so its deadline is
    watched (the deadline alerts, GS-23).

    ``source_*`` name the record the order comes from when there is one: the reconsideration decision
    (行政复议决定) or the court's judgment (裁判文书) — its body, document number and date. The system
    keeps no reconsideration or litigation register of its own, so these are what the reviewer typed.
    Orders are never deleted; only a provisional deadline is recounted, when its year's schedule is
    loaded (``schedules.load_schedule``). The item's ``withdrawal_due_on`` is that of the latest order.
    """

    __tablename__ = "withdrawal_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer, ForeignKey("publication_items.id"), index=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    reason: Mapped[str] = mapped_column(Text)
    revoked_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    deadline_provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    calendar_version: Mapped[str] = mapped_column(String(200))
    source_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    source_body: Mapped[str] = mapped_column(String(200), default="")
    source_document: Mapped[str] = mapped_column(String(128), default="")
    source_decided_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    ordered_by: Mapped[str] = mapped_column(String(64))
    ordered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CorrectionRequest(Base):
    """A request from the public to correct a published item, and its outcome (GS-19)."""

    __tablename__ = "publication_corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer, ForeignKey("publication_items.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    contact: Mapped[str] = mapped_column(String(200), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="received")
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class HolidayScheduleRow(Base):
    """A year's official holiday schedule loaded by an admin; it overrides the one shipped in the code."""

    __tablename__ = "holiday_schedules"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(String(300))
    holidays: Mapped[list[str]] = mapped_column(JSON, default=list)
    workdays: Mapped[list[str]] = mapped_column(JSON, default=list)
    version: Mapped[str] = mapped_column(String(64))
    loaded_by: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AnnualReport(Base):
    """An agency's annual report on enforcement and its publicity for one calendar year (GS-17).

    ``figures`` holds the counted lines (``annual.lines_to_mapping``) as they stood when the draft was
    last generated; a published report is never recounted. ``submitted_by`` answers for a draft the
    system generated: GS-7's "not the author" is checked against them.
    """

    __tablename__ = "annual_reports"
    # GS-19: a published report is corrected by a new revision of the same agency and year; the earlier
    # one stays as it was published, marked superseded (migration 0031).
    __table_args__ = (
        UniqueConstraint("agency_id", "year", "revision", name="uq_annual_reports_agency_year_revision"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    year: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="draft")
    author: Mapped[str] = mapped_column(String(64))
    submitted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    figures: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    due_on: Mapped[date] = mapped_column(Date)
    generated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # 1 for the first report of the year; a correction is the next revision, naming the one it corrects.
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    corrects_report_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("annual_reports.id"), nullable=True
    )
    correction_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    superseded_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AnnualFigureEntry(Base):
    """A figure of the annual report that the agency keeps itself and enters (GS-17 (1), (4)).

    Append-only (migration 0031): a new entry for the same agency, year and key replaces the earlier
    one in the next count, and both stay on record with who entered them and when.
    """

    __tablename__ = "annual_figure_entries"
    __table_args__ = (Index("ix_annual_figure_entries_agency_year", "agency_id", "year", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    year: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    entered_by: Mapped[str] = mapped_column(String(64))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AnnualReportHistory(Base):
    """One append-only step of an annual report: generated, submitted, returned, published (GS-7, GS-17)."""

    __tablename__ = "annual_report_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(Integer, ForeignKey("annual_reports.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class CatalogueEntry(Base):
    """One entry of an agency's before-enforcement catalogue (GS-9), published through the item workflow.

    ``content`` is what was last typed; ``published`` the copy the portal shows. A published entry that
    is revised keeps showing its published copy until a reviewer other than the reviser applies the
    revision (``pending``); ``revised_by`` says who that was.
    """

    __tablename__ = "catalogue_entries"
    __table_args__ = (Index("ix_catalogue_entries_agency_kind", "agency_id", "kind", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    published: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="draft")
    author: Mapped[str] = mapped_column(String(64))
    revised_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    corrected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CatalogueHistory(Base):
    """One append-only transition or revision of a catalogue entry (GS-7, GS-9, GS-18)."""

    __tablename__ = "catalogue_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(Integer, ForeignKey("catalogue_entries.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CatalogueUpdate(Base):
    """GS-9: a change in law or duties obliges the agency to update its catalogue within 20 working days.

    Opened when an entry is created or revised because of such a change; closed when the entry's new
    content is published (or the entry withdrawn). ``due_on`` is counted from ``effective_on``.
    """

    __tablename__ = "catalogue_updates"
    __table_args__ = (Index("ix_catalogue_updates_open", "agency_id", "closed_at", "due_on"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    entry_id: Mapped[int] = mapped_column(Integer, ForeignKey("catalogue_entries.id"), index=True)
    cause: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(300))
    effective_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    deadline_provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    calendar_version: Mapped[str] = mapped_column(String(200))
    opened_by: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_on_time: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class DeadlineAlert(Base):
    """A publication deadline an agency must see before and after it passes (GS-22, GS-23).

    Kept like the fleet's device alerts (``device_alerts``): opened when the condition first holds,
    refreshed while it holds, cleared (never deleted) when it stops, so the board shows both the current
    state and how long an item stayed overdue. ``agency_id`` scopes it: an agency sees its own alerts.
    An alert is about a publication item (``item_id``) or, for the JL-18 archive deadline, a case
    (``case_id``).
    """

    __tablename__ = "deadline_alerts"
    __table_args__ = (
        UniqueConstraint("item_id", "kind", "raised_at", name="uq_deadline_alerts_item_kind_raised"),
        Index("ix_deadline_alerts_open", "agency_id", "cleared_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    item_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("publication_items.id"), nullable=True, index=True
    )
    case_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("cases.id"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    message_en: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
