"""Encodes captured frames and audio into one fragmented MP4 segment (H.264 + AAC)."""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext
from av.video.stream import VideoStream

from edge_agent.errors import EncoderError
from edge_agent.sources import AudioBlock, VideoFrame
from zfjl_common.fsutil import fsync_dir, sha256_file, size_sha256_and_chunk_digests

__all__ = ["SegmentFile", "SegmentWriter", "choose_video_encoder", "fsync_path"]

logger = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000
# 90 kHz is the customary video clock: fine enough for jittery capture times, small enough for mp4.
_VIDEO_TIME_BASE = Fraction(1, 90_000)
# Hardware encoder of the Raspberry Pi (and other V4L2 mem-to-mem SoCs), preferred when it opens.
_HARDWARE_ENCODER = "h264_v4l2m2m"
_SOFTWARE_ENCODER = "libx264"
# A fragment is flushed at every keyframe (gop = 1 s) and at the latest after this many microseconds,
# so a killed process loses at most about one second of recording.
_FRAGMENT_MICROSECONDS = 1_000_000
_CONTAINER_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": str(_FRAGMENT_MICROSECONDS),
    # Hand every finished fragment to the OS at once instead of keeping it in the AVIO buffer.
    "flush_packets": "1",
    # During a camera stall only audio flows; don't let the interleaver hold it back for 10 s.
    "max_interleave_delta": str(_FRAGMENT_MICROSECONDS),
}
# Audio arriving later than this after the previous block is a gap: fill it with silence to keep A/V sync.
_AUDIO_GAP_TOLERANCE_S = 0.04


@dataclass(frozen=True, kw_only=True)
class SegmentFile:
    """A closed, fsynced segment on disk and what it covers."""

    path: Path
    size: int
    sha256: str
    started_utc: datetime
    ended_utc: datetime
    started_mono_ns: int
    ended_mono_ns: int
    video_frames: int
    audio_samples: int
    # SHA-256 of each ``chunk_bytes`` piece, taken in the same read as ``sha256`` when the segment was
    # sealed: the uploader names them in the chunks' topics instead of hashing every chunk again
    # (docs/performance.md). None: not computed (the uploader then hashes each chunk as it sends it).
    chunk_digests: tuple[bytes, ...] | None = field(default=None, repr=False)
    chunk_bytes: int = 0  # the chunk size the digests were made for

    @property
    def duration_s(self) -> float:
        """Capture time covered by the segment, in seconds."""
        return (self.ended_mono_ns - self.started_mono_ns) / _NS_PER_S


def fsync_path(path: Path) -> None:
    """Flush a file's data and its directory entry to stable storage."""
    file_descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(file_descriptor)
    finally:
        os.close(file_descriptor)
    fsync_dir(path.parent)


@functools.cache
def _encoder_opens(name: str) -> bool:
    """Whether the codec exists in this FFmpeg build and can really be opened (hardware present)."""
    try:
        context = av.CodecContext.create(name, "w")
    except (av.FFmpegError, ValueError) as exc:
        logger.debug("video encoder %s unavailable: %s", name, exc)
        return False
    if not isinstance(context, VideoCodecContext):
        return False
    context.width = 640
    context.height = 480
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, 15)
    context.framerate = Fraction(15)
    try:
        context.open()
    except (av.FFmpegError, ValueError) as exc:
        logger.debug("video encoder %s does not open: %s", name, exc)
        return False
    return True


def choose_video_encoder(preferred: str = "auto") -> str:
    """Name of the H.264 encoder to use: the V4L2 hardware encoder when it opens, else libx264."""
    if preferred != "auto":
        if not _encoder_opens(preferred):
            raise EncoderError(f"video encoder {preferred!r} is not available")
        return preferred
    for name in (_HARDWARE_ENCODER, _SOFTWARE_ENCODER):
        if _encoder_opens(name):
            return name
    raise EncoderError("no H.264 encoder available (tried h264_v4l2m2m, libx264)")


