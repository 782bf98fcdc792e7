"""Media half of the edge agent: sources -> recorder -> fragmented-MP4 segments, with real encoding."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.encoder import SegmentFile, SegmentWriter, choose_video_encoder
from edge_agent.errors import EncoderError, SourceError
from edge_agent.fmp4 import is_complete_fragmented_mp4, iter_boxes, recover_fragmented_mp4
from edge_agent.recorder import Recorder
from edge_agent.sources import (
    AudioSource,
    CameraSource,
    MicrophoneSource,
    SyntheticAudioSource,
    SyntheticVideoSource,
    VideoSource,
)
from tests.fixtures.pulse import PulseMicrophone

REPO_ROOT = Path(__file__).resolve().parents[2]

requires_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")


def ffprobe(path: Path) -> dict[str, Any]:
    """Streams and format of a media file; fails the test on any ffprobe error output."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"ffprobe reported errors for {path}: {result.stderr}"
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def stream_of(info: dict[str, Any], codec_type: str) -> dict[str, Any]:
    streams: list[dict[str, Any]] = [s for s in info["streams"] if s["codec_type"] == codec_type]
    assert len(streams) == 1, f"expected one {codec_type} stream, got {info['streams']}"
    return streams[0]


def video_packet_times(path: Path) -> list[float]:
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return sorted(float(line) for line in result.stdout.split() if line.strip())


def first_video_packet_flags(path: Path) -> str:
    result = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", "v", "-read_intervals", "%+#1"),
            *("-show_entries", "packet=flags", "-of", "csv=p=0", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def assert_browser_playable(info: dict[str, Any], *, with_audio: bool) -> None:
    video = stream_of(info, "video")
    assert video["codec_name"] == "h264"
    assert video["profile"] in {"Main", "High", "Constrained Baseline"}
    if choose_video_encoder() == "libx264":
        assert video["profile"] in {"Main", "High"}
    assert video["pix_fmt"] == "yuv420p"
    if with_audio:
        audio = stream_of(info, "audio")
        assert audio["codec_name"] == "aac"
        assert audio["profile"] == "LC"


def write_synthetic_segment(path: Path, *, seconds: float, fps: float = 15.0) -> SegmentFile:
    """Encode a segment as fast as possible from non-realtime synthetic sources."""
    video = SyntheticVideoSource(width=320, height=180, fps=fps, label="unit-test", realtime=False)
    audio = SyntheticAudioSource(realtime=False)
    video.open()
    audio.open()
    writer = SegmentWriter(path, width=320, height=180, fps=fps)
    audio_block = audio.read(0)
    for _ in range(round(seconds * fps)):
        frame = video.read(0)
        assert frame is not None
        writer.write_video(frame)
        while audio_block is not None and audio_block.mono_ns < frame.mono_ns + round(1e9 / fps):
            writer.write_audio(audio_block)
            audio_block = audio.read(0)
    return writer.close()


class SegmentCollector:
    """on_segment_closed callback that records the calls and the thread they came from."""

    def __init__(self) -> None:
        self.segments: list[SegmentFile] = []
        self.files_on_disk_at_call: list[bool] = []

    def __call__(self, segment: SegmentFile) -> None:
        self.files_on_disk_at_call.append(segment.path.exists())
        self.segments.append(segment)


def test_synthetic_sources_stamp_consistent_times() -> None:
    video = SyntheticVideoSource(fps=10, realtime=False)
    audio = SyntheticAudioSource(sample_rate=16000, channels=2, block_ms=20, realtime=False)
    video.open()
    audio.open()
    frames = [video.read(0) for _ in range(5)]
    assert all(frame is not None for frame in frames)
    stamps = [frame.mono_ns for frame in frames if frame is not None]
    assert [b - a for a, b in itertools.pairwise(stamps)] == [100_000_000] * 4
    first, last = frames[0], frames[-1]
    assert first is not None and last is not None
    assert first.image.shape == (360, 640, 3) and first.image.dtype == np.uint8
    assert first.utc.tzinfo is not None
    assert abs((last.utc - first.utc).total_seconds() - 0.4) < 1e-3
    video.stall(2.0)
    assert video.read(0) is None
    resumed = video.read(0)
    assert resumed is not None and resumed.mono_ns - last.mono_ns >= 2_000_000_000
    block = audio.read(0)
    assert block is not None
    assert block.samples.shape == (320, 2) and block.samples.dtype == np.int16
    assert isinstance(video, VideoSource) and isinstance(audio, AudioSource)


def test_realtime_synthetic_video_is_paced_and_read_respects_timeout() -> None:
    video = SyntheticVideoSource(width=160, height=90, fps=20)
    video.open()
    started = time.monotonic()
    frames = [video.read(1.0) for _ in range(10)]
    elapsed = time.monotonic() - started
    assert all(frame is not None for frame in frames)
    assert 0.35 < elapsed < 1.0  # 10 frames at 20 fps, the first one immediately
    video.stall(5.0)
    started = time.monotonic()
    assert video.read(0.2) is None
    assert time.monotonic() - started < 0.5
    video.close()


def test_choose_video_encoder() -> None:
    assert choose_video_encoder() in {"h264_v4l2m2m", "libx264"}
    assert choose_video_encoder("libx264") == "libx264"
    with pytest.raises(EncoderError):
        choose_video_encoder("no_such_encoder")


def test_camera_source_reports_unopenable_device(tmp_path: Path) -> None:
    camera = CameraSource(str(tmp_path / "no-such-camera"), 640, 480, 15)
    with pytest.raises(SourceError, match="cannot open camera"):
        camera.open()


def test_camera_source_reads_in_its_thread_without_blocking(tmp_path: Path) -> None:
    # A video file stands in for a camera device: same cv2.VideoCapture path.
    clip = write_synthetic_segment(tmp_path / "clip.mp4", seconds=2.0)
    camera = CameraSource(str(clip.path), 320, 180, 15)
    camera.open()
    try:
        assert any(thread.name.startswith("camera-") for thread in threading.enumerate())
        frame = camera.read(2.0)
        assert frame is not None and frame.image.shape == (180, 320, 3)
        time.sleep(0.5)  # the capture thread races through the file; the bounded queue drops the oldest
        while camera.read(0.0) is not None:
            pass
        started = time.monotonic()
        assert camera.read(0.2) is None  # end of file behaves like a dead camera: a timeout, not a hang
        assert time.monotonic() - started < 0.6
        assert camera.dropped_frames > 0
    finally:
        camera.close()
    assert not any(thread.name.startswith("camera-") for thread in threading.enumerate())


def test_segment_writer_keeps_capture_gaps_and_hashes_file(tmp_path: Path) -> None:
    video = SyntheticVideoSource(width=320, height=180, fps=10, realtime=False)
    video.open()
    writer = SegmentWriter(tmp_path / "gap.mp4", width=320, height=180, fps=10, sample_rate=None)
    frames = []
    for index in range(20):
        if index == 10:
            video.stall(2.0)
            assert video.read(0) is None
        frame = video.read(0)
        assert frame is not None
        writer.write_video(frame)
        frames.append(frame)
    segment = writer.close()
    assert segment.video_frames == 20 and segment.audio_samples == 0
    assert abs(segment.duration_s - 4.0) < 0.01
    assert segment.size == segment.path.stat().st_size
    assert segment.sha256 == hashlib.sha256(segment.path.read_bytes()).hexdigest()
    assert is_complete_fragmented_mp4(segment.path)
    with pytest.raises(EncoderError, match="already closed"):
        writer.write_video(frames[-1])
    if shutil.which("ffprobe"):
        info = ffprobe(segment.path)
        assert [stream["codec_type"] for stream in info["streams"]] == ["video"]
        times = video_packet_times(segment.path)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) == pytest.approx(2.1, abs=0.01)


