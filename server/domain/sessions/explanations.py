"""Written explanations of unexplained gaps, filed by one officer and co-signed by another (JL-16)."""

from __future__ import annotations

import hashlib
from datetime import UTC as _UTC
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.accounts.models import User
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound, ServiceError
from server.domain.people.models import Officer
from server.domain.sessions.models import (
    EnforcementSessionRecord,
    ExplanationSignature,
    InterruptionMarker,
    SessionEventRecord,
    WrittenExplanation,
)
from server.domain.sessions.service import compute, explanation_view, iso_or_none, load, officer_names
from server.errors import ErrorKind

__all__ = [
    "MAX_EXPLANATION_CHARS",
    "SIGNING_ROLES",
    "AlreadySigned",
    "CertificateExpired",
    "NotAnOfficer",
    "OfficerNotActive",
    "OfficerOtherAgency",
    "SameOfficer",
    "file_explanation",
    "sign_explanation",
]


SIGNING_ROLES: tuple[str, ...] = ("officer", "agency_head")

MAX_EXPLANATION_CHARS = 5000


class NotAnOfficer(ServiceError):
    """Only officers sign JL-16 written explanations."""

    code = "not_an_officer"
    kind = ErrorKind.FORBIDDEN


class OfficerNotActive(ServiceError):
    """JL-16: a suspended or revoked officer does not sign as an enforcement officer."""

    code = "officer_not_active"
    kind = ErrorKind.FORBIDDEN


class CertificateExpired(ServiceError):
    """JL-16: the signer's enforcement certificate is not valid today."""

    code = "certificate_expired"
    kind = ErrorKind.FORBIDDEN


class OfficerOtherAgency(ServiceError):
    """JL-16: the signer belongs to another agency than the session's officer."""

    code = "officer_other_agency"
    kind = ErrorKind.FORBIDDEN


class SameOfficer(ServiceError):
    """JL-16: two signatures by one officer (through two accounts) count once."""

    code = "same_officer"
    kind = ErrorKind.CONFLICT


class AlreadySigned(ServiceError):
    """The same person cannot count twice towards the two signatures JL-16 asks for."""

    code = "already_signed"
    kind = ErrorKind.CONFLICT


def _session_agencies(session: Session, record: EnforcementSessionRecord) -> set[int]:
    """Agencies of the officers the session's events name, matched on certificate number (JL-16).

    Devices carry no agency and events name their officer by a free string, so an ``officer_id`` that
    equals a register certificate number is the only link; empty when none matches (agency unknown).
    """
    names = select(SessionEventRecord.officer_id).where(
        SessionEventRecord.enforcement_session_id == record.id, SessionEventRecord.officer_id != ""
    )
    return set(
        session.scalars(select(Officer.agency_id).where(Officer.certificate_number.in_(names)).distinct())
    )


def _signer(session: Session, record: EnforcementSessionRecord, user_id: int) -> tuple[User, Officer]:
    """JL-16: the account and the active, certified officer in good standing it signs as."""
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise NotFound(f"用户 {user_id} 不存在", f"user {user_id} not found")
    officer = session.scalar(select(Officer).where(Officer.user_id == user.id))
    # Auxiliary staff are not enforcement officers and cannot sign as such (JL-16).
    if user.role not in SIGNING_ROLES or officer is None or officer.kind != "officer":
        raise NotAnOfficer(
            "只有登记在册的执法人员可以签署书面说明（JL-16）",
            "only an officer in the officer register may sign a written explanation (JL-16)",
        )
    if officer.status != "active":
        raise OfficerNotActive(
            f"执法人员状态为 {officer.status}，不能签名（JL-16）",
            f"officer is {officer.status} and cannot sign (JL-16)",
        )
    today = datetime.now(_UTC).date()
    if (
        not officer.certificate_number
        or officer.valid_to is None
        or officer.valid_to < today
        or (officer.valid_from is not None and officer.valid_from > today)
    ):
        raise CertificateExpired(
            "执法证件今日无效，不能签名（JL-16）",
            "the officer's certificate is not valid today (JL-16)",
        )
    agencies = _session_agencies(session, record)
    if agencies and officer.agency_id not in agencies:
        raise OfficerOtherAgency(
            "签名人与本次执法人员不属于同一机关（JL-16）",
            "the signer is not of the session officer's agency (JL-16)",
        )
    return user, officer