def _audio_layout_name(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    return f"{channels}c"


class SegmentWriter:
    """Writes one fragmented-MP4 segment; timestamps come from capture times so gaps stay gaps."""

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: float,
        sample_rate: int | None = 48000,
        channels: int = 1,
        video_encoder: str = "auto",
        bitrate: int | None = None,
        sync_interval_s: float | None = 2.0,
        chunk_bytes: int | None = None,
    ) -> None:
        """Open the output file; sample_rate=None records video only.

        ``chunk_bytes``: the uploader's chunk size; when given, sealing also records each chunk's
        SHA-256 (same read of the file as the whole-file hash).
        """
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise EncoderError(f"frame size must be positive and even for yuv420p, got {width}x{height}")
        if fps <= 0:
            raise EncoderError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.width = width
        self.height = height
        self.fps = fps
        self.sample_rate = sample_rate
        self.channels = channels
        self.video_encoder = choose_video_encoder(video_encoder)
        self.sync_interval_s = sync_interval_s
        if chunk_bytes is not None and chunk_bytes <= 0:
            raise EncoderError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.chunk_bytes = chunk_bytes
        self._frame_interval_ticks = max(1, round(1 / (fps * _VIDEO_TIME_BASE)))
        self._frame_interval_ns = round(_NS_PER_S / fps)
        self._started_mono_ns: int | None = None
        self._started_utc: datetime | None = None
        self._last_video_mono_ns: int | None = None
        self._last_video_pts = -1
        self._audio_pending: npt.NDArray[np.float32] = np.zeros((channels, 0), dtype=np.float32)
        self._audio_next_sample = 0  # stream position (samples) right after everything queued so far
        self._audio_emitted_samples = 0  # stream position of the next AudioFrame to encode
        self.video_frames = 0
        self.audio_samples = 0
        self._closed = False
        self._last_sync = time.monotonic()
        self._sync_descriptor: int | None = None
        try:
            self._container: OutputContainer = av.open(
                str(self.path), "w", format="mp4", options=dict(_CONTAINER_OPTIONS)
            )
            self._video_stream = self._add_video_stream(bitrate)
            self._audio_stream = self._add_audio_stream() if sample_rate is not None else None
            self._container.start_encoding()
        except (av.FFmpegError, ValueError, OSError) as exc:
            self._abandon()
            raise EncoderError(f"cannot open segment {self.path}: {exc}") from exc
        self._audio_frame_size = (
            (self._audio_stream.codec_context.frame_size or 1024) if self._audio_stream is not None else 0
        )
        if sync_interval_s is not None:
            self._sync_descriptor = os.open(self.path, os.O_RDONLY)
        logger.debug("segment %s opened with %s", self.path, self.video_encoder)

    def _add_video_stream(self, bitrate: int | None) -> VideoStream:
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream(self.video_encoder, rate=rate)
        if not isinstance(stream, VideoStream):
            raise EncoderError(f"{self.video_encoder} is not a video encoder")
        stream.width = self.width
        stream.height = self.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = _VIDEO_TIME_BASE
        stream.time_base = _VIDEO_TIME_BASE
        # One keyframe per second: every fragment starts decodable and a crash loses at most ~1 s.
        stream.codec_context.gop_size = max(1, round(self.fps))
        stream.codec_context.max_b_frames = 0
        if self.video_encoder == _SOFTWARE_ENCODER:
            # ultrafast keeps a Pi-class CPU real-time; cabac=1 lifts the stream from Baseline to Main
            # profile, which browsers and players decode everywhere.
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "cabac=1"}
            if bitrate is not None:
                stream.codec_context.bit_rate = bitrate
        else:
            # Hardware encoders need an explicit rate; ~0.1 bit per pixel is a decent evidence quality.
            stream.codec_context.bit_rate = bitrate or int(self.width * self.height * self.fps * 0.1)
        return stream

    def _add_audio_stream(self) -> AudioStream:
        assert self.sample_rate is not None
        stream = self._container.add_stream("aac", rate=self.sample_rate)
        stream.layout = _audio_layout_name(self.channels)
        stream.format = "fltp"
        stream.time_base = Fraction(1, self.sample_rate)
        stream.codec_context.time_base = Fraction(1, self.sample_rate)
        stream.codec_context.bit_rate = 64_000 * self.channels
        return stream

    @property
    def started_mono_ns(self) -> int | None:
        """Capture time of the first thing written, or None while the segment is empty."""
        return self._started_mono_ns

    def _begin(self, mono_ns: int, utc: datetime) -> int:
        if self._closed:
            raise EncoderError(f"segment {self.path} is already closed")
        if self._started_mono_ns is None:
            self._started_mono_ns = mono_ns
            self._started_utc = utc
        return self._started_mono_ns

    def write_video(self, frame: VideoFrame) -> None:
        """Encode one frame at the position given by its capture time."""
        start_ns = self._begin(frame.mono_ns, frame.utc)
        pts = (frame.mono_ns - start_ns) * _VIDEO_TIME_BASE.denominator // _NS_PER_S
        # Encoders reject repeated or backwards timestamps; nudge instead of dropping evidence.
        pts = max(pts, self._last_video_pts + 1)
        image = frame.image
        if image.ndim != 3 or image.shape[2] != 3:
            raise EncoderError(f"expected an HxWx3 BGR image, got shape {image.shape}")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        # Cameras may renegotiate their mode; the segment keeps one size, so scale here.
        video_frame = video_frame.reformat(width=self.width, height=self.height, format="yuv420p")
        video_frame.pts = pts
        video_frame.time_base = _VIDEO_TIME_BASE
        try:
            packets = self._video_stream.encode(video_frame)
            self._mux_video(packets)
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise EncoderError(f"cannot encode video into {self.path}: {exc}") from exc
        self._last_video_pts = pts
        self._last_video_mono_ns = frame.mono_ns
        self.video_frames += 1
        self._maybe_sync()

    def _mux_video(self, packets: list[Packet[VideoStream]]) -> None:
        for packet in packets:
            # The muxer needs a duration for the last sample of each fragment; use the nominal interval.
            if not packet.duration:
                packet.duration = self._frame_interval_ticks
            self._container.mux(packet)

    def write_audio(self, block: AudioBlock) -> None:
        """Queue a block of samples at the position given by its capture time; gaps become silence."""
        if self._audio_stream is None or self.sample_rate is None:
            raise EncoderError(f"segment {self.path} was opened without audio")
        if block.sample_rate != self.sample_rate:
            raise EncoderError(
                f"audio block at {block.sample_rate} Hz, segment expects {self.sample_rate} Hz"
            )
        samples = block.samples
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise EncoderError(f"expected audio shape (n, {self.channels}), got {samples.shape}")
        start_ns = self._begin(block.mono_ns, block.utc)
        position = (block.mono_ns - start_ns) * self.sample_rate // _NS_PER_S
        planar = samples.T.astype(np.float32) / 32768.0
        if position < 0:
            # Captured before the segment began (belongs to the previous segment's tail); keep the rest.
            planar = planar[:, -position:]
            position = 0
        tolerance = int(_AUDIO_GAP_TOLERANCE_S * self.sample_rate)
        first_block = self.audio_samples == 0 and self._audio_next_sample == 0
        gap = position - self._audio_next_sample
        if gap > tolerance or (first_block and gap > 0):
            self._queue_silence(gap)
        if planar.shape[1]:
            self._queue_audio(planar)
            self.audio_samples += planar.shape[1]
        self._maybe_sync()

    def _queue_silence(self, samples: int) -> None:
        # In one-second pieces so a long microphone outage cannot allocate a huge buffer at once.
        assert self.sample_rate is not None
        for piece_start in range(0, samples, self.sample_rate):
            piece = min(self.sample_rate, samples - piece_start)
            self._queue_audio(np.zeros((self.channels, piece), dtype=np.float32))

    def _pad_audio_to_video_end(self) -> None:
        # Audio for the last moments may not have been delivered yet (or the microphone went quiet);
        # silence up to the last frame's end keeps the track as long as the video and never empty.
        if self.sample_rate is None or self._started_mono_ns is None or self._last_video_mono_ns is None:
            return
        video_end_ns = self._last_video_mono_ns + self._frame_interval_ns - self._started_mono_ns
        missing = video_end_ns * self.sample_rate // _NS_PER_S - self._audio_next_sample
        if missing > 0:
            self._queue_silence(missing)

    def _queue_audio(self, planar: npt.NDArray[np.float32]) -> None:
        self._audio_pending = np.concatenate((self._audio_pending, planar), axis=1)
        self._audio_next_sample += planar.shape[1]
        frame_size = self._audio_frame_size
        while self._audio_pending.shape[1] >= frame_size:
            chunk, self._audio_pending = (
                self._audio_pending[:, :frame_size],
                self._audio_pending[:, frame_size:],
            )
            self._encode_audio(chunk)

    def _encode_audio(self, chunk: npt.NDArray[np.float32] | None) -> None:
        assert self._audio_stream is not None and self.sample_rate is not None
        audio_frame: av.AudioFrame | None = None
        if chunk is not None:
            audio_frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format="fltp", layout=_audio_layout_name(self.channels)
            )
            audio_frame.sample_rate = self.sample_rate
            audio_frame.pts = self._audio_emitted_samples
            audio_frame.time_base = Fraction(1, self.sample_rate)
            self._audio_emitted_samples += chunk.shape[1]
        try:
            for packet in self._audio_stream.encode(audio_frame):
                self._container.mux(packet)
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise EncoderError(f"cannot encode audio into {self.path}: {exc}") from exc

    def _maybe_sync(self) -> None:
        # Fragments reach the OS immediately; this also gets them onto the card against power loss.
        if self._sync_descriptor is None or self.sync_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_sync >= self.sync_interval_s:
            self._last_sync = now
            os.fsync(self._sync_descriptor)

    def _abandon(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, ValueError, OSError):
                logger.debug("closing abandoned segment %s failed", self.path, exc_info=True)

    def close(self) -> SegmentFile:
        """Flush encoders, finish the file, fsync it and its directory, and describe it."""
        if self._closed:
            raise EncoderError(f"segment {self.path} is already closed")
        self._closed = True
        try:
            try:
                if self._audio_stream is not None:
                    self._pad_audio_to_video_end()
                    if self._audio_pending.shape[1]:
                        # The AAC encoder accepts a short last frame, so no padding is needed.
                        self._encode_audio(self._audio_pending)
                        self._audio_pending = np.zeros((self.channels, 0), dtype=np.float32)
                    self._encode_audio(None)
                self._mux_video(self._video_stream.encode(None))
                self._container.close()
            except (av.FFmpegError, ValueError, OSError) as exc:
                self._abandon()
                raise EncoderError(f"cannot finish segment {self.path}: {exc}") from exc
        finally:
            if self._sync_descriptor is not None:
                os.close(self._sync_descriptor)
                self._sync_descriptor = None
        fsync_path(self.path)
        return self._describe()

    def _describe(self) -> SegmentFile:
        started_mono_ns = self._started_mono_ns if self._started_mono_ns is not None else time.monotonic_ns()
        started_utc = self._started_utc if self._started_utc is not None else datetime.now(UTC)
        ended_mono_ns = started_mono_ns
        if self._last_video_mono_ns is not None:
            # The last frame is shown for one frame interval.
            ended_mono_ns = self._last_video_mono_ns + self._frame_interval_ns
        if self.sample_rate and self._audio_next_sample:
            audio_end_ns = started_mono_ns + self._audio_next_sample * _NS_PER_S // self.sample_rate
            ended_mono_ns = max(ended_mono_ns, audio_end_ns)
        chunk_digests: tuple[bytes, ...] | None = None
        if self.chunk_bytes is None:
            size, sha256 = self.path.stat().st_size, sha256_file(self.path)
        else:
            # One read at seal time (recording pace) instead of a SHA-256 per chunk at upload time.
            size, sha256, digests = size_sha256_and_chunk_digests(self.path, self.chunk_bytes)
            chunk_digests = tuple(digests)
        return SegmentFile(
            path=self.path,
            size=size,
            sha256=sha256,
            started_utc=started_utc,
            ended_utc=started_utc + timedelta(microseconds=(ended_mono_ns - started_mono_ns) / 1000),
            started_mono_ns=started_mono_ns,
            ended_mono_ns=ended_mono_ns,
            video_frames=self.video_frames,
            audio_samples=self.audio_samples,
            chunk_digests=chunk_digests,
            chunk_bytes=self.chunk_bytes or 0,
        )
