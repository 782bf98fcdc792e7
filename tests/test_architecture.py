"""The import rules of docs/architecture.md hold: the import-linter contracts in pyproject.toml are kept."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

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


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_between_any_two_server_modules() -> None:
    """Every server module can be read without one that imports it back (function-level imports count)."""
    graph = grimp.build_graph("server", exclude_type_checking_imports=True)
    modules = {m for m in graph.modules if m == "server" or m.startswith("server.")}
    assert len(modules) > 60  # the whole package was found, not an empty graph
    assert _cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: two modules importing each other are reported."""
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph, {"a.x", "a.y", "a.z"}) == [["a.x", "a.y"]]
