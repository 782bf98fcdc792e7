"""Electronic enforcement credentials: short-lived signed QR tokens and public verification (GS-10(1)).

A token is ``base64url(body || Ed25519 signature)`` with a 22-byte body::

    version (1) | officer id (uint32) | issued at (uint32 unix s) | nonce/jti (16)

so the whole QR payload (a ``/verify/<token>`` URL) stays small enough for a low-version QR code. The
server key is generated once into ``data_dir`` (0600) and its public half is published, so a third
party can verify tokens offline too.

Version 1 is a live token: valid for 60 s after ``issued at``. Version 2 is a *minute token* for the
offline credential page: issued in advance in a batch (at most 12 h), its time field is the start of the
one UTC minute it belongs to, and it verifies only inside that minute (plus the clock skew tolerance),
so the page can rotate through the batch without network while a copy of any one code still dies
within its minute.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.fleet import BOOKMARK_TTL, CommandKind
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.inputs import CaseEventInput
from server.domain.cases.models import CaseEvent
from server.domain.cases.service import record_event
from server.domain.errors import Conflict, NotFound
from server.domain.fleet.commands import create_command
from server.domain.fleet.models import DeviceAssignment
from server.domain.people.models import Agency, CredentialScan, Officer
from server.domain.people.service import Caller
from server.infra.fsmode import private_dir

__all__ = [
    "KEY_FILE",
    "MAX_BATCH_MINUTES",
    "MAX_SCANS_LISTED",
    "TOKEN_TTL",
    "CredentialCheck",
    "MinuteToken",
    "bookmark_recorder",
    "checked_out_device",
    "credential_of",
    "issue_batch",
    "issue_minute_tokens",
    "issue_token",
    "list_scans",
    "load_or_create_key",
    "log_scan",
    "minute_start",
    "public_key_document",
    "record_shown",
    "scan_to_dict",
    "status_outcome",
    "verify_by_certificate",
    "verify_token",
]

KEY_FILE = "credential-key.pem"
TOKEN_VERSION = 1
# GS-10(1) offline: a token bound to one minute window, issued ahead of time in a batch.
MINUTE_TOKEN_VERSION = 2
MINUTE = timedelta(seconds=60)
# A batch covers one shift at most: a stolen phone holds no code valid beyond it.
MAX_BATCH_MINUTES = 12 * 60
# GS-10(1): the QR changes every minute, so a photo or screenshot of it is worthless soon after.
TOKEN_TTL = timedelta(seconds=60)
# Tolerated difference between the server clocks that issue and verify (several API processes).
CLOCK_SKEW = timedelta(seconds=10)
_BODY = struct.Struct(">BII16s")
_SIG_LEN = 64
# The verification log lists the latest scans only; older ones stay in the table (GS-10(1)).
MAX_SCANS_LISTED = 500


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """Read the credential signing key, or create it once (O_EXCL, mode 0600)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        private_dir(data_dir)
        pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race; use its key
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def key_id(public: Ed25519PublicKey) -> str:
    """Short fingerprint of the public key."""
    import hashlib

    return hashlib.sha256(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def public_key_document(key: Ed25519PrivateKey) -> dict[str, Any]:
    """The published verification key as a JWK set (RFC 8037 OKP) plus the token layout."""
    public = key.public_key()
    return {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64url(public.public_bytes(Encoding.Raw, PublicFormat.Raw)),
                "kid": key_id(public),
                "use": "sig",
            }
        ],
        "token_format": "base64url(version u8 | officer_id u32be | issued_at u32be | nonce 16B || sig 64B)",
        "token_ttl_seconds": int(TOKEN_TTL.total_seconds()),
        "token_versions": {
            str(TOKEN_VERSION): "live: valid for token_ttl_seconds after issued_at",
            str(
                MINUTE_TOKEN_VERSION
            ): "offline batch: issued_at is the start of the one UTC minute it is valid in",
        },
        "clock_skew_seconds": int(CLOCK_SKEW.total_seconds()),
    }


def issue_token(key: Ed25519PrivateKey, officer_id: int, *, now: datetime | None = None) -> tuple[str, str]:
    """A fresh signed token for an officer and its id (jti)."""
    issued = int((now or utcnow()).timestamp())
    nonce = secrets.token_bytes(16)
    body = _BODY.pack(TOKEN_VERSION, officer_id, issued, nonce)
    return _b64url(body + key.sign(body)), nonce.hex()


