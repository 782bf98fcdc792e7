"""Enforcement sessions on the recorder (JL-16 continuous recording, JL-15 bookmarks).

:class:`SessionController` drives ``protocol.session.EnforcementSession``. Every transition becomes a
signed :class:`~protocol.session.SessionEvent` that is journalled in the outbox (SQLite, append-only,
one transaction) **before** it is published, and published again every ``session_event_retry_s``
(and on each reconnect) until the server's ``EventAck`` says stored or duplicate.

The running agent is driven by ``zfjl-agent session …`` through a command spool in
``<data_dir>/control/``: the CLI writes ``<id>.req.json`` atomically, the agent's ``session`` thread
answers with ``<id>.reply.json``. A spool needs no socket path limits or permissions beyond the data
folder, survives an agent restart, and an unanswered request simply times out in the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config import AgentConfig
from edge_agent.errors import AgentError
from edge_agent.outbox import Outbox
from edge_agent.prompts import Prompt, Prompter, PromptKind
from protocol.errors import ProtocolError
from protocol.session import (
    BOOKMARK_TYPES,
    DECLARED_CAUSES,
    EnforcementSession,
    EventAck,
    EventAckState,
    SessionEvent,
    SessionEventKind,
    SessionState,
    SignedSessionEvent,
)

__all__ = [
    "EventLink",
    "SegmentTag",
    "SessionCommandError",
    "SessionController",
    "audio_rms",
    "send_control_command",
]

logger = logging.getLogger(__name__)

_STEP_S = 0.1
_CONTROL_DIR = "control"


class SessionCommandError(AgentError):
    """A session command that cannot be done now (e.g. ending when no session is open)."""


class EventLink(Protocol):
    """What the controller needs from the MQTT connection (``MqttLink`` fits)."""

    @property
    def connected(self) -> bool: ...

    def publish_session_event(self, signed: SignedSessionEvent) -> bool: ...


class RollableRecorder(Protocol):
    """What the controller needs from the recorder."""

    segment_seconds: float

    def request_roll(self, at_mono_ns: int | None = None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class SegmentTag:
    """What a segment file is, decided when it opens: session segment, explanation clip or idle piece."""

    session_id: str = ""
    kind: str = "segment"  # "segment", "explanation" or "idle"
    marker_id: str = ""


def _new_id(prefix: str) -> str:
    return f"{prefix}{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


def audio_rms(path: Path) -> float | None:
    """RMS (full scale = 1) of a media file's audio track, or None if it has none."""
    import av
    import numpy as np

    total = 0.0
    count = 0
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        for frame in container.decode(audio=0):
            samples = frame.to_ndarray().astype(np.float64)
            total += float((samples**2).sum())
            count += samples.size
    return (total / count) ** 0.5 if count else 0.0


