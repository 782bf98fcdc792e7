"""Statistics of recording and case-file work per agency or officer and period (JL-21).

What a supervisor compares across agencies: recordings and hours recorded, segments stored more than
24 hours after they ended (JL-17), sessions with their gaps and unexplained gaps (JL-16), cases opened
and how many have a complete record (JL-7 – JL-10), cases ended and archived within 30 days (JL-18),
reviews of case files (JL-22), requests for access, provision and retrieval and their outcomes (JL-20),
and publication items due in the period with whether their deadline was met (GS-11).

Recordings, cases and archives are counted by aggregate queries (one per measure, GROUP BY agency or
officer). A session's gaps and verdict are computed from its events, recordings and signed explanations
(they are never stored, since explanations keep arriving), so sessions are summarised one by one with
the sessions service; the period bounds how many. A recording or session belongs to the agency of the
device's check-out at its start (server/domain/scope.py); an officer is the certificate number the
recorder signed. Agency scope (JL-20): an agency-bound role sees its own agency; supervisors, auditors
and system admins read across.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from server.domain.base import utcnow
from server.domain.cases.completeness import completeness
from server.domain.cases.models import Case, CaseEvent, CaseOfficer
from server.domain.cases.service import FINAL_STATUSES
from server.domain.errors import Invalid, NotFound
from server.domain.evidence.models import Recording
from server.domain.fleet.models import DeviceAssignment
from server.domain.governance.approvals_models import GovernanceDecision, GovernanceRequest, GrantRevocation
from server.domain.governance.archives import ARCHIVE_DEADLINE, ended_at_clause
from server.domain.governance.archives_models import ArchivePackage, CaseReview
from server.domain.people.models import Agency, Officer
from server.domain.people.service import Caller
from server.domain.publicity.models import PublicationItem
from server.domain.sessions.models import EnforcementSessionRecord, SessionEventRecord
from server.domain.sessions.service import session_summary

__all__ = ["COLUMNS", "GROUPS", "LATE_UPLOAD", "MAX_DAYS", "StatsQuery", "statistics", "to_csv"]

GROUPS = ("agency", "officer")
LATE_UPLOAD = timedelta(hours=24)  # JL-17
MAX_DAYS = 366 * 3
_MAX_ID = 2**31 - 1  # an INTEGER id: larger is no agency, and PostgreSQL would refuse to compare it
COLUMNS: tuple[str, ...] = (
    "agency_id", "agency", "officer", "officer_name",
    "recordings", "hours", "late_uploads",
    "sessions", "sessions_continuous", "sessions_gaps_explained", "sessions_gaps_unexplained",
    "gaps", "unexplained_gaps",
    "cases_opened", "cases_complete", "cases_ended", "archived_on_time", "archived_late", "archive_overdue",
    "reviews",
    "access_requests", "access_approved", "access_rejected", "access_pending", "access_revoked",
    "publications_due", "published_on_time", "published_late", "publication_overdue",
)  # fmt: skip
_COUNTS = COLUMNS[4:]


@dataclass(frozen=True, kw_only=True)
class StatsQuery:
    """Which statistics: the period (UTC dates, inclusive), the grouping, optionally one agency."""

    start: date
    end: date
    group: str = "agency"
    agency_id: int | None = None

    @classmethod
    def from_args(cls, args: dict[str, str]) -> StatsQuery:
        """From query parameters ``from``, ``to`` (YYYY-MM-DD), ``group``, ``agency_id``; else Invalid."""
        try:
            today = utcnow().date()
            end = date.fromisoformat(args["to"]) if args.get("to") else today
            start = date.fromisoformat(args["from"]) if args.get("from") else end.replace(day=1)
        except ValueError:
            raise Invalid(
                "from/to 必须是日期（YYYY-MM-DD）", "from and to must be dates (YYYY-MM-DD)"
            ) from None
        if end >= date.max - timedelta(days=1):
            raise Invalid("统计期间超出范围", "the period is out of range")
        if start > end or (end - start).days > MAX_DAYS:
            raise Invalid(
                f"统计期间须从早到晚且不超过 {MAX_DAYS} 天",
                f"the period must run forward and span at most {MAX_DAYS} days",
            )
        group = args.get("group") or "agency"
        if group not in GROUPS:
            raise Invalid(
                f"group 必须是 {', '.join(GROUPS)} 之一", f"group must be one of {', '.join(GROUPS)}"
            )
        raw_agency = args.get("agency_id")
        if raw_agency and (not raw_agency.isdigit() or int(raw_agency) > _MAX_ID):
            raise Invalid("agency_id 必须是整数", "agency_id must be an integer")
        return cls(start=start, end=end, group=group, agency_id=int(raw_agency) if raw_agency else None)

    @property
    def since(self) -> datetime:
        """The first instant of the period."""
        return datetime.combine(self.start, time(), tzinfo=UTC)

    @property
    def until(self) -> datetime:
        """The first instant after the period."""
        return datetime.combine(self.end + timedelta(days=1), time(), tzinfo=UTC)


def _seconds(session: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in seconds, computed by the database (PostgreSQL and SQLite differ)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _assignment_at(device_id: Any, moment: Any) -> ColumnElement[bool]:
    """The check-out of ``device_id`` open at ``moment`` (the evidence's agency, JL-20)."""
    return and_(
        DeviceAssignment.device_id == device_id,
        DeviceAssignment.checked_out_at <= moment,
        or_(DeviceAssignment.checked_in_at.is_(None), DeviceAssignment.checked_in_at > moment),
    )


class _Table:
    """Rows keyed by (agency id, officer certificate), each a dict of counts."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int | None, str], dict[str, Any]] = defaultdict(
            lambda: dict.fromkeys(_COUNTS, 0)
        )

    def add(self, key: tuple[int | None, str], column: str, value: float) -> None:
        self.rows[key][column] += value


def _scope(caller: Caller, query: StatsQuery) -> int | None:
    """The one agency to count (None: every agency); another agency's looks missing (JL-20)."""
    if caller.reads_all:
        return query.agency_id
    if caller.agency_id is None or (query.agency_id is not None and query.agency_id != caller.agency_id):
        raise NotFound("机关不存在", "agency not found")
    return caller.agency_id


def _recordings(session: Session, q: StatsQuery, agency: int | None, by_officer: bool, table: _Table) -> None:
    agency_col = DeviceAssignment.agency_id
    officer_col = Recording.officer_id if by_officer else literal("")
    seconds = _seconds(session, Recording.ended_at, Recording.started_at)
    late = case(
        (_seconds(session, Recording.stored_at, Recording.ended_at) > LATE_UPLOAD.total_seconds(), 1), else_=0
    )
    stmt = (
        select(agency_col, officer_col, func.count(Recording.id), func.sum(seconds), func.sum(late))
        .select_from(Recording)
        .join(DeviceAssignment, _assignment_at(Recording.device_id, Recording.started_at))
        .where(Recording.started_at >= q.since, Recording.started_at < q.until)
        .group_by(agency_col, *([Recording.officer_id] if by_officer else []))
    )
    if agency is not None:
        stmt = stmt.where(agency_col == agency)
    for agency_id, officer, count, seconds_sum, late_sum in session.execute(stmt):
        key = (agency_id, (officer or "") if by_officer else "")
        table.add(key, "recordings", count)
        table.add(key, "hours", float(seconds_sum or 0) / 3600)
        table.add(key, "late_uploads", int(late_sum or 0))


def _sessions(session: Session, q: StatsQuery, agency: int | None, by_officer: bool, table: _Table) -> None:
    first_event = (
        select(func.min(SessionEventRecord.at))
        .where(SessionEventRecord.enforcement_session_id == EnforcementSessionRecord.id)
        .scalar_subquery()
    )
    started = func.coalesce(first_event, EnforcementSessionRecord.first_seen_at)
    stmt = (
        select(EnforcementSessionRecord, DeviceAssignment.agency_id)
        .join(DeviceAssignment, _assignment_at(EnforcementSessionRecord.device_id, started))
        .where(started >= q.since, started < q.until)
        .order_by(EnforcementSessionRecord.id)
    )
    if agency is not None:
        stmt = stmt.where(DeviceAssignment.agency_id == agency)
    for record, agency_id in session.execute(stmt):
        summary = session_summary(session, record)
        key = (agency_id, summary["officer_id"] if by_officer else "")
        table.add(key, "sessions", 1)
        table.add(key, f"sessions_{summary['verdict']}", 1)
        table.add(key, "gaps", summary["gap_count"])
        table.add(key, "unexplained_gaps", summary["unexplained_gap_count"])


def _case_officers(session: Session, case_ids: list[int]) -> dict[int, list[str]]:
    """Each case's officers by certificate number (how recordings name them)."""
    out: dict[int, list[str]] = defaultdict(list)
    for start in range(0, len(case_ids), 500):
        rows = session.execute(
            select(CaseOfficer.case_id, Officer.certificate_number)
            .join(Officer, Officer.id == CaseOfficer.officer_id)
            .where(CaseOfficer.case_id.in_(case_ids[start : start + 500]))
        )
        for case_id, certificate in rows:
            out[case_id].append(certificate or "")
    return out


def _keys(case: Case, by_officer: bool, officers: dict[int, list[str]]) -> list[tuple[int | None, str]]:
    if not by_officer:
        return [(case.agency_id, "")]
    return [(case.agency_id, cert) for cert in officers.get(case.id) or [""]]


def _cases(
    session: Session, q: StatsQuery, agency: int | None, by_officer: bool, now: datetime, table: _Table
) -> None:
    opened = select(Case).where(Case.created_at >= q.since, Case.created_at < q.until).order_by(Case.id)
    ended = ended_at_clause()
    first_package = (
        select(ArchivePackage.on_time)
        .where(ArchivePackage.case_id == Case.id)
        .order_by(ArchivePackage.id)
        .limit(1)
        .correlate(Case)
        .scalar_subquery()
    )
    closed = (
        select(Case, first_package, ended)
        .where(Case.status.in_(FINAL_STATUSES), ended >= q.since, ended < q.until)
        .order_by(Case.id)
    )
    reviews = select(CaseReview.agency_id, CaseReview.case_id).where(
        CaseReview.created_at >= q.since, CaseReview.created_at < q.until
    )
    if agency is not None:
        opened = opened.where(Case.agency_id == agency)
        closed = closed.where(Case.agency_id == agency)
        reviews = reviews.where(CaseReview.agency_id == agency)
    opened_cases = list(session.scalars(opened))
    ended_rows = list(session.execute(closed))
    review_rows = list(session.execute(reviews))
    ids = sorted(
        {c.id for c in opened_cases} | {c.id for c, _, _ in ended_rows} | {cid for _, cid in review_rows}
    )
    officers = _case_officers(session, ids) if by_officer else {}
    events: dict[int, list[CaseEvent]] = defaultdict(list)
    opened_ids = [c.id for c in opened_cases]
    for start in range(0, len(opened_ids), 500):
        for event in session.scalars(
            select(CaseEvent).where(CaseEvent.case_id.in_(opened_ids[start : start + 500]))
        ):
            assert event.case_id is not None
            events[event.case_id].append(event)
    for c in opened_cases:
        complete = not completeness(c, events[c.id])
        for key in _keys(c, by_officer, officers):
            table.add(key, "cases_opened", 1)
            table.add(key, "cases_complete", int(complete))
    overdue_before = now - ARCHIVE_DEADLINE
    for c, on_time, ended_at in ended_rows:
        for key in _keys(c, by_officer, officers):
            table.add(key, "cases_ended", 1)
            if on_time is True:
                table.add(key, "archived_on_time", 1)
            elif on_time is False:
                table.add(key, "archived_late", 1)
            elif ended_at < overdue_before:
                table.add(key, "archive_overdue", 1)
    if review_rows:
        by_id = {
            c.id: c for c in session.scalars(select(Case).where(Case.id.in_([cid for _, cid in review_rows])))
        }
        for _, case_id in review_rows:
            for key in _keys(by_id[case_id], by_officer, officers):
                table.add(key, "reviews", 1)


def _requests(
    session: Session, q: StatsQuery, agency: int | None, by_officer: bool, now: datetime, table: _Table
) -> None:
    """JL-20: requests for access, provision and retrieval filed in the period, by their outcome now.

    A request counts for the agency whose evidence it covers and, per officer, for the requester's
    certificate (a requester who is no officer, such as a head, counts under no officer). Disposals are
    not access and are not counted here.
    """
    revoked = (
        select(GrantRevocation.id)
        .where(GrantRevocation.request_id == GovernanceRequest.id, GrantRevocation.revoked_at <= now)
        .correlate(GovernanceRequest)
        .exists()
    )
    stmt = (
        select(
            GovernanceRequest.agency_id, GovernanceRequest.requested_by, GovernanceDecision.outcome, revoked
        )
        .outerjoin(GovernanceDecision, GovernanceDecision.request_id == GovernanceRequest.id)
        .where(
            GovernanceRequest.kind != "disposal",
            GovernanceRequest.requested_at >= q.since,
            GovernanceRequest.requested_at < q.until,
        )
    )
    if agency is not None:
        stmt = stmt.where(GovernanceRequest.agency_id == agency)
    rows = list(session.execute(stmt))
    certificates: dict[str, str] = {}
    users = sorted({int(r[1]) for r in rows if str(r[1]).isdigit()})
    if by_officer and users:
        certificates = {
            str(user): cert or ""
            for user, cert in session.execute(
                select(Officer.user_id, Officer.certificate_number).where(Officer.user_id.in_(users))
            )
        }
    for agency_id, requested_by, outcome, was_revoked in rows:
        key = (agency_id, certificates.get(str(requested_by), "") if by_officer else "")
        table.add(key, "access_requests", 1)
        if outcome is None:
            table.add(key, "access_pending", 1)
        elif outcome == "reject":
            table.add(key, "access_rejected", 1)
        else:
            table.add(key, "access_approved", 1)
            table.add(key, "access_revoked", int(bool(was_revoked)))


def _publications(
    session: Session, q: StatsQuery, agency: int | None, by_officer: bool, now: datetime, table: _Table
) -> None:
    """GS-11: publication items due in the period: published by the deadline, after it, or not at all and
    past it. Items excluded from publication (GS-15) have no deadline to meet and are not counted."""
    stmt = select(PublicationItem.agency_id, PublicationItem.case_id, PublicationItem.due_on,
                  PublicationItem.published_at).where(
        PublicationItem.due_on >= q.start,
        PublicationItem.due_on <= q.end,
        PublicationItem.state != "excluded",
    )  # fmt: skip
    if agency is not None:
        stmt = stmt.where(PublicationItem.agency_id == agency)
    rows = list(session.execute(stmt))
    officers = _case_officers(session, sorted({r[1] for r in rows if r[1] is not None})) if by_officer else {}
    today = now.date()
    for agency_id, case_id, due_on, published_at in rows:
        certs = (officers.get(case_id) or [""]) if by_officer and case_id is not None else [""]
        for cert in certs:
            key = (agency_id, cert)
            table.add(key, "publications_due", 1)
            if published_at is not None:
                on_time = published_at.astimezone(UTC).date() <= due_on
                table.add(key, "published_on_time" if on_time else "published_late", 1)
            elif due_on < today:
                table.add(key, "publication_overdue", 1)


def statistics(
    session: Session, caller: Caller, query: StatsQuery, *, now: datetime | None = None
) -> dict[str, Any]:
    """The statistics of the period, one row per agency (or per officer within an agency), with totals."""
    now = now or utcnow()
    agency = _scope(caller, query)
    if agency is not None and session.get(Agency, agency) is None:
        raise NotFound("机关不存在", "agency not found")
    by_officer = query.group == "officer"
    table = _Table()
    _recordings(session, query, agency, by_officer, table)
    _sessions(session, query, agency, by_officer, table)
    _cases(session, query, agency, by_officer, now, table)
    _requests(session, query, agency, by_officer, now, table)
    _publications(session, query, agency, by_officer, now, table)
    agency_ids = sorted({a for a, _ in table.rows if a is not None})
    names = (
        {i: n for i, n in session.execute(select(Agency.id, Agency.name).where(Agency.id.in_(agency_ids)))}
        if agency_ids
        else {}
    )
    certs = sorted({o for _, o in table.rows if o})
    officer_names = (
        {
            c: n
            for c, n in session.execute(
                select(Officer.certificate_number, Officer.name).where(Officer.certificate_number.in_(certs))
            )
        }
        if certs
        else {}
    )
    rows: list[dict[str, Any]] = []
    for (agency_id, officer), counts in sorted(table.rows.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
        rows.append(
            {
                "agency_id": agency_id,
                "agency": names.get(agency_id) if agency_id is not None else None,
                "officer": officer if by_officer else None,
                "officer_name": officer_names.get(officer) if by_officer else None,
                **{k: (round(v, 2) if k == "hours" else int(v)) for k, v in counts.items()},
            }
        )
    sums = {k: sum(float(r[k]) for r in rows) for k in _COUNTS}
    totals = {k: round(v, 2) if k == "hours" else int(v) for k, v in sums.items()}
    return {
        "from": query.start.isoformat(),
        "to": query.end.isoformat(),
        "group": query.group,
        "agency_id": agency,
        "rows": rows,
        "totals": totals,
    }


def to_csv(report: dict[str, Any]) -> str:
    """The rows as CSV (UTF-8 with a BOM so spreadsheet programs read the Chinese names), one header line."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["from", "to", *COLUMNS])
    for row in report["rows"]:
        writer.writerow([report["from"], report["to"], *("" if row[c] is None else row[c] for c in COLUMNS)])
    return out.getvalue()
