"""The evidence ledger on the public portal (JL-6, JL-23): anonymous, server-rendered, zh-CN and English.

It shows the latest signed checkpoints — tree size, root hash, time, the server's key id — each with its
witnesses' cosignatures and whether a quorum of distinct trusted witnesses cosigned it, the latest witnessed
checkpoint, and how to check them with ``zfjl-verify``; the checkpoint a reader downloads from the page
passes ``zfjl-verify checkpoint --witness-keys … --quorum 2``. In real headless Chromium, on a phone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from server.app import create_app
from server.domain.governance import ledger
from server.infra.db import get_engine, run_migrations, session_scope
from tests.conftest import TEST_JWT_SECRET
from tests.fixtures.browser import CHROMIUM, LAUNCH_ARGS, requires_chromium, serve_app
from tests.fixtures.evidence import record_evidence
from tests.fixtures.witnesses import TRUSTED, W1, W2, W3, ledger_round, witnessed_app
from zfjl_verify import Checkpoint, cosign
from zfjl_verify.cli import main as zfjl_verify


@pytest.fixture
def app(sqlite_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app trusting three witnesses with a quorum of two."""
    app = witnessed_app(sqlite_url, tmp_path / "var")
    yield app
    get_engine(app).dispose()


def _cosign(client: FlaskClient, size: int, witness: tuple[str, Ed25519PrivateKey]) -> None:
    note = client.get(f"/ledger/v1/checkpoint?size={size}").get_json()["note"]
    line = cosign(Checkpoint.parse(note.split("\n\n")[0] + "\n"), *witness, 1_790_000_000)
    answer = client.post("/ledger/v1/cosignatures", json={"tree_size": size, "cosignature": line})
    assert answer.status_code == 200, answer.get_json()


@pytest.fixture
def two_checkpoints(app: Flask, client: FlaskClient, tmp_path: Path) -> tuple[int, int]:
    """An older checkpoint two witnesses cosigned, and a newer one only one witness cosigned so far."""
    record_evidence(app, tmp_path / "dev-1", "dev-1", session_id="sess-1", clips=1)
    witnessed = ledger_round(app)
    _cosign(client, witnessed, W1)
    _cosign(client, witnessed, W2)
    record_evidence(app, tmp_path / "dev-2", "dev-2", session_id="sess-2", clips=1)
    newer = ledger_round(app)
    _cosign(client, newer, W3)
    return witnessed, newer


def _card(html: str, kind: str, size: int) -> str:
    """The HTML of one checkpoint card."""
    start = html.index(f'data-checkpoint="{size}" data-kind="{kind}"')
    return html[start : html.index("</article>", start)]


def test_jl23_the_ledger_page_shows_checkpoints_cosignatures_and_the_quorum_without_login(
    app: Flask, client: FlaskClient, two_checkpoints: tuple[int, int]
) -> None:
    witnessed, newer = two_checkpoints
    answer = client.get("/portal/ledger")
    assert answer.status_code == 200
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    html = answer.get_data(as_text=True)
    assert "执法记录证据账本" in html and "zfjl-verify checkpoint" in html
    assert "--witness-keys witnesses.txt --quorum 2" in html
    signer = ledger.LedgerSigner.from_ingest_key(app.extensions["zfjl.settings"].ingest_key)
    key_id = f"{signer.verifier.key_id:08x}"

    latest = client.get("/ledger/v1/checkpoint").get_json()
    card = _card(html, "recent", newer)
    assert 'data-quorum-met="false"' in card and 'data-quorum="unmet"' in card
    assert "尚未见证：1 个受信任见证人联署，法定数为 2" in card
    assert latest["root_hash"] in card and key_id in card and signer.name in card
    assert f'data-witness="{W3[0]}" data-status="valid"' in card
    card = _card(html, "witnessed", witnessed)
    assert 'data-quorum-met="true"' in card and "已见证：2 个受信任见证人联署，达到法定数 2" in card
    for name, _ in (W1, W2):
        assert f'data-witness="{name}" data-status="valid"' in card
    for key in TRUSTED:
        assert key.encode() in html  # the witness list a reader copies (and compares with its own)

    english = client.get("/portal/ledger?lang=en").get_data(as_text=True)
    assert "Evidence ledger of enforcement records" in english
    assert "Witnessed: cosigned by 2 distinct trusted witnesses, quorum 2 met" in english
    assert "Not yet witnessed: cosigned by 1 of the 2 distinct trusted witnesses needed" in english


