"""docs/operations.md stays true: the tests, files and settings it cites exist."""

from __future__ import annotations

import re
from pathlib import Path

from server.infra.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def test_cited_tests_and_files_exist() -> None:
    missing = []
    cited = re.findall(r"`((?:tests|deploy|server|edge_agent)/[\w/@.-]+)(?:::(\w+))?`", DOC)
    assert len(cited) > 5
    for path, name in cited:
        file = ROOT / path
        if not file.exists():
            missing.append(path)
        elif name and not re.search(rf"def {name}\(", file.read_text(encoding="utf-8")):
            missing.append(f"{path}::{name}")
    assert not missing, missing


def test_cited_settings_exist() -> None:
    known = {env for _name, env, _default, _help in Settings.describe()}
    cited = set(re.findall(r"\bZFJL_[A-Z0-9_]+", DOC))
    assert cited and cited <= known, cited - known


def test_linked_from_the_readme() -> None:
    assert "(docs/operations.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
