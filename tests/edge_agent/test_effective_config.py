"""Issue #5: the desired fleet config takes effect (recorder, sessions, uploader), survives a restart, and
what the device cannot apply is reported with an error."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import pytest

from edge_agent.app import AgentApp
from edge_agent.commands import CONFIG_STATE_FILE, CommandHandler
from edge_agent.config import AgentConfig, ConfigError
from edge_agent.effective_config import overlay
from edge_agent.encoder import SegmentFile
from edge_agent.recorder import Recorder
from edge_agent.sources import SyntheticVideoSource
from edge_agent.uploader import Uploader
from protocol import fleet
from protocol.fleet import DesiredConfig, ReportedConfig
from protocol.messages import FileInit, Message
from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS

DEVICE = "rec-1"


class FakeClient:
    """Records publishes; stands in for paho at the outermost edge."""

    def __init__(self) -> None:
        self.published: list[fleet.FleetMessage] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append(fleet.decode(topic, payload))


def _config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "device_id": DEVICE,
        "private_key_file": tmp_path / "k.pem",
        "data_dir": tmp_path / "data",
        "mqtt_url": "mqtt://h:1",
        "segment_seconds": 1.0,
        "width": 1280,
        "height": 720,
        "fps": 10.0,
        "ingest_public_keys": INGEST_PUBLIC_KEYS,
    }
    values.update(overrides)
    return AgentConfig(**values)


def _agent(tmp_path: Path, **overrides: Any) -> tuple[AgentApp, CommandHandler, FakeClient]:
    """An unstarted app with its LiveConfig restored and a command handler wired as AgentApp does."""
    app = AgentApp(_config(tmp_path, **overrides), simulate=True)
    app.live.restore(app.config.data_dir)
    client = FakeClient()
    handler = CommandHandler(
        app.config,
        client,  # type: ignore[arg-type]
        state_dir=app.config.data_dir,
        on_config=app.live.apply,
    )
    return app, handler, client


def _frame_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def _start_recorder(app: Any, tmp_path: Path, width: int, height: int) -> tuple[Recorder, list[SegmentFile]]:
    """A real recorder on a fast synthetic 10 fps source, wired to the app's segment-boundary hook,
    started and left running until two one-second segments have closed."""
    closed: list[SegmentFile] = []
    recorder = Recorder(
        video=SyntheticVideoSource(width=width, height=height, fps=10, realtime=False),
        audio=None,
        segment_dir=tmp_path / "segments",
        segment_seconds=app.segment_seconds,
        on_segment_closed=closed.append,
        stop_event=threading.Event(),
        on_segment_boundary=app._on_segment_boundary,
    )
    app.recorder = recorder
    recorder.start()
    deadline = time.monotonic() + 30
    while len(closed) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return recorder, closed


def test_desired_config_changes_the_next_segment_not_the_open_one(tmp_path: Path) -> None:
    """JL-16: length and size change at the next boundary; no segment is cut or re-encoded mid-way."""
    app, handler, client = _agent(tmp_path)
    recorder, closed = _start_recorder(app, tmp_path, 1280, 720)
    deadline = time.monotonic() + 30
    try:
        report = handler.apply_config(
            DesiredConfig(
                device_id=DEVICE,
                version=1,
                settings={"segment_seconds": 10, "resolution": "640x480", "bitrate_kbps": 500},
            )
        )
        assert report.error == "" and report.version == 1
        while sum(1 for s in closed if s.duration_s > 5) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        recorder.stop()
    assert recorder.failure is None
    assert client.published == [report]
    full = closed[:-1]  # the last one was closed by stop()
    durations = [segment.duration_s for segment in full]
    switch = next(index for index, seconds in enumerate(durations) if seconds > 5)
    assert switch >= 2
    for segment in full[:switch]:
        assert segment.duration_s == pytest.approx(1.0, abs=0.15)  # the open one kept its length
        assert _frame_size(segment.path) == (1280, 720)
    for segment in full[switch:]:
        assert segment.duration_s == pytest.approx(10.0, abs=0.15)
        assert _frame_size(segment.path) == (640, 480)
    assert recorder.bitrate == 500_000


class _Link:
    connected = True

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def publish(self, msg: Message) -> bool:
        self.sent.append(msg)
        return True


class _Outbox:
    """One pending segment on disk (the uploader only reads these attributes)."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(b"x" * 1000)
        signed = SimpleNamespace(file_id="f-1", manifest=SimpleNamespace(device_id=DEVICE))
        self.segment = SimpleNamespace(
            sequence=1,
            device_id=DEVICE,
            path=path,
            size=1000,
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            signed=signed,
            file_id="f-1",
        )

    def pending(self, limit: int) -> list[Any]:
        return [self.segment]

    def chunk_digests(self, sequence: int, chunk_bytes: int) -> list[bytes] | None:
        return None  # no digests from the seal: each chunk is hashed as it is sent