@pytest.mark.ffprobe
@requires_ffprobe
def test_segment_closed_before_any_audio_still_has_a_playable_audio_track(tmp_path: Path) -> None:
    video = SyntheticVideoSource(width=320, height=180, fps=15, realtime=False)
    video.open()
    writer = SegmentWriter(tmp_path / "short.mp4", width=320, height=180, fps=15)
    frame = video.read(0)
    assert frame is not None
    writer.write_video(frame)
    segment = writer.close()
    assert segment.video_frames == 1 and segment.audio_samples == 0
    info = ffprobe(segment.path)
    assert_browser_playable(info, with_audio=True)
    assert float(stream_of(info, "audio")["duration"]) < 0.2


@pytest.mark.slow
@pytest.mark.ffprobe
@requires_ffprobe
def test_recorder_rolls_playable_one_second_segments(tmp_path: Path) -> None:
    collector = SegmentCollector()
    recorder = Recorder(
        video=SyntheticVideoSource(width=320, height=180, fps=15, label="device-42"),
        audio=SyntheticAudioSource(),
        segment_dir=tmp_path,
        segment_seconds=1.0,
        on_segment_closed=collector,
        stop_event=threading.Event(),
        name_prefix="cam1",
    )
    recorder.start()
    assert any(thread.name == "recorder" for thread in threading.enumerate())
    deadline = time.monotonic() + 10
    while len(collector.segments) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.current_path is not None and recorder.current_path.name.startswith("cam1-")
    recorder.stop()
    assert recorder.failure is None
    assert not recorder.running
    assert recorder.current_path is None

    segments = collector.segments
    assert len(segments) >= 3  # three full ones plus the partial one closed by stop()
    assert all(collector.files_on_disk_at_call)
    # Exactly once per file, in capture order, and nothing left unreported on disk.
    assert sorted(path.name for path in tmp_path.iterdir()) == [segment.path.name for segment in segments]
    starts = [segment.started_mono_ns for segment in segments]
    assert starts == sorted(starts)
    assert sum(segment.video_frames for segment in segments) == recorder.frames_written
    for previous, following in itertools.pairwise(segments):
        # Back to back: the next segment starts at the frame after the previous one's last frame.
        assert abs(following.started_mono_ns - previous.ended_mono_ns) < 80_000_000
    for segment in segments:
        assert segment.path.name.endswith("Z.mp4")
        assert segment.size == segment.path.stat().st_size
        assert segment.sha256 == hashlib.sha256(segment.path.read_bytes()).hexdigest()
        assert segment.started_utc.tzinfo is not None and segment.ended_utc > segment.started_utc
        info = ffprobe(segment.path)
        assert_browser_playable(info, with_audio=True)
        assert first_video_packet_flags(segment.path).startswith("K"), "segment must open on a keyframe"
    for segment in segments[:-1]:
        info = ffprobe(segment.path)
        assert float(stream_of(info, "video")["duration"]) == pytest.approx(1.0, abs=0.15)
        assert float(stream_of(info, "audio")["duration"]) == pytest.approx(1.0, abs=0.15)
        assert segment.duration_s == pytest.approx(1.0, abs=0.15)
        assert segment.audio_samples == pytest.approx(48000, rel=0.05)  # cut where the video is cut
        assert 12 <= segment.video_frames <= 16
    assert recorder.stalls == 0


