"""The agent side of fleet management: desired configuration and commands from ``down/``.

Hooks into :class:`~edge_agent.mqtt_link.MqttLink` by composition: per-topic paho callbacks
(``message_callback_add``) for ``down/config`` and ``down/cmd/+``, so transfer acks keep their own path.
Every command is answered at most once per final state: outcomes are kept in ``fleet-commands.json``
so a command the server re-sends (on reconnect) is answered with the same result, never run twice.

Commands and the desired configuration arrive in the same signed envelope as acks (``protocol.downlink``):
only what the server's pinned ingest key signed over this very topic is applied or run. A forged
``session_end`` or configuration from anyone else who can publish on ``down/`` is logged, counted in
``untrusted`` and ignored.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.config import AgentConfig
from edge_agent.mqtt_link import LinkClient
from edge_agent.session import SessionCommandError
from edge_agent.updater import UpdateDeferred, UpdateError, Updater
from protocol import fleet, topics
from protocol.downlink import IngestKeyring, UntrustedDownlink
from protocol.errors import ProtocolError
from protocol.fleet import Command, CommandKind, CommandState, CommandStatus, DesiredConfig, ReportedConfig
from protocol.manifest import format_time

__all__ = ["COMMANDS_STATE_FILE", "CONFIG_STATE_FILE", "CommandHandler", "mosquitto_hash"]

logger = logging.getLogger(__name__)

CONFIG_STATE_FILE = "fleet-config.json"
COMMANDS_STATE_FILE = "fleet-commands.json"
_MAX_REMEMBERED = 500


def mosquitto_hash(password: str, *, iterations: int = 20_000) -> str:
    """Mosquitto 2 ``$7$`` PBKDF2-SHA512 hash: the only form of a new password that leaves the device."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class CommandHandler:
    """Applies desired configuration and runs commands for one device."""

    def __init__(
        self,
        config: AgentConfig,
        client: mqtt.Client | LinkClient,
        *,
        state_dir: Path,
        config_path: Path | None = None,
        upload_now: Callable[[], None] | None = None,
        locate: Callable[[], dict[str, Any] | None] | None = None,
        bookmark: Callable[[str, str], str] | None = None,
        session_control: Callable[[str, dict[str, str]], str] | None = None,
        updater: Updater | None = None,
        clock: Callable[[], datetime] = _now,
        on_config: Callable[[int, dict[str, Any]], str] | None = None,
    ) -> None:
        """``client`` is the device's connection (``MqttLink.device_client``, which follows the link to
        another broker; a paho client in tests); nothing happens until start()."""
        self.config = config
        self.device_id = config.device_id
        self.client = client
        self.state_dir = state_dir
        # zfjl-fw provision writes agent.toml next to the data directory; that is the default.
        default_path = config.data_dir.parent / "agent.toml"
        self.config_path = config_path or (default_path if default_path.exists() else None)
        self.upload_now = upload_now
        self.locate = locate
        # SessionController.bookmark(type, note) -> event id; None: bookmark is rejected as unsupported.
        self.bookmark = bookmark
        # ("start" | "end", params) -> session id; None: session commands are rejected as unsupported.
        self.session_control = session_control
        self.updater = updater  # None: apply_update is rejected (no trusted update key configured)
        # LiveConfig.apply (edge_agent/effective_config.py): "" = applied, else why not (reported as error).
        self.on_config = on_config
        self.clock = clock
        self._updates_running: set[str] = set()
        self._lock = threading.Lock()
        self.keyring = IngestKeyring.of(config.ingest_public_keys_raw)
        self.untrusted = 0  # commands and configurations refused for a missing or wrong signature
        self.applied: dict[str, Any] = self._load(CONFIG_STATE_FILE) or {"version": 0, "settings": {}}
        self.outcomes: dict[str, dict[str, Any]] = self._load(COMMANDS_STATE_FILE) or {}

    # -- state files -------------------------------------------------------------------------------

    def _load(self, name: str) -> Any:
        try:
            return json.loads((self.state_dir / name).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def _save(self, name: str, value: Any) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    # -- wiring ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Route this device's config and command topics here (the link already subscribes to down/#)."""
        self.client.message_callback_add(topics.config_desired(self.device_id), self._on_config)
        self.client.message_callback_add(topics.device_command_filter(self.device_id), self._on_command)

    def stop(self) -> None:
        """Stop routing messages here."""
        self.client.message_callback_remove(topics.config_desired(self.device_id))
        self.client.message_callback_remove(topics.device_command_filter(self.device_id))

    def _publish(self, msg: fleet.FleetMessage) -> None:
        topic, payload = fleet.encode(msg)
        self.client.publish(topic, payload, qos=1)

    # -- configuration -----------------------------------------------------------------------------

    def _verified(self, message: mqtt.MQTTMessage) -> bytes | None:
        """The body of a message the server's ingest key signed over its topic; None (logged) if not."""
        try:
            return self.keyring.open(message.topic, bytes(message.payload))
        except UntrustedDownlink as exc:
            with self._lock:
                self.untrusted += 1
            logger.warning("REFUSED untrusted %s: %s", message.topic, exc)
            return None

    def _on_config(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        body = self._verified(message)
        if body is None:
            return
        try:
            msg = fleet.decode(message.topic, body)
        except ProtocolError as exc:
            logger.warning("ignoring bad desired config: %s", exc)
            return
        if isinstance(msg, DesiredConfig):
            self.apply_config(msg)

    def apply_config(self, msg: DesiredConfig) -> ReportedConfig:
        """Apply a newer desired config (persisted; the recorder reads it at its next segment) and report."""
        with self._lock:
            error = ""
            if msg.version > int(self.applied.get("version", 0)):
                error = self.on_config(msg.version, dict(msg.settings)) if self.on_config else ""
                if not error:
                    self.applied = {"version": msg.version, "settings": dict(msg.settings)}
                    self._save(CONFIG_STATE_FILE, self.applied)
                    logger.info("applied desired configuration version %d", msg.version)
            # Refused: that version with the error and the settings still in force (never silently ignored).
            report = ReportedConfig(
                device_id=self.device_id,
                version=msg.version if error else int(self.applied["version"]),
                settings=dict(self.applied["settings"]),
                at=format_time(self.clock()),
                error=error,
            )
        self._publish(report)
        return report

    # -- commands ----------------------------------------------------------------------------------

    def _on_command(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        body = self._verified(message)
        if body is None:
            return
        try:
            msg = fleet.decode(message.topic, body)
        except ProtocolError as exc:
            logger.warning("ignoring bad command: %s", exc)
            return
        if isinstance(msg, Command) and msg.device_id == self.device_id:
            if msg.kind is CommandKind.APPLY_UPDATE and self.updater is not None:
                self._start_update(msg)
                return
            try:
                self.run(msg)
            except Exception:
                logger.exception("command %s failed unexpectedly", msg.command_id)

    def _start_update(self, cmd: Command) -> None:
        """An update may wait for a session to end: run it off paho's network thread, once at a time."""
        with self._lock:
            if cmd.command_id in self._updates_running:
                return  # re-sent on reconnect while still running: its outcome comes when it ends
            self._updates_running.add(cmd.command_id)

        def work() -> None:
            try:
                self.run(cmd)
            except UpdateDeferred as exc:
                logger.info("update %s deferred: %s", cmd.command_id, exc)
            except Exception:
                logger.exception("update %s failed unexpectedly", cmd.command_id)
            finally:
                with self._lock:
                    self._updates_running.discard(cmd.command_id)

        threading.Thread(target=work, name=f"update-{cmd.command_id[:8]}", daemon=True).start()

    def run(self, cmd: Command) -> CommandStatus:
        """Run a command once; a repeat gets the stored outcome again."""
        with self._lock:
            known = self.outcomes.get(cmd.command_id)
        if known is not None:
            status = CommandStatus(
                device_id=self.device_id,
                command_id=cmd.command_id,
                state=CommandState(known["state"]),
                detail=known["detail"],
                at=format_time(self.clock()),
            )
            self._publish(status)
            return status
        expires = _parse(cmd.expires_at)
        if expires is None or expires <= self.clock():
            state, detail = CommandState.REJECTED, {"reason": "expired"}
        else:
            self._publish(
                CommandStatus(
                    device_id=self.device_id,
                    command_id=cmd.command_id,
                    state=CommandState.IN_PROGRESS,
                    detail=self._progress_detail(cmd),
                    at=format_time(self.clock()),
                )
            )
            state, detail = self._execute(cmd)
        with self._lock:
            # The stored outcome never holds a password hash twice over the wire: it is re-sent as is.
            self.outcomes[cmd.command_id] = {"state": state.value, "detail": detail}
            if len(self.outcomes) > _MAX_REMEMBERED:
                for old in list(self.outcomes)[: len(self.outcomes) - _MAX_REMEMBERED]:
                    del self.outcomes[old]
            self._save(COMMANDS_STATE_FILE, self.outcomes)
        status = CommandStatus(
            device_id=self.device_id,
            command_id=cmd.command_id,
            state=state,
            detail=detail,
            at=format_time(self.clock()),
        )
        self._publish(status)
        return status

    def _progress_detail(self, cmd: Command) -> dict[str, Any]:
        if cmd.kind is CommandKind.APPLY_UPDATE and self.updater is not None:
            return self.updater.progress_note()
        return {}

    def _apply_update(self, cmd: Command) -> tuple[CommandState, dict[str, Any]]:
        """Signed A/B update (edge_agent/updater.py); UpdateDeferred leaves the command unanswered."""
        assert self.updater is not None

        def progress(detail: dict[str, Any]) -> None:
            status = CommandStatus(
                device_id=self.device_id,
                command_id=cmd.command_id,
                state=CommandState.IN_PROGRESS,
                detail=detail,
                at=format_time(self.clock()),
            )
            self._publish(status)

        try:
            return CommandState.SUCCEEDED, self.updater.apply(cmd.params, progress=progress)
        except UpdateError as exc:
            return (CommandState.REJECTED if exc.rejected else CommandState.FAILED), exc.detail

    def _execute(self, cmd: Command) -> tuple[CommandState, dict[str, Any]]:
        if cmd.kind is CommandKind.SYNC_CLOCK:
            issued = _parse(cmd.issued_at)
            if issued is None:
                return CommandState.FAILED, {"reason": "no server time"}
            # The offset is reported (and logged) for the admin; setting the system clock is NTP's job.
            offset = (issued - self.clock()).total_seconds()
            logger.info("server clock offset %.3f s", offset)
            return CommandState.SUCCEEDED, {"offset_s": round(offset, 3)}
        if cmd.kind is CommandKind.UPLOAD_NOW:
            if self.upload_now is None:
                return CommandState.FAILED, {"reason": "no uploader"}
            self.upload_now()
            return CommandState.SUCCEEDED, {}
        if cmd.kind is CommandKind.LOCATE:
            # JL-13: positioning is a device capability; without a fix the command fails, it does not guess.
            fix = self.locate() if self.locate is not None else None
            if fix is None:
                return CommandState.FAILED, {"reason": "no positioning fix"}
            return CommandState.SUCCEEDED, fix
        if cmd.kind is CommandKind.BOOKMARK and self.bookmark is not None:
            return self._bookmark(cmd)
        if (
            cmd.kind in (CommandKind.SESSION_START, CommandKind.SESSION_END)
            and self.session_control is not None
        ):
            return self._session(cmd)
        if cmd.kind is CommandKind.ROTATE_CREDENTIALS:
            return self._rotate()
        if cmd.kind is CommandKind.APPLY_UPDATE and self.updater is not None:
            return self._apply_update(cmd)
        return CommandState.REJECTED, {"reason": f"{cmd.kind.value} is not supported by this agent"}

    def _bookmark(self, cmd: Command) -> tuple[CommandState, dict[str, Any]]:
        """JL-8(1), JL-15: a signed BOOKMARK event in the open session; none open -> rejected (JL-16)."""
        assert self.bookmark is not None
        bookmark_type = str(cmd.params["bookmark_type"])
        try:
            event_id = self.bookmark(bookmark_type, str(cmd.params.get("note", "")))
        except SessionCommandError as exc:
            # A bookmark outside a session would tag no footage: the officer must start recording first.
            return CommandState.REJECTED, {"reason": "no_open_session", "message": str(exc)}
        return CommandState.SUCCEEDED, {"event_id": event_id, "bookmark_type": bookmark_type}

    def _session(self, cmd: Command) -> tuple[CommandState, dict[str, Any]]:
        """JL-16: start (arrival) or end an enforcement session on the backend's word."""
        assert self.session_control is not None
        action = "start" if cmd.kind is CommandKind.SESSION_START else "end"
        params = {k: str(v) for k, v in cmd.params.items()}
        try:
            session_id = self.session_control(action, params)
        except SessionCommandError as exc:
            # Already open / none open: the officer's own action came first; nothing is changed.
            return CommandState.REJECTED, {"reason": "session_state", "message": str(exc)}
        return CommandState.SUCCEEDED, {"session_id": session_id}

    def _rotate(self) -> tuple[CommandState, dict[str, Any]]:
        """Make a new MQTT password here; only its hash goes to the server, which installs it."""
        if self.config_path is None or not self.config.mqtt_username:
            return CommandState.FAILED, {"reason": "no config file or no MQTT username"}
        password = secrets.token_urlsafe(24)
        updated = dataclasses.replace(AgentConfig.load(self.config_path), mqtt_password=password)
        updated.write_toml(self.config_path)
        # paho re-reads these on every reconnect; the open connection is unaffected.
        self.client.username_pw_set(self.config.mqtt_username, password)
        self.config = dataclasses.replace(self.config, mqtt_password=password)
        return CommandState.SUCCEEDED, {"password_hash": mosquitto_hash(password)}
