"""Each agency's seal key: it signs the agency's archive and export packages (JL-18, JL-20).

The measures ask for the archive to be sealed by the agency, not by the deployment: an agency's key is
its own, one key per agency, kept like the ingest key (``server/infra/ingest_key.py``) as base64 of its 32
raw bytes in ``<ZFJL_AGENCY_KEYS_DIR>/agency-<id>.key`` (default ``<data_dir>/agency-keys``) — an Ed25519
seed — or, under the ``sm3-sm2`` suite, ``agency-<id>.sm2.key``, an SM2 scalar (never the same secret for
two algorithms), mode 0600, generated the first time the agency seals something and never overwritten.
An operator who keeps keys elsewhere puts the agency's key file there before its first package. Every
server process of one deployment must see the same directory. The public half is published at
``GET /ledger/v1/agencies/{id}/seal-key`` so an archive office pins it once (``zfjl-verify package
--agency-key``).

**Rotation** (``zfjl-server agency-key rotate --agency <id>``): a new key replaces the agency's key from
now on; the old key's public half, with the period it sealed in, is appended to ``agency-<id>.history``
(``agency-<id>.sm2.history`` for SM2 keys)
(one JSON line per retired key, never rewritten), so every package sealed before stays verifiable and the
published answer lists it under ``previous_keys``. The old private key is not kept: nothing may be sealed
with it any more. The history line is written (and synced) before the new key replaces the old file, so a
crash in between loses no public key; the next rotation sees that the line already names the current key
and does not write it twice.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from server.errors import ZfjlError
from server.infra.fsmode import create_private_file, private_dir
from zfjl_common.fsutil import fsync_dir
from zfjl_verify.errors import VerifyError
from zfjl_verify.note import NoteKey
from zfjl_verify.seal import agency_key_name
from zfjl_verify.sm2_note import parse_note_key
from zfjl_verify.suite import DEFAULT_SUITE, Suite, get_suite
from zfjl_verify.suite import SealKey as SealPrivateKey

if TYPE_CHECKING:
    from server.infra.config import Settings

__all__ = ["AgencyKeyError", "AgencyKeyring", "SealKey", "SealKeyRotation"]


class AgencyKeyError(ZfjlError):
    """An agency's key file exists but does not hold an Ed25519 private key."""

    code = "agency_key_invalid"


@dataclass(frozen=True, kw_only=True)
class SealKey:
    """One of an agency's seal keys, public half only, and the period it sealed in (None: open)."""

    verifier: NoteKey
    valid_from: datetime | None
    valid_until: datetime | None

    def to_dict(self) -> dict[str, str | None]:
        """JSON view, as the published answer lists it."""
        return {
            "verifier_key": self.verifier.encode(),
            "valid_from": None if self.valid_from is None else self.valid_from.isoformat(),
            "valid_until": None if self.valid_until is None else self.valid_until.isoformat(),
        }


@dataclass(frozen=True, kw_only=True)
class SealKeyRotation:
    """What a rotation did: the key retired (with its period) and the key in force from ``at``."""

    agency_id: int
    retired: SealKey
    current: SealKey
    at: datetime


