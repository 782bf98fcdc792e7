"""Small helpers shared by the benchmark's processes: JSON lines on stdout and /proc CPU times."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

__all__ = ["emit", "proc_cpu_s", "thread_cpu_s", "threads_cpu"]

_TICKS = os.sysconf("SC_CLK_TCK")


def emit(**fields: Any) -> None:
    """Write one JSON line to stdout (the parent reads these) and flush."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _stat_cpu(path: str) -> float:
    """utime + stime in seconds from a /proc stat file."""
    with open(path, encoding="ascii") as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2 :].split()
    # After the ")" of comm: state is field 3, utime field 14 and stime field 15 (1-based in proc(5)).
    return (int(fields[11]) + int(fields[12])) / _TICKS


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a whole process (all threads) from /proc/<pid>/stat."""
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds of one thread of this process."""
    return _stat_cpu(f"/proc/self/task/{native_id}/stat")


def threads_cpu() -> dict[str, float]:
    """CPU seconds of each live Python thread of this process, by thread name."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.native_id is None:
            continue
        try:
            out[thread.name] = round(out.get(thread.name, 0.0) + thread_cpu_s(thread.native_id), 3)
        except OSError:
            continue
    return out