@pytest.mark.slow
def test_camera_stall_writes_no_frames_and_is_reported(tmp_path: Path) -> None:
    video = SyntheticVideoSource(width=320, height=180, fps=15)
    collector = SegmentCollector()
    stalls: list[float] = []
    recorder = Recorder(
        video=video,
        audio=SyntheticAudioSource(),
        segment_dir=tmp_path,
        segment_seconds=30.0,
        on_segment_closed=collector,
        stop_event=threading.Event(),
        on_stall=stalls.append,
        stall_threshold_s=0.5,
    )
    recorder.start()
    time.sleep(0.8)
    frames_before = recorder.frames_written
    video.stall(1.5)
    time.sleep(1.0)
    assert recorder.stalled and recorder.stalls == 1
    frames_during = recorder.frames_written - frames_before
    time.sleep(1.2)
    recorder.stop()

    assert frames_during <= 1
    assert recorder.stalls == 1
    assert len(stalls) == 1 and stalls[0] == pytest.approx(1.5, abs=0.35)
    assert len(collector.segments) == 1
    segment = collector.segments[0]
    if shutil.which("ffprobe"):
        info = ffprobe(segment.path)
        assert_browser_playable(info, with_audio=True)
        times = video_packet_times(segment.path)
        assert max(b - a for a, b in itertools.pairwise(times)) >= 1.4
        # Audio kept flowing while the camera was dead.
        assert float(stream_of(info, "audio")["duration"]) >= 2.6


def fragment_boxes(path: Path) -> list[tuple[bytes, int, int]]:
    with path.open("rb") as stream:
        return [(box.type, box.offset, box.end) for box in iter_boxes(stream, 0, path.stat().st_size)]


@pytest.mark.parametrize("seed", [1, 2])
def test_recover_fragmented_mp4_after_random_truncation(tmp_path: Path, seed: int) -> None:
    original = write_synthetic_segment(tmp_path / "whole.mp4", seconds=3.0)
    assert is_complete_fragmented_mp4(original.path)
    assert recover_fragmented_mp4(original.path) == original.size  # a whole file is left alone
    boxes = fragment_boxes(original.path)
    moofs = [box for box in boxes if box[0] == b"moof"]
    mdats = [box for box in boxes if box[0] == b"mdat"]
    # One fragment per second of video, then a small one with the AAC encoder's flushed tail.
    assert len(moofs) == len(mdats) == 4
    last_moof_offset = moofs[2][1]
    last_mdat_end = mdats[2][2]

    rng = random.Random(seed)
    offsets = [
        last_moof_offset + 3,
        last_mdat_end - 1,
        *rng.sample(range(last_moof_offset + 1, last_mdat_end), 3),
    ]
    data = original.path.read_bytes()
    for offset in offsets:
        cut = tmp_path / f"cut-{offset}.mp4"
        cut.write_bytes(data[:offset])
        assert not is_complete_fragmented_mp4(cut)
        assert recover_fragmented_mp4(cut) == last_moof_offset
        assert cut.stat().st_size == last_moof_offset
        assert is_complete_fragmented_mp4(cut)
        if shutil.which("ffprobe"):
            info = ffprobe(cut)
            assert_browser_playable(info, with_audio=True)
            assert float(stream_of(info, "video")["duration"]) == pytest.approx(2.0, abs=0.1)


