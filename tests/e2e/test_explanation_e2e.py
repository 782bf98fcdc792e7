"""JL-16 end to end: a skipped and a silent explanation reach the server as unexplained.

Finding 9 of the zero-trust review: the recorder signed ``explanation_missing`` but still uploaded the
clip as ``kind=explanation``, and the server called the marker explained whenever a clip existed, so
the session's verdict was ``gaps_explained``. Each half was tested alone; here the real recorder
process, the real server and the embedded broker run together, as `make demo` runs them.
"""

from __future__ import annotations

import json
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

DEVICE = "rec-jl16-missing"


def _session_command(config: Path, *args: str) -> dict[str, Any]:
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


def _interrupted_session(config: Path, *, skip: bool) -> str:
    """One session with a declared interruption; the officer skips the explanation or says nothing."""
    session_id = str(_session_command(config, "start", "--officer", "officer-7")["session_id"])
    time.sleep(3)
    assert _session_command(config, "interrupt", "--reason", "obstruction", "--note", "围观人员遮挡")["ok"]
    time.sleep(4)  # recording is paused: the gap the marker must explain
    assert _session_command(config, "resume")["ok"]
    if skip:
        time.sleep(1.5)  # the officer is prompted, the clip has started
        reply = _session_command(config, "skip")
        assert reply["ok"], reply
        time.sleep(4)
    else:
        time.sleep(8)  # the whole 5 s clip passes with nothing said, then ordinary recording
    assert _session_command(config, "end")["ok"]
    return session_id


def _run_agent_through(config: Path, *, skip: bool) -> str:
    # Segments longer than the 5 s clip, so the clip ends by its own length or by the skip.
    run = agent(config, "run", "--simulate", "--segment-seconds", "8")
    try:
        assert wait_for(lambda: agent_status(config)["segments_recorded"] >= 1, 60)
        session_id = _interrupted_session(config, skip=skip)
        assert wait_for(lambda: agent_status(config)["segments_pending"] == 0, 90)
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
    return session_id


def _timeline(server: ServerProcess, token: str, session_id: str) -> dict[str, Any]:
    items = server.request("GET", f"/api/v1/sessions?device_id={DEVICE}", token=token)["items"]
    (pk,) = [s["id"] for s in items if s["session_id"] == session_id]
    data: dict[str, Any] = server.request("GET", f"/api/v1/sessions/{pk}/timeline", token=token)
    return data


def _settled(server: ServerProcess, token: str, session_id: str) -> bool:
    """Every signed event is in (the session ended, the marker's explanation_missing arrived)."""
    try:
        data = _timeline(server, token, session_id)
    except ValueError:
        return False
    return data["state"] == "ended" and any(m["explanation_missing"] for m in data["markers"])


def _assert_unexplained(data: dict[str, Any]) -> None:
    shown = json.dumps(data, ensure_ascii=False, indent=1)
    assert data["verdict"] == "gaps_unexplained", shown
    (marker,) = data["markers"]
    assert (marker["cause"], marker["status"], marker["explanation_missing"]) == (
        "obstruction",
        "unexplained",
        True,
    ), shown
    assert marker["explanation_clips"] == [], shown  # the recorder presents no clip as an explanation
    # Only the declared interruption is a gap: the skipped or silent clip was uploaded as an ordinary
    # segment and covers its seconds (nothing recorded is dropped).
    (gap,) = data["gaps"]
    assert gap["marker_ids"] == [marker["marker_id"]] and not gap["explained"], shown
    assert 3.0 <= gap["duration_s"] <= 8.0, shown


def test_jl16_skipped_and_silent_explanations_give_the_verdict_gaps_unexplained(tmp_path: Path) -> None:
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
        config = provision(server, DEVICE, tmp_path / "device", mqtt_url)
        tune_agent(config, explanation_seconds=5, session_event_retry_s=2)
        token = server.token()

        # 1. The officer presses skip while the explanation clip records (its microphone hears a tone).
        skipped = _run_agent_through(config, skip=True)
        assert wait_for(lambda: _settled(server, token, skipped), 30), _timeline(server, token, skipped)
        _assert_unexplained(_timeline(server, token, skipped))

        # 2. The officer says nothing: the synthetic microphone's tone (RMS about 0.18) stays under a
        # speech threshold of 0.5, which is what a silent clip is to the recorder.
        config.write_text(config.read_text() + "explanation_min_rms = 0.5\n")
        silent = _run_agent_through(config, skip=False)
        assert wait_for(lambda: _settled(server, token, silent), 30), _timeline(server, token, silent)
        _assert_unexplained(_timeline(server, token, silent))
    finally:
        server.stop()
