"""Uploads are checked against their declared type by their bytes; attachments are only ever downloads
(JL-11 attachments, GS-9(2) officer photos)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.domain.cases.models import CaseAttachment
from server.domain.sniff import image_size, sniff
from server.infra.db import session_scope
from tests.fixtures.people import PNG, World, login

HTML = b"<!doctype html><html><body><script>fetch('/api/v1/users')</script></body></html>"


def _png(width: int, height: int) -> bytes:
    """A PNG signature and IHDR with a correct CRC, then IDAT/IEND of the 1x1 fixture."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return PNG[:8] + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + PNG[33:]


# SOI, APP0 (JFIF), SOF0 of 32x16 with 3 components, EOI: enough for the header check.
JPEG = (
    b"\xff\xd8"
    + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    + b"\xff\xc0\x00\x11\x08\x00\x10\x00\x20\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    + b"\xff\xd9"
)
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
MP4 = struct.pack(">I", 24) + b"ftypisom" + b"\x00\x00\x02\x00isomiso2" + b"\x00" * 16


def test_sniffer_reads_types_and_image_sizes() -> None:
    assert sniff(PNG) == "image/png" and image_size(PNG, "image/png") == (1, 1)
    assert image_size(_png(640, 480), "image/png") == (640, 480)
    assert sniff(JPEG) == "image/jpeg" and image_size(JPEG, "image/jpeg") == (32, 16)
    assert sniff(PDF) == "application/pdf" and sniff(MP4) == "video/mp4"
    assert sniff("笔录：当事人已签字\n".encode()) == "text/plain"
    assert sniff(b"\x00\x01binary") is None
    broken = bytearray(PNG)
    broken[20] ^= 0xFF  # width changed, CRC no longer matches
    assert image_size(bytes(broken), "image/png") is None
    assert image_size(_png(0, 10), "image/png") is None
    assert image_size(b"\xff\xd8\xff\xda\x00\x02", "image/jpeg") is None


def _put_photo(client: FlaskClient, headers: dict[str, str], officer_id: int, data: bytes, ctype: str) -> Any:
    return client.put(f"/api/v1/officers/{officer_id}/photo", data=data, content_type=ctype, headers=headers)


@pytest.mark.parametrize(
    ("data", "ctype", "status", "code"),
    [
        (b"any bytes at all", "image/png", 400, "content_mismatch"),  # the finding: any bytes as image/png
        (HTML, "image/png", 400, "content_mismatch"),
        (JPEG, "image/png", 400, "content_mismatch"),
        (PNG[:20], "image/png", 400, "content_mismatch"),  # truncated header
        (_png(0, 1), "image/png", 400, "content_mismatch"),
        (HTML, "text/html", 415, "unsupported_media_type"),
        (PNG, "image/svg+xml", 415, "unsupported_media_type"),
        (PNG, "image/webp", 415, "unsupported_media_type"),
    ],
)
def test_officer_photo_must_really_be_png_or_jpeg(
    client: FlaskClient, world: World, data: bytes, ctype: str, status: int, code: str
) -> None:
    head = login(client, "agency_head-a")
    response = _put_photo(client, head, world.officer_a, data, ctype)
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"] and error["message_en"]
    # The stored photo is untouched.
    got = client.get(f"/api/v1/officers/{world.officer_a}/photo", headers=head)
    assert got.data == PNG and got.mimetype == "image/png"


@pytest.mark.parametrize(
    ("data", "ctype"), [(_png(120, 160), "image/png"), (JPEG, "image/jpeg"), (JPEG, "image/jpg")]
)
def test_real_png_and_jpeg_photos_are_accepted(
    client: FlaskClient, world: World, data: bytes, ctype: str
) -> None:
    head = login(client, "agency_head-a")
    assert _put_photo(client, head, world.officer_a, data, ctype).status_code == 200
    got = client.get(f"/api/v1/officers/{world.officer_a}/photo", headers=head)
    assert got.data == data and got.mimetype == sniff(data)


