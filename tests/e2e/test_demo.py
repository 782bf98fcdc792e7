"""``make demo`` end to end: the script records with two simulated recorders, publishes the demo case's
decision on the portal (GS-7, GS-11) and seals an archive package that ``zfjl-verify`` accepts (JL-18);
the portal page it prints is reachable while it runs, and Ctrl-C ends it cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WAITING = "server keeps running"


def _read_until(proc: subprocess.Popen[str], marker: str, lines: list[str], timeout: float) -> bool:
    """Collect the demo's output lines until one contains ``marker`` or the time is up."""
    found = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if marker in line:
                found.set()
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    found.wait(timeout)
    return found.is_set()


def test_jl18_gs11_make_demo_publishes_the_decision_and_verifies_the_archive(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-u", str(ROOT / "scripts" / "demo.py"), "--data-dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    lines: list[str] = []
    try:
        reached = _read_until(proc, WAITING, lines, timeout=240)
        output = "\n".join(lines)
        assert reached, output
        # The recorded session's workspace URL is still printed.
        assert re.search(r"workspace / 证据工作台: http://\S+/workspace/sessions/\d+", output), output
        # The decision was published by the reviewer; its deadline counts working days (GS-11).
        assert "== 公示 / publication 合市监罚〔2026〕演示1号: published" in output, output
        deadline = re.search(r"公示期限 \(GS-11, 7 working days\): (\d{4}-\d{2}-\d{2})", output)
        assert deadline, output
        portal = re.search(r"portal / 公示网页: (http://\S+/portal/items/\d+)", output)
        assert portal, output
        with urllib.request.urlopen(portal.group(1), timeout=30) as response:
            page = response.read().decode()
        assert response.status == 200
        assert "合市监罚〔2026〕演示1号" in page and "合肥某某餐饮有限公司" in page
        # The session's recordings are the case's evidence and go into its archive package, which
        # verifies against the pinned ledger key.
        linked = re.search(r"on-site inspection with (\d+) recordings linked", output)
        assert linked and int(linked.group(1)) > 0, output
        assert "OK: " in output and f" {linked.group(1)} recordings and " in output, output
        assert "OK:" in output and "zfjl-verify verdict / 结论: 通过 OK (exit 0)" in output, output
        package = re.search(r"archive package \(JL-18\): (\S+\.zip)", output)
        assert package and Path(package.group(1)).stat().st_size > 0, output
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
    # Ctrl-C ends the demo; exit 0 means every check of the run (chains, verdict, archive) passed.
    assert code == 0, "\n".join(lines)
