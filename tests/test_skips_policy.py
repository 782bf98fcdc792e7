"""ZFJL_REQUIRE_ALL=1 turns skipped tests into a failing run (tests/fixtures/skips.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SAMPLE = """
import pytest

def test_ok():
    pass

@pytest.mark.skipif(True, reason="tool X missing")
def test_skipif():
    pass

def test_skip():
    pytest.skip("runtime skip")

@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfail():
    assert False
"""


def _run(tmp_path: Path, require_all: str | None, source: str = SAMPLE) -> subprocess.CompletedProcess[str]:
    """Run pytest with the skips plugin on one sample file in a scratch directory."""
    (tmp_path / "test_sample.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "ZFJL_REQUIRE_ALL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if require_all is not None:
        env["ZFJL_REQUIRE_ALL"] = require_all
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.fixtures.skips", "-p", "no:cacheprovider", "-q", "-rs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_skips_are_fine_by_default(tmp_path: Path) -> None:
    """Without ZFJL_REQUIRE_ALL a run with skips exits 0."""
    result = _run(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("value", ["1", "true"])
def test_skips_fail_when_required(tmp_path: Path, value: str) -> None:
    """With ZFJL_REQUIRE_ALL set every skip is listed and the exit status is 1."""
    result = _run(tmp_path, value)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ZFJL_REQUIRE_ALL=1: skipped tests are failures" in result.stdout
    assert "test_sample.py::test_skipif - tool X missing" in result.stdout
    assert "test_sample.py::test_skip - runtime skip" in result.stdout
    assert (
        "test_xfail"
        not in result.stdout.split("skipped tests are failures")[1].split("short test summary")[0]
    )


def test_module_level_skip_counts(tmp_path: Path) -> None:
    """An importorskip during collection is a skip too."""
    source = 'import pytest\npytest.importorskip("zfjl_no_such_module")\n\ndef test_x():\n    pass\n'
    result = _run(tmp_path, "1", source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "zfjl_no_such_module" in result.stdout


def test_no_skips_stays_green(tmp_path: Path) -> None:
    """With ZFJL_REQUIRE_ALL=1 a run without skips exits 0."""
    result = _run(tmp_path, "1", "def test_ok():\n    pass\n")
    assert result.returncode == 0, result.stdout + result.stderr
