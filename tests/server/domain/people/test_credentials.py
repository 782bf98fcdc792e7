"""Officer registry, CSV import, the signed QR credential and public verification (GS-9(2), GS-10(1))."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.people import credentials as credential_service
from server.domain.people.models import Agency, CredentialScan, Officer
from server.infra.db import session_scope
from tests.fixtures.people import PNG, World, login

CSV_HEADER = "kind,name,enforcement_category,certificate_number,issuing_body,valid_from,valid_to,username\n"


def _token_parts(token: str) -> tuple[bytes, bytes]:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return raw[:-64], raw[-64:]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_gs9_officer_registry_crud_and_photo(client: FlaskClient, world: World) -> None:
    head = login(client, "agency_head-a")
    body = {
        "name": "孙执法",
        "enforcement_category": "市场监管",
        "certificate_number": "AH-0100",
        "issuing_body": "安徽省人民政府",
        "valid_from": "2025-01-01",
        "valid_to": "2030-12-31",
    }
    created = client.post("/api/v1/officers", json=body, headers=head)
    assert created.status_code == 201, created.get_json()
    officer = created.get_json()
    assert officer["agency_id"] == world.agency_a and officer["status"] == "active"
    assert client.post("/api/v1/officers", json=body, headers=head).status_code == 409
    no_cert = client.post("/api/v1/officers", json={"name": "无证"}, headers=head)
    assert no_cert.status_code == 400
    aux = client.post(
        "/api/v1/officers", json={"name": "辅助", "kind": "auxiliary", "duties": "协助"}, headers=head
    )
    assert aux.status_code == 201 and aux.get_json()["certificate_number"] is None

    photo = client.put(
        f"/api/v1/officers/{officer['id']}/photo", data=PNG, content_type="image/png", headers=head
    )
    assert photo.status_code == 200 and photo.get_json()["has_photo"]
    got = client.get(photo.get_json()["photo_url"], headers=head)
    assert got.data == PNG and got.mimetype == "image/png"
    assert (
        client.put(
            f"/api/v1/officers/{officer['id']}/photo", data=b"x", content_type="text/plain", headers=head
        ).status_code
        == 415
    )
    revoked = client.patch(f"/api/v1/officers/{officer['id']}", json={"status": "revoked"}, headers=head)
    assert revoked.get_json()["status"] == "revoked"
    # Another agency's head cannot touch it.
    assert (
        client.patch(f"/api/v1/officers/{world.officer_b}", json={"name": "x"}, headers=head).status_code
        == 404
    )


def test_gs9_csv_import_all_or_nothing(app: Flask, client: FlaskClient, world: World) -> None:
    head = login(client, "agency_head-a")
    bad = (
        CSV_HEADER
        + "officer,甲,市场监管,AH-0200,省政府,2025-01-01,2030-01-01,\n"
        + "officer,乙,市场监管,AH-0200,省政府,2025-01-01,2030-01-01,\n"
        + "officer,丙,市场监管,AH-0201,省政府,2025-01-01,not-a-date,\n"
        + "officer,丁,市场监管,AH-0202,省政府,2025-01-01,2030-01-01,nobody\n"
    )
    response = client.post(
        "/api/v1/officers/import", data=bad.encode(), content_type="text/csv", headers=head
    )
    assert response.status_code == 422
    rows = response.get_json()["error"]["rows"]
    assert [r["row"] for r in rows] == [3, 4, 5]
    with session_scope(app) as session:
        assert session.scalar(select(Officer).where(Officer.certificate_number == "AH-0200")) is None

    good = "\ufeff" + CSV_HEADER + "officer,甲,市场监管,AH-0200,省政府,2025-01-01,2030-01-01,auxiliary-a\n"
    good += "auxiliary,乙,,,,,,\n"
    response = client.post(
        "/api/v1/officers/import", data=good.encode(), content_type="text/csv", headers=head
    )
    assert response.status_code == 201, response.get_json()
    items = response.get_json()["items"]
    assert [i["kind"] for i in items] == ["officer", "auxiliary"]
    assert items[0]["user_id"] == world.users["auxiliary"]
    unknown = client.post(
        "/api/v1/officers/import", data=b"name,shoe_size\nx,42\n", content_type="text/csv", headers=head
    )
    assert unknown.status_code == 422


def test_gs10_my_credential_has_a_signed_short_lived_qr(
    app: Flask, client: FlaskClient, world: World
) -> None:
    officer = login(client, "officer-a")
    response = client.get("/api/v1/me/credential", headers=officer)
    assert response.status_code == 200, response.get_json()
    cred = response.get_json()
    assert cred["name"] == "王执法" and cred["unit"] == "合肥市市场监督管理局"
    assert cred["certificate_number"] == "AH-0001" and cred["validity"] == "valid"
    assert cred["photo_url"] == "/api/v1/me/credential/photo"
    assert client.get(cred["photo_url"], headers=officer).data == PNG
    assert cred["qr_payload"].endswith("/verify/" + cred["token"])
    assert len(cred["qr_payload"]) < 160 and cred["qr_svg"].startswith("<svg")
    expires = datetime.fromisoformat(cred["token_expires_at"])
    assert timedelta(seconds=50) < expires - datetime.now(UTC) <= timedelta(seconds=60)

    jwks = client.get("/.well-known/zfjl-credential-key.json").get_json()
    x = jwks["keys"][0]["x"]
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    body, signature = _token_parts(cred["token"])
    public.verify(signature, body)  # a third party can check the QR offline with the published key
    key_file = Path(app.extensions["zfjl.settings"].data_dir) / credential_service.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    page = client.get(f"/verify/{cred['token']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-outcome="valid"' in html and "该执法证件当前有效" in html and "王执法" in html
    assert "data:image/png;base64," in html
    english = client.get(f"/verify/{cred['token']}?lang=en").get_data(as_text=True)
    assert "This credential is valid now" in english


def _outcome(client: FlaskClient, url: str) -> str:
    html = client.get(url).get_data(as_text=True)
    return html.split('data-outcome="', 1)[1].split('"', 1)[0]


def test_gs10_forged_tokens_are_refused(app: Flask, client: FlaskClient, world: World) -> None:
    officer = login(client, "officer-a")
    token = client.get("/api/v1/me/credential", headers=officer).get_json()["token"]
    body, signature = _token_parts(token)
    # Another officer's id with the original signature.
    tampered = bytearray(body)
    tampered[4] ^= 0x01
    assert _outcome(client, f"/verify/{_b64(bytes(tampered) + signature)}") == "forged"
    # Signed with a key that is not the server's.
    assert _outcome(client, f"/verify/{_b64(body + Ed25519PrivateKey.generate().sign(body))}") == "forged"
    assert _outcome(client, "/verify/not-a-token") == "forged"
    html = client.get(f"/verify/{_b64(bytes(tampered) + signature)}").get_data(as_text=True)
    assert "王执法" not in html and "伪造" in html


def test_gs10_replay_past_lifetime_and_expired_certificate(
    app: Flask, client: FlaskClient, world: World
) -> None:
    key = credential_service.load_or_create_key(app.extensions["zfjl.settings"].data_dir)
    old, _ = credential_service.issue_token(
        key, world.officer_a, now=datetime.now(UTC) - timedelta(minutes=5)
    )
    assert _outcome(client, f"/verify/{old}") == "replayed"
    assert "截图" in client.get(f"/verify/{old}").get_data(as_text=True)
    future, _ = credential_service.issue_token(
        key, world.officer_a, now=datetime.now(UTC) + timedelta(hours=1)
    )
    assert _outcome(client, f"/verify/{future}") == "forged"

    fresh, _ = credential_service.issue_token(key, world.officer_b)
    with session_scope(app) as session:
        session.get(Officer, world.officer_b).valid_to = date.today() - timedelta(days=1)
    assert _outcome(client, f"/verify/{fresh}") == "expired"
    assert _outcome(client, "/verify?cert=AH-0002") == "expired"
    with session_scope(app) as session:
        officer = session.get(Officer, world.officer_b)
        officer.valid_to, officer.status = date.today() + timedelta(days=1), "suspended"
    assert _outcome(client, f"/verify/{fresh}") == "suspended"
    assert _outcome(client, "/verify?cert=AH-0002&lang=en") == "suspended"
    assert _outcome(client, "/verify?cert=NOPE") == "not_found"
    assert "data-outcome" not in client.get("/verify").get_data(as_text=True)


def test_gs10_each_scan_is_logged_with_coarse_client_info(
    app: Flask, client: FlaskClient, world: World
) -> None:
    client.get(
        "/verify?cert=AH-0001",
        headers={"User-Agent": "Mozilla/5.0 (iPhone) MicroMessenger/8.0"},
        environ_base={"REMOTE_ADDR": "203.0.113.77"},
    )
    with session_scope(app) as session:
        scan = session.scalars(select(CredentialScan)).one()
        assert (scan.officer_id, scan.method, scan.outcome) == (world.officer_a, "cert", "valid")
        assert scan.user_agent_family == "wechat" and scan.ip_prefix == "203.0.113.0/24"
    head = login(client, "agency_head-a")
    items = client.get("/api/v1/credential-scans", headers=head).get_json()["items"]
    assert [i["outcome"] for i in items] == ["valid"]
    assert client.get("/api/v1/credential-scans", headers=login(client, "officer-b")).status_code == 403


@pytest.mark.parametrize(
    ("address", "prefix"),
    [("198.51.100.9", "198.51.100.0/24"), ("2001:db8:1:2::5", "2001:db8:1::/48"), ("", None)],
)
def test_ip_truncation(address: str, prefix: str | None) -> None:
    assert credential_service.truncate_ip(address) == prefix


def test_gs10_token_verification_on_both_databases(db_session: Session, tmp_path: Path) -> None:
    agency = Agency(name="测试局", head="", duties="", address="", contacts="")
    db_session.add(agency)
    db_session.flush()
    officer = Officer(
        agency_id=agency.id,
        kind="officer",
        name="测",
        enforcement_category="",
        certificate_number="DB-1",
        issuing_body="",
        valid_to=date.today() + timedelta(days=1),
        status="active",
        duties="",
        authority="",
    )
    db_session.add(officer)
    db_session.commit()
    key = credential_service.load_or_create_key(tmp_path)
    token, jti = credential_service.issue_token(key, officer.id)
    check = credential_service.verify_token(db_session, key, token)
    assert check.valid and check.token_id == jti and check.officer is not None
    assert (
        credential_service.verify_token(db_session, Ed25519PrivateKey.generate(), token).outcome == "forged"
    )
    later = datetime.now(UTC) + credential_service.TOKEN_TTL + timedelta(seconds=30)
    assert credential_service.verify_token(db_session, key, token, now=later).outcome == "replayed"
    credential_service.log_scan(db_session, check, method="token", user_agent="curl/8", client_ip="10.1.2.3")
    db_session.commit()
    assert db_session.scalars(select(CredentialScan.ip_prefix)).one() == "10.1.2.0/24"


def test_gs10_offline_batch_token_is_valid_only_inside_its_own_minute(app: Flask, world: World) -> None:
    """GS-10(1) offline: each pre-issued code verifies in its minute (± the clock skew), never outside."""
    key = credential_service.load_or_create_key(app.extensions["zfjl.settings"].data_dir)
    start = credential_service.minute_start(datetime.now(UTC))
    batch = credential_service.issue_minute_tokens(
        key, world.officer_a, minutes=3, now=start + timedelta(seconds=30)
    )
    assert [t.valid_from for t in batch] == [start + timedelta(minutes=i) for i in range(3)]
    assert all(t.valid_to - t.valid_from == timedelta(minutes=1) for t in batch)
    assert len({t.token_id for t in batch}) == 3  # a fresh nonce per minute
    skew = credential_service.CLOCK_SKEW
    second = timedelta(seconds=1)

    def outcome(token: str, at: datetime) -> str:
        with session_scope(app) as session:
            return credential_service.verify_token(session, key, token, now=at).outcome

    first, nxt = batch[0].token, batch[1].token
    assert outcome(first, start) == "valid"
    assert outcome(first, start + timedelta(seconds=59)) == "valid"
    assert outcome(first, start - skew) == "valid"  # the issuing and verifying clocks may differ a little
    assert outcome(first, start + timedelta(minutes=1) + skew - second) == "valid"
    # Replayed after its minute (a screenshot), or shown before it (taken out of a copied batch).
    assert outcome(first, start + timedelta(minutes=1) + skew) == "replayed"
    assert outcome(first, start + timedelta(hours=2)) == "replayed"
    assert outcome(nxt, start + timedelta(seconds=30)) == "replayed"
    assert outcome(first, start - skew - second) == "replayed"
    assert outcome(nxt, start + timedelta(seconds=90)) == "valid"
    # The minute is part of what is signed: moving it breaks the signature.
    body, signature = _token_parts(first)
    shifted = bytearray(body)
    shifted[8] ^= 0x01
    assert outcome(_b64(bytes(shifted) + signature), start + timedelta(seconds=30)) == "forged"
    # A minute token must name the start of a minute: we never sign any other instant.
    odd = body[:5] + int(start.timestamp() + 7).to_bytes(4, "big") + body[9:]
    assert outcome(_b64(odd + key.sign(odd)), start + timedelta(seconds=30)) == "forged"
    assert body[0] == credential_service.MINUTE_TOKEN_VERSION

    # A batch covers one shift at most (12 h): a copied phone holds nothing valid beyond it.
    for minutes in (0, -1, credential_service.MAX_BATCH_MINUTES + 1):
        with pytest.raises(ValueError):
            credential_service.issue_minute_tokens(key, world.officer_a, minutes=minutes)
    assert credential_service.MAX_BATCH_MINUTES == 12 * 60
    full = credential_service.issue_minute_tokens(
        key, world.officer_a, minutes=credential_service.MAX_BATCH_MINUTES
    )
    assert full[-1].valid_to - full[0].valid_from == timedelta(hours=12)
