"""Device status is one vocabulary: the enum in ``server.domain.fleet.models`` and its ACCEPTING set."""

from __future__ import annotations

import ast
from pathlib import Path

from server.domain.fleet.models import DEVICE_STATUSES, DeviceStatus

ROOT = Path(__file__).resolve().parents[4]


def test_device_statuses_keep_the_strings_stored_in_the_database() -> None:
    """The enum's values are exactly the strings the ``devices.status`` column has always held."""
    assert DEVICE_STATUSES == ("provisioned", "active", "lost", "retired")
    assert DeviceStatus.ACTIVE == "active" and isinstance(DeviceStatus.ACTIVE, str)
    assert set(DeviceStatus.ACCEPTING) | set(DeviceStatus.OUT_OF_SERVICE) == set(DEVICE_STATUSES)
    assert not set(DeviceStatus.ACCEPTING) & set(DeviceStatus.OUT_OF_SERVICE)


def _status_literals(source: Path) -> list[int]:
    """Lines of tuple/list/set literals that spell two or more device statuses as strings."""
    lines = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            spelled = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if len(spelled & set(DEVICE_STATUSES)) >= 2 and spelled <= set(DEVICE_STATUSES):
                lines.append(node.lineno)
    return lines


def test_no_module_restates_which_device_statuses_are_accepted() -> None:
    """A lost or retired device is refused by the broker, ingest, commands and rollouts alike.

    So the set of accepting statuses is written once, beside the enum, and nowhere else.
    """
    restated = []
    for source in sorted((ROOT / "server").rglob("*.py")):
        relative = source.relative_to(ROOT).as_posix()
        if relative == "server/domain/" or relative.startswith("server/migrations/"):
            continue
        restated += [f"{relative}:{line}" for line in _status_literals(source)]
    assert restated == []
