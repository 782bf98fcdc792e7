"""The agent application: ordered start-up and mirrored shutdown of key, outbox, MQTT, uploader, recorder."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config import AgentConfig
from edge_agent.effective_config import EffectiveConfig, LiveConfig
from edge_agent.interruptions import DiskUsage, InterruptionWatchdog
from edge_agent.keys import load_private_key
from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox
from edge_agent.prompts import Prompter, default_prompter
from edge_agent.session import SegmentTag, SessionCommandError, SessionController
from edge_agent.uploader import Uploader, require_pinned_ingest_keys
from edge_agent.watchdog import SystemdNotifier
from protocol.manifest import format_time
from protocol.messages import ChainHead, DeviceHealth, TransferAck
from protocol.session import EventAck

if TYPE_CHECKING:
    from edge_agent.encoder import SegmentFile
    from edge_agent.prebuffer import PreBuffer
    from edge_agent.recorder import Recorder
    from edge_agent.updater import Updater

__all__ = ["EXIT_DRAIN_TIMEOUT", "EXIT_OK", "EXIT_RECORDER_FAILED", "EXIT_REFUSED", "AgentApp"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 1  # at least one segment was refused by the server (kept, needs a person)
EXIT_DRAIN_TIMEOUT = 2  # segments still pending after drain_timeout_s (kept; uploaded at next start)
EXIT_RECORDER_FAILED = 3
# JL-17: a segment must reach the server within 24 h of being recorded.
_BACKLOG_AGE_LIMIT_S = 24 * 3600


class AgentApp:
    """One device's agent, started in a fixed order and stopped in the reverse one (like Frigate's app)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        simulate: bool = False,
        segment_seconds: float | None = None,
        offline_for: float = 0.0,
        prompter: Prompter | None = None,
        disk_usage: Callable[[Path], DiskUsage] | None = None,
    ) -> None:
        """Configure only; nothing is opened until :meth:`start`."""
        self.config = config
        self.simulate = simulate
        self.segment_seconds = segment_seconds or config.segment_seconds
        self.offline_for = offline_for
        self.stop_event = threading.Event()
        self._recorder_stop = threading.Event()
        self.private_key: Ed25519PrivateKey | None = None
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.uploader: Uploader | None = None
        self.recorder: Recorder | None = None
        self._connect_timer: threading.Timer | None = None
        self._health_thread: threading.Thread | None = None
        self._health_stop = threading.Event()
        self._health_wake = threading.Event()
        self._stop_steps: list[tuple[str, Callable[[], None]]] = []
        # JL-16 sessions: local UI, session machine, automatic interruption detection, pre-record.
        self.prompter: Prompter = prompter or default_prompter(simulate)
        self._disk_usage = disk_usage
        self.session: SessionController | None = None
        self.watchdog: InterruptionWatchdog | None = None
        self.prebuffer: PreBuffer | None = None
        # Fleet desired config overlaid on agent.toml (docs/fleet.md); restored from fleet-config.json.
        self.live = LiveConfig(
            dataclasses.replace(config, segment_seconds=self.segment_seconds), check=self._check_config
        )
        self._boundary_version = -1  # effective config version last handed to recorder and sessions

    # -- start / stop ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run the init steps in order; if one fails, undo the ones done and re-raise."""
        steps: list[tuple[str, Callable[[], None]]] = [
            # Before anything connects: without a pinned ingest key no ack could be trusted (finding 1).
            ("check pinned ingest keys", lambda: require_pinned_ingest_keys(self.config)),
            ("load device key", self._load_key),
            ("open outbox", self._open_outbox),
            ("recover partial segments", self._recover),
            ("connect MQTT", self._connect),
            ("start command handler", self._start_commands),
            ("start uploader", self._start_uploader),
            ("start sessions", self._start_sessions),
            ("start health publisher", self._start_health),
            ("start recorder", self._start_recorder),
        ]
        try:
            for name, step in steps:
                logger.debug("start: %s", name)
                step()
        except BaseException:
            logger.error("start-up failed; shutting down what was started")
            self.stop()
            raise

    def stop(self) -> None:
        """Undo the start steps in reverse: the recorder first, so its last segment reaches the outbox."""
        self.stop_event.set()
        while self._stop_steps:
            name, undo = self._stop_steps.pop()
            logger.debug("stop: %s", name)
            try:
                undo()
            except Exception:
                logger.exception("error while stopping (%s)", name)

    def _load_key(self) -> None:
        self.private_key = load_private_key(self.config.private_key_file)

    def _open_outbox(self) -> None:
        self.config.segment_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(self.config.outbox_path)
        self._stop_steps.append(("close outbox", self.outbox.close))
        for problem in self.outbox.verify_chain():
            logger.error("outbox integrity: %s", problem)

    def _recover(self) -> None:
        from edge_agent.fmp4 import recover_fragmented_mp4

        assert self.outbox is not None and self.private_key is not None
        report = self.outbox.recover(
            self.config.segment_dir,
            recover_fragmented_mp4,
            device_id=self.config.device_id,
            officer_id=self.config.officer_id,
            private_key=self.private_key,
            segment_seconds=self.segment_seconds,
            session_id=self.outbox.open_session_id() or "",
        )
        if report.added:
            logger.warning("recovered %d segment(s) cut off by a crash: %s", len(report.added), report.added)
        for path in report.unrecoverable:
            logger.error("unrecoverable segment kept for inspection: %s", path)
        self.outbox.free_space(self.config.min_free_bytes, self.config.segment_dir)

    def _connect(self) -> None:
        self.link = MqttLink(
            self.config,
            on_ack=self._on_ack,
            on_connected=self._on_connected,
            on_session_ack=self._on_session_ack,
        )
        self._stop_steps.append(("close MQTT", self.link.close))
        if self.offline_for > 0:
            logger.warning(
                "staying offline for %.0f s (recording continues into the outbox)", self.offline_for
            )
            timer = threading.Timer(self.offline_for, self.link.connect)
            timer.name = "mqtt-offline-timer"
            timer.daemon = True
            timer.start()
            self._connect_timer = timer
            self._stop_steps.append(("cancel connect timer", timer.cancel))
        else:
            self.link.connect()

    def _start_commands(self) -> None:
        """Fleet: desired configuration and commands (docs/fleet.md)."""
        from edge_agent.commands import CommandHandler

        assert self.link is not None

        def upload_now() -> None:
            if self.uploader is not None:
                self.uploader.on_connected()  # a resync pass: retry every pending segment now

        def bookmark(bookmark_type: str, note: str) -> str:
            # JL-15: the session controller signs and journals it; it refuses when no session is open.
            if self.session is None:
                raise SessionCommandError("sessions are not running")
            return self.session.bookmark(bookmark_type, note)

        def session_control(action: str, params: dict[str, str]) -> str:
            # JL-16: the same controller as the officer's button, so the same rules and signed events.
            if self.session is None:
                raise SessionCommandError("sessions are not running")
            return self.session.remote(action, params)

        self.live.restore(self.config.data_dir)
        handler = CommandHandler(
            self.config,
            self.link.device_client,
            state_dir=self.config.data_dir,
            upload_now=upload_now,
            bookmark=bookmark,
            session_control=session_control,
            updater=self._make_updater(),
            on_config=self.live.apply,
        )
        handler.start()
        self._stop_steps.append(("stop command handler", handler.stop))

    def _make_updater(self) -> Updater | None:
        """Signed updates, when a trusted update key is configured; they wait for open sessions (JL-16)."""
        from edge_agent.updater import Updater, load_trusted_keys

        if not self.config.update_public_key_file:
            return None
        base = self.config.data_dir.parent
        keys = load_trusted_keys(base / self.config.update_public_key_file)

        def session_open() -> bool:
            return self.session is not None and bool(self.session.session_id)

        return Updater(
            base / self.config.update_slots_dir, keys, session_open=session_open, stop_event=self.stop_event
        )

    def _on_ack(self, ack: TransferAck) -> None:
        if self.uploader is not None:
            self.uploader.on_ack(ack)

    def _on_session_ack(self, ack: EventAck) -> None:
        if self.session is not None:
            self.session.on_ack(ack)

    def _on_connected(self) -> None:
        if self.session is not None:
            self.session.on_connected()
        if self.uploader is not None:
            self.uploader.on_connected()
        self._health_wake.set()  # report the backlog right after (re)connecting

    def _start_uploader(self) -> None:
        assert self.outbox is not None and self.link is not None
        live = self.live
        self.uploader = Uploader(self.outbox, self.link, self.config, policy=lambda: live.current)
        self.uploader.start()
        self._stop_steps.append(("stop uploader", self.uploader.stop))

    def _start_sessions(self) -> None:
        """Session machine, control spool and interruption watchdog (JL-16); recover an open session."""
        assert self.outbox is not None and self.private_key is not None
        cfg = self.live.current.agent
        self.session = SessionController(
            cfg,
            self.outbox,
            self.private_key,
            self.prompter,
            link=self.link,
            segment_seconds=cfg.segment_seconds,
        )
        if cfg.idle_recording == "prebuffer":
            from edge_agent.prebuffer import PreBuffer

            self.prebuffer = PreBuffer(cfg.data_dir / "prebuffer", cfg.prerecord_seconds)
        outbox = self.outbox

        def free_space() -> None:
            outbox.free_space(cfg.min_free_bytes, cfg.segment_dir)

        self.watchdog = InterruptionWatchdog(
            self.session,
            self.prompter,
            storage_dir=cfg.segment_dir,
            stall_threshold_s=cfg.stall_threshold_s,
            microphone_timeout_s=cfg.microphone_timeout_s,
            clock_jump_threshold_s=cfg.clock_jump_threshold_s,
            storage_warn_bytes=cfg.storage_warn_bytes,
            storage_stop_bytes=cfg.storage_stop_bytes,
            disk_usage=self._disk_usage,
            free_space=free_space,
            before_resume=self._recover,
        )
        # A session left open by a crash or power loss gets its power_loss marker now, before recording.
        self.session.recover()
        self.session.start()
        self._stop_steps.append(("stop sessions", self.session.stop))

    def _start_health(self) -> None:
        thread = threading.Thread(target=self._health_loop, name="health", daemon=True)
        thread.start()
        self._health_thread = thread

        def stop_health() -> None:
            self._health_stop.set()
            self._health_wake.set()
            thread.join(5)

        self._stop_steps.append(("stop health publisher", stop_health))

    def _start_recorder(self) -> None:
        from edge_agent.recorder import Recorder

        video, audio = self._sources()
        self.recorder = Recorder(
            video=video,
            audio=audio,
            segment_dir=self.config.segment_dir,
            segment_seconds=self.segment_seconds,
            on_segment_closed=self._on_segment_closed,
            stop_event=self._recorder_stop,
            stall_threshold_s=self.config.stall_threshold_s,
            on_stall_begin=self.watchdog.on_stall_begin if self.watchdog else None,
            on_stall=self.watchdog.on_stall_end if self.watchdog else None,
            on_segment_opened=self.session.on_segment_opened if self.session else None,
            on_storage_full=self.watchdog.on_storage_full if self.watchdog else None,
            on_segment_boundary=self._on_segment_boundary,
            chunk_bytes=self.config.chunk_bytes,
        )
        if self.session is not None:
            self.session.attach_recorder(self.recorder)
        self.recorder.start()
        self._stop_steps.append(("stop recorder", self.stop_recorder))
        if self.watchdog is not None:
            self.watchdog.attach_recorder(self.recorder)
            self.watchdog.start()
            self._stop_steps.append(("stop interruption watchdog", self.watchdog.stop))
        logger.info(
            "recording %s into %s (%.0f s segments)",
            "synthetic sources" if self.simulate else f"camera {self.config.camera!r}",
            self.config.segment_dir,
            self.segment_seconds,
        )

    def _check_config(self, effective: EffectiveConfig) -> str:
        """Why this device cannot run ``effective`` ("" if it can): frames are only ever scaled down, and
        only a source that can change rate (the synthetic one) takes another frame rate."""
        video = self.recorder.video if self.recorder is not None else None
        if effective.frame_size is not None:
            native = (
                (video.width, video.height) if video is not None else (self.config.width, self.config.height)
            )
            width, height = effective.frame_size
            if width > native[0] or height > native[1]:
                delivered = f"{native[0]}x{native[1]}"
                return f"resolution {width}x{height} exceeds what the camera delivers ({delivered})"
        if effective.fps is not None:
            rate = video.fps if video is not None else self.config.fps
            adjustable = hasattr(video, "set_rate") if video is not None else self.simulate
            if not adjustable and round(rate) != effective.fps:
                return f"fps {effective.fps} is not what the camera delivers ({rate:g} fps)"
        return ""

    def _on_segment_boundary(self) -> None:
        """JL-16: the effective config reaches recorder and sessions only here, between two segments."""
        effective = self.live.current
        recorder = self.recorder
        if recorder is None or effective.version == self._boundary_version:
            return
        self._boundary_version = effective.version
        recorder.bitrate = effective.bitrate
        recorder.frame_size = effective.frame_size
        recorder.fps = effective.fps
        agent = effective.agent
        if self.prebuffer is not None:
            self.prebuffer.seconds = agent.prerecord_seconds
        session = self.session
        if session is None:
            recorder.segment_seconds = agent.segment_seconds
            return
        session.reconfigure(agent)  # idle pre-record pieces keep their own length rule

    def _sources(self) -> tuple[Any, Any]:
        from edge_agent.sources import (
            CameraSource,
            MicrophoneSource,
            SyntheticAudioSource,
            SyntheticVideoSource,
        )

        cfg = self.config
        video: Any
        audio: Any
        if self.simulate or cfg.camera == "synthetic":
            video = SyntheticVideoSource(width=cfg.width, height=cfg.height, fps=cfg.fps, label=cfg.device_id)
        else:
            device: int | str = cfg.camera
            if isinstance(device, str) and device.isdigit():
                device = int(device)
            video = CameraSource(device, cfg.width, cfg.height, cfg.fps)
        if cfg.microphone == "none":
            audio = None
        elif self.simulate or cfg.microphone == "synthetic":
            audio = SyntheticAudioSource()
        else:
            audio = MicrophoneSource(cfg.microphone, 48000, 1)
        return video, audio

    def stop_recorder(self) -> None:
        """Stop recording; the recorder closes its last segment into the outbox first."""
        if self.recorder is not None:
            self.recorder.stop()

    # -- segments and health --------------------------------------------------------------------

    def _on_segment_closed(self, segment: SegmentFile) -> None:
        """Journal a closed segment (recorder thread); on failure the file stays for start-up recovery."""
        assert self.outbox is not None and self.private_key is not None
        tag = self.session.tag_of(segment.path) if self.session is not None else SegmentTag()
        if tag.kind == "idle":
            # Not evidence yet: kept only as the pre-event buffer (idle_recording = "prebuffer").
            if self.prebuffer is not None:
                self.prebuffer.add(segment)
            else:
                segment.path.unlink(missing_ok=True)
            self._flush_prebuffer()
            return
        self._flush_prebuffer()
        officer = self.session.officer_id if self.session is not None and tag.session_id else ""
        try:
            self.outbox.add_segment(
                segment,
                device_id=self.config.device_id,
                officer_id=officer or self.config.officer_id,
                private_key=self.private_key,
                session_id=tag.session_id,
                kind=tag.kind,
                marker_id=tag.marker_id,
            )
        except Exception:
            logger.critical(
                "could not journal %s; it stays on disk and is recovered at next start", segment.path
            )
            raise
        try:
            self.outbox.free_space(self.config.min_free_bytes, self.config.segment_dir)
        except OSError as exc:
            logger.error("freeing disk space failed: %s", exc)
        if tag.kind == "explanation" and self.session is not None:
            self.session.explanation_closed(segment.path, tag.marker_id)

    def _flush_prebuffer(self) -> None:
        """At a session's start, journal the pre-record as its first segment (recorder thread).

        JL-16: at a roll the recorder opens (and tags) the next file before it closes the previous
        one, so a session started in between finds an idle piece already open. That piece holds the
        session's first moments: the pre-record waits until it has closed into the buffer too,
        otherwise it would be left behind there (and trimmed away) with a hole before the first live
        segment.
        """
        session = self.session
        if session is None or not session.prebuffer_flush_pending:
            return
        recorder = self.recorder
        current = recorder.current_path if recorder is not None else None
        if current is not None and session.is_idle_piece(current):
            return
        session_id, session.prebuffer_flush_pending = session.prebuffer_flush_pending, ""
        if self.prebuffer is None:
            return
        assert self.outbox is not None and self.private_key is not None
        out = self.config.segment_dir / f"pre-{datetime.now(UTC):%Y%m%dT%H%M%S%f}Z.mp4"
        try:
            joined = self.prebuffer.take(session.session_started_mono_ns, out)
        except Exception:
            logger.exception("joining the pre-record failed")
            return
        if joined is not None:
            self.outbox.add_segment(
                joined,
                device_id=self.config.device_id,
                officer_id=session.officer_id or self.config.officer_id,
                private_key=self.private_key,
                session_id=session_id,
            )

    def health(self) -> DeviceHealth:
        """The current health report."""
        assert self.outbox is not None
        # Read before the backlog: a recorder that has stopped writing has already journalled its last
        # segment, so a report saying "not recording" always counts that segment.
        recording = self.recorder is not None and self.recorder.writing
        stats = self.outbox.stats()
        try:
            free: int | None = shutil.disk_usage(self.config.segment_dir).free
        except OSError:
            free = None
        extra: dict[str, Any] = {
            "segments_failed": stats.segments_failed,
            "last_sequence": stats.last_sequence,
        }
        if self.session is not None:
            extra.update(
                session_id=self.session.session_id,
                session_state=self.session.state.value,
                open_marker=self.session.open_marker,
            )
        if self.watchdog is not None:
            extra.update(storage_low=self.watchdog.storage_low, storage_full=self.watchdog.storage_full)
        if self.link is not None:
            # Acks refused for a missing, unknown or wrong signature (finding 1): visible to the fleet.
            extra.update(untrusted_acks=self.link.untrusted_acks)
        if self.uploader is not None:
            up = self.uploader.stats()
            extra.update(bytes_sent=up.bytes_sent, chunks_resent=up.chunks_resent, blocked=up.blocked)
        return DeviceHealth(
            chain_head=self._chain_head(stats.last_sequence),
            device_id=self.config.device_id,
            at=format_time(datetime.now(UTC)),
            backlog_bytes=stats.backlog_bytes,
            backlog_segments=stats.segments_pending,
            oldest_pending_age_s=stats.oldest_pending_age_s,
            free_bytes=free,
            recording=recording,
            extra=extra,
        )

    def _chain_head(self, last_sequence: int | None) -> ChainHead | None:
        """The newest journalled segment, signed, so the server notices a stored one that went missing."""
        if last_sequence is None or self.outbox is None or self.private_key is None:
            return None
        newest = self.outbox.get(last_sequence)
        if newest is None:
            return None
        return ChainHead.sign(
            self.config.device_id, last_sequence, newest.signed.manifest_hash, self.private_key
        )

    def _health_loop(self) -> None:
        while not self._health_stop.is_set():
            try:
                report = self.health()
                age = report.oldest_pending_age_s
                if age is not None and age > _BACKLOG_AGE_LIMIT_S:
                    logger.error("oldest unsent segment is %.1f h old (JL-17 limit: 24 h)", age / 3600)
                if self.link is not None and self.link.connected:
                    self.link.publish(report)
            except Exception:
                logger.exception("health report failed")
            self._health_wake.wait(self.config.health_interval_s)
            self._health_wake.clear()

    # -- run ------------------------------------------------------------------------------------

    def run(self, duration: float | None = None) -> int:
        """Record until a signal (or for ``duration`` s, then drain the outbox); return the exit code."""
        previous: dict[signal.Signals, Any] = {}

        def request_stop(signum: int, frame: FrameType | None) -> None:
            # Only set the flag: everything else happens in the main thread, outside the handler.
            self.stop_event.set()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, request_stop)
        code = EXIT_OK
        # Under systemd (NOTIFY_SOCKET): READY once started, WATCHDOG=1 from this loop, STOPPING at the end.
        notifier = SystemdNotifier.from_environ()
        try:
            self.start()
            notifier.ready()
            deadline = None if duration is None else time.monotonic() + duration
            while not self.stop_event.is_set():
                remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if remaining <= 0:
                    break
                self.stop_event.wait(remaining)
                if self.recorder is not None and self.recorder.failure is not None:
                    logger.critical("recorder failed: %s", self.recorder.failure)
                    code = EXIT_RECORDER_FAILED
                    break
                notifier.ping()
            notifier.stopping()
            self.stop_recorder()
            if duration is not None and not self.stop_event.is_set():
                assert self.uploader is not None
                logger.info(
                    "recording finished; uploading the backlog (up to %.0f s)", self.config.drain_timeout_s
                )
                if not self.uploader.drain(self.config.drain_timeout_s, abort=self.stop_event):
                    logger.warning("segments still pending; they stay in the outbox for the next run")
                    code = code or EXIT_DRAIN_TIMEOUT
            assert self.outbox is not None
            if self.outbox.stats().segments_failed:
                code = EXIT_REFUSED if code in (EXIT_OK, EXIT_DRAIN_TIMEOUT) else code
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code
