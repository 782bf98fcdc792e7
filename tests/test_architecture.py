"""The import rules of docs/architecture.md hold: the import-linter contracts in pyproject.toml are kept."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    """protocol is sans-IO, the agent needs no server, services know no Flask and have no cycle."""
    program = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " BROKEN" not in result.stdout


def test_every_rule_of_the_architecture_page_is_a_contract() -> None:
    """docs/architecture.md names each contract, so the page and the enforced rules cannot drift apart."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = [contract["name"] for contract in config["tool"]["importlinter"]["contracts"]]
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert len(names) >= 5
    assert [name for name in names if name not in page] == []
    assert "lint-imports" in (ROOT / "Makefile").read_text(encoding="utf-8")
