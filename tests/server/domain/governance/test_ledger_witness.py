"""A witness against a real server (JL-6, JL-23): ``zfjl-verify witness --url`` fetches the public
checkpoint and consistency proof over HTTP, cosigns what extends the checkpoint it kept and sends the
cosignature, which the server stores and publishes; after an insider rebuilds and re-signs the ledger,
the witness refuses the new checkpoint."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import text
from werkzeug.serving import make_server

from server.app import create_app
from server.domain.governance import ledger
from server.infra.db import get_engine, run_migrations, session_scope
from tests.conftest import TEST_JWT_SECRET
from tests.fixtures.evidence import record_evidence
from tests.server.insider import disable_append_only_triggers
from zfjl_verify import Checkpoint, Witness, cosign

SCRIPT = Path(sys.executable).parent / "zfjl-verify"


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[Flask, str, Witness]]:
    """The app, served over real HTTP, configured to accept the cosignatures of one witness."""
    witness = Witness(tmp_path / "witness", name="superior.example/witness")
    app = create_app(
        {
            "data_dir": str(tmp_path / "var"),
            "database_url": sqlite_url,
            "jwt_secret": TEST_JWT_SECRET,
            "ledger_witness_keys": witness.key.encode(),
            "TESTING": True,
        }
    )
    run_migrations(sqlite_url)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}", witness
    finally:
        server.shutdown()
        get_engine(app).dispose()


def _round(app: Flask) -> None:
    """One ledger worker round."""
    with session_scope(app) as session:
        ledger.sequence(session)
        ledger.checkpoint(
            session, ledger.LedgerSigner.from_ingest_key(app.extensions["zfjl.settings"].ingest_key)
        )


def _witness(url: str, key: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "witness", "--key", str(key), "--state", str(state), "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_jl23_a_witness_cosigns_the_served_checkpoints_and_refuses_a_rewritten_ledger(
    served: tuple[Flask, str, Witness], tmp_path: Path
) -> None:
    app, url, witness = served
    client = app.test_client()
    record_evidence(app, tmp_path / "dev-1", "dev-1", session_id="sess-1")
    _round(app)
    key = tmp_path / "ledger.pub"  # pinned once, out of band
    key.write_text(client.get("/ledger/v1/checkpoint").get_json()["verifier_key"] + "\n")

    first = _witness(url, key, witness.state)
    assert first.returncode == 0, first.stderr
    assert (
        "first checkpoint witnessed" in first.stdout and "the server stored the cosignature" in first.stdout
    )
    # A witness the server was not told about still witnesses; the server refuses its cosignature.
    stranger_run = _witness(url, key, tmp_path / "stranger")
    assert stranger_run.returncode == 0, stranger_run.stderr
    assert "cosignature not submitted" in stranger_run.stderr and "400" in stranger_run.stderr
    record_evidence(app, tmp_path / "dev-2", "dev-2", session_id="sess-2")
    _round(app)
    second = _witness(url, key, witness.state)
    assert second.returncode == 0, second.stderr
    assert "extends the witnessed one" in second.stdout
    published = client.get("/ledger/v1/checkpoint").get_json()
    assert len(published["cosignatures"]) == 1
    assert published["cosignatures"][0].startswith("— superior.example/witness ")
    kept = (witness.state / "checkpoint").read_text()

    # A cosignature by a key the server was not configured with is refused, and so is a forged one.
    stranger = cosign(
        Checkpoint.parse(published["note"].split("\n\n")[0] + "\n"),
        "x.example/w",
        Ed25519PrivateKey.generate(),
        1,
    )
    answer = client.post(
        "/ledger/v1/cosignatures", json={"tree_size": published["tree_size"], "cosignature": stranger}
    )
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "unknown_witness"
    forged = published["cosignatures"][0][:-10] + "AAAAAAAAA=\n"
    answer = client.post(
        "/ledger/v1/cosignatures", json={"tree_size": published["tree_size"] - 1, "cosignature": forged}
    )
    assert answer.status_code in (400, 404)

    # The insider edits a recording, throws the ledger away and rebuilds it with the server's own key.
    with session_scope(app) as session:
        disable_append_only_triggers(session)
        for table in ("ledger_leaves", "ledger_checkpoints"):
            for action in ("update", "delete"):
                session.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{action}"))
        session.execute(text("UPDATE recordings SET officer_id = 'someone-else' WHERE id = 1"))
        session.execute(text("DELETE FROM ledger_checkpoints"))
        session.execute(text("DELETE FROM ledger_leaves"))
    record_evidence(app, tmp_path / "dev-3", "dev-3", session_id="sess-3")
    _round(app)
    refused = _witness(url, key, witness.state)
    assert refused.returncode == 1
    assert "the history was rewritten" in refused.stderr and "历史被改写" in refused.stderr
    assert (witness.state / "checkpoint").read_text() == kept
    assert any(p.name.startswith("refused-") for p in (witness.state / "evidence").iterdir())
