"""JL-19 retention and legal hold, on SQLite and PostgreSQL: categories and their longest period, open cases,
evidence kept permanently, holds, and the store's own lock extended with the retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from server.domain.cases import service as case_service
from server.domain.cases.inputs import StatusChange
from server.domain.errors import NotFound
from server.domain.evidence.models import Recording
from server.domain.governance import disposal, retention
from server.domain.governance.retention import DisposalRefused, GovernanceForbidden
from server.infra.db import session_scope
from server.infra.storage import S3ObjectStore
from tests.server.domain.governance.governance_fixtures import Gov, app, gov, world

__all__ = ["app", "gov", "world"]

NOW = datetime(2026, 11, 28, tzinfo=UTC)


class LockLog:
    """A store that records what disposal and retention ask of it."""

    def __init__(self) -> None:
        self.extended: list[tuple[str, datetime | None]] = []
        self.deleted: list[str] = []

    def extend_retention(self, key: str, until: datetime | None) -> bool:
        """Record the request; a store with a lock says it extended it."""
        self.extended.append((key, until))
        return True

    def delete(self, key: str) -> None:
        """Record the deletion."""
        self.deleted.append(key)


def _state(gov: Gov, recording_id: int) -> retention.Retention:
    with session_scope(gov.app) as session:
        rec = session.get(Recording, recording_id)
        assert rec is not None
        return retention.retention_of(session, rec)


def _refusal(gov: Gov, recording_id: int, now: datetime = NOW) -> str | None:
    with session_scope(gov.app) as session:
        rec = session.get(Recording, recording_id)
        assert rec is not None
        try:
            disposal.require_disposable(session, rec, now)
        except DisposalRefused as exc:
            return exc.reason
    return None


def _assign(gov: Gov, who: str, recording_id: int, category: str, store: Any = None) -> bool:
    with session_scope(gov.app) as session:
        _row, extended = retention.assign_category(
            session, gov.caller(who), recording_id, category, "复议申请中", store=store
        )
        return extended


def test_jl19_routine_retention_is_at_least_six_months_from_the_start_of_recording(gov: Gov) -> None:
    state = _state(gov, gov.rec_a[0])
    with session_scope(gov.app) as session:
        rec = session.get(Recording, gov.rec_a[0])
        assert rec is not None
        started = rec.started_at
    assert state.categories == ("routine",)
    assert state.until is not None and state.until - started >= timedelta(days=182)
    assert _refusal(gov, gov.rec_a[0], now=started + timedelta(days=150)) == "retention_running"
    assert _refusal(gov, gov.rec_a[0], now=state.until) is None


def test_jl19_several_categories_give_the_longest_and_permanent_beats_all(gov: Gov) -> None:
    rid = gov.rec_a[0]
    routine_end = _state(gov, rid).until
    _assign(gov, "legal_reviewer-a", rid, "complaint")
    state = _state(gov, rid)
    assert state.categories == ("complaint", "routine")
    assert (
        routine_end is not None
        and state.until is not None
        and state.until > routine_end + timedelta(days=900)
    )
    assert _refusal(gov, rid) == "retention_running"
    _assign(gov, "agency_head-a", rid, "obstruction")
    state = _state(gov, rid)
    assert state.permanent and state.until is None
    assert _refusal(gov, rid, now=NOW + timedelta(days=365 * 50)) == "permanent"
    # The other recording is untouched: categories are per recording.
    assert _state(gov, gov.rec_a[1]).categories == ("routine",)


@pytest.mark.parametrize("category", ["evidence", "obstruction", "major_incident"])
def test_jl19_evidence_obstruction_and_major_incidents_are_kept_permanently(gov: Gov, category: str) -> None:
    _assign(gov, "legal_reviewer-a", gov.rec_a[1], category)
    assert _state(gov, gov.rec_a[1]).permanent
    assert _refusal(gov, gov.rec_a[1], now=NOW + timedelta(days=36500)) == "permanent"


def test_jl19_a_recording_linked_to_an_open_case_never_expires_and_is_evidence_once_closed(gov: Gov) -> None:
    rid = gov.rec_a[0]
    assert _refusal(gov, rid) is None  # routine retention over: disposable before the case
    case_id = gov.open_case([rid])
    state = _state(gov, rid)
    assert state.open_cases == (case_id,) and state.protected_until is None
    assert _refusal(gov, rid, now=NOW + timedelta(days=36500)) == "open_case"
    with session_scope(gov.app) as session:
        case_service.change_status(
            session,
            gov.caller("agency_head-a"),
            case_id,
            StatusChange(status="closed", reason="结案", force=True),
        )
    state = _state(gov, rid)
    assert state.open_cases == () and state.evidence_cases == (case_id,)
    assert "evidence" in state.categories and state.permanent
    assert _refusal(gov, rid, now=NOW + timedelta(days=36500)) == "permanent"


def test_jl19_a_withdrawn_case_does_not_make_its_recordings_evidence(gov: Gov) -> None:
    rid = gov.rec_a[1]
    case_id = gov.open_case([rid], number="皖合市监检〔2026〕8号")
    with session_scope(gov.app) as session:
        case_service.change_status(
            session, gov.caller("agency_head-a"), case_id, StatusChange(status="withdrawn", reason="撤回")
        )
    state = _state(gov, rid)
    assert state.open_cases == () and not state.permanent
    assert _refusal(gov, rid) is None


def test_jl19_a_legal_hold_stops_expiry_until_it_is_lifted(gov: Gov) -> None:
    rid = gov.rec_a[0]
    with session_scope(gov.app) as session:
        hold = retention.place_hold(
            session, gov.caller("auditor-a"), recording_id=rid, case_id=None, reason="审计调查"
        )
        hold_id = hold.id
    assert _state(gov, rid).holds == (hold_id,)
    assert _refusal(gov, rid) == "legal_hold"
    with session_scope(gov.app) as session, pytest.raises(GovernanceForbidden):
        retention.release_hold(session, gov.caller("legal_reviewer-a"), hold_id, "调查结束")
    with session_scope(gov.app) as session:
        retention.release_hold(session, gov.caller("agency_head-a"), hold_id, "调查结束")
    assert _state(gov, rid).holds == ()
    assert _refusal(gov, rid) is None
    with session_scope(gov.app) as session:
        listed = retention.list_holds(session, gov.caller("agency_head-a"))
        assert [(h.id, r is not None) for h, r in listed] == [(hold_id, True)]


def test_jl19_a_hold_on_a_case_covers_every_recording_linked_to_it(gov: Gov) -> None:
    case_id = gov.open_case(gov.rec_a)
    with session_scope(gov.app) as session:
        case_service.change_status(
            session, gov.caller("agency_head-a"), case_id, StatusChange(status="withdrawn", reason="撤回")
        )
        retention.place_hold(
            session, gov.caller("legal_reviewer-a"), recording_id=None, case_id=case_id, reason="行政诉讼"
        )
    assert [_refusal(gov, rid) for rid in gov.rec_a] == ["legal_hold", "legal_hold"]


def test_jl19_categories_are_set_by_reviewers_and_heads_of_the_recordings_agency_only(gov: Gov) -> None:
    with pytest.raises(GovernanceForbidden):
        _assign(gov, "officer-a", gov.rec_a[0], "complaint")
    with pytest.raises(NotFound):  # another agency's recording reads like a missing one (JL-20)
        _assign(gov, "head-b", gov.rec_a[0], "complaint")
    assert _state(gov, gov.rec_a[0]).categories == ("routine",)


def test_jl19_a_lengthened_retention_extends_the_stores_lock(gov: Gov) -> None:
    store = LockLog()
    rid = gov.rec_a[0]
    with session_scope(gov.app) as session:
        key = session.get(Recording, rid).object_key  # type: ignore[union-attr]
    assert _assign(gov, "legal_reviewer-a", rid, "complaint", store) is True
    until = _state(gov, rid).until
    assert store.extended == [(key, until)]
    _assign(gov, "legal_reviewer-a", rid, "major_incident", store)
    assert store.extended[-1] == (key, None)  # permanent: held indefinitely


def _s3_store() -> tuple[S3ObjectStore, Stubber]:
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        endpoint_url="http://s3.test",
    )
    store = S3ObjectStore(client, "evidence", retention_days=184)
    store._object_lock = True  # the bucket's Object Lock answer, as cached after the first call
    return store, Stubber(client)


def test_jl19_s3_object_lock_retention_is_lengthened_never_shortened() -> None:
    store, stub = _s3_store()
    key = "rec/dev-a/1.mp4"
    versions = {"Versions": [{"Key": key, "VersionId": "v1"}], "DeleteMarkers": []}
    later = datetime(2029, 9, 1, tzinfo=UTC)
    stub.add_response("list_object_versions", versions, {"Bucket": "evidence", "Prefix": key})
    stub.add_response(
        "get_object_retention",
        {"Retention": {"Mode": "COMPLIANCE", "RetainUntilDate": datetime(2026, 9, 3, tzinfo=UTC)}},
        {"Bucket": "evidence", "Key": key, "VersionId": "v1"},
    )
    stub.add_response(
        "put_object_retention",
        {},
        {
            "Bucket": "evidence",
            "Key": key,
            "VersionId": "v1",
            "Retention": {"Mode": "COMPLIANCE", "RetainUntilDate": later},
        },
    )
    # Asked for an earlier date than the lock already holds: nothing is sent.
    stub.add_response("list_object_versions", versions, {"Bucket": "evidence", "Prefix": key})
    stub.add_response(
        "get_object_retention",
        {"Retention": {"Mode": "COMPLIANCE", "RetainUntilDate": later}},
        {"Bucket": "evidence", "Key": key, "VersionId": "v1"},
    )
    # Permanent (or an open case, or a hold): the object's legal hold.
    stub.add_response("list_object_versions", versions, {"Bucket": "evidence", "Prefix": key})
    stub.add_response(
        "put_object_legal_hold",
        {},
        {"Bucket": "evidence", "Key": key, "VersionId": "v1", "LegalHold": {"Status": "ON"}},
    )
    with stub:
        assert store.extend_retention(key, later) is True
        assert store.extend_retention(key, datetime(2027, 1, 1, tzinfo=UTC)) is True
        assert store.extend_retention(key, None) is True
        stub.assert_no_pending_responses()


def test_jl19_s3_disposal_lifts_the_hold_then_deletes_every_version_and_a_running_lock_refuses() -> None:
    store, stub = _s3_store()
    key = "rec/dev-a/2.mp4"
    versions = {"Versions": [{"Key": key, "VersionId": "v1"}, {"Key": key + ".x", "VersionId": "other"}]}
    stub.add_response("list_object_versions", versions, {"Bucket": "evidence", "Prefix": key})
    stub.add_response(
        "put_object_legal_hold",
        {},
        {"Bucket": "evidence", "Key": key, "VersionId": "v1", "LegalHold": {"Status": "OFF"}},
    )
    stub.add_response("delete_object", {}, {"Bucket": "evidence", "Key": key, "VersionId": "v1"})
    stub.add_response("list_object_versions", versions, {"Bucket": "evidence", "Prefix": key})
    stub.add_response(
        "put_object_legal_hold",
        {},
        {"Bucket": "evidence", "Key": key, "VersionId": "v1", "LegalHold": {"Status": "OFF"}},
    )
    stub.add_client_error("delete_object", service_error_code="AccessDenied", http_status_code=403)
    from server.infra.storage import ObjectConflict

    with stub:
        store.delete(key)  # the other key sharing the prefix is left alone
        with pytest.raises(ObjectConflict):
            store.delete(key)
        stub.assert_no_pending_responses()


def test_jl19_a_directory_store_has_no_lock_to_extend(tmp_path: Any) -> None:
    from server.infra.storage import LocalObjectStore, ObjectNotFound

    store = LocalObjectStore(tmp_path)
    assert store.extend_retention("a/b", None) is False
    with pytest.raises(ObjectNotFound):
        store.delete("a/b")
