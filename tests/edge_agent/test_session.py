"""Enforcement sessions on the recorder: JL-16 markers and explanations, JL-15 bookmarks, pre-record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.app import AgentApp
from edge_agent.config import AgentConfig
from edge_agent.interruptions import DiskUsage
from edge_agent.keys import generate_private_key, public_key_raw, save_private_key
from edge_agent.prompts import MemoryPrompter, PromptKind
from edge_agent.session import send_control_command
from edge_agent.sources import SyntheticAudioSource, SyntheticVideoSource
from protocol.session import SessionEvent, SessionEventKind
from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS, StubIngest, wait_until
from tests.edge_agent.test_media import ffprobe, stream_of
from tests.fixtures.mqtt import MosquittoBroker
from tests.fixtures.pulse import PulseMicrophone

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cam-s1"


def _config(tmp_path: Path, url: str = "mqtt://127.0.0.1:1", **overrides: Any) -> AgentConfig:
    key = generate_private_key()
    save_private_key(key, tmp_path / "k.pem")
    values: dict[str, Any] = {
        "device_id": DEVICE,
        "private_key_file": tmp_path / "k.pem",
        "data_dir": tmp_path / "data",
        "mqtt_url": url,
        "camera": "synthetic",
        "microphone": "synthetic",
        "width": 320,
        "height": 180,
        "fps": 10.0,
        "explanation_seconds": 5.0,
        "segment_seconds": 30.0,
        "ingest_public_keys": INGEST_PUBLIC_KEYS,
    }
    values.update(overrides)
    return AgentConfig(**values)


def _events(app: AgentApp) -> list[SessionEvent]:
    assert app.outbox is not None
    return [s.event for s in app.outbox.session_events()]


def _kinds(app: AgentApp) -> list[SessionEventKind]:
    return [e.kind for e in _events(app)]


class SilentApp(AgentApp):
    """An agent whose microphone hears nothing."""

    def _sources(self) -> tuple[Any, Any]:
        video = SyntheticVideoSource(width=self.config.width, height=self.config.height, fps=self.config.fps)
        return video, SyntheticAudioSource(amplitude=0.0)


@pytest.fixture
def stopper() -> Iterator[list[AgentApp]]:
    """Stops every app a test started, even when it fails."""
    apps: list[AgentApp] = []
    yield apps
    for app in apps:
        app.stop()


def _start(app: AgentApp, apps: list[AgentApp]) -> AgentApp:
    apps.append(app)
    app.start()
    return app


@pytest.mark.mosquitto
@pytest.mark.pulseaudio
@pytest.mark.slow
def test_jl16_camera_stall_opens_one_marker_prompts_and_links_a_spoken_explanation(
    tmp_path: Path,
    mosquitto_broker: MosquittoBroker,
    pulse_microphone: PulseMicrophone,
    stopper: list[AgentApp],
) -> None:
    """Camera dead 5 s: one camera_stall marker (~5 s gap), a prompt, a linked clip, all delivered."""
    config = _config(tmp_path, mosquitto_broker.url, microphone=pulse_microphone.device)
    prompter = MemoryPrompter()
    app = AgentApp(config, prompter=prompter)
    from edge_agent.keys import load_private_key

    key_raw = public_key_raw(load_private_key(config.private_key_file))
    stub = StubIngest(mosquitto_broker.port, {DEVICE: key_raw})
    stub.start()
    try:
        _start(app, stopper)
        assert app.link is not None and app.link.wait_connected(10)
        reply = send_control_command(config.data_dir, {"action": "start", "case_id": "case-1"})
        assert reply["ok"], reply
        time.sleep(1.5)
        assert app.recorder is not None
        stall_started = time.monotonic()
        app.recorder.video.stall(5)
        # The marker opens while the camera is still dead, not only when video returns (JL-16).
        assert wait_until(lambda: SessionEventKind.INTERRUPTED in _kinds(app), 3)
        assert time.monotonic() - stall_started < 4
        assert wait_until(lambda: SessionEventKind.RESUMED in _kinds(app), 8)
        # RESUMED is journalled before the prompt is shown (on the session thread): wait for it too.
        assert wait_until(lambda: bool(prompter.of_kind(PromptKind.EXPLAIN)), 5), prompter.prompts
        assert app.outbox is not None
        outbox = app.outbox
        assert wait_until(lambda: any(s.kind == "explanation" for s in outbox.all_segments()), 12)
        reply = send_control_command(config.data_dir, {"action": "end"})
        assert reply["ok"], reply
        app.stop_recorder()
        assert app.uploader is not None and app.uploader.drain(60)
        assert wait_until(lambda: not outbox.unacked_session_events(), 20)
    finally:
        stub.stop()
    events = _events(app)
    interrupted = [e for e in events if e.kind is SessionEventKind.INTERRUPTED]
    assert len(interrupted) == 1, events
    marker = interrupted[0]
    assert marker.cause == "camera_stall" and marker.automatic
    resumed = next(e for e in events if e.kind is SessionEventKind.RESUMED)
    gap = (resumed.at - marker.at).total_seconds()
    assert 4.5 <= gap <= 6.5, gap
    assert SessionEventKind.EXPLANATION_MISSING not in [e.kind for e in events]
    clips = [s for s in outbox.all_segments() if s.kind == "explanation"]
    assert len(clips) == 1
    manifest = clips[0].signed.manifest
    assert manifest.kind == "explanation" and manifest.marker_id == marker.marker_id
    assert manifest.session_id == marker.session_id
    assert 4.5 <= (manifest.ended_at - manifest.started_at).total_seconds() <= 7
    stream_of(ffprobe(clips[0].path), "audio")
    # Every segment of the session carries its id; the clip reached the server.
    session_segments = [s for s in outbox.all_segments() if s.signed.manifest.session_id]
    assert len(session_segments) >= 2
    assert (DEVICE, clips[0].sequence) in stub.stored
    assert set(stub.session_events) == {e.event_id for e in events}
    assert events[0].kind is SessionEventKind.STARTED
    assert events[-1].kind is SessionEventKind.ENDED


def test_jl16_officer_declared_interruption_and_jl15_bookmark(
    tmp_path: Path, stopper: list[AgentApp]
) -> None:
    """A declared reason pauses recording with its cause and note; bookmarks are signed events."""
    config = _config(tmp_path)
    prompter = MemoryPrompter()
    app = _start(AgentApp(config, prompter=prompter, offline_for=600), stopper)
    assert app.session is not None and app.recorder is not None
    app.session.begin(officer_id="officer-9")
    time.sleep(1)
    assert app.health().recording
    reply = send_control_command(
        config.data_dir, {"action": "bookmark", "type": "persons", "note": "2 present"}
    )
    assert reply["ok"], reply
    bad = send_control_command(config.data_dir, {"action": "interrupt", "reason": "lunch"})
    assert not bad["ok"] and "reason must be one of" in bad["error"]
    reply = send_control_command(
        config.data_dir, {"action": "interrupt", "reason": "bad_weather", "note": "heavy rain"}
    )
    assert reply["ok"], reply
    # The fleet sees the recorder stop writing, and the report that says so already counts the segment
    # the pause closed (offline: it stays in the backlog), with it as the signed chain head.
    assert wait_until(lambda: not app.health().recording, 3)
    paused = app.health()
    assert paused.backlog_segments == 1 and paused.chain_head is not None, paused
    assert app.recorder.current_path is None
    assert send_control_command(config.data_dir, {"action": "resume"})["ok"]
    assert wait_until(lambda: app.recorder is not None and app.recorder.current_path is not None, 3)
    assert app.health().recording
    assert send_control_command(config.data_dir, {"action": "end"})["ok"]
    events = _events(app)
    bookmark = next(e for e in events if e.kind is SessionEventKind.BOOKMARK)
    assert bookmark.bookmark_type == "persons" and bookmark.note == "2 present"
    assert bookmark.officer_id == "officer-9"
    marker = next(e for e in events if e.kind is SessionEventKind.INTERRUPTED)
    assert (marker.cause, marker.automatic, marker.note) == ("bad_weather", False, "heavy rain")
    assert SessionEventKind.RESUMED in [e.kind for e in events]
    assert wait_until(lambda: bool(prompter.of_kind(PromptKind.EXPLAIN)), 5), prompter.prompts


@pytest.mark.slow
def test_jl16_silent_explanation_is_recorded_missing_and_kept_as_an_ordinary_segment(
    tmp_path: Path, stopper: list[AgentApp]
) -> None:
    """A clip with nothing said (RMS below threshold): EXPLANATION_MISSING, and no manifest claims it
    is an explanation; the clip itself is journalled as a session segment (nothing recorded is dropped)."""
    config = _config(tmp_path)
    app = _start(SilentApp(config, prompter=MemoryPrompter(), offline_for=600), stopper)
    assert app.session is not None and app.recorder is not None
    app.session.begin()
    time.sleep(1)
    app.recorder.video.stall(2)
    assert app.outbox is not None
    outbox = app.outbox
    assert wait_until(lambda: SessionEventKind.EXPLANATION_MISSING in _kinds(app), 20)
    marker = next(e for e in _events(app) if e.kind is SessionEventKind.INTERRUPTED)
    missing = next(e for e in _events(app) if e.kind is SessionEventKind.EXPLANATION_MISSING)
    assert missing.marker_id == marker.marker_id
    assert app.session.machine is not None and marker.marker_id in app.session.machine.unexplained
    # The recorder signs EXPLANATION_MISSING as it measures the closed clip, and journals the clip
    # itself just after: wait for that too (a busy device leaves a visible moment in between).
    assert wait_until(lambda: outbox.all_segments()[-1].signed.manifest.started_at >= marker.at, 10)
    clip = outbox.all_segments()[-1]
    assert (clip.kind, clip.signed.manifest.kind, clip.signed.manifest.marker_id) == (
        "segment",
        "segment",
        "",
    )
    assert clip.signed.manifest.session_id == marker.session_id
    assert all(s.kind != "explanation" for s in outbox.all_segments())


@pytest.mark.slow
def test_jl16_skipped_explanation_is_recorded_missing_and_kept_as_an_ordinary_segment(
    tmp_path: Path, stopper: list[AgentApp]
) -> None:
    """The officer presses skip while the clip records: the clip is cut, kept, and not an explanation."""
    config = _config(tmp_path)
    app = _start(AgentApp(config, prompter=MemoryPrompter(), offline_for=600), stopper)
    assert app.session is not None and app.recorder is not None and app.outbox is not None
    outbox = app.outbox
    app.session.begin()
    time.sleep(1)
    assert send_control_command(config.data_dir, {"action": "interrupt", "reason": "obstruction"})["ok"]
    time.sleep(1)
    assert send_control_command(config.data_dir, {"action": "resume"})["ok"]
    time.sleep(1.5)  # the clip is being recorded (with sound: the synthetic tone)
    reply = send_control_command(config.data_dir, {"action": "skip"})
    assert reply["ok"], reply
    assert wait_until(lambda: SessionEventKind.EXPLANATION_MISSING in _kinds(app), 10)
    marker = next(e for e in _events(app) if e.kind is SessionEventKind.INTERRUPTED)
    assert next(e for e in _events(app) if e.kind is SessionEventKind.EXPLANATION_MISSING).marker_id == (
        marker.marker_id
    )
    # EXPLANATION_MISSING is signed as the cut clip is measured, just before the clip is journalled.

    def clips() -> list[Any]:
        return [s for s in outbox.all_segments() if s.signed.manifest.started_at >= marker.at]

    assert wait_until(lambda: bool(clips()), 10)
    assert all(s.kind == "segment" and not s.signed.manifest.marker_id for s in clips())
    assert all(s.kind != "explanation" for s in outbox.all_segments())


@pytest.mark.slow
def test_jl16_explanation_clip_survives_a_slow_journal_on_resume(
    tmp_path: Path, stopper: list[AgentApp]
) -> None:
    """Resuming while the journal is slow (a busy disk): the first file after the pause is the whole clip.

    JL-16: on resuming the officer states the reason by voice. Writing used to restart before the
    RESUMED event was journalled; the file the recorder opened meanwhile became the clip, and the cut
    asked for the clip then closed it after one frame, so a skip found no clip being recorded.
    """
    config = _config(tmp_path)
    app = _start(AgentApp(config, prompter=MemoryPrompter(), offline_for=600), stopper)
    assert app.session is not None and app.outbox is not None
    outbox = app.outbox
    app.session.begin()
    time.sleep(1)
    assert send_control_command(config.data_dir, {"action": "interrupt", "reason": "obstruction"})["ok"]
    time.sleep(1)
    journal = outbox.add_session_event

    def slow_journal(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.4)  # fsync on a busy card: several frames arrive meanwhile
        return journal(*args, **kwargs)

    outbox.add_session_event = slow_journal  # type: ignore[method-assign]
    assert send_control_command(config.data_dir, {"action": "resume"})["ok"]
    time.sleep(1.5)
    reply = send_control_command(config.data_dir, {"action": "skip"})
    assert reply["ok"], reply
    assert wait_until(lambda: SessionEventKind.EXPLANATION_MISSING in _kinds(app), 10)
    resumed = next(e for e in _events(app) if e.kind is SessionEventKind.RESUMED)
    after = [s.signed.manifest for s in outbox.all_segments() if s.signed.manifest.started_at >= resumed.at]
    assert after and (after[0].ended_at - after[0].started_at).total_seconds() >= 1.0, after


def test_jl16_storage_full_stops_cleanly_marks_and_resumes(tmp_path: Path, stopper: list[AgentApp]) -> None:
    """Free space runs out: the segment is closed and journalled, storage_full marker, automatic resume."""
    free = {"bytes": 10 * 1024**3}

    def disk_usage(path: Path) -> DiskUsage:
        return DiskUsage(100 * 1024**3, 0, free["bytes"])

    config = _config(tmp_path, storage_stop_bytes=1024**2, storage_warn_bytes=2 * 1024**2)
    prompter = MemoryPrompter()
    app = _start(AgentApp(config, prompter=prompter, offline_for=600, disk_usage=disk_usage), stopper)
    assert app.session is not None and app.recorder is not None and app.outbox is not None
    app.session.begin()
    time.sleep(1.5)
    free["bytes"] = 1024
    recorder, outbox = app.recorder, app.outbox
    assert wait_until(lambda: recorder.paused and recorder.current_path is None, 3)
    assert wait_until(lambda: len(outbox.all_segments()) == 1, 3)
    segment = outbox.all_segments()[0]
    assert segment.signed.manifest.session_id == app.session.session_id and not segment.recovered
    assert app.health().extra["storage_full"] is True
    assert wait_until(lambda: bool(prompter.of_kind(PromptKind.STORAGE_LOW)), 3), prompter.prompts
    free["bytes"] = 10 * 1024**3
    assert wait_until(lambda: recorder.current_path is not None, 3)
    kinds = _kinds(app)
    assert kinds[:3] == [SessionEventKind.STARTED, SessionEventKind.INTERRUPTED, SessionEventKind.RESUMED]
    assert _events(app)[1].cause == "storage_full" and _events(app)[1].automatic


@pytest.mark.slow
def test_jl16_kill_9_during_session_recovers_segment_and_marks_power_loss(tmp_path: Path) -> None:
    """kill -9 mid-segment: next start journals the cut-off segment and a power_loss marker, then resumes."""
    config = _config(tmp_path)
    config_path = tmp_path / "agent.toml"
    config.write_toml(config_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config_path), "--offline-for", "600"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: (config.data_dir / "control").is_dir(), 30)
        started = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent",
                "session",
                "--config",
                str(config_path),
                "start",
                "--case",
                "c-7",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert started.returncode == 0, started.stderr
        assert json.loads(started.stdout)["session_id"]
        assert wait_until(lambda: any(config.segment_dir.glob("*.mp4")), 10)
        time.sleep(3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    time.sleep(1)
    app = AgentApp(config, prompter=MemoryPrompter(), offline_for=600)
    try:
        app.start()
        assert app.outbox is not None and app.session is not None
        segments = app.outbox.all_segments()
        recovered = [s for s in segments if s.recovered]
        assert recovered
        assert all(s.signed.manifest.session_id == app.session.session_id for s in recovered)
        events = _events(app)
        assert [e.kind for e in events] == [
            SessionEventKind.STARTED,
            SessionEventKind.INTERRUPTED,
            SessionEventKind.RESUMED,
        ]
        marker = events[1]
        assert marker.cause == "power_loss" and marker.automatic and marker.case_id == "c-7"
        last_end = max(s.signed.manifest.ended_at for s in segments)
        assert abs(marker.at - last_end) < timedelta(seconds=1)
        assert (events[2].at - marker.at).total_seconds() >= 1
        assert app.session.session_id == events[0].session_id
    finally:
        app.stop()


@pytest.mark.slow
def test_jl16_prerecord_buffer_with_audio_starts_the_first_session_segment(
    tmp_path: Path, stopper: list[AgentApp]
) -> None:
    """idle_recording=prebuffer, 3 s: the session's first segment holds the 3 s before start, with audio."""
    config = _config(tmp_path, idle_recording="prebuffer", prerecord_seconds=3.0)
    app = _start(AgentApp(config, prompter=MemoryPrompter(), offline_for=600), stopper)
    assert app.session is not None and app.outbox is not None
    time.sleep(6)
    assert app.outbox.all_segments() == []  # idle footage is not evidence
    app.session.begin()
    time.sleep(2)
    app.session.finish()
    app.stop_recorder()
    segments = app.outbox.all_segments()
    assert len(segments) >= 2
    first = segments[0]
    started = _events(app)[0].at
    manifest = first.signed.manifest
    assert manifest.session_id == _events(app)[0].session_id
    lead = (started - manifest.started_at).total_seconds()
    assert 3.0 <= lead <= 5.5, lead
    info = ffprobe(first.path)
    audio = stream_of(info, "audio")
    stream_of(info, "video")
    assert float(info["format"]["duration"]) >= 3.0
    assert float(audio["duration"]) >= 2.9
    # The joined pieces are gone; only what was recorded after the session ended waits as a new buffer.
    ended = _events(app)[-1].at.strftime("%Y%m%dT%H%M%S%f")
    assert all(p.name >= f"seg-{ended[:15]}" for p in (config.data_dir / "prebuffer").glob("*.mp4"))


