"""The before-enforcement catalogue (GS-9): content per kind, the review workflow, update items.

The content rules are pure; the workflow runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from server.domain.errors import Invalid, NotFound
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity import catalogue_service
from server.domain.publicity.catalogue import (
    CatalogueKind,
    ChangeCause,
    content_from_mapping,
    content_to_mapping,
    public_fields,
)
from server.domain.publicity.errors import CatalogueError, TransitionForbidden
from server.domain.publicity.inputs import CatalogueChange, EntryRevision, NewCatalogueEntry
from server.domain.publicity.models import CatalogueHistory
from server.domain.publicity.schedules import today_in_china

VALID: dict[CatalogueKind, dict[str, Any]] = {
    CatalogueKind.LEGAL_BASIS: {
        "name": "中华人民共和国食品安全法",
        "level": "law",
        "issuer": "全国人民代表大会常务委员会",
        "effective_on": "2021-04-29",
        "provisions": "第一百二十四条",
        "discretion_rules": "首次违法且及时改正的，从轻处罚",
        "discretion_benchmarks": "货值金额不足一万元的，罚款五万元以上十万元以下",
    },
    CatalogueKind.PROCEDURE: {
        "matter": "食品经营许可",
        "accepting_body": "政务服务中心市场监管窗口",
        "approving_body": "合肥市市场监督管理局",
        "conditions": "具有与经营的食品品种、数量相适应的经营场所",
        "time_limit_days": 10,
        "flow_steps": ["申请", "受理", "审查", "决定", "送达"],
        "service_guide": "申请人可通过皖事通办提交材料。",
    },
    CatalogueKind.POWER_LIST: {
        "matter": "对经营超过保质期食品的处罚",
        "power_kind": "penalty",
        "basis": "《食品安全法》第一百二十四条",
        "responsible_body": "合肥市市场监督管理局",
    },
    CatalogueKind.INSPECTION_LIST: {
        "matter": "食品经营者监督检查",
        "subject": "合肥市市场监督管理局",
        "basis": "《食品安全法》第一百一十条",
        "target": "辖区食品经营者",
        "content": "经营条件、进货查验记录",
        "ratio_percent": "5",
        "method": "双随机、一公开",
        "frequency": "每年一次",
    },
    CatalogueKind.PARTY_RIGHT: {
        "right": "hearing",
        "description": "较大数额罚款前，当事人有权要求听证",
        "how_to_exercise": "自收到告知书之日起五个工作日内提出",
    },
    CatalogueKind.COMPLAINT_CHANNEL: {
        "name": "12315 投诉举报",
        "conditions": "有明确的被投诉人和具体事实",
        "phone": "0551-12315",
        "address": "合肥市某某路1号",
        "postcode": "230001",
        "email": "ts@example.gov.cn",
    },
    CatalogueKind.ENTRUSTED_BODY: {
        "name": "合肥市某某综合执法大队",
        "basis": "《行政处罚法》第二十条",
        "matters": "市容环境卫生方面的处罚",
        "authority": "警告、罚款",
        "term_from": "2026-01-01",
        "term_to": "2027-12-31",
    },
}


def test_gs9_every_kind_of_entry_parses_and_round_trips() -> None:
    assert set(VALID) == set(CatalogueKind)
    for kind, data in VALID.items():
        content = content_from_mapping(kind, data)
        assert content_from_mapping(kind, content_to_mapping(content)) == content
        rows = dict(public_fields(kind, content_to_mapping(content)))
        assert content.title and rows
    inspection = dict(
        public_fields(CatalogueKind.INSPECTION_LIST, VALID[CatalogueKind.INSPECTION_LIST], "en")
    )
    assert inspection["Share inspected (%)"] == "5" and inspection["Frequency"] == "每年一次"
    hearing = content_from_mapping(CatalogueKind.PARTY_RIGHT, VALID[CatalogueKind.PARTY_RIGHT])
    assert hearing.title == "听证权"


@pytest.mark.parametrize(
    ("kind", "change", "field", "words"),
    [
        (CatalogueKind.LEGAL_BASIS, {"colour": "red"}, "content.colour", "no field colour"),
        (CatalogueKind.LEGAL_BASIS, {"name": None}, "content.name", "is required"),
        (CatalogueKind.LEGAL_BASIS, {"name": "  "}, "content.name", "must not be empty"),
        (CatalogueKind.LEGAL_BASIS, {"level": "decree"}, "content.level", "must be one of law"),
        (
            CatalogueKind.LEGAL_BASIS,
            {"effective_on": "2026-02-30"},
            "content.effective_on",
            "got '2026-02-30'",
        ),
        (CatalogueKind.PROCEDURE, {"time_limit_days": True}, "content.time_limit_days", "whole number"),
        (CatalogueKind.PROCEDURE, {"time_limit_days": 0}, "content.time_limit_days", "from 1 to 365"),
        (CatalogueKind.PROCEDURE, {"flow_steps": []}, "content.flow_steps", "list of 1 to 50"),
        (CatalogueKind.PROCEDURE, {"flow_steps": ["申请", ""]}, "content.flow_steps[1]", "non-empty"),
        (CatalogueKind.INSPECTION_LIST, {"ratio_percent": "0"}, "content.ratio_percent", "above 0"),
        (CatalogueKind.INSPECTION_LIST, {"ratio_percent": "101"}, "content.ratio_percent", "at most 100"),
        (CatalogueKind.INSPECTION_LIST, {"ratio_percent": "NaN"}, "content.ratio_percent", "a number"),
        (CatalogueKind.INSPECTION_LIST, {"ratio_percent": 5}, "content.ratio_percent", "must be text"),
        (CatalogueKind.COMPLAINT_CHANNEL, {"postcode": "23000"}, "content.postcode", "6 digits"),
        (CatalogueKind.COMPLAINT_CHANNEL, {"email": "ts@"}, "content.email", "not an e-mail"),
        (CatalogueKind.COMPLAINT_CHANNEL, {"phone": "call us"}, "content.phone", "not a phone"),
        (
            CatalogueKind.COMPLAINT_CHANNEL,
            {"phone": "", "address": "", "postcode": "", "email": ""},
            "content.phone",
            "needs a phone, an address or an e-mail",
        ),
        (CatalogueKind.COMPLAINT_CHANNEL, {"address": ""}, "content.address", "postcode needs an address"),
        (CatalogueKind.ENTRUSTED_BODY, {"term_to": "2025-12-31"}, "content.term_to", "before term_from"),
    ],
)
def test_gs9_bad_content_is_a_precise_error(
    kind: CatalogueKind, change: dict[str, Any], field: str, words: str
) -> None:
    data = {**VALID[kind], **change}
    with pytest.raises(CatalogueError) as caught:
        content_from_mapping(kind, data)
    assert caught.value.field == field
    assert words in caught.value.message_en and caught.value.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"kind": "gossip", "content": {}}, "kind must be one of legal_basis"),
        ({"kind": "rights", "content": {}}, "kind must be one of"),
        ({"kind": "legal_basis", "content": []}, "content must be an object"),
        ({"kind": "legal_basis", "content": {}, "agency_id": True}, "agency_id"),
        ({"change": {"cause": "weather", "effective_on": "2026-01-01", "reference": "x"}}, "change.cause"),
        ({"change": {"cause": "law", "effective_on": "01/01/2026", "reference": "x"}}, "change.effective_on"),
        ({"change": {"cause": "law", "effective_on": "2026-01-01", "reference": ""}}, "change.reference"),
        ({"change": {"cause": "law", "effective_on": "9999-12-31", "reference": "x"}}, "years 1950 to 2099"),
        (
            {"change": {"cause": "law", "effective_on": "2026-01-01", "reference": "x", "by": 1}},
            "no field by",
        ),
    ],
)
def test_gs9_bad_entry_body_is_a_precise_error(body: dict[str, Any], words: str) -> None:
    full = {"kind": "legal_basis", "content": VALID[CatalogueKind.LEGAL_BASIS], **body}
    with pytest.raises(Invalid) as caught:
        NewCatalogueEntry.from_json(full, default_agency=1)
    assert words in caught.value.message_en


# -- in the database ------------------------------------------------------------------------------


def _agency(session: Session, name: str) -> Agency:
    agency = Agency(name=name, head="", duties="", address="", contacts="")
    session.add(agency)
    session.flush()
    return agency


def _new(agency: Agency, kind: CatalogueKind, change: CatalogueChange | None = None) -> NewCatalogueEntry:
    return NewCatalogueEntry(
        agency_id=agency.id, kind=kind, content=content_from_mapping(kind, VALID[kind]), change=change
    )


LAW_CHANGE = CatalogueChange(
    cause=ChangeCause.LAW, effective_on=date(2026, 9, 30), reference="食品安全法修正"
)


def test_gs9_entry_is_reviewed_by_another_and_its_law_change_update_is_due_in_20_working_days(
    db_session: Session,
) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    officer = Caller("11", "officer", agency.id)
    reviewer = Caller("12", "legal_reviewer", agency.id)
    entry = catalogue_service.create_entry(
        db_session, officer, _new(agency, CatalogueKind.LEGAL_BASIS, LAW_CHANGE)
    )
    (update,) = catalogue_service.list_updates(db_session, reviewer, open_only=True)
    # 30 September 2026 + 20 working days: 1–7 October off, Saturday 10 October on.
    assert (update.entry_id, update.due_on, update.deadline_provisional) == (
        entry.id,
        date(2026, 11, 3),
        False,
    )
    assert catalogue_service.portal_catalogue(db_session) == []
    catalogue_service.submit_entry(db_session, officer, entry.id)
    with pytest.raises(TransitionForbidden):
        catalogue_service.publish_entry(db_session, officer, entry.id)  # an officer only collects
    author_reviewer = Caller("11", "legal_reviewer", agency.id)  # the same person, now a reviewer
    with pytest.raises(TransitionForbidden):
        catalogue_service.publish_entry(db_session, author_reviewer, entry.id)
    catalogue_service.publish_entry(db_session, reviewer, entry.id)
    assert entry.state == "published" and entry.published is not None
    # Closed when the content went public; later than 3 November 2026, so not on time.
    assert update.closed_at is not None and update.closed_by == "12" and update.closed_on_time is False
    assert catalogue_service.list_updates(db_session, reviewer, open_only=True) == []
    (shown,) = catalogue_service.portal_catalogue(db_session)
    assert shown["name"] == agency.name and shown["kinds"][0]["entries"][0]["id"] == entry.id
    actions = [
        h["action"] for h in catalogue_service.entry_to_dict(db_session, entry, history=True)["history"]
    ]
    assert actions == ["create", "submit", "publish"]
    # A change taking effect late in 2026 is counted into 2027, whose schedule is not shipped: weekends
    # only, and the update item says so.
    later = CatalogueChange(cause=ChangeCause.DUTIES, effective_on=date(2026, 12, 25), reference="职责调整")
    catalogue_service.create_entry(db_session, officer, _new(agency, CatalogueKind.POWER_LIST, later))
    (pending,) = catalogue_service.list_updates(db_session, reviewer, open_only=True)
    assert (pending.due_on, pending.deadline_provisional) == (date(2027, 1, 22), True)
    assert "2027:weekends-only" in pending.calendar_version


def test_gs9_revision_waits_for_another_reviewer_and_other_agencies_cannot_touch_entries(
    db_session: Session,
) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    officer = Caller("11", "officer", agency.id)
    reviewer = Caller("12", "legal_reviewer", agency.id)
    entry = catalogue_service.create_entry(db_session, officer, _new(agency, CatalogueKind.COMPLAINT_CHANNEL))
    catalogue_service.submit_entry(db_session, officer, entry.id)
    catalogue_service.publish_entry(db_session, reviewer, entry.id)
    assert catalogue_service.list_updates(db_session, reviewer) == []  # no change of law: no update item
    revision = EntryRevision(
        content={**VALID[CatalogueKind.COMPLAINT_CHANNEL], "phone": "0551-12345"},
        change=CatalogueChange(cause=ChangeCause.DUTIES, effective_on=today_in_china(), reference="职责调整"),
    )
    catalogue_service.revise_entry(db_session, reviewer, entry.id, revision)
    (update,) = catalogue_service.list_updates(db_session, reviewer, open_only=True)
    assert update.due_on > today_in_china() and update.cause == "duties"
    # The portal keeps the published copy until the revision is applied.
    rows = dict(catalogue_service.portal_catalogue(db_session)[0]["kinds"][0]["entries"][0]["rows"])
    assert rows["电话"] == "0551-12315"
    with pytest.raises(TransitionForbidden):
        catalogue_service.apply_revision(db_session, reviewer, entry.id, "职责调整")  # the reviser
    catalogue_service.apply_revision(db_session, Caller("13", "agency_head", agency.id), entry.id, "职责调整")
    assert entry.state == "corrected" and entry.pending is None
    rows = dict(
        catalogue_service.portal_catalogue(db_session, lang="en")[0]["kinds"][0]["entries"][0]["rows"]
    )
    assert rows["Phone"] == "0551-12345"
    assert update.closed_on_time is True
    catalogue_service.withdraw_entry(db_session, reviewer, entry.id, "渠道撤销")
    assert catalogue_service.portal_catalogue(db_session) == []
    # Another agency cannot see or touch an entry; a supervisor reads but never edits.
    ours, theirs = agency, _agency(db_session, "乙机关")
    entry = catalogue_service.create_entry(
        db_session, Caller("11", "officer", ours.id), _new(ours, CatalogueKind.POWER_LIST)
    )
    intruder = Caller("21", "legal_reviewer", theirs.id)
    revision = EntryRevision(content=VALID[CatalogueKind.POWER_LIST])
    for attempt in (
        lambda: catalogue_service.revise_entry(db_session, intruder, entry.id, revision),
        lambda: catalogue_service.submit_entry(db_session, intruder, entry.id),
        lambda: catalogue_service.get_entry(db_session, intruder, entry.id),
        lambda: catalogue_service.create_entry(db_session, intruder, _new(ours, CatalogueKind.POWER_LIST)),
        # A supervisor reads every agency but edits none.
        lambda: catalogue_service.revise_entry(
            db_session, Caller("31", "supervisor", None), entry.id, revision
        ),
    ):
        with pytest.raises(NotFound):
            attempt()
    assert catalogue_service.list_entries(db_session, intruder) == []
    readable = catalogue_service.list_entries(db_session, Caller("31", "supervisor", None))
    assert entry.id in [e.id for e in readable]
    db_session.commit()
    with pytest.raises(DatabaseError):
        db_session.execute(text("UPDATE catalogue_history SET actor = 'x'"))
    db_session.rollback()
    with pytest.raises(DatabaseError):
        db_session.execute(text("DELETE FROM catalogue_history"))
    db_session.rollback()
    assert db_session.query(CatalogueHistory).count() == 7
