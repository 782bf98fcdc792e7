"""A quorum of witnesses over the served checkpoints (JL-6, JL-23), on SQLite and PostgreSQL.

Three trusted witnesses, a quorum of two: the public checkpoint answer says whether the quorum is met and
``?witnessed=true`` serves the latest checkpoint that met it. A witness cosigning twice, a key nobody
trusts and a forged cosignature never make a quorum — neither sent over the API nor slipped into the
table by an insider — and ``zfjl-verify checkpoint --witness-keys … --quorum 2`` agrees with the server.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from server.infra.config import ConfigError, load_settings
from server.infra.db import get_engine, session_scope
from tests.fixtures.evidence import record_evidence
from tests.fixtures.witnesses import STRANGER, TRUSTED, W1, W2, W3, ledger_round, witnessed_app
from zfjl_verify import Checkpoint, CosignerKey, cosign

SCRIPT = Path(sys.executable).parent / "zfjl-verify"


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated database, trusting three witnesses with a quorum of two."""
    app = witnessed_app(db_url, tmp_path / "var")
    yield app
    get_engine(app).dispose()


def _head(client: FlaskClient, size: int) -> Checkpoint:
    note = client.get(f"/ledger/v1/checkpoint?size={size}").get_json()["note"]
    return Checkpoint.parse(note.split("\n\n")[0] + "\n")


def _submit(client: FlaskClient, size: int, line: str) -> tuple[int, str | None]:
    answer = client.post("/ledger/v1/cosignatures", json={"tree_size": size, "cosignature": line})
    body = answer.get_json()
    return answer.status_code, (body.get("error") or {}).get("code")


def _witnessing(client: FlaskClient, size: int) -> dict[str, object]:
    answer = client.get(f"/ledger/v1/checkpoint?size={size}")
    assert answer.status_code == 200
    witnessing: dict[str, object] = answer.get_json()["witnessing"]
    return witnessing


