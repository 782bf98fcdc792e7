"""Agency scope at the edge of evidence views: who is asking, and an audit row for refused look-ups."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from server.domain.errors import NotFound
from server.domain.scope import OutOfScope
from server.http.context import audit_request, caller
from server.infra.db import session_scope

__all__ = ["audit_refusal", "caller"]


@contextmanager
def audit_refusal(action: str, target_type: str, target_id: str | int) -> Iterator[None]:
    """Audit a look-up that answered 404, in its own transaction, then let the 404 go out.

    Enter it *outside* the view's ``session_scope`` so the view's transaction is rolled back first.
    The audit row says whether the object was missing or of another agency (JL-20); the caller sees
    the same 404 either way.
    """
    try:
        yield
    except NotFound as exc:
        refused = "out_of_scope" if isinstance(exc, OutOfScope) else "not_found"
        with session_scope() as session:
            audit_request(session, action, target_type, target_id, detail={"refused": refused})
        raise
