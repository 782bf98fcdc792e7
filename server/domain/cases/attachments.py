"""Attachments of case events: documents, photos and signed pages, sniffed before they are stored (JL-2)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.models import CaseAttachment, CaseEvent
from server.domain.cases.service import get_case
from server.domain.errors import Invalid, NotFound
from server.domain.people.service import Caller
from server.domain.sniff import ATTACHMENT_TYPES, check_attachment
from server.infra.storage import ObjectStore

__all__ = ["ATTACHMENT_KINDS", "MAX_ATTACHMENT_BYTES", "add_attachment", "get_attachment", "served_type"]


ATTACHMENT_KINDS: tuple[str, ...] = ("document", "photo", "signed_page", "other")

MAX_ATTACHMENT_BYTES = 1024 * 1024


def add_attachment(
    session: Session,
    store: ObjectStore,
    caller: Caller,
    case_id: int,
    event_id: int,
    data: bytes,
    *,
    name: str,
    content_type: str,
    kind: str,
    signed_by_party: bool,
) -> CaseAttachment:
    """Store a document, photo or signed page (JL-11) write-once by sha256 and attach it to an event."""
    case = get_case(session, caller, case_id)
    event = session.get(CaseEvent, event_id)
    if event is None or event.case_id != case.id or not caller.may_write(case.agency_id):
        raise NotFound("事件不存在", "event not found")
    if kind not in ATTACHMENT_KINDS:
        raise Invalid(
            f"kind 只能是 {'/'.join(ATTACHMENT_KINDS)}", f"kind must be one of {', '.join(ATTACHMENT_KINDS)}"
        )
    if not data or len(data) > MAX_ATTACHMENT_BYTES:
        raise Invalid("附件不能为空且不超过 1 MiB", "attachment must be non-empty and at most 1 MiB")
    # The declared type must be an evidence type and the bytes must be that type (no HTML, no script).
    content_type = check_attachment(data, content_type)
    name = (name or "attachment").strip()[:200]
    sha256 = hashlib.sha256(data).hexdigest()
    key = f"case-attachments/{sha256[:2]}/{sha256}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob"
        path.write_bytes(data)
        store.put_file(key, path, sha256)
    attachment = CaseAttachment(
        event_id=event.id,
        kind=kind,
        name=name,
        content_type=content_type,
        size=len(data),
        sha256=sha256,
        object_key=key,
        signed_by_party=signed_by_party,
        uploaded_by=caller.user_id,
        uploaded_at=utcnow(),
    )
    session.add(attachment)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="case.attachment",
        target_type="case_attachment",
        target_id=attachment.id,
    )
    return attachment


def served_type(content_type: str) -> str:
    """The type an attachment is served as: its own if on the allow-list, else octet-stream."""
    return content_type if content_type in ATTACHMENT_TYPES else "application/octet-stream"


def get_attachment(session: Session, caller: Caller, case_id: int, attachment_id: int) -> CaseAttachment:
    """An attachment of a case the caller may see."""
    case = get_case(session, caller, case_id)
    attachment = session.get(CaseAttachment, attachment_id)
    event = session.get(CaseEvent, attachment.event_id) if attachment else None
    if attachment is None or event is None or event.case_id != case.id:
        raise NotFound("附件不存在", "attachment not found")
    return attachment
