"""Capture sources: camera, microphone and synthetic stand-ins that feed the recorder."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.errors import SourceError

__all__ = [
    "AudioBlock",
    "AudioSource",
    "CameraSource",
    "MicrophoneSource",
    "SyntheticAudioSource",
    "SyntheticVideoSource",
    "VideoFrame",
    "VideoSource",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_NS_PER_S = 1_000_000_000


@dataclass(frozen=True, kw_only=True)
class VideoFrame:
    """One captured picture: BGR pixels plus its capture time on both clocks."""

    image: npt.NDArray[np.uint8]
    mono_ns: int
    utc: datetime


@dataclass(frozen=True, kw_only=True)
class AudioBlock:
    """A run of int16 samples, shape (n, channels), starting at the given capture time."""

    samples: npt.NDArray[np.int16]
    sample_rate: int
    mono_ns: int
    utc: datetime


@runtime_checkable
class VideoSource(Protocol):
    """Anything that yields VideoFrames; read returns None when nothing arrived in time (a stall)."""

    width: int
    height: int
    fps: float

    def open(self) -> None: ...

    def read(self, timeout: float) -> VideoFrame | None: ...

    def close(self) -> None: ...


@runtime_checkable
class AudioSource(Protocol):
    """Anything that yields AudioBlocks; read returns None when nothing arrived in time."""

    sample_rate: int
    channels: int

    def open(self) -> None: ...

    def read(self, timeout: float) -> AudioBlock | None: ...

    def close(self) -> None: ...


class _MonoUtcClock:
    """Maps monotonic nanoseconds to UTC from one anchor, so UTC stamps never jump with NTP steps."""

    def __init__(self) -> None:
        self.anchor_mono_ns = time.monotonic_ns()
        self.anchor_utc = datetime.now(UTC)

    def utc_at(self, mono_ns: int) -> datetime:
        """UTC time corresponding to a monotonic timestamp."""
        return self.anchor_utc + timedelta(microseconds=(mono_ns - self.anchor_mono_ns) / 1000)


class _DropOldestQueue(Generic[T]):
    """Bounded queue that discards the oldest item when full, so a slow consumer never blocks capture."""

    def __init__(self, maxsize: int) -> None:
        self._queue: queue.Queue[T] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, item: T) -> None:
        # Only producers take the lock; get() stays lock-free so a reader never waits on a producer.
        with self._lock:
            while True:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def get(self, timeout: float) -> T | None:
        try:
            return self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def clear(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class CameraSource:
    """An OpenCV camera (index, device path or URL) read by its own thread into a drop-oldest queue."""

    def __init__(
        self, device: int | str, width: int = 1280, height: int = 720, fps: float = 15.0, queue_size: int = 4
    ) -> None:
        self.device = device
        self.width = width
        self.height = height
        self.fps = fps
        self._queue: _DropOldestQueue[VideoFrame] = _DropOldestQueue(queue_size)
        self._capture: cv2.VideoCapture | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._clock = _MonoUtcClock()
        self.read_failures = 0

    @property
    def dropped_frames(self) -> int:
        """Frames discarded because the consumer fell behind."""
        return self._queue.dropped

    def open(self) -> None:
        """Open the camera and start the capture thread; raise SourceError if it cannot be opened."""
        if self._thread is not None:
            return
        capture = cv2.VideoCapture(self.device)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open camera {self.device!r}")
        # Requests only: drivers may pick the nearest supported mode, so read the real values back.
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        capture.set(cv2.CAP_PROP_FPS, self.fps)
        actual_width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        actual_height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        actual_fps = float(capture.get(cv2.CAP_PROP_FPS))
        if actual_width > 0 and actual_height > 0:
            self.width, self.height = actual_width, actual_height
        if 0 < actual_fps <= 240:
            self.fps = actual_fps
        self._capture = capture
        self._closing.clear()
        self._thread = threading.Thread(target=self._capture_loop, name=f"camera-{self.device}", daemon=True)
        self._thread.start()
        logger.info("camera %r opened at %dx%d %.1f fps", self.device, self.width, self.height, self.fps)

    def _capture_loop(self) -> None:
        capture = self._capture
        assert capture is not None
        while not self._closing.is_set():
            ok, image = capture.read()
            mono_ns = time.monotonic_ns()
            if not ok or image is None:
                # A dead camera shows up downstream as read() timeouts (stalls); back off to avoid spinning.
                self.read_failures += 1
                if self.read_failures == 1 or self.read_failures % 100 == 0:
                    logger.warning("camera %r read failed (%d failures)", self.device, self.read_failures)
                self._closing.wait(0.05)
                continue
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            frame_image: npt.NDArray[np.uint8] = np.ascontiguousarray(image, dtype=np.uint8)
            self._queue.put(VideoFrame(image=frame_image, mono_ns=mono_ns, utc=self._clock.utc_at(mono_ns)))

    def read(self, timeout: float) -> VideoFrame | None:
        """Next captured frame, or None if none arrived within timeout seconds."""
        return self._queue.get(timeout)

    def close(self) -> None:
        """Stop the capture thread and release the camera; safe to call twice."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                # Stuck inside a driver read: releasing under it could crash the process, so leak it.
                logger.error("camera %r capture thread did not stop; leaving the device open", self.device)
                self._thread = None
                self._capture = None
                return
            self._thread = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._queue.clear()


