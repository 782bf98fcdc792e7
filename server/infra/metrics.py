"""Where a process's ingest counters are found for ``/metrics``: the runner registers them on the app.

The web edge and the ingest edge do not import each other (docs/architecture.md), so the runner, which
owns both, puts two callables under :data:`INGEST_SOURCE_KEY` of ``app.extensions``; the ``/metrics`` view
reads them. A process without ingest workers registers nothing and exports the database figures only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask

__all__ = ["INGEST_SOURCE_KEY", "IngestSource", "ingest_source", "register_ingest_source"]

INGEST_SOURCE_KEY = "zfjl.ingest_metrics"


@dataclass(frozen=True)
class IngestSource:
    """The ingest service's counters (``IngestService.stats``) and its workers' queue depths."""

    stats: Callable[[], dict[str, Any]]
    queue_depths: Callable[[], dict[str, int]]


def register_ingest_source(
    app: Flask, stats: Callable[[], dict[str, Any]], queue_depths: Callable[[], dict[str, int]]
) -> None:
    """Make this process's ingest counters visible to ``/metrics``."""
    app.extensions[INGEST_SOURCE_KEY] = IngestSource(stats, queue_depths)


def ingest_source(app: Flask) -> IngestSource | None:
    """The registered ingest counters, or None when this process runs no ingest."""
    source: IngestSource | None = app.extensions.get(INGEST_SOURCE_KEY)
    return source