class SessionController:
    """Opens, interrupts, resumes and ends sessions; journals, signs and delivers their events."""

    def __init__(
        self,
        config: AgentConfig,
        outbox: Outbox,
        private_key: Ed25519PrivateKey,
        prompter: Prompter,
        *,
        link: EventLink | None = None,
        segment_seconds: float | None = None,
    ) -> None:
        """Wire collaborators; :meth:`start` runs the worker thread."""
        self.config = config
        self.outbox = outbox
        self.private_key = private_key
        self.prompter = prompter
        self.link = link
        self.segment_seconds = segment_seconds or config.segment_seconds
        self.recorder: RollableRecorder | None = None
        self.machine: EnforcementSession | None = None
        self.officer_id = config.officer_id
        self.case_id = ""
        self.session_started_mono_ns = 0
        self._lock = threading.RLock()
        self._acks: queue.SimpleQueue[EventAck] = queue.SimpleQueue()
        self._sent_at: dict[str, float] = {}
        self._tags: dict[Path, SegmentTag] = {}
        self._conditions: set[str] = set()  # automatic causes now active (JL-16)
        self._declared = False  # the open marker was declared by the officer
        self._explanation_wanted = ""  # marker whose clip starts with the next segment
        self._explanation_open: tuple[Path, str, float] | None = None
        self._skipped: set[str] = set()
        # The last ended session and the capture time of its end: files whose first frame came
        # before it are that session's, even when the recorder opens them after the end (JL-16).
        self._last_ended: tuple[str, int] = ("", 0)
        # Session whose pre-record (idle_recording = prebuffer) is still to be journalled, or "".
        self.prebuffer_flush_pending = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.control_dir = config.data_dir / _CONTROL_DIR

    # -- lifecycle ------------------------------------------------------------------------------

    def attach_recorder(self, recorder: RollableRecorder) -> None:
        """The recorder whose segments the sessions cut and whose writing interruptions pause."""
        self.recorder = recorder
        self._apply_idle_segment_length()

    def start(self) -> None:
        """Start the ``session`` thread (event delivery, clip timing, control spool)."""
        self.control_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="session", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; unacknowledged events stay in the outbox for the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """State of the current (or last) session; IDLE if none."""
        machine = self.machine
        return SessionState.IDLE if machine is None else machine.state

    @property
    def session_id(self) -> str:
        """Id of the open session, or ''."""
        machine = self.machine
        if machine is None or machine.state not in (SessionState.RECORDING, SessionState.INTERRUPTED):
            return ""
        return machine.session_id

    @property
    def open_marker(self) -> str:
        """The interruption marker open now, or ''."""
        machine = self.machine
        return "" if machine is None else machine.open_marker

    # -- events ---------------------------------------------------------------------------------

    def _emit(
        self,
        kind: SessionEventKind,
        *,
        at: datetime | None = None,
        mono_ns: int | None = None,
        **fields: Any,
    ) -> SignedSessionEvent:
        """Build, sign, journal (before publishing) and apply one event."""
        with self._lock:
            machine = self.machine
            if machine is None or not machine.can_apply(kind):
                state = "idle" if machine is None else machine.state.value
                raise SessionCommandError(f"cannot {kind.value}: the session is {state}")
            moment = at or datetime.now(UTC)
            mono = time.monotonic_ns() if mono_ns is None else mono_ns

            session_id = machine.session_id

            def build(seq: int) -> SessionEvent:
                return SessionEvent(
                    event_id=uuid.uuid4().hex,
                    device_id=self.config.device_id,
                    session_id=session_id,
                    kind=kind,
                    at=moment,
                    mono_ns=max(0, mono),
                    seq=seq,
                    officer_id=self.officer_id,
                    case_id=self.case_id,
                    **fields,
                )

            signed = self.outbox.add_session_event(build, self.private_key)
            machine.apply(signed.event)
        self._publish(signed)
        return signed

    def _publish(self, signed: SignedSessionEvent) -> None:
        link = self.link
        if link is None or not link.connected:
            return
        if link.publish_session_event(signed):
            self._sent_at[signed.event.event_id] = time.monotonic()

    def on_ack(self, ack: EventAck) -> None:
        """Queue a server ack (paho's network thread)."""
        self._acks.put(ack)

    def on_connected(self) -> None:
        """Resend everything unacknowledged right away (paho's network thread)."""
        self._sent_at.clear()

    def _apply_acks(self) -> None:
        while True:
            try:
                ack = self._acks.get_nowait()
            except queue.Empty:
                return
            if ack.state is EventAckState.REJECTED:
                # Kept forever and reported: the server refused a signed fact (e.g. unknown device).
                logger.error("session event %s rejected: %s %s", ack.event_id, ack.code, ack.message)
            if self.outbox.mark_session_event_acked(ack.event_id, ack.state.value, ack.code):
                logger.info("session event %s %s by the server", ack.event_id, ack.state.value)
            self._sent_at.pop(ack.event_id, None)

    def _resend_due(self) -> None:
        link = self.link
        if link is None or not link.connected:
            return
        now = time.monotonic()
        for signed in self.outbox.unacked_session_events():
            sent = self._sent_at.get(signed.event.event_id)
            if sent is None or now - sent >= self.config.session_event_retry_s:
                self._publish(signed)

    # -- officer commands -----------------------------------------------------------------------

    def begin(self, *, officer_id: str = "", case_id: str = "", note: str = "") -> str:
        """Arrival: open a session and cut a segment boundary (JL-16); return the session id."""
        with self._lock:
            if self.session_id:
                raise SessionCommandError(f"session {self.session_id} is already open")
            self.machine = EnforcementSession(session_id=_new_id("s-"))
            self.officer_id = officer_id or self.config.officer_id
            self.case_id = case_id
            self.session_started_mono_ns = time.monotonic_ns()
            self._conditions.clear()
            self._declared = False
            try:
                self._emit(SessionEventKind.STARTED, note=note)
            except BaseException:
                self.machine = None
                raise
            if self.config.idle_recording == "prebuffer":
                self.prebuffer_flush_pending = self.machine.session_id
            if self.recorder is not None:
                self.recorder.segment_seconds = self.segment_seconds
                self.recorder.request_roll()
            session_id = self.machine.session_id
        self._show(PromptKind.INFO, f"session {session_id} started")
        return session_id

    def finish(self, *, note: str = "") -> str:
        """End the session (also while interrupted: then JL-16 needs a written explanation)."""
        with self._lock:
            session_id = self.session_id
            if not session_id:
                raise SessionCommandError("no session is open")
            was_interrupted = self.state is SessionState.INTERRUPTED
            ended = self._emit(SessionEventKind.ENDED, note=note)
            self._last_ended = (session_id, ended.event.mono_ns)
            self._conditions.clear()
            if self.recorder is not None:
                if self._declared:
                    self.recorder.resume_writing()
                # Frames captured before the end but read late stay in the session (recorder.py).
                self.recorder.request_roll(at_mono_ns=ended.event.mono_ns)
            self._declared = False
            self._apply_idle_segment_length()
        if was_interrupted:
            self._show(
                PromptKind.INFO,
                "session ended while interrupted: a written explanation signed by two officers is "
                "required (JL-16)",
            )
        else:
            self._show(PromptKind.INFO, f"session {session_id} ended")
        return session_id

    def remote(self, action: str, params: dict[str, str]) -> str:
        """Start or end a session on the backend's command (JL-16): the same rules as the button."""
        if action == "start":
            return self.begin(
                officer_id=params.get("officer_id", ""),
                case_id=params.get("case_id", ""),
                note=params.get("note", ""),
            )
        if action == "end":
            return self.finish(note=params.get("note", ""))
        raise SessionCommandError(f"unknown session action {action!r}")

    def bookmark(self, bookmark_type: str, note: str = "") -> str:
        """Tag this moment (JL-15); return the event id."""
        if bookmark_type not in BOOKMARK_TYPES:
            raise SessionCommandError(f"bookmark type must be one of {', '.join(sorted(BOOKMARK_TYPES))}")
        signed = self._emit(SessionEventKind.BOOKMARK, bookmark_type=bookmark_type, note=note)
        self._show(PromptKind.INFO, f"bookmark {bookmark_type}")
        return signed.event.event_id

    def declare_interruption(self, cause: str, note: str = "") -> str:
        """The officer stops recording for a declared reason (JL-16); return the marker id."""
        if cause not in DECLARED_CAUSES:
            raise SessionCommandError(f"reason must be one of {', '.join(sorted(DECLARED_CAUSES))}")
        with self._lock:
            if self.state is not SessionState.RECORDING:
                raise SessionCommandError(f"cannot interrupt: the session is {self.state.value}")
            marker = self._interrupt(cause, automatic=False, note=note)
            self._declared = True
            if self.recorder is not None:
                self.recorder.pause_writing()
        return marker

    def declared_resume(self) -> str:
        """The officer resumes after a declared interruption; return the marker id."""
        with self._lock:
            if not self._declared:
                raise SessionCommandError("no officer-declared interruption is open")
            self._declared = False
            marker = self.open_marker
            if not self._conditions:
                self._resume()
            # Only now: the clip is asked for (JL-16), so the first file after the pause is the clip. Writing
            # earlier let the recorder open a file while RESUMED was being journalled, and the clip's own
            # cut then closed that file after one frame.
            if self.recorder is not None:
                self.recorder.resume_writing()
        return marker

    def skip_explanation(self) -> str:
        """The officer gives no spoken reason for the last marker (JL-16: shown as unexplained)."""
        with self._lock:
            if self._explanation_open is not None:
                marker = self._explanation_open[1]
                self._skipped.add(marker)
                if self.recorder is not None:
                    self.recorder.request_roll()
                return marker
            if self._explanation_wanted:
                marker, self._explanation_wanted = self._explanation_wanted, ""
                self._missing(marker)
                return marker
        raise SessionCommandError("no explanation is being recorded")

    # -- automatic interruptions (edge_agent.interruptions) -------------------------------------

    def condition_started(
        self, cause: str, *, at: datetime | None = None, mono_ns: int | None = None, note: str = ""
    ) -> str:
        """A detected fault began; open a marker if recording (return it, or '' if none opened)."""
        with self._lock:
            if cause in self._conditions:
                return ""
            self._conditions.add(cause)
            if self.state is not SessionState.RECORDING:
                return ""
            return self._interrupt(cause, automatic=True, note=note, at=at, mono_ns=mono_ns)

    def condition_cleared(self, cause: str) -> None:
        """A detected fault ended; resume when nothing else keeps the session interrupted."""
        with self._lock:
            if cause not in self._conditions:
                return
            self._conditions.discard(cause)
            if not self._conditions and not self._declared and self.state is SessionState.INTERRUPTED:
                self._resume()

    def _interrupt(
        self,
        cause: str,
        *,
        automatic: bool,
        note: str = "",
        at: datetime | None = None,
        mono_ns: int | None = None,
    ) -> str:
        marker = _new_id("m-")
        self._emit(
            SessionEventKind.INTERRUPTED,
            at=at,
            mono_ns=mono_ns,
            marker_id=marker,
            cause=cause,
            automatic=automatic,
            note=note,
        )
        logger.warning("recording interrupted (%s), marker %s", cause, marker)
        self._show(PromptKind.INTERRUPTED, f"recording interrupted: {cause}", marker)
        return marker

    def _resume(self) -> None:
        marker = self.open_marker
        self._emit(SessionEventKind.RESUMED, marker_id=marker)
        logger.warning("recording resumed after marker %s", marker)
        # JL-16: on resuming, the officer states the reason by voice; the next segment is that clip.
        self._explanation_wanted = marker
        if self.recorder is not None:
            self.recorder.request_roll()
        self._show(
            PromptKind.EXPLAIN,
            f"recording resumed: say why it was interrupted ({self.config.explanation_seconds:.0f} s)",
            marker,
        )

    def _missing(self, marker: str) -> None:
        try:
            self._emit(SessionEventKind.EXPLANATION_MISSING, marker_id=marker)
        except SessionCommandError as exc:
            logger.error("cannot record the missing explanation of %s: %s", marker, exc)
            return
        logger.warning("no spoken explanation for marker %s", marker)

    # -- crash / power loss recovery ------------------------------------------------------------

    def recover(self) -> str:
        """At start-up: a session left open means the device died; mark the gap and resume (JL-16)."""
        session_id = self.outbox.open_session_id()
        if session_id is None:
            return ""
        machine = EnforcementSession(session_id=session_id)
        last_at: datetime | None = None
        for signed in self.outbox.session_events(session_id):
            try:
                machine.apply(signed.event)
            except ProtocolError as exc:
                logger.error("journalled session event %s does not apply: %s", signed.event.event_id, exc)
            last_at = signed.event.at
            self.officer_id = signed.event.officer_id or self.officer_id
            self.case_id = signed.event.case_id
        with self._lock:
            self.machine = machine
            self.session_started_mono_ns = time.monotonic_ns()
            ends = [t for t in (self.outbox.last_segment_end(), last_at) if t is not None]
            gap_start = max(ends) if ends else datetime.now(UTC)
            gap_s = (datetime.now(UTC) - gap_start).total_seconds()
            if machine.state is SessionState.RECORDING:
                self._interrupt(
                    "power_loss",
                    automatic=True,
                    note=f"agent restarted; nothing recorded for {gap_s:.1f} s",
                    at=gap_start,
                    mono_ns=0,
                )
            if machine.state is SessionState.INTERRUPTED:
                self._resume()
        logger.warning("session %s recovered after a %.1f s gap", session_id, gap_s)
        return session_id

    # -- segments -------------------------------------------------------------------------------

    def on_segment_opened(self, path: Path, first_mono_ns: int | None = None) -> None:
        """Tag a file as it opens (recorder thread), by the capture time of its first frame."""
        with self._lock:
            session_id = self.session_id
            ended_id, ended_ns = self._last_ended
            if not session_id and ended_id and first_mono_ns is not None and first_mono_ns < ended_ns:
                # Opened after the end, but its first frame was captured before it (a recorder reading
                # queued frames late): the session's footage (the roll at the end's capture time
                # closes it there; recorder.request_roll).
                self._tags[path] = SegmentTag(session_id=ended_id)
                return
            if not session_id:
                kind = "idle" if self.config.idle_recording == "prebuffer" else "segment"
                self._tags[path] = SegmentTag(kind=kind)
                return
            if self._explanation_wanted:
                marker, self._explanation_wanted = self._explanation_wanted, ""
                self._explanation_open = (path, marker, time.monotonic())
                self._tags[path] = SegmentTag(session_id=session_id, kind="explanation", marker_id=marker)
                return
            self._tags[path] = SegmentTag(session_id=session_id)

    def is_idle_piece(self, path: Path) -> bool:
        """Whether the open file ``path`` was tagged as an idle pre-record piece (recorder thread)."""
        with self._lock:
            tag = self._tags.get(path)
            return tag is not None and tag.kind == "idle"

    def tag_of(self, path: Path) -> SegmentTag:
        """Forget and return a closed file's tag, before it is signed (untagged files are ordinary segments).

        JL-16: only a clip in which the officer spoke is an explanation. A skipped or silent clip is
        journalled as an ordinary segment of the session (nothing recorded is dropped), and the
        marker gets a signed EXPLANATION_MISSING, so neither the manifest nor the event log claims a
        spoken reason that was never given.
        """
        with self._lock:
            tag = self._tags.pop(path, SegmentTag(session_id=self.session_id))
            if tag.kind != "explanation":
                return tag
            if self._explanation_open is not None and self._explanation_open[0] == path:
                self._explanation_open = None
            skipped = tag.marker_id in self._skipped
            self._skipped.discard(tag.marker_id)
        rms: float | None = None
        if not skipped:
            try:
                rms = audio_rms(path)
            except Exception:
                logger.exception("cannot measure the explanation clip %s", path)
        if rms is not None and rms >= self.config.explanation_min_rms:
            return tag
        logger.warning(
            "explanation clip for %s: %s; kept as an ordinary segment",
            tag.marker_id,
            "skipped" if skipped else f"silent (rms {rms})",
        )
        self._missing(tag.marker_id)
        return SegmentTag(session_id=tag.session_id)

    def explanation_closed(self, path: Path, marker: str) -> None:
        """A spoken explanation clip for ``marker`` is journalled (``tag_of`` let it through)."""
        with self._lock:
            if self.machine is not None:
                self.machine.explained(marker)
        logger.info("spoken explanation for %s recorded in %s", marker, path.name)

    def _check_clip_length(self) -> None:
        with self._lock:
            clip = self._explanation_open
            if clip is None or self.recorder is None:
                return
            if time.monotonic() - clip[2] >= self.config.explanation_seconds:
                self._explanation_open = (clip[0], clip[1], float("inf"))
                self.recorder.request_roll()

    def reconfigure(self, config: AgentConfig) -> None:
        """Adopt a new effective configuration at a segment boundary (fleet desired config, JL-16)."""
        with self._lock:
            self.config = config
            self.segment_seconds = config.segment_seconds
            self._apply_idle_segment_length()

    def _apply_idle_segment_length(self) -> None:
        if self.recorder is None:
            return
        if self.config.idle_recording == "prebuffer" and not self.session_id:
            # Short pieces: the pre-record window is trimmed to whole pieces (edge_agent.prebuffer).
            self.recorder.segment_seconds = min(self.segment_seconds, 2.0)
        else:
            self.recorder.segment_seconds = self.segment_seconds

    def _show(self, kind: PromptKind, message: str, marker: str = "") -> None:
        try:
            self.prompter.show(Prompt(kind=kind, message=message, marker_id=marker))
        except Exception:
            logger.exception("prompt failed")

    # -- worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                logger.exception("session step failed")
            self._stop.wait(_STEP_S)

    def step(self) -> None:
        """One round: acks, resends, clip timing, control requests."""
        self._apply_acks()
        self._resend_due()
        self._check_clip_length()
        self._serve_control()

    def _serve_control(self) -> None:
        try:
            requests = sorted(self.control_dir.glob("*.req.json"))
        except OSError:
            return
        for request_path in requests:
            request_id = request_path.name.removesuffix(".req.json")
            try:
                command = json.loads(request_path.read_text(encoding="utf-8"))
                request_path.unlink()
            except (OSError, ValueError) as exc:
                logger.warning("bad control request %s: %s", request_path.name, exc)
                request_path.unlink(missing_ok=True)
                continue
            reply = self.handle_command(command if isinstance(command, dict) else {})
            _write_atomic(self.control_dir / f"{request_id}.reply.json", reply)

    def handle_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """Run one control command; return the reply (``ok`` and details or ``error``)."""
        action = str(command.get("action", ""))
        note = str(command.get("note", ""))
        try:
            if action == "start":
                sid = self.begin(
                    officer_id=str(command.get("officer_id", "")),
                    case_id=str(command.get("case_id", "")),
                    note=note,
                )
                return {"ok": True, "session_id": sid}
            if action == "end":
                return {"ok": True, "session_id": self.finish(note=note)}
            if action == "bookmark":
                return {"ok": True, "event_id": self.bookmark(str(command.get("type", "")), note)}
            if action == "interrupt":
                return {
                    "ok": True,
                    "marker_id": self.declare_interruption(str(command.get("reason", "")), note),
                }
            if action == "resume":
                return {"ok": True, "marker_id": self.declared_resume()}
            if action == "skip":
                return {"ok": True, "marker_id": self.skip_explanation()}
            if action == "status":
                return {
                    "ok": True,
                    "session_id": self.session_id,
                    "state": self.state.value,
                    "open_marker": self.open_marker,
                    "unacked_events": len(self.outbox.unacked_session_events()),
                }
        except (SessionCommandError, ProtocolError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown action {action!r}"}


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def send_control_command(
    data_dir: Path,
    command: dict[str, Any],
    timeout: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Hand a command to the running agent through its spool and wait for the reply."""
    control = data_dir / _CONTROL_DIR
    if not control.is_dir():
        raise AgentError(f"no running agent uses {data_dir} (no {control})")
    request_id = uuid.uuid4().hex
    _write_atomic(control / f"{request_id}.req.json", command)
    reply_path = control / f"{request_id}.reply.json"
    deadline = clock() + timeout
    while clock() < deadline:
        if reply_path.exists():
            reply: dict[str, Any] = json.loads(reply_path.read_text(encoding="utf-8"))
            reply_path.unlink(missing_ok=True)
            return reply
        time.sleep(0.05)
    (control / f"{request_id}.req.json").unlink(missing_ok=True)
    raise AgentError(f"the agent did not answer within {timeout:.0f} s (is `zfjl-agent run` running?)")
