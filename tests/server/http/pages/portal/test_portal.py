"""The public portal (GS-5, GS-8, GS-12 – GS-14, GS-19): anonymous, redacted, rate-limited."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.fixtures.publicity import CONTENT, WITNESS_ID, Staff, collect, published, staff

__all__ = ["staff"]  # the fixture, imported so pytest finds it here

PLANTED = (WITNESS_ID, "13812345678", "李四")


def test_gs8_search_finds_a_published_decision_and_gs14_no_planted_pii(
    client: FlaskClient, staff: Staff
) -> None:
    item = published(client, staff)
    page = client.get("/portal/?party=某某餐饮")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f'data-item="{item["id"]}"' in html and 'data-total="1"' in html
    detail = client.get(f"/portal/items/{item['id']}").get_data(as_text=True)
    assert "合市监罚〔2026〕12号" in detail and "李某" in detail
    for planted in PLANTED:
        assert planted not in html and planted not in detail
    assert "Administrative enforcement publicity" in client.get("/portal/?lang=en").get_data(as_text=True)


def test_gs7_drafts_and_items_in_review_are_not_on_the_portal(client: FlaskClient, staff: Staff) -> None:
    item = collect(client, staff)
    assert 'data-total="0"' in client.get("/portal/").get_data(as_text=True)
    assert client.get(f"/portal/items/{item['id']}").status_code == 404


@pytest.mark.parametrize(
    ("query", "total"),
    [
        ("document_number=12号", 1),
        ("document_number=13号", 0),
        ("kind=penalty", 1),
        ("kind=licensing", 0),
        ("from=2026-09-30&to=2026-09-30", 1),
        ("from=2026-10-01", 0),
    ],
)
def test_gs8_search_filters(client: FlaskClient, staff: Staff, query: str, total: int) -> None:
    published(client, staff)
    assert f'data-total="{total}"' in client.get(f"/portal/?{query}").get_data(as_text=True)
    assert client.get(f"/portal/open-data/decisions.json?{query}").get_json()["total"] == total


@pytest.mark.parametrize("query", ["from=2026-13-01", "page=0", "page=-1", "kind=torture", "agency_id=x"])
def test_bad_search_is_a_400_page_never_a_500(client: FlaskClient, query: str) -> None:
    assert client.get(f"/portal/?{query}").status_code == 400
    assert client.get(f"/portal/open-data/decisions.json?{query}").status_code == 400


def test_gs12_withdrawn_item_is_gone_and_leaves_its_reason(client: FlaskClient, staff: Staff) -> None:
    item = published(client, staff)
    response = client.post(
        f"/api/v1/publicity/items/{item['id']}/withdraw",
        json={"reason": "该决定已被复议机关撤销"},
        headers=staff.headers["legal_reviewer"],
    )
    assert response.status_code == 200
    assert 'data-total="0"' in client.get("/portal/").get_data(as_text=True)
    notice = client.get(f"/portal/items/{item['id']}").get_data(as_text=True)
    assert 'data-state="withdrawn"' in notice and "该决定已被复议机关撤销" in notice
    assert "经营超过保质期" not in notice


def test_gs13_an_expired_item_is_not_shown(client: FlaskClient, staff: Staff) -> None:
    body: dict[str, Any] = {**CONTENT, "valid_until": "2021-01-01"}
    item = collect(client, staff, body, decided_on="2020-01-02")
    path = f"/api/v1/publicity/items/{item['id']}"
    assert client.post(f"{path}/submit", headers=staff.headers["officer"]).status_code == 200
    assert client.post(f"{path}/publish", headers=staff.headers["legal_reviewer"]).status_code == 200
    assert client.get(f"/portal/items/{item['id']}").status_code == 404
    assert client.get("/portal/open-data/decisions.json").get_json()["total"] == 0


def test_gs19_correction_request_is_accepted_without_an_account(
    client: FlaskClient, staff: Staff, app: Flask
) -> None:
    item = published(client, staff)
    response = client.post(
        f"/portal/items/{item['id']}/corrections", data={"text": "当事人名称有误", "contact": ""}
    )
    assert response.status_code == 303
    assert client.get(response.headers["Location"]).get_data(as_text=True).count('data-received="1"') == 1
    assert client.post(f"/portal/items/{item['id']}/corrections", data={"text": " "}).status_code == 400
    from server.domain.publicity.models import CorrectionRequest
    from server.infra.db import session_scope

    with session_scope(app) as session:
        [request] = session.query(CorrectionRequest).all()
        assert request.text == "当事人名称有误" and request.status == "received"


def test_gs8_open_data_in_the_national_codes(client: FlaskClient, staff: Staff) -> None:
    published(client, staff)
    text = client.get("/portal/open-data/CF.csv").get_data(as_text=True).lstrip("\ufeff")
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["CF_WSH"] == "合市监罚〔2026〕12号" and row["CF_NR_FK"] == "0.2"
    assert WITNESS_ID not in text
    assert client.get("/portal/open-data/CF.json").get_json() == [row]
    assert client.get("/portal/open-data/XK.json").get_json() == []
    assert client.get("/portal/open-data/ZZ.csv").status_code == 404


def test_portal_is_rate_limited_per_network(app: Flask, client: FlaskClient) -> None:
    app.extensions["zfjl.settings"] = _with_rate(app, 3)
    app.extensions.pop("zfjl.portal_limiter", None)
    answers = [client.get("/portal/").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    limited = client.get("/portal/open-data/decisions.json")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def _with_rate(app: Flask, per_minute: int) -> Any:
    from dataclasses import replace

    return replace(app.extensions["zfjl.settings"], verify_rate_per_minute=per_minute)


def test_a_broad_search_counts_up_to_the_cap_and_says_more(
    client: FlaskClient, staff: Staff, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.domain.publicity import portal as portal_service

    published(client, staff)
    published(client, staff, {**CONTENT, "document_number": "合市监罚〔2026〕13号"})
    monkeypatch.setattr(portal_service, "COUNT_CAP", 1)
    assert "共 1+ 条" in client.get("/portal/").get_data(as_text=True)
    answer = client.get("/portal/open-data/decisions.json").get_json()
    assert answer["total_capped"] is True and len(answer["items"]) == 2
