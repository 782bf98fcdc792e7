"""The recorder signs its chain head into every health report (finding 1: a vanished segment is noticed)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.app import AgentApp
from edge_agent.config import AgentConfig
from edge_agent.keys import generate_private_key, public_key_raw, save_private_key
from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS
from tests.edge_agent.test_uploader import FakeSegment


def test_health_carries_the_newest_segment_signed_with_the_device_key(tmp_path: Path) -> None:
    """No head before the first segment; then the newest sequence and its manifest hash, device-signed."""
    key = generate_private_key()
    save_private_key(key, tmp_path / "k.pem")
    config = AgentConfig(
        device_id="rec-1",
        private_key_file=tmp_path / "k.pem",
        data_dir=tmp_path / "data",
        mqtt_url="mqtt://127.0.0.1:1",
        ingest_public_keys=INGEST_PUBLIC_KEYS,
    )
    app = AgentApp(config)
    app._load_key()
    app._open_outbox()
    try:
        assert app.health().chain_head is None
        assert app.outbox is not None
        signed = None
        for index in range(2):
            data = f"segment {index}".encode()
            path = config.segment_dir / f"s{index}.mp4"
            path.write_bytes(data)
            at = datetime(2026, 1, 1, 0, index, tzinfo=UTC)
            segment = FakeSegment(path, len(data), hashlib.sha256(data).hexdigest(), at, at, index, index + 1)
            signed = app.outbox.add_segment(segment, device_id="rec-1", officer_id="", private_key=key)
        assert signed is not None
        head = app.health().chain_head
        assert head is not None
        assert (head.sequence, head.manifest_hash) == (1, signed.manifest_hash)
        assert head.verify(public_key_raw(key))
    finally:
        app.stop()
