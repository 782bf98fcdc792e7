"""Recorder: pulls from the capture sources and writes rolling fragmented-MP4 segments."""

from __future__ import annotations

import bisect
import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edge_agent.encoder import SegmentFile, SegmentWriter
from edge_agent.errors import AgentError
from edge_agent.sources import AudioBlock, AudioSource, VideoFrame, VideoSource

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000
# Short enough that stop requests and stalls are noticed promptly, long enough not to spin.
_VIDEO_READ_TIMEOUT_S = 0.2
# Bound on audio blocks taken per loop turn so a source that never runs dry cannot starve video.
_MAX_AUDIO_BLOCKS_PER_TURN = 200
# Audio held while no segment is open (before the first frame): a few seconds of 20 ms blocks.
_MAX_AUDIO_BLOCKS_WAITING = 250


class Recorder:
    """Records video (and optionally audio) into segment files of about segment_seconds each."""

    def __init__(
        self,
        *,
        video: VideoSource,
        audio: AudioSource | None,
        segment_dir: Path,
        segment_seconds: float,
        on_segment_closed: Callable[[SegmentFile], None],
        stop_event: threading.Event,
        name_prefix: str = "seg",
        on_stall: Callable[[float], None] | None = None,
        stall_threshold_s: float = 1.0,
        on_stall_begin: Callable[[float], None] | None = None,
        on_segment_opened: Callable[[Path, int], None] | None = None,
        on_storage_full: Callable[[BaseException], None] | None = None,
        video_encoder: str = "auto",
        bitrate: int | None = None,
        on_segment_boundary: Callable[[], None] | None = None,
        chunk_bytes: int | None = None,
    ) -> None:
        """Configure; nothing is opened until start().

        ``chunk_bytes``: the uploader's chunk size, so each sealed segment carries its chunks' SHA-256.
        """
        if segment_seconds <= 0:
            raise ValueError(f"segment_seconds must be positive, got {segment_seconds}")
        self.video = video
        self.audio = audio
        self.segment_dir = Path(segment_dir)
        self.segment_seconds = segment_seconds
        self.on_segment_closed = on_segment_closed
        self.stop_event = stop_event
        self.name_prefix = name_prefix
        # Called once per stall, when video resumes (or recording stops), with the stall's full length;
        # `stalled`/`stalls` show a stall in progress. The interruption-marker feature builds on this.
        self.on_stall = on_stall
        self.stall_threshold_s = stall_threshold_s
        # JL-16: the interruption marker opens when the stall is detected, not only when video returns.
        self.on_stall_begin = on_stall_begin
        # Lets the session layer tag each file (session, explanation clip, pre-record piece) as it opens,
        # given the capture time (monotonic ns) of the file's first frame.
        self.on_segment_opened = on_segment_opened
        # Called (recorder thread) when a write fails with ENOSPC: recording pauses instead of dying.
        self.on_storage_full = on_storage_full
        self.last_audio_at: float | None = None  # monotonic time the last audio block arrived
        # Capture times (monotonic ns) at which requested rolls apply, ascending; 0 = the next frame.
        self._roll_boundaries: list[int] = []
        self._roll_lock = threading.Lock()
        self._pause_requested = threading.Event()
        # Set by the recorder thread once a pause has taken effect: the segment open when it was asked
        # for is closed and journalled (on_segment_closed has returned). A pause is only asked for by
        # pause_writing; this says when nothing is being written any more.
        self._pause_effective = threading.Event()
        self.video_encoder = video_encoder
        self.bitrate = bitrate
        # Encoded size (the frames are scaled to it); None: the camera's own size.
        self.frame_size: tuple[int, int] | None = None
        # Frame rate of the next segment; None: the source's rate when opened. Only a source with
        # ``set_rate`` (the synthetic one) can change it; AgentApp refuses a rate a camera does not deliver.
        self.fps: float | None = None
        self._native_fps = video.fps
        # JL-16: called (recorder thread) just before each segment opens, the one safe point where the
        # effective config may change segment length, size and bit rate without cutting a segment.
        self.on_segment_boundary = on_segment_boundary
        self.chunk_bytes = chunk_bytes
        self.frames_written = 0
        self.audio_blocks_written = 0
        self.audio_blocks_discarded = 0
        self.segments_closed = 0
        self.stalls = 0
        self.failure: BaseException | None = None
        self._writer: SegmentWriter | None = None
        self._frame_interval_ns = round(_NS_PER_S / video.fps) if video.fps > 0 else _NS_PER_S // 30
        self._audio_waiting: deque[AudioBlock] = deque(maxlen=_MAX_AUDIO_BLOCKS_WAITING)
        self._thread: threading.Thread | None = None
        self._last_frame_at: float | None = None
        self._stall_reported = False
        self._sources_closed = False
        self._lock = threading.Lock()

    @property
    def current_path(self) -> Path | None:
        """The segment file being written right now, or None between segments."""
        writer = self._writer
        return writer.path if writer is not None else None

    @property
    def stalled(self) -> bool:
        """Whether video has been missing for longer than the stall threshold."""
        return self._stall_reported

    @property
    def running(self) -> bool:
        """Whether the recorder thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def paused(self) -> bool:
        """Whether writing is paused (frames are read and dropped, no segment is open)."""
        return self._pause_requested.is_set()

    @property
    def writing(self) -> bool:
        """Whether frames are going into segments: the thread runs and no pause has taken effect.

        After :meth:`pause_writing` this stays true until the thread has closed and handed over the
        segment that was open, so a health report that says "not recording" (JL-16, a declared
        interruption) is never sent before the last segment before the pause is in the backlog.
        """
        return self.running and not self._pause_effective.is_set()

    def request_roll(self, at_mono_ns: int | None = None) -> None:
        """Start a new segment at the next frame, or at the first frame captured at or after ``at_mono_ns``.

        Session boundaries (JL-16): a camera queues a few frames, so a recorder that falls behind reads
        frames captured *before* a session ended after the end was pressed. Rolling on capture time
        keeps those frames in the session's segment instead of the idle piece that follows it.

        Two requests before a roll each keep their boundary: an explanation clip cut (or a skip) just
        before the end must not swallow the end's boundary, or idle footage would run on in the session.
        """
        with self._roll_lock:
            bisect.insort(self._roll_boundaries, 0 if at_mono_ns is None else at_mono_ns)

    def pause_writing(self) -> None:
        """Close the current segment cleanly and write nothing until :meth:`resume_writing`."""
        self._pause_requested.set()

    def resume_writing(self) -> None:
        """Write segments again after :meth:`pause_writing`."""
        self._pause_requested.clear()

    def start(self) -> None:
        """Open the sources and start the recorder thread; source errors propagate to the caller."""
        if self._thread is not None:
            raise RuntimeError("recorder already started")
        self.segment_dir.mkdir(parents=True, exist_ok=True)
        self.video.open()
        if self.audio is not None:
            try:
                self.audio.open()
            except BaseException:
                self.video.close()
                raise
        # Cameras report their real rate only once open.
        self._native_fps = self.video.fps
        self._frame_interval_ns = round(_NS_PER_S / self.video.fps) if self.video.fps > 0 else _NS_PER_S // 30
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to finish, wait for it (it closes the last segment), then close the sources."""
        self.stop_event.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                # Leave the writer alone: the thread still owns it; crash recovery handles the file.
                logger.error("recorder thread did not stop within %.1f s", timeout)
                return
        self._close_sources()

    def _run(self) -> None:
        try:
            self._last_frame_at = time.monotonic()
            while not self.stop_event.is_set():
                frame = self.video.read(_VIDEO_READ_TIMEOUT_S)
                self._collect_audio()
                if self._pause_requested.is_set():
                    self._drop_while_paused()
                    self._pause_effective.set()
                    continue
                self._pause_effective.clear()
                if frame is None:
                    self._note_missing_video()
                    # No frame to align with: audio keeps flowing into the open segment.
                    self._write_audio_before(None)
                    continue
                self._note_video_resumed()
                # Audio is cut where video is: blocks captured before this frame go into the segment
                # open now, then the frame (which may roll to a new segment), then audio up to its end.
                try:
                    self._write_audio_before(frame.mono_ns)
                    self._write_frame(frame)
                    self._write_audio_before(frame.mono_ns + self._frame_interval_ns)
                except (AgentError, OSError) as exc:
                    if not self._storage_full(exc):
                        raise
        except (AgentError, OSError) as exc:
            self.failure = exc
            logger.exception("recorder stopped by an error")
        except BaseException as exc:
            self.failure = exc
            logger.exception("recorder crashed")
            raise
        finally:
            self._finish()

    def _finish(self) -> None:
        # Each step guarded on its own so a failing close cannot hide the original error or leak sources.
        try:
            self._note_video_resumed()
            # Audio captured up to the stop still belongs to the last segment.
            self._collect_audio()
            self._write_audio_before(None)
            self._close_segment()
        except (AgentError, OSError) as exc:
            self.failure = self.failure or exc
            logger.exception("closing the last segment failed")
        finally:
            self._close_sources()

    def _drop_while_paused(self) -> None:
        if self._writer is not None:
            try:
                self._close_segment()
            except (AgentError, OSError) as exc:
                if not self._storage_full(exc):
                    raise
        self._audio_waiting.clear()
        self._last_frame_at = time.monotonic()

    def _storage_full(self, exc: BaseException) -> bool:
        """On ENOSPC: leave the partial file for recovery, pause, tell the session layer (JL-16)."""
        if self.on_storage_full is None or not _is_no_space(exc):
            return False
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()  # usually fails again; close() then abandons the container
            except (AgentError, OSError):
                logger.warning("partial segment %s left for start-up recovery", writer.path)
        self._pause_requested.set()
        logger.error("storage full while writing: %s; recording paused", exc)
        try:
            self.on_storage_full(exc)
        except Exception:
            logger.exception("on_storage_full callback failed")
        return True

    def _collect_audio(self) -> None:
        if self.audio is None:
            return
        for _ in range(_MAX_AUDIO_BLOCKS_PER_TURN):
            block = self.audio.read(0.0)
            if block is None:
                return
            self.last_audio_at = time.monotonic()
            if len(self._audio_waiting) == self._audio_waiting.maxlen:
                self.audio_blocks_discarded += 1
            self._audio_waiting.append(block)

    def _write_audio_before(self, limit_mono_ns: int | None) -> None:
        """Write collected audio captured before limit_mono_ns (all of it if None) into the open segment."""
        writer = self._writer
        if writer is None:
            # Segments start with a picture; audio waits for the first frame (the writer trims the
            # part captured before it).
            return
        waiting = self._audio_waiting
        while waiting and (limit_mono_ns is None or waiting[0].mono_ns < limit_mono_ns):
            writer.write_audio(waiting.popleft())
            self.audio_blocks_written += 1

    def _note_missing_video(self) -> None:
        assert self._last_frame_at is not None
        missing_s = time.monotonic() - self._last_frame_at
        if not self._stall_reported and missing_s > self.stall_threshold_s:
            self._stall_reported = True
            self.stalls += 1
            logger.warning("video stalled: no frame for %.1f s", missing_s)
            if self.on_stall_begin is not None:
                try:
                    self.on_stall_begin(missing_s)
                except Exception:
                    logger.exception("on_stall_begin callback failed")

    def _note_video_resumed(self) -> None:
        now = time.monotonic()
        if self._stall_reported:
            assert self._last_frame_at is not None
            duration_s = now - self._last_frame_at
            self._stall_reported = False
            logger.warning("video resumed after %.1f s", duration_s)
            if self.on_stall is not None:
                try:
                    self.on_stall(duration_s)
                except Exception:
                    logger.exception("on_stall callback failed")
        self._last_frame_at = now

    def _write_frame(self, frame: VideoFrame) -> None:
        writer = self._writer
        # A roll requested for a later capture time stays pending through other rolls (segment length,
        # a fresh file after a pause): the boundary must still fall on that frame.
        # Taken under the lock so a request arriving meanwhile is not cleared unseen.
        with self._roll_lock:
            boundaries = self._roll_boundaries
            due = bool(boundaries) and frame.mono_ns >= boundaries[0]
            if due:
                # Every boundary this frame has reached falls on this one roll; later ones stay pending.
                self._roll_boundaries = [b for b in boundaries if b > frame.mono_ns]
        if writer is None:
            writer = self._writer = self._open_segment(frame)
        else:
            started = writer.started_mono_ns
            if started is not None and (due or frame.mono_ns - started >= self.segment_seconds * _NS_PER_S):
                # Open the next file before finishing the old one so current_path is never None while
                # recording; then close (fsync, hash, callback) the old one.
                finished, writer = writer, self._open_segment(frame)
                self._writer = writer
                self._finish_segment(finished)
        writer.write_video(frame)
        self.frames_written += 1

    def _apply_rate(self) -> None:
        """JL-16: a new frame rate starts with a segment, never inside one."""
        wanted = self.fps or self._native_fps
        set_rate = getattr(self.video, "set_rate", None)
        if wanted <= 0 or wanted == self.video.fps or set_rate is None:
            return
        set_rate(wanted)
        self._frame_interval_ns = round(_NS_PER_S / wanted)

    def _open_segment(self, frame: VideoFrame) -> SegmentWriter:
        if self.on_segment_boundary is not None:
            try:
                self.on_segment_boundary()
            except Exception:
                logger.exception("on_segment_boundary callback failed")
        self._apply_rate()
        path = self.segment_dir / f"{self.name_prefix}-{frame.utc:%Y%m%dT%H%M%S%f}Z.mp4"
        if path.exists():
            # Two segments cannot share a microsecond, but a clock step back could reuse a name.
            path = path.with_name(f"{path.stem}-{time.monotonic_ns()}.mp4")
        audio = self.audio
        width, height = self.frame_size or (self.video.width, self.video.height)
        writer = SegmentWriter(
            path,
            width=width,
            height=height,
            fps=self.video.fps,
            sample_rate=audio.sample_rate if audio is not None else None,
            channels=audio.channels if audio is not None else 1,
            video_encoder=self.video_encoder,
            bitrate=self.bitrate,
            chunk_bytes=self.chunk_bytes,
        )
        logger.info("recording segment %s", path)
        if self.on_segment_opened is not None:
            try:
                self.on_segment_opened(path, frame.mono_ns)
            except Exception:
                logger.exception("on_segment_opened callback failed for %s", path)
        return writer

    def _close_segment(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            self._finish_segment(writer)

    def _finish_segment(self, writer: SegmentWriter) -> None:
        if writer.started_mono_ns is None:
            # Opened for a roll that never got its first frame (an error came first): nothing to keep.
            writer.close()
            writer.path.unlink(missing_ok=True)
            return
        segment = writer.close()
        self.segments_closed += 1
        logger.info("closed segment %s (%.2f s, %d bytes)", segment.path, segment.duration_s, segment.size)
        try:
            self.on_segment_closed(segment)
        except Exception:
            # The file is safe on disk; a failing consumer must not stop the recording.
            logger.exception("on_segment_closed callback failed for %s", segment.path)

    def _close_sources(self) -> None:
        with self._lock:
            if self._sources_closed:
                return
            self._sources_closed = True
        try:
            self.video.close()
        finally:
            if self.audio is not None:
                self.audio.close()


def _is_no_space(exc: BaseException) -> bool:
    """Whether an error (or one it wraps) is ENOSPC."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "errno", None) == errno.ENOSPC or "No space left" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
