"""JL-16 end to end: a real recorder process, a declared interruption, a spoken explanation clip,
and the real server's timeline verdict — everything over the embedded broker, as `make demo` runs."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    ServerProcess,
    _env,
    _script,
    agent,
    agent_status,
    provision,
    tune_agent,
    wait_for,
)

pytestmark = pytest.mark.slow


def session_command(config: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [_script("zfjl-agent"), "session", "--config", str(config), *args],
        env=_env({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reply: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return reply


def test_jl16_declared_interruption_with_spoken_explanation_is_explained_on_the_server_timeline(
    tmp_path: Path,
) -> None:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe (Debian package ffmpeg) is not installed")
    server = ServerProcess(tmp_path / "server")
    server.data_dir.mkdir()
    server.create_admin()
    server.start()
    try:
        mqtt_url = next(
            word
            for line in server.log_tail(200).splitlines()
            if "MQTT for devices" in line
            for word in line.split()
            if word.startswith("mqtt://")
        )
        config = provision(server, "rec-jl16", tmp_path / "device", mqtt_url)
        tune_agent(config, explanation_seconds=5, session_event_retry_s=2)
        run = agent(config, "run", "--simulate", "--segment-seconds", "2")
        try:
            assert wait_for(lambda: agent_status(config)["segments_recorded"] >= 1, 60)
            assert session_command(config, "start", "--officer", "officer-7")["ok"]
            time.sleep(3)
            assert session_command(config, "bookmark", "--type", "document_served", "--note", "送达决定书")[
                "ok"
            ]
            assert session_command(config, "interrupt", "--reason", "bad_weather", "--note", "暴雨")["ok"]
            time.sleep(4)  # recording is paused: the gap the marker must explain
            assert session_command(config, "resume")["ok"]
            time.sleep(8)  # the 5 s spoken-explanation clip, then ordinary recording
            assert session_command(config, "end")["ok"]
            assert wait_for(lambda: agent_status(config)["segments_pending"] == 0, 60)
        finally:
            run.send_signal(signal.SIGTERM)
            run.wait(60)
        token = server.token()

        def timeline() -> dict[str, Any]:
            sessions = server.request("GET", "/api/v1/sessions?device_id=rec-jl16", token=token)["items"]
            assert len(sessions) == 1, sessions
            data: dict[str, Any] = server.request(
                "GET", f"/api/v1/sessions/{sessions[0]['id']}/timeline", token=token
            )
            return data

        assert wait_for(lambda: timeline()["verdict"] != "gaps_unexplained", 30), json.dumps(
            timeline(), indent=1
        )
        data = timeline()
        assert data["verdict"] == "gaps_explained", json.dumps(data, ensure_ascii=False, indent=1)
        (marker,) = data["markers"]
        assert marker["cause"] == "bad_weather" and marker["automatic"] is False
        gap = data["gaps"][0]
        assert 3.0 <= gap["duration_s"] <= 8.0, gap
        assert [b["bookmark_type"] for b in data["bookmarks"]] == ["document_served"]
        (clip,) = marker["explanation_clips"]
        media = server.download(clip["media_url"], token)
        path = tmp_path / "explanation.mp4"
        path.write_bytes(media)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        kinds = {s["codec_type"] for s in json.loads(probe.stdout)["streams"]}
        assert kinds == {"video", "audio"}  # the officer is heard and seen giving the reason
    finally:
        server.stop()