def test_upload_window_and_cap_apply_to_new_transfers(tmp_path: Path) -> None:
    """Outside the window no transfer starts; inside, it starts with the cap fixed at that moment."""
    app, handler, _ = _agent(tmp_path)
    now = [datetime(2026, 1, 1, 12, 0)]
    ticks = [0.0]

    def clock() -> float:
        ticks[0] += 1.0
        return ticks[0]

    link = _Link()
    uploader = Uploader(
        _Outbox(tmp_path / "seg.mp4"),  # type: ignore[arg-type]
        link,
        app.config,
        clock,
        policy=lambda: app.live.current,
        wall_clock=lambda: now[0],
    )
    settings = {"upload_window": "22:00-06:00", "bandwidth_cap_kbps": 64}
    assert handler.apply_config(DesiredConfig(device_id=DEVICE, version=3, settings=settings)).error == ""
    uploader.step()
    assert link.sent == []  # noon is outside 22:00-06:00 (JL-17: it waits in the outbox)
    now[0] = datetime(2026, 1, 2, 1, 30)  # the window wraps past midnight
    uploader.step()
    assert [type(msg) for msg in link.sent][:1] == [FileInit]
    transfer = uploader._active["f-1"]
    assert transfer.cap_bps == 64_000
    assert transfer.sender.ack_timeout_s > app.config.ack_timeout_s
    uploader.stop()


def test_applied_config_survives_a_restart(tmp_path: Path) -> None:
    """fleet-config.json is read at start: a restarted agent runs the version it reported."""
    _, handler, _ = _agent(tmp_path)
    settings = {"segment_seconds": 30, "prerecord_seconds": 5, "explanation_clip_seconds": 20}
    handler.apply_config(DesiredConfig(device_id=DEVICE, version=7, settings=settings))
    app, handler, client = _agent(tmp_path)
    current = app.live.current
    assert current.version == 7
    assert current.agent.segment_seconds == 30.0
    assert current.agent.prerecord_seconds == 5.0
    assert current.agent.explanation_seconds == 20.0
    handler.apply_config(DesiredConfig(device_id=DEVICE, version=7, settings=settings))  # retained re-send
    (report,) = client.published
    assert isinstance(report, ReportedConfig)
    assert (report.version, report.settings, report.error) == (7, settings, "")


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"resolution": "1920x1080"}, "exceeds what the camera delivers (1280x720)"),
        ({"explanation_clip_seconds": 60}, "explanation_seconds must be between 5 and 30"),
    ],
)
def test_a_setting_the_device_cannot_apply_is_reported_with_an_error(
    tmp_path: Path, settings: dict[str, Any], reason: str
) -> None:
    """Never silently ignored: that version comes back with the error and the settings still in force."""
    app, handler, _ = _agent(tmp_path)
    handler.apply_config(DesiredConfig(device_id=DEVICE, version=1, settings={"segment_seconds": 20}))
    report = handler.apply_config(DesiredConfig(device_id=DEVICE, version=2, settings=settings))
    assert report.version == 2 and reason in report.error
    assert report.settings == {"segment_seconds": 20}
    assert app.live.current.version == 1 and app.live.current.agent.segment_seconds == 20.0
    saved = json.loads((app.config.data_dir / CONFIG_STATE_FILE).read_text(encoding="utf-8"))
    assert saved == {"version": 1, "settings": {"segment_seconds": 20}}


def test_overlay_rules(tmp_path: Path) -> None:
    """Fleet and agent.toml rules both hold; the window may wrap past midnight."""
    base = _config(tmp_path)
    with pytest.raises(ConfigError, match="unknown config setting"):
        overlay(base, {"gain_db": 30})
    effective = overlay(base, {"upload_window": "22:00-06:00"})
    assert effective.upload_allowed(datetime(2026, 1, 1, 23, 59))
    assert not effective.upload_allowed(datetime(2026, 1, 1, 6, 0))
    assert overlay(base, {"upload_window": ""}).upload_allowed(datetime(2026, 1, 1, 12, 0))
    assert overlay(base, {}).agent == base


def _rate(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.streams.video[0].average_rate or 0)


def test_fps_changes_at_the_next_segment_for_a_synthetic_source(tmp_path: Path) -> None:
    """JL-16: a new frame rate starts with a segment; the open one keeps its rate."""
    app, handler, _ = _agent(tmp_path)
    recorder, closed = _start_recorder(app, tmp_path, 640, 360)
    deadline = time.monotonic() + 30
    try:
        report = handler.apply_config(DesiredConfig(device_id=DEVICE, version=1, settings={"fps": 5}))
        assert report.error == ""
        while sum(1 for s in closed if _rate(s.path) == 5) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        recorder.stop()
    assert recorder.failure is None
    rates = [_rate(segment.path) for segment in closed[:-1]]
    switch = rates.index(5)
    assert switch >= 2 and set(rates[:switch]) == {10} and set(rates[switch:]) == {5}
    assert recorder.video.fps == 5


def test_a_rate_the_camera_does_not_deliver_is_reported_with_an_error(tmp_path: Path) -> None:
    """A camera's rate is fixed once open: another fps is refused like a too-large resolution."""
    app, handler, _ = _agent(tmp_path)
    camera = SimpleNamespace(width=1280, height=720, fps=10.0)  # no set_rate, as CameraSource
    app.recorder = SimpleNamespace(video=camera)  # type: ignore[assignment]
    refused = handler.apply_config(DesiredConfig(device_id=DEVICE, version=1, settings={"fps": 30}))
    assert "fps 30 is not what the camera delivers (10 fps)" in refused.error
    assert app.live.current.version == 0
    same = handler.apply_config(DesiredConfig(device_id=DEVICE, version=2, settings={"fps": 10}))
    assert same.error == "" and app.live.current.fps == 10
    with pytest.raises(ConfigError, match=r"fps must be an integer 1\.\.60"):
        overlay(_config(tmp_path), {"fps": 0})
