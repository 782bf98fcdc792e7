"""Agencies as tenants, accounts (suspension), and the officer registry with CSV import (GS-9(1)(2))."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.accounts.models import User
from server.domain.accounts.service import cut_off_tokens
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound, ServiceError
from server.domain.people.inputs import AGENCY_FIELDS, OFFICER_FIELDS, AgencyFields, OfficerFields
from server.domain.people.models import Agency, Officer
from server.domain.sniff import PHOTO_TYPES, check_photo
from server.errors import ErrorKind

__all__ = [
    "CROSS_AGENCY_READERS",
    "PHOTO_TYPES",
    "AgencyFields",
    "Caller",
    "ImportRejected",
    "OfficerFields",
    "create_agency",
    "create_officer",
    "get_agency",
    "get_officer",
    "import_officers_csv",
    "list_agencies",
    "list_officers",
    "list_users",
    "set_photo",
    "set_user_active",
    "update_agency",
    "update_officer",
]

# JL-20: superior, supervisory and audit bodies may read across agencies; everyone else sees their own.
CROSS_AGENCY_READERS: tuple[str, ...] = ("supervisor", "auditor", "system_admin")
MAX_PHOTO_BYTES = 512 * 1024
CSV_COLUMNS: tuple[str, ...] = (*OFFICER_FIELDS[:-1], "username")


class ImportRejected(ServiceError):
    """A CSV import had bad rows; nothing was imported. ``rows`` lists every problem."""

    code: ClassVar[str] = "import_rejected"
    kind = ErrorKind.REJECTED

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(
            f"导入被拒绝：{len(rows)} 处错误，未导入任何记录", f"import refused: {len(rows)} errors"
        )
        self.rows = rows


@dataclass(frozen=True)
class Caller:
    """Who is asking: user id, role and agency, for tenant checks."""

    user_id: str
    role: str
    agency_id: int | None

    @property
    def reads_all(self) -> bool:
        """Whether this caller reads every agency's data (JL-20)."""
        return self.role in CROSS_AGENCY_READERS

    def may_read(self, agency_id: int | None) -> bool:
        """Whether the caller may see data of ``agency_id``."""
        return self.reads_all or (self.agency_id is not None and self.agency_id == agency_id)

    def may_write(self, agency_id: int | None) -> bool:
        """Whether the caller may change data of ``agency_id`` (only system_admin crosses agencies)."""
        return self.role == "system_admin" or (self.agency_id is not None and self.agency_id == agency_id)


# -- agencies ---------------------------------------------------------------------------------


def agency_to_dict(agency: Agency) -> dict[str, Any]:
    """Public fields of an agency (GS-9(1))."""
    return {f: getattr(agency, f) for f in ("id", *AGENCY_FIELDS)}


def create_agency(session: Session, fields: AgencyFields, *, actor: str) -> Agency:
    """Create an agency; its name is unique (``fields`` checked with ``creating=True``)."""
    values = {f: getattr(fields, f) or "" for f in AGENCY_FIELDS}
    if session.scalar(select(Agency.id).where(Agency.name == values["name"])) is not None:
        raise Conflict(f"机关 {values['name']} 已存在", f"agency {values['name']} already exists")
    agency = Agency(**values, created_at=utcnow())
    session.add(agency)
    session.flush()
    write_audit(session, actor=actor, action="agency.create", target_type="agency", target_id=agency.id)
    return agency


def get_agency(session: Session, caller: Caller, agency_id: int) -> Agency:
    """An agency the caller may see (others look missing, so ids do not leak)."""
    agency = session.get(Agency, agency_id)
    if agency is None or not caller.may_read(agency_id):
        raise NotFound("机关不存在", "agency not found")
    return agency


def list_agencies(session: Session, caller: Caller) -> list[Agency]:
    """Agencies the caller may see."""
    query = select(Agency).order_by(Agency.id)
    if not caller.reads_all:
        query = query.where(Agency.id == caller.agency_id)
    return list(session.scalars(query))


def update_agency(session: Session, caller: Caller, agency_id: int, fields: AgencyFields) -> Agency:
    """Change an agency's published particulars (GS-9: update within 20 working days of a change)."""
    agency = get_agency(session, caller, agency_id)
    if not caller.may_write(agency_id):
        raise NotFound("机关不存在", "agency not found")
    for f, value in fields.given().items():
        setattr(agency, f, value)
    write_audit(
        session, actor=caller.user_id, action="agency.update", target_type="agency", target_id=agency_id
    )
    return agency


# -- accounts -----------------------------------------------------------------------------------


