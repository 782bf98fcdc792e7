"""The console's forms read once here, and the one action on one device that the device list's bulk form
and the device page both apply (check out, check in, configure, command)."""

from __future__ import annotations

from typing import Any

from protocol.fleet import CONFIG_FIELDS, CommandKind
from server.domain.errors import Invalid
from server.domain.fleet import assignments as assignment_service
from server.domain.fleet import commands as command_service
from server.domain.fleet import config as config_service
from server.http.pages.admin.base import actor, settings, texts
from server.http.pages.admin.i18n import TEXT
from server.infra.db import session_scope

__all__ = [
    "ACTION_ENDPOINT",
    "BULK_COMMANDS",
    "CONFIG_INPUTS",
    "DEVICE_COMMANDS",
    "apply_action",
    "config_settings",
    "optional_int",
]

# Commands an admin may send to many devices at once; rotate_credentials is per device (device page).
BULK_COMMANDS = (CommandKind.SYNC_CLOCK.value, CommandKind.UPLOAD_NOW.value, CommandKind.LOCATE.value)
DEVICE_COMMANDS = (*BULK_COMMANDS, CommandKind.ROTATE_CREDENTIALS.value)
# (name, is an integer, minimum, maximum) of each desired-configuration field, for the forms.
CONFIG_INPUTS = [(name, kind is int, low, high) for name, (kind, low, high) in CONFIG_FIELDS.items()]
# The fleet API endpoint whose roles may apply each form action.
ACTION_ENDPOINT = {
    "assign": "fleet.check_out",
    "check_in": "fleet.check_in",
    "config": "fleet.set_config",
    "command": "fleet.create_command",
}


def config_settings(form: Any) -> dict[str, Any]:
    """The filled-in configuration fields of a form (``cfg_<name>``); integers parsed here,
    ranges checked by the service (protocol.fleet.validate_config)."""
    t = texts()
    found: dict[str, Any] = {}
    for name, (kind, _low, _high) in CONFIG_FIELDS.items():
        value = str(form.get(f"cfg_{name}", "")).strip()
        if not value:
            continue
        if kind is int:
            try:
                found[name] = int(value)
            except ValueError:
                raise Invalid(t["bad_number"].format(name=name), f"{name} must be an integer") from None
        else:
            found[name] = value
    if not found:
        raise Invalid(TEXT["zh"]["no_settings"], TEXT["en"]["no_settings"])
    return found


def optional_int(form: Any, name: str) -> int | None:
    """An optional integer field: None when left empty, a precise refusal when not a number."""
    raw = str(form.get(name, "")).strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f"{name} 必须是整数", f"{name} must be an integer") from None


def apply_action(device_id: str, action: str, form: Any) -> None:
    """One console action on one device, through the same service calls as the fleet API."""
    by = actor()
    with session_scope() as session:
        if action == "assign":
            try:
                user_id = int(form.get("user_id", ""))
            except ValueError:
                raise Invalid("请选择领用人", "choose an officer") from None
            assignment_service.check_out(
                session,
                device_id,
                user_id,
                min_battery_pct=settings().fleet_min_checkout_battery_pct,
                actor=by,
            )
        elif action == "check_in":
            assignment_service.check_in(session, device_id, actor=by)
        elif action == "config":
            config_service.set_desired(
                session, scope="device", target=device_id, settings=config_settings(form), actor=by
            )
        elif action == "command":
            kind = str(form.get("kind", ""))
            if kind not in DEVICE_COMMANDS:
                raise Invalid(f"未知命令 {kind}", f"unknown command {kind}")
            command_service.create_command(
                session, device_id, kind, ttl=command_service.DEFAULT_TTL, actor=by
            )
        else:
            raise Invalid("未知操作", "unknown action")
