"""The read-only fleet queries behind the admin console: what the device page's charts and lists show."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from server.domain.accounts.service import create_user
from server.domain.base import utcnow
from server.domain.fleet import queries
from server.domain.fleet.models import DeviceAlert
from server.domain.fleet.telemetry_models import DeviceHealthSample
from server.domain.people.models import Agency, Officer


def _sample(session: Session, device_id: str, hours_ago: float, **values: object) -> None:
    at = utcnow() - timedelta(hours=hours_ago)
    row = {"backlog_bytes": 0, "backlog_segments": 0, "recording": False, "extra": {}} | values
    session.add(DeviceHealthSample(device_id=device_id, at=at, received_at=at, **row))


def _alert(session: Session, device_id: str, kind: str, hours_ago: float, *, cleared: bool) -> None:
    at = utcnow() - timedelta(hours=hours_ago)
    session.add(
        DeviceAlert(
            device_id=device_id,
            kind=kind,
            severity="warning",
            message=kind,
            message_en=kind,
            raised_at=at,
            last_seen_at=at,
            cleared_at=at + timedelta(minutes=5) if cleared else None,
        )
    )


def test_jl17_health_series_holds_the_window_oldest_first_with_gaps_kept(db_session: Session) -> None:
    """The 24 h chart shows reports inside the window only, in time order; an unreported value stays None."""
    _sample(db_session, "rec-1", 30, battery_pct=99)  # before the window
    _sample(db_session, "rec-1", 2, battery_pct=70, free_bytes=5 * 1024**3, oldest_pending_age_s=7200.0)
    _sample(db_session, "rec-1", 20, battery_pct=None, free_bytes=None, oldest_pending_age_s=None)
    _sample(db_session, "rec-2", 1, battery_pct=10)  # another device
    db_session.flush()

    points = queries.health_since(db_session, "rec-1", utcnow() - timedelta(hours=24))

    assert [p.battery_pct for p in points] == [None, 70]
    assert points[0].at < points[1].at
    assert (points[1].free_bytes, points[1].oldest_pending_age_s) == (5 * 1024**3, 7200.0)


def test_device_alerts_list_open_ones_before_cleared_ones_newest_first(db_session: Session) -> None:
    """An old open alert is still above a fresh cleared one; the limit and the device are honoured."""
    _alert(db_session, "rec-1", "offline", 48, cleared=False)
    _alert(db_session, "rec-1", "low_battery", 1, cleared=True)
    _alert(db_session, "rec-1", "backlog_age", 5, cleared=True)
    _alert(db_session, "rec-2", "low_storage", 0.5, cleared=False)
    db_session.flush()

    assert [a.kind for a in queries.device_alerts(db_session, "rec-1", limit=10)] == [
        "offline",
        "low_battery",
        "backlog_age",
    ]
    assert [a.kind for a in queries.device_alerts(db_session, "rec-1", limit=2)] == ["offline", "low_battery"]


def test_checkout_candidates_are_active_officer_and_auxiliary_accounts_by_label(db_session: Session) -> None:
    """A recorder goes to an officer or auxiliary (labelled with the officer's name), never to an admin
    or a disabled account."""
    officer = create_user(db_session, "zhang", "pass-123-word", "officer")
    auxiliary = create_user(db_session, "aux", "pass-123-word", "auxiliary")
    create_user(db_session, "admin2", "pass-123-word", "device_admin")
    gone = create_user(db_session, "left", "pass-123-word", "officer")
    gone.active = False
    agency = Agency(name="某市城市管理行政执法局")
    db_session.add(agency)
    db_session.flush()
    db_session.add(Officer(agency_id=agency.id, name="张三", user_id=officer.id))
    db_session.flush()

    assert queries.checkout_candidates(db_session) == sorted(
        [(officer.id, "张三（zhang）"), (auxiliary.id, "aux")], key=lambda item: item[1]
    )
    assert queries.user_labels(db_session, {gone.id}) == {gone.id: "left"}
    assert queries.user_labels(db_session, set()) == {}
