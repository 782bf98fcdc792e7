"""Log set-up of ``zfjl-server``: readable text, or one JSON object per line for a log collector.

``ZFJL_LOG_FORMAT=json`` writes ``{"time", "level", "logger", "message", ...}`` per record, with every
``extra=`` field of the call and, for an exception, its traceback under ``exc_info``; journald, Loki or
Elasticsearch then take the fields as they are instead of parsing prose.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["TEXT_FORMAT", "JsonFormatter", "configure_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, UTC time with milliseconds, extra fields kept."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (never a newline inside: tracebacks are escaped)."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(fmt: str = "text", *, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send the root logger's records to ``stream`` (stderr) as ``text`` or ``json``; replaces handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