def test_recover_returns_none_when_nothing_playable(tmp_path: Path) -> None:
    original = write_synthetic_segment(tmp_path / "whole.mp4", seconds=1.0)
    boxes = fragment_boxes(original.path)
    moov = next(box for box in boxes if box[0] == b"moov")
    first_moof = next(box for box in boxes if box[0] == b"moof")
    data = original.path.read_bytes()
    for name, length in [
        ("inside-moov", moov[1] + 20),
        ("only-header", first_moof[1]),
        ("mid-fragment", first_moof[2] + 50),
    ]:
        cut = tmp_path / f"{name}.mp4"
        cut.write_bytes(data[:length])
        assert recover_fragmented_mp4(cut) is None
        assert cut.stat().st_size == length  # left untouched for a human to look at
        assert not is_complete_fragmented_mp4(cut)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x01junk" + bytes(100))
    assert recover_fragmented_mp4(garbage) is None


_KILLED_RECORDER = textwrap.dedent(
    """
    import pathlib, sys, threading, time
    from edge_agent.recorder import Recorder
    from edge_agent.sources import SyntheticAudioSource, SyntheticVideoSource

    recorder = Recorder(
        video=SyntheticVideoSource(width=320, height=180, fps=15, label="killed"),
        audio=SyntheticAudioSource(),
        segment_dir=pathlib.Path(sys.argv[1]),
        segment_seconds=60.0,
        on_segment_closed=lambda segment: None,
        stop_event=threading.Event(),
    )
    recorder.start()
    time.sleep(120)
    """
)


@pytest.mark.slow
@pytest.mark.ffprobe
@requires_ffprobe
def test_kill_9_mid_segment_leaves_a_recoverable_file(tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RECORDER, str(tmp_path)], cwd=REPO_ROOT, env=environment
    )
    try:
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob("seg-*.mp4")) and time.monotonic() < deadline:
            assert process.poll() is None, "recorder subprocess died on its own"
            time.sleep(0.05)
        time.sleep(2.6)  # well past two one-second fragments, in the middle of the third
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    [partial] = list(tmp_path.glob("seg-*.mp4"))
    size_before = partial.stat().st_size
    recovered_size = recover_fragmented_mp4(partial)
    assert recovered_size is not None and recovered_size <= size_before
    assert partial.stat().st_size == recovered_size
    assert is_complete_fragmented_mp4(partial)
    info = ffprobe(partial)
    assert_browser_playable(info, with_audio=True)
    assert float(stream_of(info, "video")["duration"]) >= 1.0


@pytest.mark.pulseaudio
def test_microphone_records_one_second_into_a_segment(
    tmp_path: Path, pulse_microphone: PulseMicrophone
) -> None:
    """A real-time capture device (PulseAudio null sink + sine) goes through the same writer as a camera."""
    microphone = MicrophoneSource(pulse_microphone.device, sample_rate=48000, channels=1, block_ms=20)
    video = SyntheticVideoSource(width=320, height=180, fps=15)
    microphone.open()
    try:
        # PulseAudio via ALSA needs a moment (~1.5 s) before the first block; don't count that as recording.
        assert microphone.read(10.0) is not None, "the input device delivered no audio within 10 s"
        while microphone.read(0.0) is not None:
            pass
    except BaseException:
        microphone.close()
        raise
    video.open()
    writer = SegmentWriter(tmp_path / "mic.mp4", width=320, height=180, fps=15)
    loudest = 0
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            frame = video.read(0.5)
            if frame is not None:
                writer.write_video(frame)
            while (block := microphone.read(0.0)) is not None:
                loudest = max(loudest, int(np.abs(block.samples).max()))
                writer.write_audio(block)
    finally:
        microphone.close()
        video.close()
        segment = writer.close()
    assert segment.audio_samples == pytest.approx(48000, rel=0.2)
    assert loudest > 1000, "the captured audio is silence, not the test tone"
    if shutil.which("ffprobe"):
        info = ffprobe(segment.path)
        assert float(stream_of(info, "audio")["duration"]) == pytest.approx(1.0, abs=0.2)
