"""The ledger over HTTP (JL-6, JL-23), on SQLite and PostgreSQL: evidence recorded through the real ingest
is sequenced and signed; the public checkpoint, the proofs and a leaf served by the API are accepted by
``zfjl-verify``; an insider's edit shows in the server-side verification."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from server.domain.accounts.service import create_user
from server.infra.db import get_engine, session_scope
from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, migrated_app
from tests.fixtures.evidence import record_evidence
from tests.server.insider import disable_append_only_triggers

SCRIPT = Path(sys.executable).parent / "zfjl-verify"


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database, with an admin and an auditor."""
    app = migrated_app(tmp_path / "var", db_url)
    with session_scope(app) as session:
        create_user(session, ADMIN_USER, ADMIN_PASSWORD, "system_admin")
        create_user(session, "auditor", ADMIN_PASSWORD, "auditor")
        create_user(session, "officer", ADMIN_PASSWORD, "officer")
    yield app
    get_engine(app).dispose()


def _login(client: FlaskClient, username: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the offline verifier as an auditor would."""
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_jl23_the_apis_checkpoint_proofs_and_leaves_verify_offline(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    auditor = _login(client, "auditor")
    assert client.get("/ledger/v1/checkpoint").status_code == 404  # nothing signed yet
    evidence = record_evidence(app, tmp_path / "dev-1", "dev-1", session_id="sess-1")

    first = client.post("/api/v1/ledger/checkpoint", headers=auditor)
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["appended"] >= 5  # two recordings, three session events, audit rows
    published = client.get("/ledger/v1/checkpoint")  # public: no token
    assert published.status_code == 200
    old = published.get_json()
    (tmp_path / "old.checkpoint").write_text(old["note"], encoding="utf-8")
    (tmp_path / "ledger.pub").write_text(old["verifier_key"] + "\n")

    # More evidence, another round; the witness keeps both checkpoints.
    record_evidence(app, tmp_path / "dev-2", "dev-2", session_id="sess-2", clips=1)
    assert client.post("/api/v1/ledger/checkpoint", headers=auditor).status_code == 200
    new = client.get("/ledger/v1/checkpoint").get_json()
    assert new["tree_size"] > old["tree_size"]
    (tmp_path / "new.checkpoint").write_text(new["note"], encoding="utf-8")
    assert client.get(f"/ledger/v1/checkpoint?size={old['tree_size']}").get_json()["note"] == old["note"]

    leaf = client.get(f"/api/v1/ledger/rows/recordings/{evidence.recording_ids[0]}", headers=auditor)
    assert leaf.status_code == 200, leaf.get_json()
    body = leaf.get_json()
    assert body["kind"] == "recording" and body["checkpoint"]["tree_size"] == new["tree_size"]
    (tmp_path / "leaf.json").write_bytes(body["data"].encode("utf-8"))
    (tmp_path / "inclusion.json").write_text(json.dumps(body["inclusion_proof"]))
    result = verify(
        "inclusion", "--key", tmp_path / "ledger.pub", "--checkpoint", tmp_path / "new.checkpoint",
        "--proof", tmp_path / "inclusion.json", "--leaf-data", tmp_path / "leaf.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    # The answers as downloaded, unedited: the checkpoint JSON and the leaf JSON (data and proof in one).
    (tmp_path / "checkpoint.json").write_text(json.dumps(new))
    (tmp_path / "leaf-answer.json").write_text(json.dumps(body))
    result = verify(
        "inclusion", "--key", tmp_path / "ledger.pub", "--checkpoint", tmp_path / "checkpoint.json",
        "--leaf-json", tmp_path / "leaf-answer.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    proof = client.get(f"/api/v1/ledger/proofs/consistency?old_size={old['tree_size']}", headers=auditor)
    assert proof.status_code == 200
    (tmp_path / "consistency.json").write_text(json.dumps(proof.get_json()))
    result = verify(
        "consistency", "--key", tmp_path / "ledger.pub", "--old", tmp_path / "old.checkpoint",
        "--new", tmp_path / "new.checkpoint", "--proof", tmp_path / "consistency.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    by_index = client.get(f"/api/v1/ledger/leaves/{body['leaf_index']}", headers=auditor).get_json()
    assert by_index["data"] == body["data"]
    inclusion = client.get(
        f"/api/v1/ledger/proofs/inclusion?leaf_index={body['leaf_index']}", headers=auditor
    )
    assert inclusion.get_json() == body["inclusion_proof"]

    report = client.post("/api/v1/ledger/verify", headers=auditor).get_json()
    assert report["ok"] is True and report["leaves"] == new["tree_size"]


def test_jl6_server_side_verification_reports_an_edited_recording(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    auditor = _login(client, "auditor")
    evidence = record_evidence(app, tmp_path / "dev-1", "dev-1", session_id="sess-1", clips=1)
    assert client.post("/api/v1/ledger/checkpoint", headers=auditor).status_code == 200
    with session_scope(app) as session:
        disable_append_only_triggers(session)
        session.execute(
            text("UPDATE recordings SET sha256 = :h WHERE id = :id"),
            {"h": "0" * 64, "id": evidence.recording_ids[0]},
        )
    report = client.post("/api/v1/ledger/verify", headers=auditor).get_json()
    assert report["ok"] is False
    assert [p["code"] for p in report["problems"]] == ["row_changed"]
    assert "recordings" in report["problems"][0]["message_en"]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/v1/ledger/proofs/inclusion", "invalid_query"),
        ("/api/v1/ledger/proofs/inclusion?leaf_index=abc", "invalid_query"),
        ("/api/v1/ledger/proofs/inclusion?leaf_index=-1", "invalid_query"),
        ("/api/v1/ledger/proofs/inclusion?leaf_index=0", "not_found"),
        ("/api/v1/ledger/proofs/consistency?old_size=99999999999999999999999", "invalid_query"),
        ("/api/v1/ledger/leaves/5", "not_found"),
        ("/api/v1/ledger/rows/users/1", "invalid_request"),
        ("/ledger/v1/checkpoint?size=x", "invalid_query"),
    ],
)
def test_bad_ledger_requests_get_a_precise_error_not_a_500(
    app: Flask, client: FlaskClient, path: str, code: str
) -> None:
    response = client.get(path, headers=_login(client, "auditor"))
    assert 400 <= response.status_code < 500, (response.status_code, response.get_json())
    assert response.get_json()["error"]["code"] == code


def test_proofs_and_leaves_need_a_cross_agency_role(app: Flask, client: FlaskClient) -> None:
    assert client.get("/api/v1/ledger/leaves/0").status_code == 401
    officer = _login(client, "officer")
    assert client.get("/api/v1/ledger/leaves/0", headers=officer).status_code == 403
    assert client.post("/api/v1/ledger/verify", headers=officer).status_code == 403
