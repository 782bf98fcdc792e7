"""Case-file review, 案卷评查 (JL-22), on SQLite and PostgreSQL: a checklist drawn from the completeness
rules, findings for every item, a verdict consistent with them, rectification requests with deadlines,
and an append-only history that another agency cannot read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from server.domain.base import utcnow
from server.domain.errors import Invalid, NotFound
from server.domain.governance import review
from server.domain.governance.review import ReviewInput
from server.infra.db import get_engine, session_scope
from tests.conftest import migrated_app
from tests.server.domain.governance.test_archive import CaseScene, build_case, seal


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database."""
    app = migrated_app(tmp_path / "var", db_url)
    yield app
    get_engine(app).dispose()


def _items(app: Flask, scene: CaseScene) -> list[dict[str, Any]]:
    with session_scope(app) as session:
        case, _ = review.list_reviews(session, scene.callers["supervisor"], scene.case_id)
        return review.checklist(session, case)


def _body(
    items: list[dict[str, Any]], verdict: str, deficient: str | None = None, **extra: Any
) -> dict[str, Any]:
    findings = [
        {"item": i["item"], "result": "deficient" if i["item"] == deficient else "ok", "note": ""}
        for i in items
    ]
    return {"verdict": verdict, "findings": findings, **extra}


def test_jl22_the_checklist_comes_from_the_completeness_rules(app: Flask, tmp_path: Path) -> None:
    scene = build_case(app, tmp_path)
    items = {i["item"]: i for i in _items(app, scene)}
    # An inspection: credentials shown and the on-site record (JL-8), plus the recording and archive rules.
    assert {
        "initiation.ex_officio_source",
        "investigation.credential_shown",
        "investigation.on_site_inspection",
    } <= set(items)
    assert {"recordings.continuity", "recordings.uploaded_on_time", "archive.on_time"} <= set(items)
    assert "decision.decided" not in items  # an inspection needs no decision
    assert items["investigation.on_site_inspection"]["suggested"] == "ok"  # the record has it
    assert items["archive.on_time"]["suggested"] is None  # not archived yet
    seal(app, scene, tmp_path / "out")
    assert {i["item"]: i for i in _items(app, scene)}["archive.on_time"]["suggested"] == "ok"


def test_jl22_a_review_with_rectification_is_kept_with_its_history(app: Flask, tmp_path: Path) -> None:
    scene = build_case(app, tmp_path)
    items = _items(app, scene)
    deadline = (utcnow().date() + timedelta(days=15)).isoformat()
    late = "recordings.uploaded_on_time"
    body = _body(
        items, "rectify", deficient=late,
        rectifications=[{"item": late, "request": "说明迟传原因", "deadline": deadline}], summary="录像迟传",
    )  # fmt: skip
    with session_scope(app) as session:
        first = review.record_review(
            session, scene.callers["supervisor"], scene.case_id, ReviewInput.from_json(body)
        )
        first_id = first.id
        assert first.score == round(100 * (len(items) - 1) / len(items))
        assert first.rectify_by is not None and first.rectify_by.isoformat() == deadline
    follow = _body(items, "pass", follows_review_id=first_id)
    with session_scope(app) as session:
        review.record_review(session, scene.callers["reviewer"], scene.case_id, ReviewInput.from_json(follow))
    with session_scope(app) as session:
        _, rows = review.list_reviews(session, scene.callers["reviewer"], scene.case_id)
        history = [review.review_to_dict(r) for r in rows]
    assert [(h["verdict"], h["reviewer_role"]) for h in history] == [
        ("rectify", "supervisor"),
        ("pass", "legal_reviewer"),
    ]
    assert history[0]["rectifications"][0]["overdue"] is False and history[1]["follows_review_id"] == first_id
    # The deadline passes: the request reads overdue.
    assert review.review_to_dict(rows[0], today=utcnow().date() + timedelta(days=16))["rectifications"][0][
        "overdue"
    ]
    with pytest.raises(Exception, match="append-only"), session_scope(app) as session:
        session.execute(text("UPDATE case_reviews SET verdict = 'pass'"))


def _deficient_first(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**body["findings"][0], "result": "deficient"}, *body["findings"][1:]]