class BeginsInsideARollApp(AgentApp):
    """Starts the session inside the recorder's own 2 s roll of idle pieces, deterministically.

    At a roll the recorder opens (and tags) the next piece before it closes the previous one; an
    officer pressing start in between finds an idle piece already open. Here ``begin()`` runs exactly
    there: inside the close callback of the third idle piece.
    """

    idle_closed = 0

    def _on_segment_closed(self, segment: Any) -> None:
        assert self.session is not None
        if not self.session.session_id and not _events(self):
            self.idle_closed += 1
            if self.idle_closed == 3:
                self.session.begin()
        super()._on_segment_closed(segment)


@pytest.mark.slow
def test_jl16_prerecord_includes_the_idle_piece_open_when_the_session_starts(
    tmp_path: Path, stopper: list[AgentApp]
) -> None:
    """Start lands inside a roll: the pre-record still reaches the first live segment, no piece left over.

    JL-16 (continuous from arrival): the idle piece already open when the session starts holds the
    first moments of the session; it must join the pre-record, not stay behind in the buffer to be
    trimmed away unrecorded.
    """
    config = _config(tmp_path, idle_recording="prebuffer", prerecord_seconds=3.0)
    app = _start(BeginsInsideARollApp(config, prompter=MemoryPrompter(), offline_for=600), stopper)
    assert app.session is not None and app.outbox is not None
    assert wait_until(lambda: bool(_events(app)), 30)
    time.sleep(1.5)
    app.session.finish()
    app.stop_recorder()
    segments = app.outbox.all_segments()
    assert len(segments) >= 2
    pre, live = segments[0].signed.manifest, segments[1].signed.manifest
    session_id = _events(app)[0].session_id
    assert pre.session_id == live.session_id == session_id
    # No hole between the pre-record and the first live segment: every frame is in the session.
    assert pre.ended_at == live.started_at, (pre.ended_at, live.started_at)
    ended = _events(app)[-1].at.strftime("%Y%m%dT%H%M%S%f")
    left = sorted(p.name for p in (config.data_dir / "prebuffer").glob("*.mp4"))
    assert all(name >= f"seg-{ended}" for name in left), left


