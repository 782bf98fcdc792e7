"""Where a process's ingest counters are found for ``/metrics``: the runner registers them on the app.

The web edge and the ingest edge do not import each other (docs/architecture.md), so the runner, which
owns both, puts callables under :data:`INGEST_SOURCE_KEY` of ``app.extensions``; the ``/metrics`` view
reads them. A process without ingest workers registers nothing and exports the database figures only.

A runner with ``--ingest-processes N`` ingests nothing itself: its children do, and they have no HTTP
listener. Each child writes its counters to a snapshot file in a folder of the runner's own
(:class:`SnapshotWriter`, every second and when it stops); the runner's ``/metrics`` sums them
(:class:`ChildCounters`). The last counts of a child that died are kept, so a summed counter never goes
back (as prometheus_client's multiprocess mode keeps a dead process's counters); its queue depths,
which are gauges, go with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from server.infra.fsmode import private_dir

__all__ = [
    "INGEST_SOURCE_KEY",
    "SNAPSHOT_INTERVAL_S",
    "ChildCounters",
    "IngestSource",
    "SnapshotWriter",
    "add_counts",
    "ingest_source",
    "register_ingest_source",
]

_LOG = logging.getLogger(__name__)

INGEST_SOURCE_KEY = "zfjl.ingest_metrics"
# How stale a child's counters may be in a scrape; also what a SIGKILLed child's last second loses.
SNAPSHOT_INTERVAL_S = 1.0
_RUN_DIR_PREFIX = "ingest-metrics-"
_SNAPSHOT_NAME = re.compile(r"^ingest-(\d+)-(\d+)\.json$")


@dataclass(frozen=True)
class IngestSource:
    """The ingest counters (``IngestService.stats``), the workers' queue depths and, for a runner with
    ingest children, each child's counters by process index."""

    stats: Callable[[], dict[str, Any]]
    queue_depths: Callable[[], dict[str, int]]
    per_process: Callable[[], dict[str, dict[str, Any]]] | None = None


def register_ingest_source(
    app: Flask,
    stats: Callable[[], dict[str, Any]],
    queue_depths: Callable[[], dict[str, int]],
    per_process: Callable[[], dict[str, dict[str, Any]]] | None = None,
) -> None:
    """Make this process's ingest counters (or its children's) visible to ``/metrics``."""
    app.extensions[INGEST_SOURCE_KEY] = IngestSource(stats, queue_depths, per_process)


def ingest_source(app: Flask) -> IngestSource | None:
    """The registered ingest counters, or None when this process runs no ingest."""
    source: IngestSource | None = app.extensions.get(INGEST_SOURCE_KEY)
    return source


def add_counts(total: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """``total + more`` for counter dictionaries: integers add up, nested dictionaries recursively;
    anything else (a malformed snapshot's value) is left out of the sum."""
    out: dict[str, Any] = {key: value for key, value in total.items()}
    for key, value in more.items():
        mine = out.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            out[key] = (mine if isinstance(mine, int) and not isinstance(mine, bool) else 0) + value
        elif isinstance(value, Mapping):
            out[key] = add_counts(mine if isinstance(mine, Mapping) else {}, value)
    return out


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write JSON by rename, so a reader sees the previous snapshot or this one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


class SnapshotWriter:
    """In an ingest child: this process's counters to ``<folder>/ingest-<index>-<pid>.json``."""

    def __init__(
        self,
        folder: Path,
        index: int,
        stats: Callable[[], dict[str, Any]],
        queue_depths: Callable[[], dict[str, int]],
        interval_s: float = SNAPSHOT_INTERVAL_S,
    ) -> None:
        self.path = Path(folder) / f"ingest-{int(index)}-{os.getpid()}.json"
        self._stats = stats
        self._queue_depths = queue_depths
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zfjl-metrics-snapshot", daemon=True)

    def write(self) -> None:
        """Write the counters now."""
        _write_atomically(self.path, {"stats": self._stats(), "queue_depths": self._queue_depths()})

    def start(self) -> None:
        """Write once, then every ``interval_s`` in the background."""
        self.write()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.write()
            except Exception:
                # The runner's folder vanished (it is stopping) or the disk is full: metrics only.
                _LOG.exception("cannot write the ingest metrics snapshot %s", self.path)

    def stop(self) -> None:
        """Stop the thread and write the final counters (after the workers finished their finalizes)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self.write()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, not ours to judge
    return True


class ChildCounters:
    """In the runner: its ingest children's counters, summed from their snapshots in its own folder."""

    def __init__(self, parent: Path, live_pids: Callable[[], list[int]]) -> None:
        """A fresh folder ``<parent>/ingest-metrics-<our pid>``; folders of runners that died go."""
        self.parent = Path(parent)
        private_dir(self.parent)
        for stale in self.parent.glob(f"{_RUN_DIR_PREFIX}*"):
            suffix = stale.name[len(_RUN_DIR_PREFIX) :]
            if suffix.isdigit() and (int(suffix) == os.getpid() or not _alive(int(suffix))):
                shutil.rmtree(stale, ignore_errors=True)
        self.folder = private_dir(self.parent / f"{_RUN_DIR_PREFIX}{os.getpid()}")
        self._live_pids = live_pids
        self._lock = threading.Lock()
        self._retired: dict[int, dict[str, Any]] = {}  # process index -> last counts of its dead ones

    def _snapshots(self) -> list[tuple[int, int, dict[str, Any]]]:
        """(index, pid, snapshot) of every readable snapshot file."""
        found = []
        for path in self.folder.iterdir():
            match = _SNAPSHOT_NAME.match(path.name)
            if match is None:
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # retired meanwhile, or not ours
            if isinstance(data, dict):
                found.append((int(match.group(1)), int(match.group(2)), data))
        return found

    def per_process(self) -> dict[str, dict[str, Any]]:
        """Each process index's counters: its running child's plus the last counts of those that died."""
        with self._lock:
            out = {str(index): dict(counts) for index, counts in self._retired.items()}
            for index, _, data in self._snapshots():
                stats = data.get("stats")
                if isinstance(stats, dict):
                    out[str(index)] = add_counts(out.get(str(index), {}), stats)
        return out

    def stats(self) -> dict[str, Any]:
        """The counters of every child, summed (``IngestService.stats`` shape)."""
        total: dict[str, Any] = {}
        for counts in self.per_process().values():
            total = add_counts(total, counts)
        return total

    def queue_depths(self) -> dict[str, int]:
        """Finalize queue depths of the running children's workers, as ``p<index>/<worker>``."""
        live = set(self._live_pids())
        out: dict[str, int] = {}
        with self._lock:
            snapshots = self._snapshots()
        for index, pid, data in snapshots:
            depths = data.get("queue_depths")
            if pid not in live or not isinstance(depths, dict):
                continue
            for worker, waiting in depths.items():
                if isinstance(waiting, int) and not isinstance(waiting, bool):
                    out[f"p{index}/{worker}"] = waiting
        return out

    def retire(self, pid: int) -> None:
        """A child died: keep its last counts under its index and remove its snapshot file."""
        with self._lock:
            for index, found, data in self._snapshots():
                if found != pid:
                    continue
                stats = data.get("stats")
                if isinstance(stats, dict):
                    self._retired[index] = add_counts(self._retired.get(index, {}), stats)
                (self.folder / f"ingest-{index}-{pid}.json").unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the folder (the runner stops; the counters restart from zero with it)."""
        shutil.rmtree(self.folder, ignore_errors=True)
