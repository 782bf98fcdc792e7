"""ZFJL_LOG_FORMAT=json: ``zfjl-server`` logs one JSON object per line, fields a log collector can index."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from server.infra.config import ConfigError, load_settings
from server.infra.logging_setup import JsonFormatter, configure_logging
from tests.e2e.harness import ServerProcess


def test_json_formatter_keeps_extra_fields_and_tracebacks_on_one_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("zfjl.test.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("segment %d of %s refused", 7, "dev-1", extra={"device_id": "dev-1", "code": "bad_sig"})
        try:
            raise ValueError("坏的签名")
        except ValueError:
            log.exception("commit failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "zfjl.test.json"
    assert first["message"] == "segment 7 of dev-1 refused"
    assert first["device_id"] == "dev-1" and first["code"] == "bad_sig"
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: 坏的签名" in second["exc_info"]


def test_text_stays_the_default_and_unknown_formats_are_refused(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")  # loading settings makes an ingest key there
    assert load_settings({"data_dir": data_dir, "jwt_secret": "s" * 16}, environ={}).log_format == "text"
    with pytest.raises(ConfigError, match="ZFJL_LOG_FORMAT"):
        load_settings({"data_dir": data_dir, "jwt_secret": "s" * 16}, environ={"ZFJL_LOG_FORMAT": "xml"})
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("text", stream=stream)
        logging.getLogger("zfjl.test.text").info("plain")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert stream.getvalue().rstrip().endswith("INFO zfjl.test.text: plain")


@pytest.mark.slow
def test_zfjl_server_run_logs_json_lines(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, {"ZFJL_LOG_FORMAT": "json", "ZFJL_SCRUB_BYTES_PER_S": "0"})
    server.start()
    server.stop()
    lines = [line for line in (tmp_path / "server.log").read_text(encoding="utf-8").splitlines() if line]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(entries) >= 3
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    messages = [entry["message"] for entry in entries]
    assert any(m.startswith("HTTP API listening on") for m in messages)
    assert any(m == "server stopped" for m in messages)