class MicrophoneSource:
    """A sounddevice (PortAudio) input stream whose callback fills a drop-oldest queue."""

    def __init__(
        self,
        device: str | int | None = None,
        sample_rate: int = 48000,
        channels: int = 1,
        block_ms: int = 20,
        queue_size: int = 100,
    ) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self.channels = channels
        self.block_frames = max(1, sample_rate * block_ms // 1000)
        self._queue: _DropOldestQueue[AudioBlock] = _DropOldestQueue(queue_size)
        self._stream: Any = None
        self._clock = _MonoUtcClock()
        self.overflows = 0

    @property
    def dropped_blocks(self) -> int:
        """Blocks discarded because the consumer fell behind."""
        return self._queue.dropped

    def open(self) -> None:
        """Open and start the input stream; raise SourceError if PortAudio or the device is unavailable."""
        if self._stream is not None:
            return
        try:
            # Imported here because importing sounddevice raises OSError when PortAudio is not installed.
            import sounddevice
        except OSError as exc:
            raise SourceError(f"PortAudio is not available: {exc}") from exc
        try:
            stream = sounddevice.InputStream(
                device=self.device,
                samplerate=self.sample_rate,
                channels=self.channels,
                dtype="int16",
                blocksize=self.block_frames,
                callback=self._on_audio,
            )
            stream.start()
        except (sounddevice.PortAudioError, ValueError) as exc:
            raise SourceError(f"cannot open microphone {self.device!r}: {exc}") from exc
        self._stream = stream
        logger.info(
            "microphone %r opened at %d Hz, %d channel(s)", self.device, self.sample_rate, self.channels
        )

    def _on_audio(self, indata: npt.NDArray[np.int16], frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's thread: copy (the buffer is reused) and stamp the first sample's capture time.
        now_ns = time.monotonic_ns()
        if status:
            self.overflows += 1
        mono_ns = now_ns - frames * _NS_PER_S // self.sample_rate
        block = AudioBlock(
            samples=np.array(indata, dtype=np.int16, copy=True).reshape(frames, self.channels),
            sample_rate=self.sample_rate,
            mono_ns=mono_ns,
            utc=self._clock.utc_at(mono_ns),
        )
        self._queue.put(block)

    def read(self, timeout: float) -> AudioBlock | None:
        """Next captured block, or None if none arrived within timeout seconds."""
        return self._queue.get(timeout)

    def close(self) -> None:
        """Stop and close the input stream; safe to call twice."""
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()
        self._queue.clear()


class _Pacer:
    """Hands out capture slots every 1/rate seconds on monotonic deadlines, with stall simulation.

    A late consumer gets the missed slots at once (up to max_backlog), as from a device buffer.
    """

    def __init__(self, rate: float, realtime: bool, max_backlog: int) -> None:
        self.interval_ns = round(_NS_PER_S / rate)
        self.realtime = realtime
        self.max_backlog = max(1, max_backlog)
        self._next_ns = 0
        self._stall_until_ns = 0
        self._virtual_stall_ns = 0
        self._lock = threading.Lock()
        self.skipped_slots = 0

    def start(self) -> None:
        self._next_ns = time.monotonic_ns()

    def set_rate(self, rate: float) -> None:
        """The next slot already handed out keeps its time; the one after it is at the new interval."""
        with self._lock:
            interval_ns = round(_NS_PER_S / rate)
            self._next_ns += interval_ns - self.interval_ns
            self.interval_ns = interval_ns

    def stall(self, seconds: float) -> None:
        with self._lock:
            if self.realtime:
                self._stall_until_ns = time.monotonic_ns() + int(seconds * _NS_PER_S)
            else:
                self._virtual_stall_ns += int(seconds * _NS_PER_S)

    def next_slot(self, timeout: float) -> int | None:
        """Monotonic time of the next capture slot, or None if no slot comes within timeout (a stall)."""
        with self._lock:
            stall_until_ns = self._stall_until_ns
            virtual_stall_ns, self._virtual_stall_ns = self._virtual_stall_ns, 0
        if not self.realtime:
            if virtual_stall_ns:
                # Without real time the stall is a jump of the virtual clock, reported by one empty read.
                self._next_ns += virtual_stall_ns
                return None
            slot = self._next_ns
            self._next_ns += self.interval_ns
            return slot
        now_ns = time.monotonic_ns()
        timeout_ns = int(max(0.0, timeout) * _NS_PER_S)
        if now_ns < stall_until_ns:
            time.sleep(min(timeout_ns, stall_until_ns - now_ns) / _NS_PER_S)
            now_ns = time.monotonic_ns()
            if now_ns < stall_until_ns:
                return None
        if self._next_ns < stall_until_ns:
            # Nothing was captured while stalled: resume on the first slot after the stall.
            self._next_ns = stall_until_ns
        backlog = (now_ns - self._next_ns) // self.interval_ns
        if backlog > self.max_backlog:
            # Like a device's bounded buffer: a slow consumer gets the newest max_backlog slots, the
            # older ones are lost.
            missed = backlog - self.max_backlog
            self.skipped_slots += missed
            self._next_ns += missed * self.interval_ns
        wait_ns = self._next_ns - now_ns
        if wait_ns > timeout_ns:
            time.sleep(timeout_ns / _NS_PER_S)
            return None
        if wait_ns > 0:
            time.sleep(wait_ns / _NS_PER_S)
        slot = self._next_ns
        self._next_ns += self.interval_ns
        return slot


class SyntheticVideoSource:
    """A moving test pattern with UTC time and label burned in, paced like a camera."""

    def __init__(
        self, width: int = 640, height: int = 360, fps: float = 15.0, label: str = "", realtime: bool = True
    ) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self.label = label
        self.realtime = realtime
        # Same buffering as CameraSource's queue: a few frames, then the oldest are dropped.
        self._pacer = _Pacer(fps, realtime, max_backlog=4)
        self._clock = _MonoUtcClock()
        self._background = self._colour_blocks(width, height)
        self._frame_index = 0
        self._opened = False

    @staticmethod
    def _colour_blocks(width: int, height: int) -> npt.NDArray[np.uint8]:
        colours = [(255, 255, 255), (0, 255, 255), (255, 255, 0), (0, 255, 0), (255, 0, 255), (0, 0, 255)]
        image = np.zeros((height, width, 3), dtype=np.uint8)
        block_width = max(1, width // len(colours))
        for index, colour in enumerate(colours):
            image[:, index * block_width : (index + 1) * block_width] = colour
        return image

    def open(self) -> None:
        """Start the pattern clock."""
        self._clock = _MonoUtcClock()
        self._pacer.start()
        self._opened = True

    def stall(self, seconds: float) -> None:
        """Make the camera 'die' for the given seconds: read() returns None and no frames are captured."""
        self._pacer.stall(seconds)

    def set_rate(self, fps: float) -> None:
        """Produce ``fps`` frames per second from the next frame on (a camera's rate is fixed once open)."""
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self._pacer.set_rate(fps)

    def read(self, timeout: float) -> VideoFrame | None:
        """Next frame at its capture slot, or None if the slot is beyond timeout or the source is stalled."""
        if not self._opened:
            raise SourceError("synthetic video source is not open")
        mono_ns = self._pacer.next_slot(timeout)
        if mono_ns is None:
            return None
        utc = self._clock.utc_at(mono_ns)
        return VideoFrame(image=self._render(utc), mono_ns=mono_ns, utc=utc)

    def _render(self, utc: datetime) -> npt.NDArray[np.uint8]:
        image = self._background.copy()
        bar_width = max(4, self.width // 20)
        x = (self._frame_index * max(1, self.width // 60)) % max(1, self.width - bar_width)
        image[:, x : x + bar_width] = (32, 32, 32)
        self._frame_index += 1
        scale = max(0.4, self.height / 480)
        thickness = max(1, round(scale * 2))
        stamp = utc.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
        for line_index, text in enumerate((stamp, self.label)):
            if not text:
                continue
            origin = (10, int((line_index + 1) * 40 * scale))
            # Dark outline first so the text stays readable over every colour block.
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2)
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness)
        return image

    def close(self) -> None:
        """Stop producing frames."""
        self._opened = False


class SyntheticAudioSource:
    """A continuous sine tone in int16 blocks, paced like a sound card."""

    def __init__(
        self,
        sample_rate: int = 48000,
        channels: int = 1,
        frequency: float = 440.0,
        block_ms: int = 20,
        realtime: bool = True,
        amplitude: float = 0.25,
    ) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.frequency = frequency
        self.block_frames = max(1, sample_rate * block_ms // 1000)
        self.realtime = realtime
        self.amplitude = amplitude
        # Sound cards buffer: a consumer draining every few frames must get every block (up to ~2 s).
        self._pacer = _Pacer(sample_rate / self.block_frames, realtime, max_backlog=2000 // block_ms)
        self._clock = _MonoUtcClock()
        self._sample_index = 0
        self._opened = False

    def open(self) -> None:
        """Start the tone clock."""
        self._clock = _MonoUtcClock()
        self._pacer.start()
        self._sample_index = 0
        self._opened = True

    def stall(self, seconds: float) -> None:
        """Make the microphone 'die' for the given seconds: read() returns None meanwhile."""
        self._pacer.stall(seconds)

    def read(self, timeout: float) -> AudioBlock | None:
        """Next block at its capture slot, or None if the slot is beyond timeout or the source is stalled."""
        if not self._opened:
            raise SourceError("synthetic audio source is not open")
        mono_ns = self._pacer.next_slot(timeout)
        if mono_ns is None:
            return None
        # Phase follows the block's capture time, so a stall leaves a phase jump like a real gap would.
        first_sample = (mono_ns - self._clock.anchor_mono_ns) * self.sample_rate // _NS_PER_S
        sample_numbers = np.arange(first_sample, first_sample + self.block_frames, dtype=np.float64)
        wave = np.sin(2 * math.pi * self.frequency * sample_numbers / self.sample_rate) * self.amplitude
        mono = np.round(wave * 32767).astype(np.int16)
        samples = np.repeat(mono.reshape(-1, 1), self.channels, axis=1)
        return AudioBlock(
            samples=samples, sample_rate=self.sample_rate, mono_ns=mono_ns, utc=self._clock.utc_at(mono_ns)
        )

    def close(self) -> None:
        """Stop producing blocks."""
        self._opened = False