def user_to_dict(user: User) -> dict[str, Any]:
    """A user without secrets."""
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "agency_id": user.agency_id,
        "active": user.active,
    }


def list_users(session: Session, caller: Caller) -> list[User]:
    """Accounts the caller may see."""
    query = select(User).order_by(User.id)
    if not caller.reads_all:
        query = query.where(User.agency_id == caller.agency_id)
    return list(session.scalars(query))


def set_user_active(session: Session, caller: Caller, user_id: int, active: bool) -> User:
    """Suspend or reinstate an account; a suspended account's existing tokens are refused at once."""
    user = session.get(User, user_id)
    if user is None or not caller.may_write(user.agency_id):
        raise NotFound("用户不存在", "user not found")
    if str(user.id) == caller.user_id and not active:
        raise Invalid("不能停用自己的账户", "you cannot suspend your own account")
    user.active = active
    if not active:
        # Tokens issued so far stay dead even after a reinstatement: the person logs in again.
        cut_off_tokens(user)
    write_audit(
        session,
        actor=caller.user_id,
        action="user.reinstate" if active else "user.suspend",
        target_type="user",
        target_id=user.id,
    )
    return user


# -- officers -------------------------------------------------------------------------------------


def officer_to_dict(officer: Officer, *, photo_url: str | None = None) -> dict[str, Any]:
    """An officer's registry entry (GS-9(2)) without the photo bytes."""
    return {
        "id": officer.id,
        "agency_id": officer.agency_id,
        "kind": officer.kind,
        "name": officer.name,
        "enforcement_category": officer.enforcement_category,
        "certificate_number": officer.certificate_number,
        "issuing_body": officer.issuing_body,
        "valid_from": officer.valid_from.isoformat() if officer.valid_from else None,
        "valid_to": officer.valid_to.isoformat() if officer.valid_to else None,
        "status": officer.status,
        "duties": officer.duties,
        "authority": officer.authority,
        "user_id": officer.user_id,
        "has_photo": officer.photo_type is not None,
        "photo_url": photo_url,
    }


def _check_officer(session: Session, officer: Officer) -> None:
    """Rules across fields: GS-9(2) officers need a certificate and its validity; unique numbers."""
    if officer.kind == "officer":
        if not officer.certificate_number:
            raise Invalid("执法人员必须有执法证号", "an officer needs a certificate number")
        if officer.valid_to is None:
            raise Invalid("执法人员必须有证件有效期", "an officer needs a certificate validity (valid_to)")
    if officer.valid_from and officer.valid_to and officer.valid_from > officer.valid_to:
        raise Invalid("有效期起始晚于截止", "valid_from is after valid_to")
    if officer.certificate_number:
        clash = session.scalar(
            select(Officer.id).where(
                Officer.certificate_number == officer.certificate_number, Officer.id != (officer.id or 0)
            )
        )
        if clash is not None:
            raise Conflict(
                f"执法证号 {officer.certificate_number} 已存在",
                f"certificate number {officer.certificate_number} already exists",
            )
    if officer.user_id is not None:
        user = session.get(User, officer.user_id)
        if user is None or user.agency_id != officer.agency_id:
            raise Invalid("关联账户不存在或不属于该机关", "linked user missing or of another agency")
        clash = session.scalar(
            select(Officer.id).where(Officer.user_id == officer.user_id, Officer.id != (officer.id or 0))
        )
        if clash is not None:
            raise Conflict("该账户已关联其他人员", "that user is linked to another officer")


def create_officer(session: Session, caller: Caller, agency_id: int, fields: OfficerFields) -> Officer:
    """Register an officer or auxiliary staff member in an agency (``fields`` checked with ``creating``)."""
    if session.get(Agency, agency_id) is None or not caller.may_write(agency_id):
        raise NotFound("机关不存在", "agency not found")
    values = fields.given()
    now = utcnow()
    officer = Officer(
        agency_id=agency_id,
        kind=values.pop("kind", "officer"),
        status=values.pop("status", "active"),
        created_at=now,
        updated_at=now,
        **{k: "" for k in ("enforcement_category", "issuing_body", "duties", "authority")},
    )
    for key, value in values.items():
        setattr(officer, key, value)
    _check_officer(session, officer)
    session.add(officer)
    session.flush()
    write_audit(
        session, actor=caller.user_id, action="officer.create", target_type="officer", target_id=officer.id
    )
    return officer


def get_officer(session: Session, caller: Caller, officer_id: int) -> Officer:
    """An officer the caller may see."""
    officer = session.get(Officer, officer_id)
    if officer is None or not caller.may_read(officer.agency_id):
        raise NotFound("人员不存在", "officer not found")
    return officer


