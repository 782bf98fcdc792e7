"""JL-19 end to end: a real recorder's signed chain head exposes an insider who deleted a stored segment.

Real ``zfjl-server run``, ``zfjl-fw provision`` and ``zfjl-agent run`` over the embedded broker. The
recorder uploads its segments, stops recording (a declared interruption) and keeps reporting health
with its signed chain head; an insider with database access then deletes the newest ``recordings`` row
(triggers disabled, receipt and all). The next alert evaluation raises ``chain_head_missing`` naming
the segment the device signed and the one the server still holds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, func, select
from sqlalchemy.orm import Session

from server.domain.evidence.models import Recording, SegmentReceipt
from server.domain.fleet.telemetry_models import DeviceChainHead, DeviceHealthSample
from tests.e2e.harness import ServerProcess, _env, _script, agent, provision, tune_agent, wait_for
from tests.server.insider import disable_append_only_triggers

pytestmark = pytest.mark.slow

DEVICE = "rec-head"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    folder = tmp_path / "server"
    folder.mkdir()
    process = ServerProcess(folder)
    process.create_admin()
    process.start()
    yield process
    process.stop()


def _session_command(config: Path, *args: str) -> None:
    result = subprocess.run(
        [_script("zfjl-agent"), "session", "--config", str(config), *args],
        env=_env({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _db_state(engine: Any) -> tuple[int | None, int | None, int | None, bool | None]:
    """(newest stored sequence, newest reported chain head, and the backlog and recording flag of the
    newest health sample)."""
    with Session(engine) as session:
        stored = session.scalar(select(func.max(Recording.sequence)).where(Recording.device_id == DEVICE))
        head = session.scalar(
            select(func.max(DeviceChainHead.sequence)).where(DeviceChainHead.device_id == DEVICE)
        )
        sample = session.execute(
            select(DeviceHealthSample.backlog_segments, DeviceHealthSample.recording)
            .where(DeviceHealthSample.device_id == DEVICE)
            .order_by(DeviceHealthSample.received_at.desc(), DeviceHealthSample.id.desc())
            .limit(1)
        ).first()
    if sample is None:
        return stored, head, None, None
    return stored, head, sample[0], sample[1]


def test_jl19_deleting_the_newest_segment_is_exposed_by_the_real_recorders_signed_chain_head(
    server: ServerProcess, tmp_path: Path
) -> None:
    config = provision(server, DEVICE, tmp_path / "device")
    tune_agent(config, health_interval_s=1)
    run = agent(config, "run", "--simulate", "--segment-seconds", "1", "--duration", "120")
    engine = create_engine(f"sqlite:///{server.data_dir / 'zfjl.db'}")
    try:
        assert wait_for(lambda: (_db_state(engine)[0] or -1) >= 2, 90), server.log_tail()
        # Recording stops (a declared interruption); the agent keeps uploading and reporting health.
        _session_command(config, "start")
        _session_command(config, "interrupt", "--reason", "obstruction")

        def settled() -> bool:
            # The recorder reports "not recording" only once the segment the interruption closed is in
            # its backlog: no segment can follow the one deleted below, which stays the newest.
            stored, head, backlog, recording = _db_state(engine)
            return stored is not None and head == stored and backlog == 0 and recording is False

        assert wait_for(settled, 90), (_db_state(engine), server.log_tail())
        stored, head, _, _ = _db_state(engine)
        token = server.token()
        evaluated = server.request("POST", "/api/v1/fleet/alerts/evaluate", token=token)
        assert evaluated is not None
        before = server.request("GET", f"/api/v1/fleet/alerts?device_id={DEVICE}", token=token)["items"]
        assert not [a for a in before if a["kind"].startswith("chain_head")]  # nothing missing yet

        # The insider: the newest row and its receipt go, with the append-only triggers switched off.
        with Session(engine) as session:
            disable_append_only_triggers(session)
            newest = session.scalar(
                select(Recording).where(Recording.device_id == DEVICE, Recording.sequence == stored)
            )
            assert newest is not None
            session.execute(
                delete(SegmentReceipt).where(
                    SegmentReceipt.device_id == DEVICE, SegmentReceipt.sequence == stored
                )
            )
            session.execute(delete(Recording).where(Recording.id == newest.id))
            session.commit()

        # The device keeps signing the same head; the next evaluation sees it beyond what is held.
        assert wait_for(lambda: _db_state(engine)[2] == 0, 30)
        server.request("POST", "/api/v1/fleet/alerts/evaluate", token=token)
        after = server.request("GET", f"/api/v1/fleet/alerts?device_id={DEVICE}", token=token)["items"]
        missing = [a for a in after if a["kind"] == "chain_head_missing"]
        assert missing, after
        assert missing[0]["severity"] == "critical"
        assert missing[0]["detail"]["device_head"] == head
        assert missing[0]["detail"]["stored_head"] == stored - 1
    finally:
        run.terminate()
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
        engine.dispose()
