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
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from server.errors import ZfjlError
from server.infra.fsmode import create_private_file, private_dir
from zfjl_verify.errors import VerifyError
from zfjl_verify.note import NoteKey
from zfjl_verify.seal import agency_key_name
from zfjl_verify.suite import DEFAULT_SUITE, SealKey, Suite, get_suite

if TYPE_CHECKING:
    from server.infra.config import Settings

__all__ = ["AgencyKeyError", "AgencyKeyring"]


class AgencyKeyError(ZfjlError):
    """An agency's key file exists but does not hold an Ed25519 private key."""

    code = "agency_key_invalid"


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

    def private_key(self, agency_id: int) -> SealKey:
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
