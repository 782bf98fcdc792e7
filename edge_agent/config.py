"""Agent configuration: one TOML file per device, validated once at load time."""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent.errors import AgentError
from protocol.downlink import decode_public_key
from protocol.topics import valid_device_id

__all__ = ["AgentConfig", "BrokerAddress", "ConfigError"]

_MQTT_PROTOCOLS = ("3.1.1", "5")
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class ConfigError(AgentError):
    """The configuration file is missing, malformed or has invalid values."""


@dataclass(frozen=True)
class BrokerAddress:
    """One broker URL, parsed: host, port and whether it is reached over TLS."""

    url: str
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str, *, name: str = "mqtt_url") -> BrokerAddress:
        """Parse ``mqtt://host:port`` or ``mqtts://host:port``; ConfigError (naming ``name``) otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ConfigError(f"{name} {url!r} must look like mqtt://host:port or mqtts://host:port")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{name} {url!r} has a bad port") from None
        return cls(url, parts.hostname, port or _DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Everything the agent needs to know about its device, broker, recording and upload."""

    device_id: str
    private_key_file: Path
    data_dir: Path
    # The broker; with ``mqtt_urls`` it may be left out (it is then the list's first URL).
    mqtt_url: str = ""
    # Brokers in the order they are tried: a cluster's nodes, or a standby. The link moves to the next
    # one when the current one stays unreachable or refusing for ``mqtt_failover_after_s``.
    mqtt_urls: tuple[str, ...] = ()
    mqtt_failover_after_s: float = 20.0
    # While connected to a later broker of ``mqtt_urls``, how often the link tries the first one again
    # and moves back to it when it accepts (a primary/standby pair); 0: stay where it is.
    mqtt_return_to_first_s: float = 60.0
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_protocol: str = "3.1.1"
    mqtt_ca_file: str = ""  # mqtts only; empty = the system's CA bundle
    segment_seconds: float = 60.0
    chunk_bytes: int = 262144
    window: int = 8
    ack_timeout_s: float = 15.0
    drain_timeout_s: float = 60.0
    camera: str | int = "synthetic"
    microphone: str = "synthetic"
    width: int = 640
    height: int = 360
    fps: float = 15.0
    officer_id: str = ""
    min_free_bytes: int = 256 * 1024 * 1024
    health_interval_s: float = 60.0
    server_url: str = ""
    # Enforcement sessions and interruption markers (JL-16, docs/officer-workflow.md).
    idle_recording: str = "continuous"  # "continuous" or "prebuffer" (keep only prerecord_seconds)
    prerecord_seconds: float = 30.0  # pre-event buffer prepended at session start, 0–120
    explanation_seconds: float = 10.0  # spoken-explanation clip after a resume, 5–30
    explanation_min_rms: float = 0.01  # quieter clips count as "no explanation" (full scale = 1)
    stall_threshold_s: float = 1.0  # no video frame for this long opens a camera_stall marker
    microphone_timeout_s: float = 3.0  # no audio block for this long opens a microphone_failure marker
    clock_jump_threshold_s: float = 2.0  # UTC vs monotonic drift that opens a clock_jump marker
    storage_warn_bytes: int = 512 * 1024 * 1024  # below this much free space: warn the officer
    storage_stop_bytes: int = 32 * 1024 * 1024  # below this: stop writing, storage_full marker
    session_event_retry_s: float = 10.0  # resend an unacknowledged session event after this long
    # Signed updates (docs/fleet.md): paths relative to data_dir's parent; no key file = refuse updates.
    update_public_key_file: str = ""  # PEM public key(s) of the offline update signing key
    update_slots_dir: str = "slots"  # A/B slots a/ and b/ plus the `current` pointer
    # The server's ingest public keys (base64 of 32 raw Ed25519 bytes), pinned at provisioning: only an
    # ack signed by one of them may mark a segment stored (protocol.downlink). Several = key rotation.
    # Empty = the uploader refuses to start (an unsigned ack must never free evidence).
    ingest_public_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._validate()

    # -- derived values -------------------------------------------------------------------------

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """Every broker URL in the order the link tries them (``mqtt_urls``, else ``mqtt_url`` alone)."""
        return self.mqtt_urls or (self.mqtt_url,)

    @property
    def brokers(self) -> tuple[BrokerAddress, ...]:
        """The parsed broker URLs, in order."""
        return tuple(BrokerAddress.parse(url) for url in self.broker_urls)

    @property
    def mqtt_host(self) -> str:
        """Broker host name from ``mqtt_url``."""
        return BrokerAddress.parse(self.mqtt_url).host

    @property
    def mqtt_port(self) -> int:
        """Broker port from ``mqtt_url`` (1883 / 8883 by default)."""
        return BrokerAddress.parse(self.mqtt_url).port

    @property
    def mqtt_tls(self) -> bool:
        """Whether the brokers are reached over TLS (``mqtts://``; every URL of a list alike)."""
        return BrokerAddress.parse(self.mqtt_url).tls

    @property
    def segment_dir(self) -> Path:
        """Where the recorder writes segment files."""
        return self.data_dir / "segments"

    @property
    def outbox_path(self) -> Path:
        """The outbox database file."""
        return self.data_dir / "outbox.sqlite3"

    # -- loading and writing --------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str) -> AgentConfig:
        """Read and validate a TOML config; relative paths are taken from the config file's folder."""
        path = Path(path)
        try:
            with path.open("rb") as stream:
                data = tomllib.load(stream)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(data, base_dir=path.resolve().parent, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: Path, source: str = "config") -> AgentConfig:
        """Build a config from plain values, rejecting unknown keys and wrong types."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(fields)}"
            )
        missing = sorted(
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and name not in data
        )
        if missing:
            raise ConfigError(f"{source}: missing required key(s) {', '.join(missing)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            values[name] = _coerce(name, value, source)
        for name in ("private_key_file", "data_dir"):
            values[name] = (base_dir / Path(values[name])).resolve()
        if values.get("mqtt_ca_file"):
            # Like the paths above: relative to the config file, not to where the agent was started.
            values["mqtt_ca_file"] = str((base_dir / Path(values["mqtt_ca_file"])).resolve())
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self, *, relative_to: Path | None = None) -> dict[str, Any]:
        """Plain TOML-able values; paths under ``relative_to`` are written relative to it."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                if relative_to is not None and value.is_relative_to(relative_to.resolve()):
                    value = value.relative_to(relative_to.resolve())
                value = value.as_posix()
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def write_toml(self, path: Path | str) -> None:
        """Write this config as TOML (mode 0600: it may hold the MQTT password), atomically."""
        path = Path(path)
        lines = ["# zfjl edge agent configuration", ""]
        for name, value in self.to_dict(relative_to=path.parent).items():
            lines.append(f"{name} = {_toml_value(value)}")
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)

    # -- validation -----------------------------------------------------------------------------

    def _validate(self) -> None:
        if not valid_device_id(self.device_id):
            raise ConfigError(f"device_id {self.device_id!r} must be 1–64 of [A-Za-z0-9_-]")
        self._validate_brokers()
        if self.mqtt_protocol not in _MQTT_PROTOCOLS:
            raise ConfigError(f"mqtt_protocol must be one of {', '.join(_MQTT_PROTOCOLS)}")
        if self.mqtt_password and not self.mqtt_username:
            raise ConfigError("mqtt_password is set but mqtt_username is not")
        positive = {
            "segment_seconds": self.segment_seconds,
            "chunk_bytes": self.chunk_bytes,
            "window": self.window,
            "ack_timeout_s": self.ack_timeout_s,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "health_interval_s": self.health_interval_s,
        }
        for name, number in positive.items():
            if not math.isfinite(number) or number <= 0:
                raise ConfigError(f"{name} must be positive, got {number}")
        if self.chunk_bytes > 1024 * 1024:
            # The server refuses bigger chunks (ReceiverView.max_chunk_bytes).
            raise ConfigError("chunk_bytes must be at most 1048576")
        if self.drain_timeout_s < 0 or self.min_free_bytes < 0:
            raise ConfigError("drain_timeout_s and min_free_bytes must not be negative")
        if isinstance(self.camera, str) and not self.camera:
            raise ConfigError('camera must be "synthetic", a device index, a device path or a URL')
        if not self.microphone:
            raise ConfigError('microphone must be "synthetic", "none" or a device name')
        self._validate_session()

    def _validate_brokers(self) -> None:
        if not self.mqtt_url and not self.mqtt_urls:
            raise ConfigError("mqtt_url (or mqtt_urls) is required")
        if not self.mqtt_url:
            # Frozen: fill the primary in once, so everything that reads mqtt_url sees the first broker.
            object.__setattr__(self, "mqtt_url", self.mqtt_urls[0])
        if self.mqtt_urls and self.mqtt_url != self.mqtt_urls[0]:
            raise ConfigError(
                f"mqtt_url {self.mqtt_url!r} must be the first entry of mqtt_urls (or be left out)"
            )
        names = ("mqtt_url",) if not self.mqtt_urls else ("mqtt_urls",) * len(self.mqtt_urls)
        addresses = [
            BrokerAddress.parse(url, name=name) for url, name in zip(self.broker_urls, names, strict=True)
        ]
        if len(set(self.broker_urls)) != len(self.broker_urls):
            raise ConfigError("mqtt_urls lists a broker twice")
        if len({address.tls for address in addresses}) > 1:
            # One TLS setting (and mqtt_ca_file) for the client: a list cannot mix mqtt:// and mqtts://.
            raise ConfigError("mqtt_urls must all be mqtt:// or all be mqtts://")
        if not math.isfinite(self.mqtt_failover_after_s) or self.mqtt_failover_after_s <= 0:
            raise ConfigError(f"mqtt_failover_after_s must be positive, got {self.mqtt_failover_after_s}")
        if not math.isfinite(self.mqtt_return_to_first_s) or self.mqtt_return_to_first_s < 0:
            raise ConfigError(
                f"mqtt_return_to_first_s must be 0 (off) or positive, got {self.mqtt_return_to_first_s}"
            )

    def _validate_session(self) -> None:
        if self.idle_recording not in ("continuous", "prebuffer"):
            raise ConfigError('idle_recording must be "continuous" or "prebuffer"')
        ranges = {
            "prerecord_seconds": (self.prerecord_seconds, 0.0, 120.0),
            "explanation_seconds": (self.explanation_seconds, 5.0, 30.0),
            "explanation_min_rms": (self.explanation_min_rms, 0.0, 1.0),
        }
        for name, (number, low, high) in ranges.items():
            if not math.isfinite(number) or not low <= number <= high:
                raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {number}")
        for name in (
            "stall_threshold_s",
            "microphone_timeout_s",
            "clock_jump_threshold_s",
            "session_event_retry_s",
        ):
            number = getattr(self, name)
            if not math.isfinite(number) or number <= 0:
                raise ConfigError(f"{name} must be positive, got {number}")
        if self.storage_stop_bytes < 0 or self.storage_warn_bytes < self.storage_stop_bytes:
            raise ConfigError("need 0 <= storage_stop_bytes <= storage_warn_bytes")
        for text in self.ingest_public_keys:
            try:
                decode_public_key(text)
            except ValueError:
                raise ConfigError(
                    f"ingest_public_keys: {text!r} is not a base64 Ed25519 public key (32 bytes)"
                ) from None

    @property
    def ingest_public_keys_raw(self) -> list[bytes]:
        """The pinned ingest public keys as raw 32-byte keys."""
        return [decode_public_key(text) for text in self.ingest_public_keys]


_INT_FIELDS = {
    "chunk_bytes",
    "window",
    "width",
    "height",
    "min_free_bytes",
    "storage_warn_bytes",
    "storage_stop_bytes",
}
_FLOAT_FIELDS = {
    "segment_seconds",
    "ack_timeout_s",
    "drain_timeout_s",
    "fps",
    "health_interval_s",
    "prerecord_seconds",
    "explanation_seconds",
    "explanation_min_rms",
    "stall_threshold_s",
    "microphone_timeout_s",
    "clock_jump_threshold_s",
    "session_event_retry_s",
    "mqtt_failover_after_s",
    "mqtt_return_to_first_s",
}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check a raw TOML value's type for a field (ints are accepted where floats are)."""
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {name} must be an integer, got {value!r}")
        return value
    if name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {name} must be a number, got {value!r}")
        return float(value)
    if name in ("ingest_public_keys", "mqtt_urls"):
        if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{source}: {name} must be a list of strings, got {value!r}")
        return tuple(value)
    if name == "camera":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{source}: camera must be a string or a device index, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
    return value


def _toml_value(value: Any) -> str:
    """TOML text of a scalar or a list of scalars (the config has no tables)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
