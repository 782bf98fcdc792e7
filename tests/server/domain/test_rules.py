"""Rules 2 and 3 of docs/architecture.md hold in the source: typed domain inputs, views (API and every
server-rendered page) without SQL, and a transaction owned by its caller."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOMAIN = ROOT / "server" / "domain"
API = ROOT / "server" / "http" / "api"
# Every server-rendered page is held to the API's rule: the admin console (pages/admin), the evidence
# workspace (pages/workspace), their shared session code (pages/common) and the single pages (pages/*.py).
PAGES = ROOT / "server" / "http" / "pages"
# The one domain function that commits: a segment is durable before the device is acked.
COMMITS_ALLOWED = DOMAIN / "evidence" / "commit.py"
_DICT_NAMES = {"body", "payload"}
_DICT_TYPES = {"dict", "Dict", "Mapping", "MutableMapping"}


def _modules(root: Path) -> list[Path]:
    found = sorted(root.rglob("*.py"))
    assert found, root
    return found


def _untyped_inputs(tree: ast.AST) -> Iterator[str]:
    """Parameters named body or payload annotated as a dict or mapping: JSON handed to the domain."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs):
                if arg.arg in _DICT_NAMES and arg.annotation is not None:
                    annotation = ast.unparse(arg.annotation)
                    if annotation.split("[")[0].split(".")[-1] in _DICT_TYPES:
                        yield f"{node.name}({arg.arg}: {annotation}) line {node.lineno}"


def _runtime_imports(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Every module imported when the file runs (imports under ``if TYPE_CHECKING:`` do not run)."""
    guarded = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            yield node.module, node.lineno


def _commits(tree: ast.AST) -> Iterator[int]:
    """Lines that call ``<something>.commit()``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit":
            yield node.lineno


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_checks_find_what_they_look_for() -> None:
    """Each check below fails on a module that breaks its rule, so an empty result means something."""
    bad = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from sqlalchemy.orm import Session\n"
        "def view():\n    from sqlalchemy import select\n"
        "def create(session, body: dict[str, Any]) -> None:\n    session.commit()\n"
        "def update(session, payload: Mapping[str, object]) -> None: ...\n"
    )
    assert [s.split("(")[0] for s in _untyped_inputs(bad)] == ["create", "update"]
    assert [m for m, _ in _runtime_imports(bad) if m.startswith("sqlalchemy")] == ["sqlalchemy"]
    assert list(_commits(bad)) == [7]


def test_rule2_domain_functions_take_typed_inputs_not_a_json_body() -> None:
    """A domain function takes (session, typed input); JSON is decoded once, at the edge (inputs.py)."""
    found = [
        f"{path.relative_to(ROOT)}: {hit}"
        for path in _modules(DOMAIN)
        if path.name != "inputs.py"  # the from_json constructors, called by the edge
        for hit in _untyped_inputs(_parse(path))
    ]
    assert found == []


def _sql_imports(root: Path) -> list[str]:
    """Each runtime import of SQLAlchemy by a module under ``root``, as ``path:line imports module``."""
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _modules(root)
        for module, line in _runtime_imports(_parse(path))
        if module == "sqlalchemy" or module.startswith("sqlalchemy.")
    ]


def test_views_under_http_api_run_no_sql() -> None:
    """A view parses, calls the domain and shapes the answer; queries and scoping rules live in the domain."""
    assert _sql_imports(API) == []


def test_pages_run_no_sql() -> None:
    """A page (admin console, evidence workspace, credential, public check) reads its form, calls the domain
    and renders; its queries are domain functions."""
    checked = {path.relative_to(PAGES).parts[0] for path in _modules(PAGES)}
    assert {"admin", "common", "workspace", "mobile.py", "verify.py"} <= checked
    assert _sql_imports(PAGES) == []


def test_rule3_the_domain_leaves_the_commit_to_its_caller() -> None:
    """Domain functions flush; the view, ingest handler, worker or CLI commits (commit_segment excepted)."""
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _modules(DOMAIN)
        if path != COMMITS_ALLOWED
        for line in _commits(_parse(path))
    ]
    assert found == []
    assert list(_commits(_parse(COMMITS_ALLOWED))), "commit_segment commits before the ack"
