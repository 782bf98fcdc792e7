"""External provision through an expiring link to a sealed export package, never the raw store (JL-20).

Once the agency head approved an ``external_provision`` request (``approvals.decide``), its requester
(or a head of the agency) builds the **export package** of the grant's scope with
:func:`create_export`: a BagIt bag like an archive package (``archives.py``) — the recordings with
their signed manifests and provenance notes, the request and its approval, the audit trail, every
row's ledger leaf with its inclusion proof and the signed checkpoint — sealed with the agency's key and
zipped into the object store under ``exports/``. The recipient gets a link, not an account: a token
naming the export and its expiry, authenticated with an HMAC under a key derived from the server's
secret, valid until the grant expires. :func:`open_link` checks it on each download, which is audited
(``provision.download``, a ledger leaf like every audit row); a tampered or expired link is refused and
the refusal audited too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, ServiceError
from server.domain.evidence.models import Recording
from server.domain.governance.access import ApprovalRequired, EvidenceDisposed
from server.domain.governance.approvals import (
    decision_of,
    get_request,
    request_to_dict,
    revocation_of,
    status_of,
)
from server.domain.governance.approvals_models import GovernanceRequest
from server.domain.governance.archives import (
    _audit_csv,
    _audit_rows,
    _iso_pair,
    _json,
    _new_bag,
    _prove,
    _put_recordings,
    _seal_and_zip,
)
from server.domain.governance.archives_models import ProvisionExport
from server.domain.governance.ledger import LedgerSigner
from server.domain.governance.retention import GovernanceForbidden, tombstone_of
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.errors import ErrorKind
from server.infra.agency_keys import AgencyKeyring
from server.infra.storage import ObjectStore
from zfjl_verify.package import PACKAGE_FORMAT

__all__ = [
    "LINK_ACTOR",
    "BuiltExport",
    "LinkExpired",
    "LinkInvalid",
    "NotAProvision",
    "create_export",
    "link_token",
    "open_link",
]

_LINK_DOMAIN = b"zfjl/v1 provision link key\n"
# Who downloads through a link: the recipient the request names, not a user of ours.
LINK_ACTOR = "provision-link"


class NotAProvision(Conflict):
    """Only an external-provision request is exported through a link."""

    code: ClassVar[str] = "not_external_provision"


class LinkInvalid(ServiceError):
    """The link was altered or names nothing: refused, and the refusal audited."""

    code: ClassVar[str] = "link_invalid"
    kind = ErrorKind.FORBIDDEN
    keeps_writes = True


class LinkExpired(ServiceError):
    """The grant behind the link expired: refused, and the refusal audited."""

    code: ClassVar[str] = "link_expired"
    kind = ErrorKind.FORBIDDEN
    keeps_writes = True


@dataclass(frozen=True)
class BuiltExport:
    """An export package just sealed: its row, the link token, and the bag on disk."""

    row: ProvisionExport
    token: str
    bag_dir: Path
    zip_path: Path


def _link_key(secret: str) -> bytes:
    # Derived, not the secret itself: one key, one kind of statement.
    return hashlib.sha256(_LINK_DOMAIN + secret.encode("utf-8")).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def link_token(secret: str, export_id: int, expires_at: datetime) -> str:
    """``<export id>.<expiry, unix seconds>.<HMAC-SHA256 of both>``: URL-safe, unforgeable."""
    body = f"{export_id}.{int(expires_at.timestamp())}"
    return f"{body}.{_b64(hmac.new(_link_key(secret), body.encode('ascii'), 'sha256').digest())}"


def _parse(secret: str, token: str) -> tuple[int, datetime] | None:
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or len(token) > 200:
        return None
    body = f"{parts[0]}.{parts[1]}"
    try:
        given = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except (binascii.Error, ValueError):
        return None
    expected = hmac.new(_link_key(secret), body.encode("ascii"), "sha256").digest()
    if not hmac.compare_digest(given, expected):
        return None
    return int(parts[0]), datetime.fromtimestamp(int(parts[1]), UTC)


def create_export(
    session: Session,
    caller: Caller,
    request_id: int,
    *,
    store: ObjectStore,
    signer: LedgerSigner,
    keyring: AgencyKeyring,
    link_secret: str,
    work_dir: Path,
    now: datetime | None = None,
) -> BuiltExport:
    """Seal the export package of an approved, unexpired external provision (flushed, audited).

    Without approval (pending, rejected, expired) the refusal is audited and ApprovalRequired raised.
    """
    now = now or utcnow()
    request = get_request(session, caller, request_id)
    if request.kind != "external_provision":
        raise NotAProvision(
            "只有对外提供申请才能生成提供链接", "only an external provision is provided by link"
        )
    if caller.user_id != request.requested_by and not (
        caller.role == "agency_head" and caller.agency_id == request.agency_id
    ):
        raise GovernanceForbidden(
            "只有申请人或机关负责人可以生成提供链接", "only the requester or the agency head provides"
        )
    decision = decision_of(session, request.id)
    status = status_of(decision, now, revocation_of(session, request.id))
    if decision is None or decision.expires_at is None or status != "approved":
        write_audit(
            session, actor=caller.user_id, action="provision.refused", target_type="governance_request",
            target_id=request.id, detail={"status": status},
        )  # fmt: skip
        raise ApprovalRequired(
            f"对外提供未获批准或已过期（{status}），不能生成提供链接",
            f"the external provision is not approved or has expired ({status}): no link",
        )
    recordings = list(
        session.scalars(
            select(Recording).where(Recording.id.in_(list(request.recording_ids))).order_by(Recording.id)
        )
    )
    for rec in recordings:
        stone = tombstone_of(session, rec.id)
        if stone is not None:
            raise EvidenceDisposed(f"录像 {rec.id} 已经销毁", f"recording {rec.id} was disposed of")
    write_audit(
        session, actor=caller.user_id, action="provision.export", target_type="governance_request",
        target_id=request.id,
        detail={"recordings": [r.id for r in recordings], "recipient": request.recipient},
    )  # fmt: skip
    audit = _audit_rows(
        session, {"recording": [r.id for r in recordings], "governance_request": [request.id]}
    )
    agency = session.get(Agency, request.agency_id)
    bag_name = f"zfjl-provision-{request.id}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    bag_dir, bag = _new_bag(work_dir, bag_name)
    wanted = {
        "recordings": [r.id for r in recordings],
        "governance_requests": [request.id],
        "governance_decisions": [decision.id],
        "audit_log": [a.id for a in audit],
    }
    tree_size, index_leaves, rows = _prove(session, signer, bag, wanted)
    # A disposed recording was refused above: an external provision carries media only, never a tombstone.
    index_recordings, provenance = _put_recordings(session, bag, store, recordings, {}, now, {})
    bag.put("request.json", _json(request_to_dict(request, decision, now)))
    bag.put("audit.csv", _audit_csv(audit))
    bag.put(
        "provenance.json",
        _json(
            {
                "provision": {"request_id": request.id, "recipient": request.recipient,
                              "purpose": request.purpose, "agency_id": request.agency_id,
                              "agency": agency.name if agency else None,
                              "approved_by": decision.decided_by, "expires_at": decision.expires_at},
                "exported_by": caller.user_id,
                "exported_at": _iso_pair(now),
                "ledger_origin": signer.name,
                "recordings": provenance,
            }
        ),
    )  # fmt: skip
    bag.put(
        "package.json",
        _json(
            {
                "format": PACKAGE_FORMAT,
                "case_id": request.case_id,
                "request_id": request.id,
                "checkpoint": "ledger/checkpoint.note",
                "tree_size": tree_size,
                "leaves": index_leaves,
                "recordings": index_recordings,
                "rows": rows,
            }
        ),
    )
    sealed = _seal_and_zip(
        bag,
        bag_name,
        work_dir,
        {
            "Source-Organization": agency.name if agency else str(request.agency_id),
            "External-Identifier": f"provision-{request.id}",
            "Bagging-Date": now.date().isoformat(),
            "Bag-Software-Agent": "zfjl",
            "External-Description": f"External provision to {request.recipient} (JL-20)",
        },
        request.agency_id,
        keyring,
    )
    key = f"exports/{request.agency_id}/{request.id}/{sealed.zip_sha256}.zip"
    store.put_file(key, sealed.zip_path, sealed.zip_sha256, verified=True)
    row = ProvisionExport(
        request_id=request.id,
        agency_id=request.agency_id,
        bag_name=bag_name,
        object_key=key,
        zip_sha256=sealed.zip_sha256,
        zip_size=sealed.zip_size,
        recording_count=len(recordings),
        expires_at=decision.expires_at,
        created_by=caller.user_id,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return BuiltExport(
        row=row,
        token=link_token(link_secret, row.id, decision.expires_at),
        bag_dir=bag_dir,
        zip_path=sealed.zip_path,
    )


def open_link(
    session: Session,
    link_secret: str,
    token: str,
    *,
    client_ip: str | None = None,
    now: datetime | None = None,
) -> ProvisionExport:
    """The export a link names, if the link is ours and unexpired; each download and refusal audited."""
    now = now or utcnow()
    parsed = _parse(link_secret, token)
    row = session.get(ProvisionExport, parsed[0]) if parsed is not None else None
    if parsed is None or row is None:
        write_audit(
            session, actor=LINK_ACTOR, action="provision.link_refused", target_type="provision_export",
            target_id=None, detail={"refused": "invalid"}, client_ip=client_ip,
        )  # fmt: skip
        raise LinkInvalid("提供链接无效", "the provision link is not valid")
    request = session.get(GovernanceRequest, row.request_id)
    assert request is not None  # the export's foreign key
    decision = decision_of(session, row.request_id)
    # The link expires with the grant: the earliest of the link's own expiry, the decision's and an
    # early revocation's (JL-20: a revoked grant stops working at once, its links included).
    expiry = min(parsed[1], row.expires_at, decision.expires_at if decision and decision.expires_at else now)
    revocation = revocation_of(session, row.request_id)
    if revocation is not None:
        expiry = min(expiry, revocation.revoked_at)
    if now >= expiry:
        write_audit(
            session, actor=LINK_ACTOR, action="provision.link_refused", target_type="provision_export",
            target_id=row.id, detail={"refused": "expired", "expired_at": expiry.isoformat()},
            client_ip=client_ip,
        )  # fmt: skip
        raise LinkExpired(
            f"提供链接已于 {expiry:%Y-%m-%d %H:%M} 过期",
            f"the provision link expired at {expiry.isoformat()}",
        )
    write_audit(
        session, actor=LINK_ACTOR, action="provision.download", target_type="provision_export",
        target_id=row.id, client_ip=client_ip,
        detail={"request_id": row.request_id, "recipient": request.recipient, "zip_sha256": row.zip_sha256},
    )  # fmt: skip
    return row
