"""Docs that must stay true to the code: the configuration table, and the tests cited as proof."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.config_table import config_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_lists_every_server_setting_exactly_as_the_code_defines_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- config-table:start -->\n", "<!-- config-table:end -->"
    block = readme.split(start, 1)[1].split(end, 1)[0]
    assert block.strip() == config_table(), "run `python scripts/config_table.py` and paste it into README.md"


def test_security_and_compliance_docs_name_only_tests_that_exist() -> None:
    """Each `tests/…py::test_name` cited as proof in docs/security.md and docs/compliance.md exists."""
    missing = []
    for doc in ("docs/security.md", "docs/compliance.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        current: Path | None = None
        for match in re.finditer(r"`(tests/[\w/]+\.py)?(?:::(\w+))?", text):
            path, name = match.groups()
            if path:
                current = ROOT / path
                if not current.exists():
                    missing.append(f"{doc}: {path}")
                    current = None
            if name and current is not None and f"def {name}(" not in current.read_text(encoding="utf-8"):
                missing.append(f"{doc}: {current.relative_to(ROOT)}::{name}")
    assert not missing, "docs cite tests that do not exist:\n" + "\n".join(missing)
