"""Archives, reviews and statistics over HTTP (JL-18, JL-21, JL-22): a legal reviewer seals the case, an
archivist downloads the zip and ``zfjl-verify package`` accepts it with the published key; a changed
byte makes it fail; reviews and statistics answer in the caller's agency scope."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.infra.db import get_engine
from tests.conftest import migrated_app
from tests.server.domain.governance.test_archive import build_case
from tests.server.domain.sessions.conftest import PASSWORD

SCRIPT = Path(sys.executable).parent / "zfjl-verify"


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database."""
    app = migrated_app(tmp_path / "var", db_url)
    yield app
    get_engine(app).dispose()


def _login(client: FlaskClient, username: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def test_jl18_a_package_downloaded_from_the_api_verifies_and_fails_after_one_byte(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    scene = build_case(app, tmp_path)
    reviewer = _login(client, "rec-ar-1-reviewer")
    sealed = client.post(f"/api/v1/cases/{scene.case_id}/archives", headers=reviewer)
    assert sealed.status_code == 201, sealed.get_json()
    body = sealed.get_json()
    assert body["on_time"] is True and body["recording_count"] == 2
    listed = client.get(f"/api/v1/cases/{scene.case_id}/archives", headers=reviewer).get_json()["items"]
    assert [a["id"] for a in listed] == [body["id"]]

    download = client.get(body["download_url"], headers=reviewer)
    assert download.status_code == 200 and download.mimetype == "application/zip"
    package = tmp_path / "package.zip"
    package.write_bytes(download.data)
    key = tmp_path / "ledger.pub"
    key.write_text(client.get("/ledger/v1/checkpoint").get_json()["verifier_key"] + "\n")
    ok = subprocess.run(
        [str(SCRIPT), "package", "--key", str(key), str(package)], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout

    # One byte of one recording changed inside the zip.
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/data/recordings/" in info.filename and "/segment" in info.filename:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            dst.writestr(info, data)
    bad = subprocess.run(
        [str(SCRIPT), "package", "--key", str(key), str(tampered)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "recording_changed" in bad.stderr

    # Another agency's reviewer: the package looks missing (JL-20); an officer may not seal.
    other = _login(client, "rec-ar-1-other")
    assert client.get(body["download_url"], headers=other).status_code == 404
    officer = _login(client, "rec-ar-1-wang")
    assert client.post(f"/api/v1/cases/{scene.case_id}/archives", headers=officer).status_code == 403


def test_jl22_reviews_over_the_api_and_jl21_statistics_as_json_and_csv(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    scene = build_case(app, tmp_path)
    supervisor = _login(client, "rec-ar-1-supervisor")
    answer = client.get(f"/api/v1/cases/{scene.case_id}/reviews", headers=supervisor).get_json()
    findings = [{"item": i["item"], "result": "ok"} for i in answer["checklist"]]
    created = client.post(
        f"/api/v1/cases/{scene.case_id}/reviews",
        headers=supervisor,
        json={"verdict": "pass", "findings": findings},
    )
    assert created.status_code == 201, created.get_json()
    refused = client.post(
        f"/api/v1/cases/{scene.case_id}/reviews",
        headers=supervisor,
        json={"verdict": "rectify", "findings": findings},
    )
    assert refused.status_code == 400 and "rectification" in refused.get_json()["error"]["message_en"]
    officer = _login(client, "rec-ar-1-wang")
    history = client.get(f"/api/v1/cases/{scene.case_id}/reviews", headers=officer).get_json()["items"]
    assert [h["verdict"] for h in history] == ["pass"]  # visible with the case file

    stats = client.get("/api/v1/statistics?from=2026-03-01&group=agency", headers=supervisor)
    assert stats.status_code == 200, stats.get_json()
    rows = stats.get_json()["rows"]
    assert [(r["recordings"], r["reviews"], r["cases_ended"]) for r in rows] == [(2, 1, 1)]
    csv_answer = client.get("/api/v1/statistics/export.csv?from=2026-03-01", headers=supervisor)
    assert csv_answer.status_code == 200 and csv_answer.mimetype == "text/csv"
    assert csv_answer.data.decode("utf-8-sig").splitlines()[0].startswith("from,to,agency_id")
    assert client.get("/api/v1/statistics?from=2026-02-30", headers=supervisor).status_code == 400
    assert client.get("/api/v1/statistics", headers=officer).status_code == 403
    assert client.get("/api/v1/archives/overdue", headers=supervisor).get_json() == {"items": []}
    due = client.get("/api/v1/archives/overdue?include=due", headers=supervisor).get_json()["items"]
    assert [(d["case_id"], d["state"]) for d in due] == [(scene.case_id, "due")]
    assert client.get("/api/v1/archives/overdue?include=all", headers=supervisor).status_code == 400