def test_jl23_a_forged_cosignature_row_shows_as_forged_on_the_page(
    app: Flask, client: FlaskClient, two_checkpoints: tuple[int, int]
) -> None:
    witnessed, newer = two_checkpoints
    # An insider copies W1's genuine cosignature of the older checkpoint onto the newer one.
    older_line = client.get(f"/ledger/v1/checkpoint?size={witnessed}").get_json()["cosignatures"][0]
    with session_scope(app) as session:
        session.execute(
            text(
                "INSERT INTO ledger_cosignatures (tree_size, witness, cosigned_at, line, received_at) "
                "VALUES (:size, :witness, CURRENT_TIMESTAMP, :line, CURRENT_TIMESTAMP)"
            ),
            {"size": newer, "witness": W1[0], "line": older_line},
        )
    html = client.get("/portal/ledger").get_data(as_text=True)
    card = _card(html, "recent", newer)
    assert 'data-quorum="forged"' in card and 'data-quorum-met="false"' in card
    assert f'data-witness="{W1[0]}" data-status="invalid"' in card and "签名无效（伪造或篡改）" in card


def test_the_ledger_page_before_any_checkpoint_and_with_a_bad_query(client: FlaskClient) -> None:
    html = client.get("/portal/ledger").get_data(as_text=True)
    assert 'data-field="ledger_none"' in html and 'data-field="no_witnessed"' in html
    for bad in ("before=x", "before=0", "before=-3", "before=１"):
        answer = client.get(f"/portal/ledger?{bad}")
        assert answer.status_code == 400 and "before" in answer.get_data(as_text=True)


def test_the_ledger_page_says_when_no_witness_is_configured(tmp_path: Path, sqlite_url: str) -> None:
    app = create_app(
        {"data_dir": str(tmp_path / "v"), "database_url": sqlite_url, "jwt_secret": TEST_JWT_SECRET}
    )
    run_migrations(sqlite_url)
    try:
        html = app.test_client().get("/portal/ledger").get_data(as_text=True)
        assert 'data-field="no_witnesses"' in html and "--witness-keys" not in html
    finally:
        get_engine(app).dispose()


def test_the_ledger_page_pages_to_older_checkpoints(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    sizes = []
    for n in range(12):
        record_evidence(app, tmp_path / f"dev-{n}", f"dev-{n}", session_id=f"sess-{n}", clips=1)
        sizes.append(ledger_round(app))
    html = client.get("/portal/ledger").get_data(as_text=True)
    shown = [int(size) for size in re.findall(r'data-checkpoint="(\d+)" data-kind="recent"', html)]
    assert shown == sizes[::-1][:10]
    older = re.search(r'class="older" href="([^"]+)"', html)
    assert older is not None
    rest = client.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert [int(s) for s in re.findall(r'data-checkpoint="(\d+)" data-kind="recent"', rest)] == sizes[1::-1]


@pytest.mark.browser
@requires_chromium
def test_jl23_a_reader_opens_the_ledger_page_in_chromium_and_verifies_the_checkpoint_it_downloads(
    app: Flask, two_checkpoints: tuple[int, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import sync_playwright

    witnessed, newer = two_checkpoints
    with serve_app(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, accept_downloads=True)
            page = context.new_page()
            refused: list[str] = []
            page.on(
                "console", lambda message: refused.append(message.text) if message.type == "error" else None
            )
            page.goto(f"{url}/portal/")
            page.click("header.bar a.ledger")
            page.wait_for_selector("section.witnessed article[data-quorum-met='true']")
            assert page.url.endswith("/portal/ledger")
            witnessed_card = page.locator(f"section.witnessed [data-checkpoint='{witnessed}']")
            assert "达到法定数 2" in witnessed_card.locator("p.quorum").inner_text()
            assert witnessed_card.locator("tr[data-status='valid']").count() == 2
            newer_card = page.locator(f"section.recent [data-checkpoint='{newer}']")
            assert newer_card.get_attribute("data-quorum-met") == "false"
            assert newer_card.locator("p.quorum").is_visible()
            # Nothing wider than the phone's screen: hashes and commands wrap.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            # The signed note, cosignatures appended, unfolds.
            witnessed_card.locator("summary").click()
            assert f"— {W1[0]} " in witnessed_card.locator("pre.note").inner_text()

            with page.expect_download() as download_info:
                witnessed_card.locator("a[download]").click()
            downloaded = tmp_path / "checkpoint.json"
            download_info.value.save_as(downloaded)

            page.click("header.bar a.lang")
            page.wait_for_selector("text=Evidence ledger of enforcement records")
            assert (
                "quorum 2 met"
                in page.locator(f"section.witnessed [data-checkpoint='{witnessed}']").inner_text()
            )
            assert not refused, refused  # no CSP violation, no failed resource
        finally:
            browser.close()

    # The reader checks what they downloaded, with keys they pinned (here: the same ones).
    answer = json.loads(downloaded.read_text())
    assert answer["tree_size"] == witnessed and answer["witnessing"]["met"] is True
    (tmp_path / "ledger.pub").write_text(answer["verifier_key"] + "\n")
    (tmp_path / "witnesses.txt").write_text("\n".join(key.encode() for key in TRUSTED) + "\n")
    status = zfjl_verify(
        [
            "checkpoint",
            "--key",
            str(tmp_path / "ledger.pub"),
            "--witness-keys",
            str(tmp_path / "witnesses.txt"),
            "--quorum",
            "2",
            str(downloaded),
        ]
    )
    assert status == 0, capsys.readouterr().err