@dataclass(frozen=True)
class MinuteToken:
    """One token of an offline batch and the minute it is valid in: ``[valid_from, valid_to)``."""

    valid_from: datetime
    valid_to: datetime
    token: str
    token_id: str


def minute_start(at: datetime) -> datetime:
    """The start of the UTC minute ``at`` falls in."""
    return datetime.fromtimestamp(int(at.timestamp()) // 60 * 60, UTC)


def issue_minute_tokens(
    key: Ed25519PrivateKey, officer_id: int, *, minutes: int, now: datetime | None = None
) -> list[MinuteToken]:
    """GS-10(1) offline: ``minutes`` signed tokens, one per UTC minute from the current one on.

    Each token names the start of its minute; :func:`verify_token` accepts it only inside that minute.
    ``minutes`` must be 1 … :data:`MAX_BATCH_MINUTES` (the caller checks its input; this is the guard).
    """
    if not 1 <= minutes <= MAX_BATCH_MINUTES:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_MINUTES} minutes, not {minutes}")
    first = minute_start(now or utcnow())
    out: list[MinuteToken] = []
    for index in range(minutes):
        start = first + index * MINUTE
        nonce = secrets.token_bytes(16)
        body = _BODY.pack(MINUTE_TOKEN_VERSION, officer_id, int(start.timestamp()), nonce)
        out.append(MinuteToken(start, start + MINUTE, _b64url(body + key.sign(body)), nonce.hex()))
    return out


def issue_batch(
    session: Session,
    key: Ed25519PrivateKey,
    officer: Officer,
    *,
    minutes: int,
    actor: str,
    now: datetime | None = None,
) -> list[MinuteToken]:
    """The officer's offline batch (GS-10(1)), audited: who took how many minutes of codes, from when.

    Only the officer's own batch: the caller resolved ``officer`` from its own login account.
    """
    tokens = issue_minute_tokens(key, officer.id, minutes=minutes, now=now)
    write_audit(
        session,
        actor=actor,
        action="credential.batch_issued",
        target_type="officer",
        target_id=officer.id,
        detail={
            "minutes": minutes,
            "valid_from": tokens[0].valid_from.isoformat(),
            "valid_to": tokens[-1].valid_to.isoformat(),
        },
    )
    return tokens


@dataclass(frozen=True)
class CredentialCheck:
    """What a verification found: outcome, the officer (when known) and the token id."""

    outcome: str  # valid | expired | not_yet_valid | suspended | revoked | forged | replayed | not_found
    officer: Officer | None = None
    agency: Agency | None = None
    token_id: str | None = None
    issued_at: datetime | None = None

    @property
    def valid(self) -> bool:
        """Whether the credential is good right now."""
        return self.outcome == "valid"


def status_outcome(officer: Officer, today: date) -> str:
    """GS-9(2): a credential is valid only while active and within its validity dates."""
    if officer.status in ("suspended", "revoked"):
        return officer.status
    if officer.valid_from is not None and today < officer.valid_from:
        return "not_yet_valid"
    if officer.valid_to is not None and today > officer.valid_to:
        return "expired"
    return "valid"


def _decode(token: str) -> tuple[bytes, bytes] | None:
    if not 0 < len(token) <= 200:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _BODY.size + _SIG_LEN:
        return None
    return raw[: _BODY.size], raw[_BODY.size :]