def _offline(client: FlaskClient, tmp_path: Path, size: int) -> subprocess.CompletedProcess[str]:
    """``zfjl-verify`` over the public JSON answer, with the pinned ledger key and the witness list."""
    answer = client.get(f"/ledger/v1/checkpoint?size={size}").get_json()
    (tmp_path / "ledger.pub").write_text(answer["verifier_key"] + "\n")
    (tmp_path / "witnesses.txt").write_text("\n".join(key.encode() for key in TRUSTED) + "\n")
    (tmp_path / "checkpoint.json").write_text(json.dumps(answer))
    return subprocess.run(
        [
            str(SCRIPT),
            "checkpoint",
            "--key",
            str(tmp_path / "ledger.pub"),
            "--witness-keys",
            str(tmp_path / "witnesses.txt"),
            "--quorum",
            "2",
            str(tmp_path / "checkpoint.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_jl23_a_checkpoint_is_witnessed_once_two_distinct_trusted_witnesses_cosigned_it(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    record_evidence(app, tmp_path / "dev-1", "dev-1", session_id="sess-1", clips=1)
    size = ledger_round(app)
    head = _head(client, size)
    assert _witnessing(client, size) == {
        "quorum": 2,
        "trusted_witnesses": [W1[0], W2[0], W3[0]],
        "witnessed_by": [],
        "met": False,
        "cosignatures": [],
    }
    assert client.get("/ledger/v1/checkpoint?witnessed=true").status_code == 404

    assert _submit(client, size, cosign(head, *W1, 1_790_000_000)) == (200, None)
    # The same witness again, at another time: one witness still.
    assert _submit(client, size, cosign(head, *W1, 1_790_000_060)) == (200, None)
    # A key nobody configured, even under a trusted witness's name, is refused and counts for nothing.
    assert _submit(client, size, cosign(head, STRANGER[0], STRANGER[1], 1_790_000_000)) == (
        400,
        "unknown_witness",
    )
    assert _submit(client, size, cosign(head, W2[0], STRANGER[1], 1_790_000_000))[0] == 400
    # A forgery: W2's line with one byte of its signature changed.
    genuine = cosign(head, *W2, 1_790_000_000)
    prefix, blob = genuine.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 0x80
    assert _submit(client, size, f"{prefix} {base64.b64encode(bytes(raw)).decode()}\n")[0] == 400
    unmet = _witnessing(client, size)
    assert unmet["witnessed_by"] == [W1[0]] and unmet["met"] is False
    refused = _offline(client, tmp_path, size)
    assert refused.returncode == 1 and "fewer than the quorum of 2" in refused.stderr

    assert _submit(client, size, genuine) == (200, None)
    met = _witnessing(client, size)
    assert met["witnessed_by"] == [W1[0], W2[0]] and met["met"] is True
    witnessed = client.get("/ledger/v1/checkpoint?witnessed=true")
    assert witnessed.status_code == 200 and witnessed.get_json()["tree_size"] == size
    accepted = _offline(client, tmp_path, size)
    assert accepted.returncode == 0, accepted.stderr
    assert "quorum 2 met" in accepted.stdout

    # A newer checkpoint is not witnessed until witnesses cosign it; the witnessed one stays served.
    record_evidence(app, tmp_path / "dev-2", "dev-2", session_id="sess-2", clips=1)
    newer = ledger_round(app)
    assert newer > size
    latest = client.get("/ledger/v1/checkpoint").get_json()
    assert latest["tree_size"] == newer and latest["witnessing"]["met"] is False
    assert client.get("/ledger/v1/checkpoint?witnessed=true").get_json()["tree_size"] == size
    assert client.get("/ledger/v1/checkpoint?witnessed=maybe").status_code == 400


def test_jl23_cosignature_rows_an_insider_adds_never_make_a_quorum(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    record_evidence(app, tmp_path / "dev-1", "dev-1", session_id="sess-1", clips=1)
    first = ledger_round(app)
    first_head = _head(client, first)
    record_evidence(app, tmp_path / "dev-2", "dev-2", session_id="sess-2", clips=1)
    size = ledger_round(app)
    head = _head(client, size)
    w1_line = cosign(head, *W1, 1_790_000_000)
    assert _submit(client, size, w1_line) == (200, None)

    # The table takes INSERT (append-only refuses only UPDATE and DELETE): the insider adds W1's own line
    # again under another name, a cosignature by a key of their own, then W2's genuine cosignature of an
    # older checkpoint as if it were of this one.
    replayed = cosign(first_head, *W2, 1_790_000_000)
    own_key = cosign(head, *STRANGER, 1_790_000_000)
    with session_scope(app) as session:
        for witness, line in (("copy-of-w1", w1_line), (STRANGER[0], own_key), (W2[0], replayed)):
            session.execute(
                text(
                    "INSERT INTO ledger_cosignatures (tree_size, witness, cosigned_at, line, received_at) "
                    "VALUES (:size, :witness, CURRENT_TIMESTAMP, :line, CURRENT_TIMESTAMP)"
                ),
                {"size": size, "witness": witness, "line": line},
            )
    judged = _witnessing(client, size)
    statuses = [(c["witness"], c["status"]) for c in judged["cosignatures"]]  # type: ignore[index, union-attr]
    assert statuses == [(W1[0], "valid"), (W1[0], "duplicate"), (STRANGER[0], "unknown"), (W2[0], "invalid")]
    assert judged["witnessed_by"] == [W1[0]] and judged["met"] is False
    assert client.get("/ledger/v1/checkpoint?witnessed=true").status_code == 404
    refused = _offline(client, tmp_path, size)
    assert refused.returncode == 1
    assert "court.example/w2 does not verify" in refused.stderr and "伪造" in refused.stderr

    # The genuine W2 cosignature cannot take the forged row's place; the witness is told, not "stored".
    assert _submit(client, size, cosign(head, *W2, 1_790_000_050)) == (409, "ledger_corrupt")
    # W3 cosigns: two distinct trusted witnesses now, yet the forged row still voids the quorum.
    assert _submit(client, size, cosign(head, *W3, 1_790_000_100)) == (200, None)
    judged = _witnessing(client, size)
    assert judged["witnessed_by"] == [W1[0], W3[0]] and judged["met"] is False


def test_jl23_a_quorum_no_configured_witnesses_can_meet_is_refused_at_start_up(tmp_path: Path) -> None:
    keys = ",".join(key.encode() for key in TRUSTED[:2])
    with pytest.raises(ConfigError, match="ZFJL_LEDGER_WITNESS_QUORUM"):
        load_settings(
            {"data_dir": str(tmp_path), "ledger_witness_keys": keys, "ledger_witness_quorum": 3}, environ={}
        )
    # Two keys of one witness (a rotated key) are one witness.
    rotated = CosignerKey.from_private_key(W1[0], Ed25519PrivateKey.from_private_bytes(b"\x21" * 32))
    with pytest.raises(ConfigError, match="ZFJL_LEDGER_WITNESS_QUORUM"):
        load_settings(
            {
                "data_dir": str(tmp_path),
                "ledger_witness_keys": f"{TRUSTED[0].encode()},{rotated.encode()}",
                "ledger_witness_quorum": 2,
            },
            environ={},
        )
    settings = load_settings(
        {"data_dir": str(tmp_path), "ledger_witness_keys": keys, "ledger_witness_quorum": 2}, environ={}
    )
    assert settings.ledger_witness_quorum == 2
