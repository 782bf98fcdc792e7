"""The effective configuration: ``agent.toml`` overlaid with the applied fleet settings (docs/fleet.md).

The command handler validates a desired config here before it reports it as applied; the recorder, the
session controller and the uploader read :attr:`LiveConfig.current` only at safe points (a segment
boundary, a new transfer), so an update never cuts or re-encodes a segment mid-way (JL-16).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_agent.commands import CONFIG_STATE_FILE
from edge_agent.config import AgentConfig, ConfigError
from protocol.errors import ProtocolError
from protocol.fleet import validate_config

__all__ = ["EffectiveConfig", "LiveConfig", "load_applied", "overlay", "parse_window"]

logger = logging.getLogger(__name__)

# Fleet setting -> AgentConfig field, for the settings agent.toml also has (same validation rules).
_AGENT_FIELDS = {
    "segment_seconds": "segment_seconds",
    "prerecord_seconds": "prerecord_seconds",
    "explanation_clip_seconds": "explanation_seconds",
}


@dataclass(frozen=True, kw_only=True)
class EffectiveConfig:
    """What the agent runs with: the overlaid AgentConfig plus the fleet-only upload and encoder settings."""

    agent: AgentConfig
    version: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    bitrate_kbps: int | None = None  # None: the encoder's default rate
    frame_size: tuple[int, int] | None = None  # None: the camera's own size
    fps: int | None = None  # None: the source's own rate
    bandwidth_cap_kbps: int = 0  # 0 = no cap
    upload_window: tuple[int, int] | None = None  # minutes after local midnight; None = any time

    @property
    def bitrate(self) -> int | None:
        """The encoder bit rate in bit/s, or None for its default."""
        return None if self.bitrate_kbps is None else self.bitrate_kbps * 1000

    def upload_allowed(self, now: datetime) -> bool:
        """Whether a new transfer may start at local time ``now`` (a window may wrap past midnight)."""
        if self.upload_window is None:
            return True
        start, end = self.upload_window
        minute = now.hour * 60 + now.minute
        if start <= end:
            return start <= minute < end
        return minute >= start or minute < end


def parse_window(text: str) -> tuple[int, int] | None:
    """``"HH:MM-HH:MM"`` as minutes after midnight; ``""`` (any time) as None."""
    if not text:
        return None
    first, second = text.split("-")
    return _minutes(first), _minutes(second)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def overlay(base: AgentConfig, settings: dict[str, Any], version: int = 0) -> EffectiveConfig:
    """``base`` with ``settings`` applied, checked by the fleet and agent.toml rules; ConfigError if not."""
    try:
        validate_config(settings)
    except ProtocolError as exc:
        raise ConfigError(str(exc)) from None
    changes: dict[str, Any] = {
        _AGENT_FIELDS[name]: float(value) for name, value in settings.items() if name in _AGENT_FIELDS
    }
    frame_size: tuple[int, int] | None = None
    if "resolution" in settings:
        width, height = (int(part) for part in str(settings["resolution"]).split("x"))
        frame_size = (width, height)
        changes.update(width=width, height=height)
    try:
        agent = dataclasses.replace(base, **changes)
    except ConfigError as exc:
        raise ConfigError(f"cannot apply: {exc}") from None
    return EffectiveConfig(
        agent=agent,
        version=version,
        settings=dict(settings),
        bitrate_kbps=settings.get("bitrate_kbps"),
        frame_size=frame_size,
        fps=settings.get("fps"),
        bandwidth_cap_kbps=int(settings.get("bandwidth_cap_kbps", 0)),
        upload_window=parse_window(str(settings.get("upload_window", ""))),
    )


def load_applied(state_dir: Path) -> tuple[int, dict[str, Any]]:
    """The version and settings last applied (``fleet-config.json``), or ``(0, {})``."""
    try:
        data = json.loads((state_dir / CONFIG_STATE_FILE).read_text(encoding="utf-8"))
        return int(data.get("version", 0)), dict(data.get("settings", {}))
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return 0, {}


class LiveConfig:
    """The current effective config, swapped atomically; ``check`` vetoes what the devices cannot do."""

    def __init__(self, base: AgentConfig, *, check: Callable[[EffectiveConfig], str] | None = None) -> None:
        """Start from ``base`` alone; :meth:`apply` or :meth:`restore` overlays fleet settings."""
        self.base = base
        self.check = check
        self._lock = threading.Lock()
        self._current = EffectiveConfig(agent=base)

    @property
    def current(self) -> EffectiveConfig:
        """The effective config now (read it at a safe point and keep it for the segment or transfer)."""
        with self._lock:
            return self._current

    def validate(self, version: int, settings: dict[str, Any]) -> EffectiveConfig:
        """The overlay if valid and applicable here; ConfigError with the reason otherwise."""
        effective = overlay(self.base, settings, version)
        problem = self.check(effective) if self.check is not None else ""
        if problem:
            raise ConfigError(problem)
        return effective

    def apply(self, version: int, settings: dict[str, Any]) -> str:
        """Make a desired config current; the reason ("" when applied) goes back in ReportedConfig.error."""
        try:
            effective = self.validate(version, settings)
        except ConfigError as exc:
            logger.error("desired configuration version %d not applied: %s", version, exc)
            return str(exc)
        with self._lock:
            self._current = effective
        logger.info("effective configuration is now version %d", version)
        return ""

    def restore(self, state_dir: Path) -> None:
        """At start-up: take the persisted applied config again, so a restart keeps it."""
        version, settings = load_applied(state_dir)
        if version and self.apply(version, settings):
            logger.error("persisted fleet configuration no longer applies; running agent.toml's values")
