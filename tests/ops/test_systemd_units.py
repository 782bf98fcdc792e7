"""The systemd units in deploy/systemd parse, start commands that exist, and the agent's has a watchdog."""

from __future__ import annotations

import configparser
import shlex
import tomllib
from pathlib import Path

import pytest

from edge_agent.cli import _parser as agent_parser
from server.cli import build_parser as server_parser
from server.infra.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
SERVICES = sorted(UNITS.glob("*.service"))


def parse_unit(path: Path) -> configparser.ConfigParser:
    """A unit file as INI: keys keep their case, repeated keys (EnvironmentFile=) are allowed."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def command_of(exec_start: str) -> list[str]:
    """The zfjl command an ExecStart runs, also through ``/bin/sh -c '…'`` (systemd's %% is a %)."""
    argv = shlex.split(exec_start.replace("%%", "%"))
    if Path(argv[0]).name == "sh" and argv[1] == "-c":
        argv = shlex.split(argv[2])
        if argv[0] == "exec":
            argv = argv[1:]
    return argv


def test_the_units_exist() -> None:
    names = {p.name for p in UNITS.iterdir()}
    assert {"zfjl-server.service", "zfjl-server@.service", "zfjl-agent.service"} <= names
    assert {"zfjl-backup.service", "zfjl-backup.timer"} <= names


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_service_parses_and_runs_an_existing_console_script_with_valid_arguments(unit: Path) -> None:
    parsed = parse_unit(unit)
    assert parsed.has_section("Unit") and parsed.has_section("Service")
    assert parsed["Unit"]["Description"]
    argv = command_of(parsed["Service"]["ExecStart"])
    if Path(argv[0]).name.startswith("python3") and argv[1] == "-m":
        # `python3 -m edge_agent` (the agent's update slots): the package behind the zfjl-agent script.
        assert SCRIPTS["zfjl-agent"].split(".")[0] == argv[2]
        assert (ROOT / argv[2] / "__main__.py").exists()
        argv = ["zfjl-agent", *argv[3:]]
    script = Path(argv[0]).name
    assert script in SCRIPTS, f"{unit.name} runs {script}, not a console script of this project"
    parser = server_parser() if script == "zfjl-server" else agent_parser()
    parser.parse_args(argv[1:])  # exits (SystemExit) on an unknown subcommand or option
    assert parsed["Service"]["User"] == "zfjl"
    assert parsed["Service"].get("NoNewPrivileges") == "yes"
    if parsed["Service"].get("Type") != "oneshot":
        assert parsed["Service"]["Restart"] in ("on-failure", "always")
        assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_agent_unit_is_notify_with_a_watchdog_the_agent_feeds() -> None:
    service = parse_unit(UNITS / "zfjl-agent.service")["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    watchdog_s = int(service["WatchdogSec"])
    # The agent's loop wakes every second and pings then (edge_agent/app.py): well inside the period.
    assert 10 <= watchdog_s <= 120


def test_backup_timer_starts_the_backup_service() -> None:
    timer = parse_unit(UNITS / "zfjl-backup.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert (UNITS / "zfjl-backup.service").exists()  # same name: the timer's default Unit=
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_example_environment_file_names_only_real_settings(tmp_path: Path) -> None:
    env = {}
    for line in (ROOT / "deploy" / "server.env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    settings = load_settings({"data_dir": str(tmp_path)}, environ=env)  # ConfigError on any unknown name
    assert settings.redis_url and settings.log_format == "json"