class GatedVideo(SyntheticVideoSource):
    """A camera whose reader can be held back, as a recorder busy encoding is: frames queue meanwhile."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.gate.set()

    def read(self, timeout: float) -> Any:
        """The next frame, once the gate is open (its capture time is when it was due, not when read)."""
        self.gate.wait()
        return super().read(timeout)


class LaggingRecorderApp(AgentApp):
    """An agent whose recorder can fall behind its camera."""

    video: GatedVideo

    def _sources(self) -> tuple[Any, Any]:
        self.video = GatedVideo(width=self.config.width, height=self.config.height, fps=self.config.fps)
        return self.video, SyntheticAudioSource()


@pytest.mark.slow
def test_jl16_frames_captured_before_the_end_stay_in_the_session_when_the_recorder_lags(
    tmp_path: Path, stopper: list[AgentApp]
) -> None:
    """The recorder reads frames late: those captured before the session's end still belong to it.

    JL-16 (continuous until the end): a busy recorder reads queued frames after the officer pressed
    end. The session's footage must run up to the end event, not stop at the first late-read frame
    and leave the rest in the idle buffer, where it is trimmed away.
    """
    config = _config(tmp_path, idle_recording="prebuffer", prerecord_seconds=3.0)
    app = _start(LaggingRecorderApp(config, prompter=MemoryPrompter(), offline_for=600), stopper)
    assert app.session is not None and app.outbox is not None
    time.sleep(1.0)
    app.session.begin()
    time.sleep(2.0)
    app.video.gate.clear()
    time.sleep(0.35)  # about three frames queue up (the camera keeps four)
    app.session.finish()
    app.video.gate.set()
    time.sleep(1.0)
    app.stop_recorder()
    ended = _events(app)[-1]
    session_segments = [
        s.signed.manifest
        for s in app.outbox.all_segments()
        if s.signed.manifest.session_id == ended.session_id
    ]
    last_end = max(m.ended_at for m in session_segments)
    # Frame times and the event time come from the same clock read at different instants: allow 5 ms.
    assert last_end >= ended.at - timedelta(milliseconds=5), (last_end, ended.at)
    # ...and no further: what was captured after the end is idle footage (one frame at most spans it).
    assert last_end <= ended.at + timedelta(milliseconds=105), (last_end, ended.at)
    stamp = (ended.at - timedelta(milliseconds=5)).strftime("%Y%m%dT%H%M%S%f")
    left = sorted(p.name for p in (config.data_dir / "prebuffer").glob("*.mp4"))
    assert all(name >= f"seg-{stamp}" for name in left), (left, stamp)


@pytest.mark.slow
def test_jl16_the_end_still_cuts_the_session_when_another_roll_is_pending(
    tmp_path: Path, stopper: list[AgentApp]
) -> None:
    """A cut asked for just before the end (a clip, a skip) does not swallow the end's own boundary.

    JL-16 (continuous until the end, and no further): the recorder lags and two rolls wait, one for
    the next frame and one at the end's capture time. Both must fall; when the earlier one used to
    replace the later, the footage after the end ran on in the session's segment.
    """
    config = _config(tmp_path, idle_recording="prebuffer", prerecord_seconds=3.0)
    app = LaggingRecorderApp(config, prompter=MemoryPrompter(), offline_for=600)
    _start(app, stopper)
    assert app.session is not None and app.outbox is not None and app.recorder is not None
    time.sleep(1.0)
    app.session.begin()
    time.sleep(2.0)
    app.video.gate.clear()
    time.sleep(0.35)  # about three frames queue up
    app.recorder.request_roll()  # as resuming (an explanation clip) or skipping one asks, at the next frame
    app.session.finish()
    app.video.gate.set()
    time.sleep(1.0)
    app.stop_recorder()
    ended = _events(app)[-1]
    session_segments = [
        s.signed.manifest
        for s in app.outbox.all_segments()
        if s.signed.manifest.session_id == ended.session_id
    ]
    last_end = max(m.ended_at for m in session_segments)
    # Frame times and the event time come from the same clock read at different instants: allow 5 ms.
    assert ended.at - timedelta(milliseconds=5) <= last_end <= ended.at + timedelta(milliseconds=105), (
        last_end,
        ended.at,
    )


def test_session_cli_without_a_running_agent_fails_clearly(tmp_path: Path) -> None:
    """``zfjl-agent session status`` with no agent on this data_dir says so and exits non-zero."""
    config = _config(tmp_path)
    config.write_toml(tmp_path / "agent.toml")
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent", "session", "--config", str(tmp_path / "agent.toml"), "status"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "no running agent" in result.stderr