def _rectify_first(items: list[dict[str, Any]], deadline: str) -> list[dict[str, str]]:
    return [{"item": items[0]["item"], "request": "补正", "deadline": deadline}]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda b, items: b | {"findings": _deficient_first(b)}, "cannot pass"),
        (lambda b, items: b | {"verdict": "rectify"}, "needs at least one rectification"),
        (lambda b, items: b | {"findings": b["findings"][1:]}, "have no finding"),
        (
            lambda b, items: b | {"findings": [*b["findings"], {"item": "made.up", "result": "ok"}]},
            "not on this",
        ),
        (lambda b, items: b | {"findings": [*b["findings"], b["findings"][0]]}, "two findings"),
        (
            lambda b, items: (
                b
                | {
                    "verdict": "fail",
                    "findings": _deficient_first(b),
                    "rectifications": _rectify_first(items, "2020-01-01"),
                }
            ),
            "after today",
        ),
        (
            lambda b, items: b | {"verdict": "fail", "rectifications": _rectify_first(items, "2099-01-01")},
            "deficient item",
        ),
    ],
)
def test_jl22_an_inconsistent_review_is_refused_precisely(
    app: Flask, tmp_path: Path, change: Any, fragment: str
) -> None:
    scene = build_case(app, tmp_path)
    items = _items(app, scene)
    body = change(_body(items, "pass"), items)
    with pytest.raises(Invalid) as refused, session_scope(app) as session:
        review.record_review(session, scene.callers["supervisor"], scene.case_id, ReviewInput.from_json(body))
    assert fragment in refused.value.message_en
    with session_scope(app) as session:
        assert review.list_reviews(session, scene.callers["supervisor"], scene.case_id)[1] == []


_OK = [{"item": "a", "result": "ok"}]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"verdict": "great", "findings": _OK},
        {"verdict": "pass", "findings": []},
        {"verdict": "pass", "findings": [{"item": "a", "result": "meh"}]},
        {
            "verdict": "pass",
            "findings": _OK,
            "rectifications": [{"item": "a", "deadline": "soon", "request": "x"}],
        },
        {"verdict": "pass", "findings": _OK, "rectifications": [{"item": "a", "deadline": "2099-01-01"}]},
    ],
)
def test_jl22_a_malformed_review_body_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(Invalid):
        ReviewInput.from_json(body)


def test_jl20_another_agencys_reviewer_cannot_review_or_read(app: Flask, tmp_path: Path) -> None:
    scene = build_case(app, tmp_path)
    body = _body(_items(app, scene), "pass")
    with session_scope(app) as session:
        with pytest.raises(NotFound):
            review.record_review(session, scene.callers["other"], scene.case_id, ReviewInput.from_json(body))
        with pytest.raises(NotFound):
            review.list_reviews(session, scene.callers["other"], scene.case_id)


def test_jl22_reviews_and_archive_packages_show_in_the_workspace_case_file(
    app: Flask, tmp_path: Path
) -> None:
    from tests.server.http.pages.workspace.conftest import login

    scene = build_case(app, tmp_path)
    items = _items(app, scene)
    deadline = (utcnow().date() + timedelta(days=10)).isoformat()
    body = _body(
        items, "rectify", deficient="archive.on_time",
        rectifications=[{"item": "archive.on_time", "request": "补办归档", "deadline": deadline}],
    )  # fmt: skip
    with session_scope(app) as session:
        review.record_review(session, scene.callers["supervisor"], scene.case_id, ReviewInput.from_json(body))
    seal(app, scene, tmp_path / "out")
    reviewer = app.test_client()
    login(reviewer, "rec-ar-1-reviewer")
    html = reviewer.get(f"/workspace/cases/{scene.case_id}").get_data(as_text=True)
    section = html.split('id="reviews"', 1)[1].split("</section>", 1)[0]
    assert 'data-verdict="rectify"' in section and "补办归档" in section and deadline in section
    assert 'id="archives"' in html and "按期归档" in html.split('id="archives"', 1)[1]
    officer = app.test_client()
    login(officer, "rec-ar-1-wang")
    page = officer.get(f"/workspace/cases/{scene.case_id}").get_data(as_text=True)
    assert 'data-verdict="rectify"' in page  # the officer sees the review of his case file
    assert 'id="archives"' not in page  # but not the archive packages (not his role's endpoint)