def verify_token(
    session: Session, key: Ed25519PrivateKey, token: str, *, now: datetime | None = None
) -> CredentialCheck:
    """Check a QR token: signature (forged), age (replayed), then the officer's status and validity."""
    now = now or utcnow()
    parts = _decode(token)
    if parts is None:
        return CredentialCheck("forged")
    body, signature = parts
    try:
        key.public_key().verify(signature, body)
    except InvalidSignature:
        return CredentialCheck("forged")
    version, officer_id, issued, nonce = _BODY.unpack(body)
    issued_at = datetime.fromtimestamp(issued, UTC)
    if version not in (TOKEN_VERSION, MINUTE_TOKEN_VERSION):
        return CredentialCheck("forged", token_id=nonce.hex())
    if version == MINUTE_TOKEN_VERSION and issued % 60:
        return CredentialCheck("forged", token_id=nonce.hex())  # we sign minute starts only
    if version == TOKEN_VERSION and issued_at > now + CLOCK_SKEW:
        return CredentialCheck("forged", token_id=nonce.hex())
    officer = session.get(Officer, officer_id)
    if officer is None:
        return CredentialCheck("forged", token_id=nonce.hex())
    agency = session.get(Agency, officer.agency_id)
    if version == MINUTE_TOKEN_VERSION:
        # GS-10(1) offline: valid inside its own minute only. A code of a later minute shown now was
        # taken out of a batch (a copied phone); one of an earlier minute is a screenshot. Neither is
        # the live display.
        if not issued_at - CLOCK_SKEW <= now < issued_at + MINUTE + CLOCK_SKEW:
            return CredentialCheck("replayed", officer, agency, nonce.hex(), issued_at)
    elif now - issued_at > TOKEN_TTL + CLOCK_SKEW:
        # A genuine code shown again after its minute: a screenshot or a copy, not the live display.
        return CredentialCheck("replayed", officer, agency, nonce.hex(), issued_at)
    return CredentialCheck(status_outcome(officer, now.date()), officer, agency, nonce.hex(), issued_at)


def verify_by_certificate(session: Session, number: str, *, now: datetime | None = None) -> CredentialCheck:
    """Look a certificate number up (GS-9(2) publishes it); a static check, no liveness."""
    number = number.strip()[:64]
    officer = session.scalar(select(Officer).where(Officer.certificate_number == number)) if number else None
    if officer is None:
        return CredentialCheck("not_found")
    agency = session.get(Agency, officer.agency_id)
    return CredentialCheck(status_outcome(officer, (now or utcnow()).date()), officer, agency)


def user_agent_family(user_agent: str) -> str:
    """A coarse browser family: enough for statistics, too little to identify anyone."""
    ua = user_agent.lower()
    for needle, family in (
        ("micromessenger", "wechat"),
        ("alipay", "alipay"),
        ("headlesschrome", "headless"),
        ("edg/", "edge"),
        ("firefox", "firefox"),
        ("chrome", "chrome"),
        ("safari", "safari"),
        ("curl", "curl"),
    ):
        if needle in ua:
            return family
    return "other"


def truncate_ip(address: str | None) -> str | None:
    """IPv4 truncated to /24, IPv6 to /48 (personal data kept coarse)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def log_scan(
    session: Session, check: CredentialCheck, *, method: str, user_agent: str, client_ip: str | None
) -> CredentialScan:
    """Record one verification (GS-10(1)): when, whose credential, outcome, coarse client."""
    scan = CredentialScan(
        at=utcnow(),
        officer_id=check.officer.id if check.officer else None,
        method=method,
        outcome=check.outcome,
        token_id=check.token_id,
        user_agent_family=user_agent_family(user_agent),
        ip_prefix=truncate_ip(client_ip),
    )
    session.add(scan)
    session.flush()
    return scan


def officer_for_user(session: Session, user_id: int) -> Officer:
    """The registry entry linked to a login account."""
    officer = session.scalar(select(Officer).where(Officer.user_id == user_id))
    if officer is None:
        raise NotFound("该账户未关联执法人员信息", "no officer is linked to this account")
    return officer


def credential_of(session: Session, officer: Officer) -> dict[str, Any]:
    """The officer's credential with the name of their agency (GS-9(2), GS-10(1))."""
    return credential_dict(officer, session.get(Agency, officer.agency_id))


def credential_dict(officer: Officer, agency: Agency | None) -> dict[str, Any]:
    """What the credential shows (GS-9(2), GS-10(1))."""
    return {
        "officer_id": officer.id,
        "kind": officer.kind,
        "name": officer.name,
        "unit": agency.name if agency else "",
        "enforcement_category": officer.enforcement_category,
        "certificate_number": officer.certificate_number,
        "issuing_body": officer.issuing_body,
        "valid_from": officer.valid_from.isoformat() if officer.valid_from else None,
        "valid_to": officer.valid_to.isoformat() if officer.valid_to else None,
        "status": officer.status,
        "duties": officer.duties,
        "authority": officer.authority,
    }


