"""The floor baseline of ``bench/ingest.py`` does the work it claims (issue #12; docs/performance.md).

``bench/ingest.py`` judges ours against a "floor": raw paho plus the least work of a zfjl upload
(hash once per side, write and fsync, a sealed ack per chunk and a sealed ``complete`` per segment,
each verified). A floor that skipped its verification or its writes would flatter itself and make
ours look worse than it is, so these run its two roles against a real Mosquitto (and SeaweedFS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from bench._mqtt_baseline import floor_s3_setting
from tests.fixtures.mqtt import MosquittoBroker
from tests.fixtures.s3 import S3Endpoint

pytestmark = pytest.mark.mosquitto

REPO = Path(__file__).resolve().parents[2]
CHUNK = 64 * 1024
PER_SEGMENT = 4
SEGMENTS = 3


def _hex_keys() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return private, public


def _role(role: str, port: int, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bench._mqtt_baseline", role, "--port", str(port)]
    argv += ["--chunk", str(CHUNK), "--floor", "--segment-bytes", str(PER_SEGMENT * CHUNK), "--timeout", "8"]
    return subprocess.Popen(
        [*argv, *extra],
        cwd=REPO,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _event(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the baseline process ended without a word"
    return dict(json.loads(line))


def _floor_run(
    broker: MosquittoBroker,
    tmp_path: Path,
    *,
    pinned_public: str | None = None,
    s3: str = "",
) -> tuple[dict[str, object], dict[str, object]]:
    private, public = _hex_keys()
    sub_env = {"BENCH_FLOOR_KEY": private, **({"BENCH_FLOOR_S3": s3} if s3 else {})}
    sub = _role(
        "sub",
        broker.port,
        sub_env,
        "--count",
        str(PER_SEGMENT * SEGMENTS),
        "--floor-dir",
        str(tmp_path),
    )
    pub = _role(
        "pub",
        broker.port,
        {"BENCH_FLOOR_PUB": pinned_public or public},
        "--count",
        str(PER_SEGMENT * SEGMENTS),
        "--inflight",
        "2",
        *(["--timeout", "3"] if pinned_public else []),
    )
    try:
        assert _event(sub)["event"] == "ready"
        assert _event(pub)["event"] == "ready"
        assert pub.stdin is not None
        pub.stdin.write("go\n")
        pub.stdin.flush()
        return _event(pub), _event(sub)
    finally:
        for proc in (pub, sub):
            proc.kill()
            proc.wait(10)


def test_floor_writes_every_segment_and_its_sender_verifies_each_answer(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    pub, sub = _floor_run(mosquitto_broker, tmp_path)
    assert pub["ok"] is True and pub["completed"] == SEGMENTS and pub["bad_answers"] == 0
    assert sub["ok"] is True and sub["bytes"] == SEGMENTS * PER_SEGMENT * CHUNK
    # The segments are on disk, whole: the sender's own hashes matched the completes (ok above).
    files = sorted(tmp_path.iterdir())
    assert [f.stat().st_size for f in files] == [PER_SEGMENT * CHUNK] * SEGMENTS


def test_floor_sender_refuses_answers_sealed_by_a_key_it_does_not_pin(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    _, other_public = _hex_keys()
    pub, _ = _floor_run(mosquitto_broker, tmp_path, pinned_public=other_public)
    # No chunk answer verifies, so the window never opens past its first chunks and nothing completes.
    bad = pub["bad_answers"]
    assert pub["ok"] is False and pub["completed"] == 0 and isinstance(bad, int) and bad >= 2


def test_floor_on_s3_puts_every_segment_whole_into_the_bucket(
    mosquitto_broker: MosquittoBroker, seaweedfs: S3Endpoint, s3_client: Any, tmp_path: Path
) -> None:
    bucket = f"floor-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    pub, _ = _floor_run(mosquitto_broker, tmp_path, s3=floor_s3_setting(seaweedfs, bucket))
    assert pub["ok"] is True and pub["completed"] == SEGMENTS
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="floor/")["Contents"]
    assert len(listed) == SEGMENTS
    for item in listed:
        _, publisher, segment = item["Key"].split("/")  # floor/<publisher>/<segment, 6 digits>
        stored = s3_client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        written = (tmp_path / f"{publisher}-{int(segment)}").read_bytes()
        assert len(stored) == PER_SEGMENT * CHUNK and stored == written
