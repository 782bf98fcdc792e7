"""Archive packages (JL-18) and case-file reviews (JL-22) over HTTP.

``POST /api/v1/cases/{id}/archives`` seals an ended case into a BagIt package with its ledger proofs
(docs/archives.md), kept in the object store and downloadable as a zip that ``zfjl-verify package``
checks offline. ``GET /api/v1/archives/overdue`` lists the ended cases whose 30 days passed without a
package. Reviews of a case file are appended and listed with the case's checklist.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.governance import archive_listing, archives, ledger, review
from server.http.context import audit_request, caller, get_store, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.agency_keys import AgencyKeyring
from server.infra.db import session_scope
from server.infra.storage import ARCHIVE_STORE_KEY

__all__ = ["bp", "reviews_bp"]

bp = Blueprint("archives", __name__)
reviews_bp = Blueprint("reviews", __name__)

_ARCHIVE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "case_id": {"type": "integer"},
        "agency_id": {"type": "integer"},
        "bag_name": {"type": "string"},
        "zip_sha256": {"type": "string"},
        "zip_size": {"type": "integer"},
        "tagmanifest_sha256": {"type": "string"},
        "payload_oxum": {"type": "string"},
        "recording_count": {"type": "integer"},
        "leaf_count": {"type": "integer"},
        "checkpoint_size": {"type": "integer"},
        "ended_at": {"type": ["string", "null"], "format": "date-time"},
        "on_time": {"type": "boolean", "description": "within 30 days of the case ending (JL-18)"},
        "created_by": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "download_url": {"type": "string"},
        "delivered_key": {"type": ["string", "null"], "description": "where the archive store holds it"},
    },
}
_OVERDUE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "case_id": {"type": "integer"},
                    "agency_id": {"type": "integer"},
                    "number": {"type": "string"},
                    "status": {"type": "string"},
                    "ended_at": {"type": "string", "format": "date-time"},
                    "due_at": {"type": "string", "format": "date-time"},
                    "state": {"enum": ["due", "overdue"]},
                    "days_overdue": {"type": "integer"},
                    "days_left": {"type": "integer"},
                    "last_error": {
                        "type": ["string", "null"],
                        "description": "the archiving job's last failure",
                    },
                },
            },
        }
    },
}
_REVIEW: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "case_id": {"type": "integer"},
        "verdict": {"enum": list(review.REVIEW_VERDICTS)},
        "score": {"type": "integer", "description": "share of applicable items found ok, in percent"},
        "findings": {"type": "array", "items": {"type": "object"}},
        "rectifications": {"type": "array", "items": {"type": "object"}},
        "rectify_by": {"type": ["string", "null"], "format": "date"},
        "summary": {"type": "string"},
        "follows_review_id": {"type": ["integer", "null"]},
        "reviewer": {"type": "string"},
        "reviewer_role": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}


def _keyring() -> AgencyKeyring:
    return AgencyKeyring.from_settings(current_app.extensions["zfjl.settings"])


def _signer() -> ledger.LedgerSigner:
    return ledger.LedgerSigner.from_ingest_key(current_app.extensions["zfjl.settings"].ingest_key)


@bp.post("/cases/<int:case_id>/archives")
@api_view(
    "archives.create_archive",
    "封存案卷档案包（BagIt，含账本证明）/ seal the case's archive package (BagIt with ledger proofs)",
    response=_ARCHIVE,
    responses={201: "已归档 / sealed", 409: "案件尚未办结 / case_not_ended"},
)
def create_archive(case_id: int) -> ResponseReturnValue:
    """Build, store and record the package of an ended case (JL-18); audited."""
    with tempfile.TemporaryDirectory(prefix="zfjl-archive-") as work, session_scope() as session:
        built = archives.build_archive(
            session, caller(), case_id, store=get_store(), signer=_signer(), keyring=_keyring(),
            work_dir=Path(work), archive_store=current_app.extensions[ARCHIVE_STORE_KEY],
            archive_prefix=current_app.extensions["zfjl.settings"].archive_prefix,
        )  # fmt: skip
        return jsonify(archive_listing.archive_to_dict(built.row)), 201


@bp.get("/cases/<int:case_id>/archives")
@api_view(
    "archives.list_archives",
    "案件的档案包 / the case's archive packages",
    response={"type": "object", "properties": {"items": {"type": "array", "items": _ARCHIVE}}},
)
def list_archives(case_id: int) -> ResponseReturnValue:
    """The packages of one case, oldest first."""
    with session_scope() as session:
        rows = archive_listing.list_archives(session, caller(), case_id)
        return jsonify(items=[archive_listing.archive_to_dict(r) for r in rows])


@bp.get("/archives/<int:archive_id>/package.zip")
@api_view(
    "archives.download_archive",
    "下载档案包 zip / download the package as a zip",
    response={"type": "string", "format": "binary"},
    response_content_type="application/zip",
)
def download_archive(archive_id: int) -> ResponseReturnValue:
    """The sealed zip from the object store (audited: it holds evidence, JL-20)."""
    with session_scope() as session:
        row = archive_listing.open_archive(session, caller(), archive_id)
        key, size, name, digest = row.object_key, row.zip_size, row.bag_name, row.zip_sha256
        audit_request(session, "archive.download", "archive", archive_id)
    body = get_store().open_range(key, 0, size - 1)
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{name}.zip"',
        "ETag": f'"{digest}"',
        "Cache-Control": "private, no-store",
    }
    return Response(body, headers=headers, mimetype="application/zip", direct_passthrough=True)


@bp.get("/archives/overdue")
@api_view(
    "archives.overdue",
    "办结超过 30 日仍未归档的案件 / cases ended over 30 days ago without a package (JL-18)",
    query={"include": {"enum": ["due"]}},
    response=_OVERDUE,
)
def overdue() -> ResponseReturnValue:
    """Overdue archiving in the caller's scope (every agency for supervisors); ``?include=due`` adds the
    ended cases still within their 30 days."""
    include = request.args.get("include")
    if include not in (None, "", "due"):
        raise ApiError(400, "invalid_query", "include 只能为 due", "include must be due")
    with session_scope() as session:
        rows = archive_listing.overdue_archives(session, caller(), include_due=include == "due")
        return jsonify(items=rows)


@reviews_bp.get("/cases/<int:case_id>/reviews")
@api_view(
    "reviews.list_reviews",
    "案卷评查记录及评查清单 / the case file's reviews and its checklist (JL-22)",
    response={
        "type": "object",
        "properties": {
            "checklist": {"type": "array", "items": {"type": "object"}},
            "items": {"type": "array", "items": _REVIEW},
        },
    },
)
def list_reviews(case_id: int) -> ResponseReturnValue:
    """Every review of the case, oldest first, and the checklist a new review answers."""
    with session_scope() as session:
        case, rows = review.list_reviews(session, caller(), case_id)
        return jsonify(
            checklist=review.checklist(session, case), items=[review.review_to_dict(r) for r in rows]
        )


@reviews_bp.post("/cases/<int:case_id>/reviews")
@api_view(
    "reviews.create_review",
    "记录案卷评查（逐项结论、评定、整改要求及期限）/ record a case-file review",
    request={
        "type": "object",
        "required": ["verdict", "findings"],
        "properties": {
            "verdict": {"enum": list(review.REVIEW_VERDICTS)},
            "findings": {"type": "array", "items": {"type": "object"}},
            "rectifications": {"type": "array", "items": {"type": "object"}},
            "summary": {"type": "string"},
            "follows_review_id": {"type": ["integer", "null"]},
        },
    },
    response=_REVIEW,
    responses={201: "已记录 / recorded"},
)
def create_review(case_id: int) -> ResponseReturnValue:
    """Append one review (audited; a ledger leaf on the next round)."""
    body = review.ReviewInput.from_json(json_body(("verdict", "findings")))
    with session_scope() as session:
        row = review.record_review(session, caller(), case_id, body)
        return jsonify(review.review_to_dict(row)), 201