@dataclass(frozen=True)
class AgencyKeyring:
    """The directory of the agencies' seal keys."""

    directory: Path
    # The crypto suite the agencies seal under (ZFJL_CRYPTO_SUITE, zfjl_verify/suite.py): one per deployment.
    suite: Suite = field(default_factory=lambda: get_suite(DEFAULT_SUITE))

    @classmethod
    def from_settings(cls, settings: Settings) -> AgencyKeyring:
        """The keyring the settings name, sealing under the configured suite."""
        return cls(settings.agency_keys_dir, get_suite(settings.crypto_suite))

    def _path(self, agency_id: int) -> Path:
        # An SM2 key is another secret in another file: an agency keeps its Ed25519 key for older seals.
        suffix = ".sm2.key" if self.suite.seal.algorithm == "SM2" else ".key"
        return self.directory / f"agency-{int(agency_id)}{suffix}"

    def private_key(self, agency_id: int) -> SealPrivateKey:
        """The agency's seal key for the suite, generated once (O_EXCL: two processes never write two)."""
        path = self._path(agency_id)
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            text = self._generate(path)
        try:
            return self.suite.seal.load_key(base64.b64decode(text.strip(), validate=True))
        except (binascii.Error, ValueError, VerifyError):
            raise AgencyKeyError(
                f"机关 {agency_id} 的印章密钥文件无效", f"the seal key file of agency {agency_id} is invalid"
            ) from None

    def _generate(self, path: Path) -> str:
        private_dir(path.parent)
        text = base64.b64encode(self.suite.seal.new_key()).decode("ascii")
        try:
            fd = create_private_file(path)
        except FileExistsError:
            return path.read_text(encoding="ascii")
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return text

    def verifier(self, agency_id: int) -> NoteKey:
        """The public half as a verifier pins it: ``zfjl-agency-<id>+<key id>+<base64>``."""
        return self.suite.seal.verifier(agency_key_name(agency_id), self.private_key(agency_id))

    @property
    def algorithm(self) -> str:
        """The seal's signature algorithm, as the published key names it (``Ed25519``, ``SM2``)."""
        return self.suite.seal.algorithm

    def _history_path(self, agency_id: int) -> Path:
        # Beside the key file of the suite's algorithm: SM2 and Ed25519 keys retire in separate chains.
        return self._path(agency_id).with_suffix(".history")

    def retired_keys(self, agency_id: int) -> list[SealKey]:
        """The agency's earlier seal keys, oldest first, each with the period it sealed in."""
        try:
            text = self._history_path(agency_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out: list[SealKey] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                out.append(
                    SealKey(
                        verifier=parse_note_key(entry["verifier_key"]),
                        valid_from=_when(entry.get("valid_from")),
                        valid_until=_when(entry["valid_until"]),
                    )
                )
            except (ValueError, KeyError, TypeError, VerifyError):
                raise AgencyKeyError(
                    f"机关 {agency_id} 的印章密钥历史第 {number} 行无效",
                    f"line {number} of agency {agency_id}'s seal key history is invalid",
                ) from None
        return out

    def seal_keys(self, agency_id: int) -> list[SealKey]:
        """Every seal key of the agency, the current one last: what an archive office pins."""
        retired = self.retired_keys(agency_id)
        since = retired[-1].valid_until if retired else None
        return [*retired, SealKey(verifier=self.verifier(agency_id), valid_from=since, valid_until=None)]

    def rotate(self, agency_id: int, *, now: datetime | None = None) -> SealKeyRotation:
        """Replace the agency's seal key with a new one from ``now``; the old public half stays published.

        One rotation at a time per agency (an exclusive lock on the history file). The history line comes
        first, synced, then the new key file replaces the old one atomically (``os.replace``).
        """
        at = now or datetime.now(UTC)
        old = self.verifier(agency_id)  # made now if the agency never sealed anything
        history = self._history_path(agency_id)
        fd = create_private_file(history, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            retired = self.retired_keys(agency_id)
            since = retired[-1].valid_until if retired else None
            if retired and retired[-1].verifier.encode() == old.encode():
                # A rotation crashed after writing this line: the key it names is retired already.
                entry = retired[-1]
            else:
                entry = SealKey(verifier=old, valid_from=since, valid_until=at)
                handle.write(json.dumps(entry.to_dict(), sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            new_path = self._path(agency_id).with_suffix(".key.new")
            new_path.unlink(missing_ok=True)  # a half-written file of a crashed rotation
            raw = self.suite.seal.new_key()
            with os.fdopen(create_private_file(new_path), "w", encoding="ascii") as key_file:
                key_file.write(base64.b64encode(raw).decode("ascii") + "\n")
                key_file.flush()
                os.fsync(key_file.fileno())
            os.replace(new_path, self._path(agency_id))
            fsync_dir(self.directory)
        current = SealKey(verifier=self.verifier(agency_id), valid_from=entry.valid_until, valid_until=None)
        return SealKeyRotation(agency_id=agency_id, retired=entry, current=current, at=at)


def _when(value: object) -> datetime | None:
    """An ISO 8601 instant of the history file, or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(value)
    return datetime.fromisoformat(value)