def file_explanation(
    session: Session,
    record: EnforcementSessionRecord,
    *,
    user_id: int,
    text: str,
    marker_id: str | None = None,
    client_ip: str | None = None,
) -> dict[str, Any]:
    """JL-16: an officer files and signs a written explanation for a marker or the unexplained gaps."""
    text = text.strip() if isinstance(text, str) else ""
    if not text or len(text) > MAX_EXPLANATION_CHARS:
        raise Invalid(
            f"说明内容须为 1–{MAX_EXPLANATION_CHARS} 个字符",
            f"text must be 1–{MAX_EXPLANATION_CHARS} characters",
        )
    user, officer = _signer(session, record, user_id)
    marker_ref: int | None = None
    gaps: list[dict[str, Any]] = []
    if marker_id:
        marker = session.scalar(
            select(InterruptionMarker).where(
                InterruptionMarker.enforcement_session_id == record.id,
                InterruptionMarker.marker_id == marker_id,
            )
        )
        if marker is None:
            raise NotFound(f"中断标记 {marker_id} 不存在", f"marker {marker_id} not found in this session")
        marker_ref = marker.id
    else:
        verdict = compute(load(session, record)).continuity
        # What the officers sign for is fixed now: a gap found later needs its own explanation.
        gaps = [{"start": iso_or_none(g.start), "end": iso_or_none(g.end)} for g in verdict.unexplained_gaps]
        if not gaps:
            raise Conflict("该执法过程没有未说明的中断", "this session has no unexplained gaps")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    now = utcnow()
    explanation = WrittenExplanation(
        enforcement_session_id=record.id,
        marker_ref=marker_ref,
        text=text,
        text_sha256=digest,
        gaps=gaps,
        filed_by=user.id,
        filed_at=now,
    )
    session.add(explanation)
    session.flush()
    signature = ExplanationSignature(
        explanation_id=explanation.id,
        user_id=user.id,
        username=user.username,
        role=user.role,
        text_sha256=digest,
        signed_at=now,
        officer_id=officer.id,
        certificate_number=officer.certificate_number,
    )
    session.add(signature)
    session.flush()
    write_audit(
        session,
        actor=str(user.id),
        action="session.explanation_file",
        target_type="session",
        target_id=record.id,
        detail={
            "explanation_id": explanation.id,
            "marker_id": marker_id,
            "gaps": len(gaps),
            "officer_id": officer.id,
        },
        client_ip=client_ip,
    )
    return explanation_view(explanation, [signature], marker_id, {officer.id: officer.name})


def sign_explanation(
    session: Session,
    record: EnforcementSessionRecord,
    explanation_id: int,
    *,
    user_id: int,
    client_ip: str | None = None,
) -> dict[str, Any]:
    """Another officer co-signs; the same person twice is refused (JL-16: two or more officers)."""
    explanation = session.get(WrittenExplanation, explanation_id)
    if explanation is None or explanation.enforcement_session_id != record.id:
        raise NotFound(f"书面说明 {explanation_id} 不存在", f"explanation {explanation_id} not found")
    user, officer = _signer(session, record, user_id)
    sigs = list(
        session.scalars(
            select(ExplanationSignature)
            .where(ExplanationSignature.explanation_id == explanation.id)
            .order_by(ExplanationSignature.id)
        )
    )
    if any(s.user_id == user.id for s in sigs):
        raise AlreadySigned(
            "同一人不能重复签名：书面说明须由两名以上执法人员签名",
            "the same person cannot sign twice: two or more different officers must sign",
        )
    if any(s.officer_id == officer.id for s in sigs):
        raise SameOfficer(
            "该执法人员已通过其他账号签名：须两名以上不同执法人员签名（JL-16）",
            "this officer already signed through another account: two different officers must sign",
        )
    signature = ExplanationSignature(
        explanation_id=explanation.id,
        user_id=user.id,
        username=user.username,
        role=user.role,
        text_sha256=explanation.text_sha256,
        signed_at=utcnow(),
        officer_id=officer.id,
        certificate_number=officer.certificate_number,
    )
    session.add(signature)
    session.flush()
    write_audit(
        session,
        actor=str(user.id),
        action="session.explanation_sign",
        target_type="session",
        target_id=record.id,
        detail={"explanation_id": explanation.id, "officer_id": officer.id},
        client_ip=client_ip,
    )
    marker_id = None
    if explanation.marker_ref is not None:
        marker = session.get(InterruptionMarker, explanation.marker_ref)
        marker_id = marker.marker_id if marker else None
    signed_as = [s.officer_id for s in [*sigs, signature] if s.officer_id is not None]
    return explanation_view(explanation, [*sigs, signature], marker_id, officer_names(session, signed_as))
