"""Signed A/B updates of the agent: fetch, verify, install into the inactive slot, switch, check, roll back.

The layout under ``update_slots_dir`` follows RAUC's A/B scheme, reduced to folders::

    a/, b/               unpacked agent wheels (what ``pip install --target`` would lay out)
    current -> a         the active slot; the service runs ``python -m edge_agent`` with PYTHONPATH here
    updater-state.json   active slot, each slot's version, the highest version ever installed

An update must only move forward: its version must be above the running one *and* above the highest
ever installed (persisted), so an old but validly signed bundle can neither roll a device back nor be
replayed (TUF's rollback and freeze attacks). The pointer is switched atomically (symlink + rename);
the new slot must then pass ``zfjl-agent self-test`` in a subprocess, or the pointer goes back — the
``tryboot`` idea. A switch left unconfirmed by a crash is undone at the next start. An update never
interrupts an open enforcement session (JL-16: recording must be continuous): it waits for the end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.errors import AgentError
from firmware_tools.bundle import (
    BundleError,
    BundleMetadata,
    compare_versions,
    extract_files,
    load_public_keys,
    parse_version,
    unpack_wheel,
    verify_bundle,
)
from zfjl_common.fsutil import sha256_file

__all__ = [
    "BUNDLE_NAME",
    "SLOT_MARKER",
    "STATE_FILE",
    "UpdateDeferred",
    "UpdateError",
    "Updater",
    "fetch_bundle",
    "load_trusted_keys",
    "running_version",
    "self_test_health_check",
]

logger = logging.getLogger(__name__)

STATE_FILE = "updater-state.json"
SLOT_MARKER = ".zfjl-slot.json"
BUNDLE_NAME = "zfjl-agent"
SLOTS = ("a", "b")
DEFAULT_MAX_BUNDLE_BYTES = 512 * 1024 * 1024
WAITING_NOTE = "waiting for the enforcement session to end / 等待执法记录结束后升级"
_CHUNK = 256 * 1024

# fetch(url, destination, max_bytes) writes the bundle or raises UpdateError.
FetchBundle = Callable[[str, Path, int], None]
# health_check(pointer) -> None when the slot behind ``pointer`` answers, else the reason it does not.
HealthCheck = Callable[[Path], str | None]
Progress = Callable[[dict[str, Any]], None]


class UpdateError(AgentError):
    """The update was refused or failed; ``detail`` is what the command reports."""

    def __init__(self, reason: str, *, rejected: bool = False, **detail: Any) -> None:
        """``rejected`` marks bad parameters (the command is then ``rejected``, not ``failed``)."""
        super().__init__(reason)
        self.rejected = rejected
        self.detail: dict[str, Any] = {"reason": reason, **detail}


class UpdateDeferred(AgentError):
    """The agent is stopping before the update could run; the server offers it again on reconnect."""


def running_version() -> str:
    """The version of the agent package running now (``0.0.0`` when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zfjl")
    except PackageNotFoundError:
        return "0.0.0"


def load_trusted_keys(path: Path) -> list[Ed25519PublicKey]:
    """The update public keys from a PEM file; AgentError if there are none."""
    try:
        keys = load_public_keys(path.read_bytes())
    except (OSError, BundleError, ValueError) as exc:
        raise AgentError(f"cannot read update key file {path}: {exc}") from None
    if not keys:
        raise AgentError(f"update key file {path} holds no public key")
    return keys


def fetch_bundle(url: str, dest: Path, max_bytes: int, *, timeout_s: float = 30.0) -> None:
    """Stream ``url`` to ``dest`` (tmp + rename), refusing anything over ``max_bytes``."""
    if not re.match(r"https?://", url):
        # urlopen would also read file:// and ftp:// URLs; a command may only point at a web server.
        raise UpdateError("apply_update needs an http(s) url", rejected=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise UpdateError(f"bundle is {declared} bytes, more than the {max_bytes} allowed")
            received = 0
            with tmp.open("wb") as sink:
                while chunk := response.read(_CHUNK):
                    received += len(chunk)
                    # Content-Length may be absent or lie: count what actually arrives.
                    if received > max_bytes:
                        raise UpdateError(f"bundle exceeds the {max_bytes} bytes allowed")
                    sink.write(chunk)
                sink.flush()
                os.fsync(sink.fileno())
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UpdateError(f"cannot download the bundle: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def self_test_health_check(pointer: Path, *, timeout_s: float = 60.0) -> str | None:
    """Run ``python -m edge_agent self-test`` from the slot behind ``pointer``; None if it answers."""
    env = dict(os.environ)
    # The slot goes first on sys.path, ahead of the installed agent; -s keeps the user site out.
    env["PYTHONPATH"] = str(pointer)
    try:
        proc = subprocess.run(
            [sys.executable, "-s", "-m", "edge_agent", "self-test"],
            env=env,
            cwd=pointer.parent,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"self-test did not answer within {timeout_s:g} s"
    except OSError as exc:
        return f"self-test could not start: {exc}"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return f"self-test exited with {proc.returncode}: {tail[0][:300]}"
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "self-test answered something that is not JSON"
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        return "self-test did not report ok"
    # It must be the new slot that answered, not the agent installed beside it.
    if not Path(str(answer.get("path", ""))).resolve().is_relative_to(pointer.resolve()):
        return "self-test ran an agent outside the new slot"
    return None


class Updater:
    """Applies ``apply_update`` commands for one device, one at a time."""

    def __init__(
        self,
        slots_dir: Path,
        trusted_keys: Sequence[Ed25519PublicKey],
        *,
        installed_version: str | None = None,
        session_open: Callable[[], bool] = lambda: False,
        stop_event: threading.Event | None = None,
        fetch: FetchBundle | None = None,
        health_check: HealthCheck | None = None,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        poll_interval_s: float = 2.0,
    ) -> None:
        """``installed_version`` is the agent running when no slot is active yet (default: the package's)."""
        if not trusted_keys:
            raise AgentError("an updater needs at least one trusted update key")
        self.slots_dir = slots_dir
        self.trusted_keys = list(trusted_keys)
        self.base_version = installed_version or running_version()
        parse_version(self.base_version)
        self.session_open = session_open
        self.stop_event = stop_event or threading.Event()
        self.fetch: FetchBundle = fetch or fetch_bundle
        self.health_check: HealthCheck = health_check or self_test_health_check
        self.max_bundle_bytes = max_bundle_bytes
        self.poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self.slots_dir.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = self._load_state()
        self._recover()

    # -- state --------------------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.slots_dir / STATE_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            data = {}
        state: dict[str, Any] = {"active": None, "versions": {}, "highest_version": self.base_version}
        if isinstance(data, dict):
            state.update(data)
        return state

    def _save_state(self) -> None:
        path = self.slots_dir / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as stream:
            json.dump(self.state, stream, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)

    @property
    def pointer(self) -> Path:
        """The ``current`` symlink the service starts the agent through."""
        return self.slots_dir / "current"

    @property
    def active_slot(self) -> str | None:
        """The slot that passed its check last (None: the agent still runs from its base install)."""
        active = self.state.get("active")
        return active if active in SLOTS else None

    @property
    def installed_version(self) -> str:
        """Version of the active slot, or of the base install."""
        slot = self.active_slot
        return str(self.state["versions"][slot]) if slot else self.base_version

    @property
    def highest_version(self) -> str:
        """The highest version ever installed here: nothing at or below it is accepted again."""
        highest = str(self.state.get("highest_version") or self.base_version)
        return highest if compare_versions(highest, self.installed_version) >= 0 else self.installed_version

    def _point(self, slot: str | None) -> None:
        """Switch ``current`` atomically: a new symlink renamed over the old one (rename(2) is atomic)."""
        if slot is None:
            self.pointer.unlink(missing_ok=True)
            return
        tmp = self.slots_dir / "current.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(slot, tmp)
        os.replace(tmp, self.pointer)

    def _recover(self) -> None:
        """A switch never confirmed (power lost during the check) goes back to the last good slot."""
        trying = self.state.pop("trying", None)
        if trying is not None:
            logger.warning(
                "update to slot %s was not confirmed; pointing back to %s", trying, self.active_slot
            )
            self._point(self.active_slot)
            self._save_state()
        elif self.active_slot is not None and not self.pointer.is_symlink():
            self._point(self.active_slot)

    # -- the update -----------------------------------------------------------------------------------

    def progress_note(self) -> dict[str, Any]:
        """The in_progress detail to report now: a note while a session holds the update back."""
        return {"note": WAITING_NOTE} if self.session_open() else {}

    def _wait_for_session(self, progress: Progress | None) -> None:
        noted = False
        while self.session_open():
            if not noted and progress is not None:
                progress({"note": WAITING_NOTE})
            noted = True
            if self.stop_event.wait(self.poll_interval_s):
                raise UpdateDeferred("the agent stopped while waiting for the session to end")

    def _params(self, params: dict[str, Any]) -> tuple[str, str | None, str | None]:
        url = params.get("url")
        if not isinstance(url, str) or not re.match(r"https?://", url):
            raise UpdateError("apply_update needs an http(s) url", rejected=True)
        sha256 = params.get("sha256")
        if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
            raise UpdateError("sha256 must be 64 lowercase hex digits", rejected=True)
        version = params.get("version")
        if version is not None:
            try:
                parse_version(str(version))
            except BundleError as exc:
                raise UpdateError(str(exc), rejected=True) from None
        return url, sha256, None if version is None else str(version)

    def _check_forward(self, version: str) -> None:
        """Only forward: above the running version (no rollback) and the highest ever (no replay)."""
        if compare_versions(version, self.installed_version) <= 0:
            raise UpdateError(
                f"downgrade refused: {version} is not newer than the installed {self.installed_version}",
                installed_version=self.installed_version,
            )
        if compare_versions(version, self.highest_version) <= 0:
            raise UpdateError(
                f"replay refused: {version} is not newer than {self.highest_version}, installed before",
                installed_version=self.installed_version,
            )

    def apply(self, params: dict[str, Any], *, progress: Progress | None = None) -> dict[str, Any]:
        """Run one update to the end; the success detail, or UpdateError / UpdateDeferred."""
        url, sha256, announced = self._params(params)
        with self._lock:
            if announced is not None:
                self._check_forward(announced)  # before downloading what would be refused anyway
            self._wait_for_session(progress)
            incoming = self.slots_dir / "incoming.bundle"
            try:
                self.fetch(url, incoming, self.max_bundle_bytes)
                return self._install(incoming, sha256, announced, progress)
            finally:
                incoming.unlink(missing_ok=True)

    def _install(
        self, bundle: Path, sha256: str | None, announced: str | None, progress: Progress | None
    ) -> dict[str, Any]:
        if bundle.stat().st_size > self.max_bundle_bytes:
            raise UpdateError(f"bundle exceeds the {self.max_bundle_bytes} bytes allowed")
        if sha256 is not None and sha256_file(bundle) != sha256:
            raise UpdateError("the downloaded bundle does not match the sha256 in the command")
        try:
            metadata, signer = verify_bundle(bundle, self.trusted_keys)
        except BundleError as exc:
            raise UpdateError(f"bundle refused: {exc}") from None
        if metadata.name != BUNDLE_NAME:
            raise UpdateError(f"bundle is for {metadata.name!r}, not {BUNDLE_NAME}")
        if announced is not None and metadata.version != announced:
            raise UpdateError(f"bundle is version {metadata.version}, the command announced {announced}")
        self._check_forward(metadata.version)
        if compare_versions(self.installed_version, metadata.min_agent_version) < 0:
            raise UpdateError(f"bundle needs agent {metadata.min_agent_version} or newer first")
        # The download may have taken a while: a session opened meanwhile still comes first.
        self._wait_for_session(progress)

        previous, previous_version = self.active_slot, self.installed_version
        target = "b" if previous == "a" else "a"
        slot_dir = self.slots_dir / target
        self._prepare_slot(slot_dir, bundle, metadata, signer)

        self.state["trying"] = target
        self._save_state()
        self._point(target)
        reason = self.health_check(self.pointer)
        if reason is not None:
            self._point(previous)
            self.state.pop("trying", None)
            self._save_state()
            logger.error("update %s failed its health check (%s); rolled back", metadata.version, reason)
            raise UpdateError(
                f"health check failed: {reason}",
                version=metadata.version,
                rolled_back=True,
                installed_version=previous_version,
            )
        self.state.pop("trying", None)
        self.state["active"] = target
        self.state["versions"][target] = metadata.version
        self.state["highest_version"] = metadata.version
        self._save_state()
        logger.info("updated %s -> %s (slot %s)", previous_version, metadata.version, target)
        return {
            "version": metadata.version,
            "previous_version": previous_version,
            "slot": target,
            "key_id": signer,
            # The running process still has the old code loaded; the service manager restarts it.
            "restart_required": True,
        }

    def _prepare_slot(self, slot_dir: Path, bundle: Path, metadata: BundleMetadata, signer: str) -> None:
        """Empty the inactive slot and unpack the verified wheels into it."""
        shutil.rmtree(slot_dir, ignore_errors=True)
        parts = self.slots_dir / "incoming.parts"
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir()
        slot_dir.mkdir()
        try:
            # extract_files re-checks every hash while copying: what is unpacked is what was verified.
            files = extract_files(bundle, parts, metadata)
            for name in sorted(files):
                if name.endswith(".whl"):
                    unpack_wheel(files[name], slot_dir)
        except BundleError as exc:
            shutil.rmtree(slot_dir, ignore_errors=True)
            raise UpdateError(f"bundle refused: {exc}") from None
        finally:
            shutil.rmtree(parts, ignore_errors=True)
        marker = {"version": metadata.version, "key_id": signer}
        (slot_dir / SLOT_MARKER).write_text(json.dumps(marker, sort_keys=True), encoding="utf-8")