def list_officers(session: Session, caller: Caller, *, agency_id: int | None = None) -> list[Officer]:
    """Officers the caller may see, optionally of one agency."""
    query = select(Officer).order_by(Officer.id)
    if not caller.reads_all:
        query = query.where(Officer.agency_id == caller.agency_id)
    if agency_id is not None:
        query = query.where(Officer.agency_id == agency_id)
    return list(session.scalars(query))


def update_officer(session: Session, caller: Caller, officer_id: int, fields: OfficerFields) -> Officer:
    """Change an officer's entry (status change to suspended/revoked takes effect on the next scan)."""
    officer = get_officer(session, caller, officer_id)
    if not caller.may_write(officer.agency_id):
        raise NotFound("人员不存在", "officer not found")
    values = fields.given()
    for key, value in values.items():
        setattr(officer, key, value)
    officer.updated_at = utcnow()
    _check_officer(session, officer)
    write_audit(
        session,
        actor=caller.user_id,
        action="officer.update",
        target_type="officer",
        target_id=officer.id,
        detail={k: str(v) for k, v in values.items()},
    )
    return officer


def set_photo(session: Session, caller: Caller, officer_id: int, data: bytes, content_type: str) -> Officer:
    """Store the officer's photo (shown on the credential and the verification page)."""
    officer = get_officer(session, caller, officer_id)
    if not caller.may_write(officer.agency_id):
        raise NotFound("人员不存在", "officer not found")
    if not data or len(data) > MAX_PHOTO_BYTES:
        raise Invalid("照片不能为空且不超过 512 KiB", "photo must be non-empty and at most 512 KiB")
    # The bytes must be the PNG or JPEG they claim to be, with a readable size: the photo is shown on
    # the public verification page, so it must never be anything a browser could run.
    content_type, _size = check_photo(data, content_type)
    officer.photo, officer.photo_type, officer.updated_at = data, content_type, utcnow()
    write_audit(
        session, actor=caller.user_id, action="officer.photo", target_type="officer", target_id=officer.id
    )
    return officer


def import_officers_csv(session: Session, caller: Caller, agency_id: int, text: str) -> list[Officer]:
    """Import officers from UTF-8 CSV with a header row; any bad row refuses the whole file."""
    if session.get(Agency, agency_id) is None or not caller.may_write(agency_id):
        raise NotFound("机关不存在", "agency not found")
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if "name" not in header or unknown:
        raise ImportRejected(
            [
                {
                    "row": 1,
                    "message": f"表头错误：未知列 {unknown} 或缺少 name",
                    "message_en": f"bad header: unknown {unknown} or no name",
                }
            ]
        )
    errors: list[dict[str, Any]] = []
    staged: list[Officer] = []
    numbers: dict[str, int] = {}
    for line, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        # A row is the same fields as a JSON body, every value text; an empty cell is no value.
        body: dict[str, Any] = {k: v for k, v in row.items() if k != "username" and v != ""}
        body.setdefault("kind", "officer")
        try:
            if row.get("username"):
                user_id = session.scalar(select(User.id).where(User.username == row["username"]))
                if user_id is None:
                    raise Invalid(f"账户 {row['username']} 不存在", f"user {row['username']} not found")
                body["user_id"] = user_id
            number = body.get("certificate_number")
            if number and number in numbers:
                raise Conflict(
                    f"执法证号与第 {numbers[number]} 行重复",
                    f"certificate number repeats row {numbers[number]}",
                )
            # OfficerFields and create_officer check before anything is added, so a bad row leaves
            # nothing behind (no SAVEPOINT: pysqlite's implicit transactions make them unreliable).
            officer = create_officer(
                session, caller, agency_id, OfficerFields.from_json(body, creating=True)
            )
            if number:
                numbers[number] = line
            staged.append(officer)
        except ServiceError as exc:
            errors.append(
                {"row": line, "code": exc.code, "message": exc.message, "message_en": exc.message_en}
            )
    if errors:
        raise ImportRejected(errors)
    if not staged:
        raise ImportRejected([{"row": 2, "message": "没有数据行", "message_en": "no data rows"}])
    return staged


def officers_by_ids(session: Session, ids: Iterable[int]) -> list[Officer]:
    """Officers with these ids, in id order."""
    wanted = sorted(set(ids))
    return (
        list(session.scalars(select(Officer).where(Officer.id.in_(wanted)).order_by(Officer.id)))
        if wanted
        else []
    )
