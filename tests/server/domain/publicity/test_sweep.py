"""The publicity worker's pass on SQLite and PostgreSQL (GS-13, GS-23): deadline alerts open and items past
their disclosure period leave the portal, with nobody asking; the thread stops cleanly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from flask import Flask

from server.domain.errors import NotFound
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity import portal as portal_service
from server.domain.publicity import service
from server.domain.publicity.alerts import open_deadline_alerts
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.models import PublicationItem
from server.infra.db import get_engine, session_scope
from server.workers.loops import PublicityWorker
from tests.conftest import migrated_app
from tests.server.domain.publicity.test_service import PENALTY


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database."""
    app = migrated_app(tmp_path / "var", db_url)
    yield app
    get_engine(app).dispose()


def _scene(app: Flask) -> tuple[int, int, int]:
    """An agency with a published item (disclosed until 2029-09-30) and a draft overdue since 2026-10-15."""
    with session_scope(app) as session:
        agency = Agency(name="合肥市市场监督管理局", head="", duties="", address="", contacts="")
        session.add(agency)
        session.flush()
        officer = Caller(user_id="10", role="officer", agency_id=agency.id)
        reviewer = Caller(user_id="12", role="legal_reviewer", agency_id=agency.id)
        collect = service.CollectInput(
            agency_id=agency.id, act=EnforcementAct.PENALTY, decided_on=date(2026, 9, 30), content=PENALTY
        )
        published = service.collect(session, officer, collect)
        service.submit(session, officer, published.id)
        service.publish(session, reviewer, published.id)
        draft = service.collect(session, officer, collect)
        return agency.id, published.id, draft.id


def test_gs13_an_item_past_its_disclosure_period_leaves_the_portal_after_the_workers_pass(app: Flask) -> None:
    agency_id, item_id, draft_id = _scene(app)
    # GS-23: started like the runner starts it, the worker raises the draft's alert with nobody asking.
    worker = PublicityWorker(app, interval_s=0.05)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while worker.passes < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert worker.passes >= 1 and worker._thread is None  # stopped and joined
    with session_scope(app) as session:
        alerts = open_deadline_alerts(session, Caller(user_id="13", role="agency_head", agency_id=agency_id))
        assert [(a.item_id, a.kind) for a in alerts] == [(draft_id, "publication_overdue")]

    last_day = datetime(2029, 9, 30, 4, 0, tzinfo=UTC)  # the item's 公示截止期, noon in Beijing
    assert worker.step(now=last_day)["expired"] == 0
    with session_scope(app) as session:
        assert session.get(PublicationItem, item_id).state == "published"  # type: ignore[union-attr]
        assert portal_service.portal_search(session, portal_service.PortalQuery(), last_day.date())[1] == 1
    after = datetime(2029, 9, 30, 16, 30, tzinfo=UTC)  # 00:30 on 1 October in Beijing: the period is over
    assert worker.step(now=after)["expired"] == 1
    with session_scope(app) as session:
        assert session.get(PublicationItem, item_id).state == "expired"  # type: ignore[union-attr]
        assert portal_service.portal_search(session, portal_service.PortalQuery(), date(2029, 10, 1))[1] == 0
        with pytest.raises(NotFound):
            portal_service.portal_item(session, item_id, date(2029, 10, 1))
    assert worker.step(now=after)["expired"] == 0  # idempotent
