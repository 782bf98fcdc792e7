"""Sessions: the list with verdicts, and the session page (timeline, player, markers, explanations)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.cases import queries as case_queries
from server.domain.errors import ServiceError
from server.domain.evidence import queries as recording_queries
from server.domain.governance import access
from server.domain.sessions import explanations as explanation_service
from server.domain.sessions import service as session_service
from server.http.context import caller, client_ip
from server.http.pages.workspace.core import audit_view, back, bp, message_of, render, t, workspace_view
from server.http.scope import audit_refusal
from server.infra.db import session_scope

if TYPE_CHECKING:
    from server.domain.evidence.models import Recording

__all__ = ["TIMELINE_WIDTH", "cosign", "file", "session_page", "sessions"]

# The timeline is an SVG in these user units (it scales to the page width).
TIMELINE_WIDTH = 1000.0
_FILTERS = ("verdict", "device_id", "officer_id", "date_from", "date_to")


@bp.get("/sessions")
@workspace_view("sessions.list_sessions")
def sessions() -> ResponseReturnValue:
    """Sessions newest first, filtered by verdict, device, officer and date (audited like the API list)."""
    filters = {name: request.args.get(name) or None for name in _FILTERS}
    before = request.args.get("before", type=int)
    with session_scope() as session:
        items, next_cursor = session_service.list_sessions(
            session, limit=50, before=before, scope=caller(), **filters
        )
        audit_view(session, "session.list", "session", None, **filters, count=len(items))
    return render(
        "sessions.html",
        items=items,
        filters=filters,
        next_cursor=next_cursor,
        verdicts=session_service.VERDICTS,
    )


@dataclass
class _Geometry:
    """Maps instants to seconds from the session's start and to timeline x positions."""

    origin: datetime
    total_s: float

    def seconds(self, value: str | datetime | None) -> float:
        """Seconds from the start of the session."""
        if value is None:
            return 0.0
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return round((moment - self.origin).total_seconds(), 3)

    def x(self, value: str | datetime | None) -> float:
        """Timeline position of an instant, clamped to the drawing."""
        share = self.seconds(value) / self.total_s if self.total_s > 0 else 0.0
        return round(min(max(share, 0.0), 1.0) * TIMELINE_WIDTH, 2)

    def width(self, start: str, end: str) -> float:
        """Timeline width of an interval (at least a hair, so a short gap stays visible)."""
        return max(round(self.x(end) - self.x(start), 2), 1.0)


def _geometry(tl: dict[str, Any], recordings: list[Recording]) -> _Geometry:
    instants = [datetime.fromisoformat(v) for v in (tl["started_at"], tl["ended_at"]) if v]
    for item in (*tl["spans"], *tl["gaps"]):
        instants += [datetime.fromisoformat(item["start"]), datetime.fromisoformat(item["end"])]
    instants += [r.started_at for r in recordings] + [r.ended_at for r in recordings]
    if not instants:
        now = datetime.now().astimezone()
        return _Geometry(now, 0.0)
    origin = datetime.fromisoformat(tl["started_at"]) if tl["started_at"] else min(instants)
    return _Geometry(origin, max(0.0, (max(instants) - origin).total_seconds()))


@bp.get("/sessions/<int:session_id>")
@workspace_view("sessions.get_timeline")
def session_page(session_id: int) -> ResponseReturnValue:
    """Timeline with spans, gaps, markers, clips, bookmarks and the verdict; the player (audited)."""
    with audit_refusal("session.timeline", "session", session_id), session_scope() as session:
        record = session_service.get_session(session, session_id, scope=caller())
        tl = session_service.timeline(
            session, record, lambda rid: url_for("workspace.media", recording_id=rid), viewer=caller()
        )
        recordings = recording_queries.session_recordings(session, record.device_id, record.session_id)
        audit_view(session, "session.timeline", "session", session_id, verdict=tl["verdict"])
        # The case the recorder named at the start (its number), if the caller may read it (JL-20).
        case_link = case_queries.readable_case_id(session, caller(), tl["case_id"])
        geometry = _geometry(tl, recordings)
        # JL-20: a segment beyond the caller's view keeps its place and times on the timeline (JL-16: it is
        # recorded, not a gap) but shows neither its details nor a link; the timeline already withheld its
        # explanation clips and ids (session_service.withhold).
        shown = access.viewable_ids(session, caller(), recordings)
        segments = [
            {
                "id": r.id,
                "sequence": r.sequence,
                "url": url_for("workspace.media", recording_id=r.id),
                "start_s": geometry.seconds(r.started_at),
                "duration_s": round((r.ended_at - r.started_at).total_seconds(), 3),
                "started_at": r.started_at,
                "ended_at": r.ended_at,
                "size": r.size,
                "kind": r.kind,
                "hidden": False,
            }
            if r.id in shown
            else {
                "sequence": r.sequence,
                "start_s": geometry.seconds(r.started_at),
                "duration_s": round((r.ended_at - r.started_at).total_seconds(), 3),
                "started_at": r.started_at,
                "ended_at": r.ended_at,
                "hidden": True,
            }
            # Spoken explanation clips are recorded media of the session too: played in their place.
            for r in recordings
        ]
    open_markers = [m for m in tl["markers"] if m["status"] in ("unexplained", "open")]
    return render(
        "session.html",
        tl=tl,
        geo=geometry,
        segments=segments,
        open_markers=open_markers,
        width=TIMELINE_WIDTH,
        session_id=session_id,
        max_chars=explanation_service.MAX_EXPLANATION_CHARS,
        case_link=case_link,
    )


def _session_url(session_id: int) -> str:
    return url_for("workspace.session_page", session_id=session_id) + "#explanations"


@bp.post("/sessions/<int:session_id>/explanations")
@workspace_view("sessions.file_explanation")
def file(session_id: int) -> ResponseReturnValue:
    """File a written explanation signed by the filer (JL-16), with the API's rules and error codes."""
    user_id = int(caller().user_id)
    try:
        with audit_refusal("session.explanation_file", "session", session_id), session_scope() as session:
            record = session_service.get_session(session, session_id, scope=caller())
            explanation_service.file_explanation(
                session,
                record,
                user_id=user_id,
                text=request.form.get("text", ""),
                marker_id=request.form.get("marker_id") or None,
                client_ip=client_ip(),
            )
    except ServiceError as exc:
        if exc.kind == "not_found" and "marker" not in exc.message_en:
            raise
        return back(_session_url(session_id), "error", message_of(exc))
    return back(_session_url(session_id), "ok", t()["filed"])


@bp.post("/sessions/<int:session_id>/explanations/<int:explanation_id>/sign")
@workspace_view("sessions.sign_explanation")
def cosign(session_id: int, explanation_id: int) -> ResponseReturnValue:
    """Co-sign a written explanation as the logged-in officer; the same officer twice is refused."""
    user_id = int(caller().user_id)
    try:
        with audit_refusal("session.explanation_sign", "session", session_id), session_scope() as session:
            record = session_service.get_session(session, session_id, scope=caller())
            explanation_service.sign_explanation(
                session, record, explanation_id, user_id=user_id, client_ip=client_ip()
            )
    except ServiceError as exc:
        if exc.kind == "not_found" and "explanation" not in exc.message_en:
            raise
        return back(_session_url(session_id), "error", message_of(exc))
    return back(_session_url(session_id), "ok", t()["signed"])
