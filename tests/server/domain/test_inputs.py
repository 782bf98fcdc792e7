"""The typed inputs check a request as the API always did, and say what an update leaves alone."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from server.domain.cases.inputs import CaseEventInput, NewCase, StatusChange
from server.domain.errors import Invalid
from server.domain.people.inputs import UNSET, AgencyFields, OfficerFields


def test_gs9_officer_update_tells_a_cleared_field_from_one_left_alone() -> None:
    """PATCH {"valid_to": null} clears the validity; a PATCH without it keeps it (GS-9(2))."""
    cleared = OfficerFields.from_json({"valid_to": None, "certificate_number": ""}, creating=False)
    assert cleared.given() == {"certificate_number": None, "valid_to": None}
    kept = OfficerFields.from_json({"name": " 王五 "}, creating=False)
    assert kept.given() == {"name": "王五"}
    assert kept.valid_to is UNSET and kept.certificate_number is UNSET


def test_gs9_officer_fields_refuse_what_the_api_refused() -> None:
    with pytest.raises(Invalid) as missing:
        OfficerFields.from_json({"kind": "officer"}, creating=True)
    assert (missing.value.message, missing.value.message_en) == ("缺少字段 name", "missing field name")
    with pytest.raises(Invalid) as status:
        OfficerFields.from_json({"status": "retired"}, creating=False)
    assert status.value.message_en == "status must be one of active, suspended, revoked"
    with pytest.raises(Invalid) as day:
        OfficerFields.from_json({"valid_from": "2026-02-30"}, creating=False)
    assert day.value.message == "valid_from 必须是 YYYY-MM-DD 日期"
    with pytest.raises(Invalid, match="user_id must be an integer"):
        OfficerFields.from_json({"user_id": True}, creating=False)
    body = {"name": "甲", "valid_to": "2027-01-31", "kind": "auxiliary"}
    fields = OfficerFields.from_json(body, creating=True)
    assert fields.valid_to == date(2027, 1, 31) and fields.kind == "auxiliary"


def test_gs9_agency_name_is_required_on_create_only() -> None:
    with pytest.raises(Invalid) as refused:
        AgencyFields.from_json({"name": "  "}, creating=True)
    assert refused.value.message_en == "name must be text of at most 300 characters"
    assert AgencyFields.from_json({"head": "张局长"}, creating=False).given() == {"head": "张局长"}


def test_jl7_new_case_checks_number_kind_and_origin_with_the_api_messages() -> None:
    base = {"number": " N-1 ", "act_kind": "penalty", "origin": "ex_officio"}
    new = NewCase.from_json({**base, "officer_ids": [3, 2], "major": 1})
    assert (new.number, new.agency_id, new.officer_ids, new.major) == ("N-1", None, (3, 2), True)
    for change, message_en in (
        ({"number": ""}, "number must be 1–64 characters"),
        ({"act_kind": "fine"}, "act_kind must be one of penalty, coercion, inspection, levy, licensing"),
        ({"origin": None}, "origin must be ex_officio or on_application"),
        ({"agency_id": None}, "a case needs the caller's agency"),
        ({"officer_ids": [1, True]}, "officer_ids must be a list of integers"),
    ):
        with pytest.raises(Invalid) as refused:
            NewCase.from_json({**base, **change})
        assert refused.value.message_en == message_en, change


def test_jl2_status_change_needs_a_reason_and_a_boolean_force() -> None:
    assert StatusChange.from_json({"status": "closed", "reason": " 结案 "}).reason == "结案"
    with pytest.raises(Invalid, match="reason is required"):
        StatusChange.from_json({"status": "closed", "reason": "   "})
    with pytest.raises(Invalid, match="force must be a boolean"):
        StatusChange.from_json({"status": "closed", "reason": "r", "force": "yes"})


def test_jl2_case_event_text_limits_hold_however_the_event_is_built() -> None:
    """A recorder's report builds the event directly, not from JSON: its place is still bounded."""
    with pytest.raises(Invalid) as refused:
        CaseEventInput(event_type="investigation.inquiry", place="x" * 301)
    assert refused.value.message == "place 必须是不超过 300 字的文本"
    event = CaseEventInput.from_json(
        {"event_type": "investigation.inquiry", "occurred_at": "2026-03-02T09:15:00Z", "officer_ids": []}
    )
    assert event.occurred_at == datetime(2026, 3, 2, 9, 15, tzinfo=UTC) and event.officer_ids == ()
    assert CaseEventInput.from_json({"event_type": "investigation.inquiry"}).officer_ids is None
    with pytest.raises(Invalid, match="occurred_at must be an ISO 8601 time with offset"):
        CaseEventInput.from_json({"event_type": "investigation.inquiry", "occurred_at": "2026-03-02 09:15"})
