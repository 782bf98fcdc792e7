"""The recordings covering a case's events (JL-2), found in one query: the 60-second slack at both ends,
a long recording running across the event, the event's officers or its device, and the agency (JL-20)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from server.domain.accounts.service import create_user
from server.domain.cases.covering import RECORDING_SLACK, CoveringRecordings
from server.domain.cases.models import CaseEvent
from server.domain.evidence.models import Recording
from server.domain.fleet.models import Device, DeviceAssignment
from server.domain.people.models import Agency

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OFFICER_PK, CERTIFICATE = 7, "AH-0007"


def _recording(session: Session, sequence: int, start: timedelta, end: timedelta, officer: str) -> int:
    rec = Recording(
        device_id="cam-1",
        sequence=sequence,
        file_id=f"f{sequence}",
        kind="video",
        media_type="video/mp4",
        size=1,
        sha256="0" * 64,
        started_at=T0 + start,
        ended_at=T0 + end,
        officer_id=officer,
        session_id="s",
        manifest_text="{}",
        signature=b"s" * 64,
        manifest_hash=f"{sequence:064d}",
        prev_manifest_hash="2" * 64,
        object_key=f"k{sequence}",
        storage_backend="local",
        verified=True,
    )
    session.add(rec)
    session.flush()
    return rec.id


def _event(agency_id: int, at: timedelta, *, officers: list[int], device_id: str | None = None) -> CaseEvent:
    return CaseEvent(
        agency_id=agency_id,
        event_type="investigation.inquiry",
        occurred_at=T0 + at,
        officer_ids=officers,
        device_id=device_id,
        recorded_by="t",
    )


def _agencies_and_device(session: Session) -> tuple[int, int]:
    """Agencies A and B; cam-1 is out with A until T0 + 2 h, then with B (JL-20: whose evidence it is)."""
    a, b = Agency(name="甲局"), Agency(name="乙局")
    session.add_all([a, b])
    session.add(
        Device(id="cam-1", public_key=b"k" * 32, key_fingerprint="f", status="active", registered_by="t")
    )
    session.flush()
    user = create_user(session, "wang", "a long enough password 1", "officer")
    for agency, start, end in (
        (a, T0 - timedelta(days=1), T0 + timedelta(hours=2)),
        (b, T0 + timedelta(hours=2), None),
    ):
        session.add(
            DeviceAssignment(
                device_id="cam-1",
                user_id=user.id,
                agency_id=agency.id,
                checked_out_at=start,
                checked_in_at=end,
                checked_out_by="t",
            )
        )
    session.flush()
    return a.id, b.id


def test_jl2_a_recording_covers_an_event_it_runs_at_within_60_seconds(db_session: Session) -> None:
    """Ends 60 s before or starts 60 s after the event: covered; one second more: not; a long one across it:
    covered. The same ids for the event's officer as for its device."""
    a, _b = _agencies_and_device(db_session)
    s = timedelta(seconds=1)
    ends_at_edge = _recording(db_session, 0, -10 * 60 * s, -RECORDING_SLACK, CERTIFICATE)
    _recording(db_session, 1, -10 * 60 * s, -RECORDING_SLACK - s, CERTIFICATE)
    starts_at_edge = _recording(db_session, 2, RECORDING_SLACK, RECORDING_SLACK + 60 * s, CERTIFICATE)
    _recording(db_session, 3, RECORDING_SLACK + s, RECORDING_SLACK + 60 * s, CERTIFICATE)
    across = _recording(db_session, 4, -50 * 60 * s, 50 * 60 * s, CERTIFICATE)
    by_officer = _event(a, timedelta(0), officers=[OFFICER_PK])
    by_device = _event(a, timedelta(0), officers=[], device_id="cam-1")
    by_nobody = _event(a, timedelta(0), officers=[])
    someone_else = _event(a, timedelta(0), officers=[OFFICER_PK + 1])
    certificates = {OFFICER_PK: CERTIFICATE, OFFICER_PK + 1: "AH-0008"}

    covering = CoveringRecordings(db_session, [by_officer, by_device, by_nobody, someone_else], certificates)

    expected = sorted([ends_at_edge, starts_at_edge, across])
    assert covering.at(by_officer) == expected
    assert covering.at(by_device) == expected
    assert covering.at(by_nobody) == [] and covering.at(someone_else) == []


def test_jl20_an_event_is_covered_only_by_its_own_agencys_recordings(db_session: Session) -> None:
    """After cam-1 passes to agency B its recordings are B's: they cover B's event, never A's at that time."""
    a, b = _agencies_and_device(db_session)
    while_a = _recording(db_session, 0, timedelta(minutes=10), timedelta(minutes=20), CERTIFICATE)
    while_b = _recording(db_session, 1, timedelta(hours=3), timedelta(hours=3, minutes=10), CERTIFICATE)
    a_early, a_late = (
        _event(a, t, officers=[OFFICER_PK]) for t in (timedelta(minutes=15), timedelta(hours=3, minutes=5))
    )
    b_late = _event(b, timedelta(hours=3, minutes=5), officers=[OFFICER_PK])

    covering = CoveringRecordings(db_session, [a_early, a_late, b_late], {OFFICER_PK: CERTIFICATE})

    assert covering.at(a_early) == [while_a]
    assert covering.at(a_late) == []
    assert covering.at(b_late) == [while_b]
