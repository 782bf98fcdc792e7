"""The README's configuration table is generated from the code and must stay identical to it."""

from __future__ import annotations

from pathlib import Path

from scripts.config_table import config_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_lists_every_server_setting_exactly_as_the_code_defines_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- config-table:start -->\n", "<!-- config-table:end -->"
    block = readme.split(start, 1)[1].split(end, 1)[0]
    assert block.strip() == config_table(), "run `python scripts/config_table.py` and paste it into README.md"
