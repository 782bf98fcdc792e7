"""Print the README's configuration table from the code (``Settings.describe()``), so the two agree."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.infra.config import Settings


def config_table() -> str:
    """Markdown table of every server setting."""
    rows = ["| Environment variable | Default | Meaning |", "|---|---|---|"]
    for _name, env, default, help_text in Settings.describe():
        shown = f"`{default}`" if default else "(empty)"
        rows.append(f"| `{env}` | {shown} | {help_text.replace('|', '/')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(config_table())