def photo_data_uri(officer: Officer) -> str | None:
    """The photo as a data: URI for server-rendered pages (no extra public photo URL to enumerate)."""
    if officer.photo is None or officer.photo_type is None:
        return None
    return f"data:{officer.photo_type};base64,{base64.b64encode(officer.photo).decode('ascii')}"


def checked_out_device(session: Session, user_id: int) -> str | None:
    """The device currently checked out to a login account (the latest open check-out), if any."""
    return session.scalar(
        select(DeviceAssignment.device_id)
        .where(DeviceAssignment.user_id == user_id, DeviceAssignment.checked_in_at.is_(None))
        .order_by(DeviceAssignment.checked_out_at.desc(), DeviceAssignment.id.desc())
        .limit(1)
    )


def bookmark_recorder(
    session: Session, officer: Officer, *, event_id: int, case_id: int | None, actor: str
) -> tuple[dict[str, Any] | None, str | None]:
    """JL-8(1), JL-15: ask the officer's paired recorder to bookmark the credential being shown.

    Returns ``({device_id, command_id, state}, None)`` when a ``bookmark`` command was queued, else
    ``(None, reason)``: ``no_device_assigned`` or ``device_unavailable`` (revoked or retired device).
    """
    device_id = checked_out_device(session, officer.user_id) if officer.user_id is not None else None
    bookmark: dict[str, Any] | None = None
    reason: str | None = "no_device_assigned"
    if device_id is not None:
        params: dict[str, Any] = {
            "bookmark_type": "credential_shown",
            "note": f"出示执法证件 {officer.certificate_number or ''}".strip(),
            "case_id": case_id,
        }
        try:
            row = create_command(
                session, device_id, CommandKind.BOOKMARK.value, params=params, ttl=BOOKMARK_TTL, actor=actor
            )
        except Conflict:
            reason = "device_unavailable"
        else:
            bookmark, reason = {"device_id": device_id, "command_id": row.id, "state": row.state}, None
    write_audit(
        session,
        actor=actor,
        action="credential.recorder_bookmark",
        target_type="case_event",
        target_id=event_id,
        detail={"officer_id": officer.id, "device_id": device_id, "bookmark": bookmark, "reason": reason},
    )
    return bookmark, reason


def record_shown(
    session: Session, caller: Caller, officer: Officer, *, case_id: int | None, place: str
) -> tuple[CaseEvent, dict[str, Any] | None, str | None]:
    """JL-8(1): record ``investigation.credential_shown`` and have the paired recorder bookmark it.

    Returns the event and what ``bookmark_recorder`` answered (JL-15).
    """
    shown = CaseEventInput(
        event_type="investigation.credential_shown",
        officer_ids=(officer.id,),
        place=place,
        text=f"{officer.name} 出示执法证件 {officer.certificate_number or ''}".strip(),
        data={"certificate_number": officer.certificate_number},
    )
    event = record_event(session, caller, case_id, shown, source="mobile")
    bookmark, reason = bookmark_recorder(
        session, officer, event_id=event.id, case_id=event.case_id, actor=caller.user_id
    )
    return event, bookmark, reason


def list_scans(
    session: Session, caller: Caller, *, officer_id: int | None = None, limit: int = MAX_SCANS_LISTED
) -> list[CredentialScan]:
    """The latest scans of credentials the caller may see, newest first (GS-10(1), JL-20).

    A caller bound to an agency sees the scans of that agency's officers only; a cross-agency reader
    (supervisor, auditor, system_admin) sees all of them.
    """
    query = select(CredentialScan).order_by(CredentialScan.id.desc()).limit(limit)
    if officer_id is not None:
        query = query.where(CredentialScan.officer_id == officer_id)
    if not caller.reads_all:
        mine = select(Officer.id).where(Officer.agency_id == caller.agency_id)
        query = query.where(CredentialScan.officer_id.in_(mine))
    return list(session.scalars(query))


def scan_to_dict(scan: CredentialScan) -> dict[str, Any]:
    """One verification as the log shows it: no token, no full address (GS-10(1))."""
    return {
        "id": scan.id,
        "at": scan.at.isoformat(),
        "officer_id": scan.officer_id,
        "method": scan.method,
        "outcome": scan.outcome,
        "user_agent_family": scan.user_agent_family,
        "ip_prefix": scan.ip_prefix,
    }