def _case_event(client: FlaskClient, world: World) -> tuple[dict[str, str], int, int]:
    officer = login(client, "officer-a")
    case = client.post(
        "/api/v1/cases",
        json={
            "number": "合市监罚〔2026〕9号",
            "act_kind": "penalty",
            "origin": "ex_officio",
            "officer_ids": [world.officer_a],
        },
        headers=officer,
    )
    assert case.status_code == 201, case.get_json()
    case_id = case.get_json()["id"]
    event = client.post(
        f"/api/v1/cases/{case_id}/events", json={"event_type": "investigation.inquiry"}, headers=officer
    )
    assert event.status_code == 201, event.get_json()
    return officer, case_id, event.get_json()["id"]


def _attach(
    client: FlaskClient,
    headers: dict[str, str],
    case_id: int,
    event_id: int,
    data: bytes,
    ctype: str,
    name: str = "file",
) -> Any:
    return client.post(
        f"/api/v1/cases/{case_id}/events/{event_id}/attachments?name={name}",
        data=data,
        content_type=ctype,
        headers=headers,
    )


@pytest.mark.parametrize(
    ("data", "ctype", "status", "code"),
    [
        (HTML, "text/html", 415, "unsupported_media_type"),  # the finding: served back as text/html
        (HTML, "application/xhtml+xml", 415, "unsupported_media_type"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 415, "unsupported_media_type"),
        (b"alert(1)", "application/javascript", 415, "unsupported_media_type"),
        (PDF, "application/octet-stream", 415, "unsupported_media_type"),
        (HTML, "application/pdf", 400, "content_mismatch"),
        (HTML, "image/jpeg", 400, "content_mismatch"),
        (b"\x00\x01\x02 binary", "text/plain", 400, "content_mismatch"),
        (PNG, "video/mp4", 400, "content_mismatch"),
    ],
)
def test_attachment_types_outside_the_evidence_list_or_with_other_bytes_are_refused(
    client: FlaskClient, world: World, data: bytes, ctype: str, status: int, code: str
) -> None:
    officer, case_id, event_id = _case_event(client, world)
    response = _attach(client, officer, case_id, event_id, data, ctype)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"]["code"] == code
    record = client.get(f"/api/v1/cases/{case_id}/record", headers=officer).get_json()
    assert all(not e["attachments"] for s in record["stages"] for e in s["events"])


@pytest.mark.parametrize(
    ("data", "ctype"),
    [
        (PDF, "application/pdf"),
        (JPEG, "image/jpeg"),
        (PNG, "image/png"),
        (MP4, "video/mp4"),
        (HTML, "text/plain"),
    ],
)
def test_evidence_attachments_are_stored_and_only_ever_served_as_downloads(
    client: FlaskClient, world: World, data: bytes, ctype: str
) -> None:
    officer, case_id, event_id = _case_event(client, world)
    upload = _attach(client, officer, case_id, event_id, data, ctype, name="笔录.pdf")
    assert upload.status_code == 201, upload.get_json()
    download = client.get(upload.get_json()["url"], headers=officer)
    assert download.data == data and download.mimetype == ctype
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''%E7%AC%94%E5%BD%95.pdf" in download.headers["Content-Disposition"]
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in download.headers["Content-Security-Policy"]


def test_an_attachment_stored_as_html_before_the_checks_is_served_as_octet_stream(
    client: FlaskClient, world: World, app: Flask
) -> None:
    officer, case_id, event_id = _case_event(client, world)
    upload = _attach(client, officer, case_id, event_id, HTML, "text/plain")
    attachment_id = upload.get_json()["id"]
    with session_scope(app) as session:  # what an older server let through (append-only: a new row)
        row = session.get(CaseAttachment, attachment_id)
        assert row is not None
        old = CaseAttachment(
            event_id=row.event_id,
            kind=row.kind,
            name="page.html",
            content_type="text/html",
            size=row.size,
            sha256=row.sha256,
            object_key=row.object_key,
            signed_by_party=False,
            uploaded_by=row.uploaded_by,
            uploaded_at=row.uploaded_at,
        )
        session.add(old)
        session.flush()
        url = f"/api/v1/cases/{case_id}/attachments/{old.id}"
    download = client.get(url, headers=officer)
    assert download.status_code == 200 and download.data == HTML
    assert download.mimetype == "application/octet-stream"
    assert download.headers["Content-Disposition"].startswith("attachment")
