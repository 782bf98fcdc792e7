"""C2SP tlog-checkpoint bodies (c2sp.org/tlog-checkpoint) inside signed notes.

The note text is at least three non-empty lines: the origin (the log's identity), the tree size in
decimal with no leading zeroes, and the base64 RFC 6962/9162 root hash; any further lines are opaque,
non-empty extension lines. The log's key name should match the origin.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zfjl_verify.errors import MalformedCheckpoint
from zfjl_verify.merkle import HASH_SIZE
from zfjl_verify.note import NoteVerifier, SignedNote, open_note, sign_note

__all__ = ["Checkpoint", "open_checkpoint", "sign_checkpoint"]

_SIZE = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """One signed tree head: which log, how many leaves, which root."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise MalformedCheckpoint("检查点来源行为空", "a checkpoint's origin line must be non-empty")
        if self.size < 0:
            raise MalformedCheckpoint("树大小不能为负", "a tree size cannot be negative")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedCheckpoint("根哈希不是 32 字节", "the root hash is not 32 bytes")
        if any(not line or "\n" in line for line in self.extensions):
            raise MalformedCheckpoint("扩展行不能为空", "extension lines must be non-empty single lines")

    def body(self) -> str:
        """The note text of this checkpoint, newline-terminated."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint from its note text; MalformedCheckpoint unless it is exactly the C2SP shape."""
        if not text.endswith("\n"):
            raise MalformedCheckpoint("检查点文本必须以换行结束", "a checkpoint text ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise MalformedCheckpoint(
                "检查点至少需要来源、大小、根哈希三行且不得有空行",
                "a checkpoint needs origin, size and root hash lines, none of them empty",
            )
        origin, size_text, root_text, *extensions = lines
        if not _SIZE.fullmatch(size_text):
            raise MalformedCheckpoint(
                "树大小必须是无前导零的十进制数", "the tree size must be decimal with no leading zeroes"
            )
        try:
            root = base64.b64decode(root_text, validate=True)
        except (ValueError, binascii.Error):
            raise MalformedCheckpoint(
                "根哈希不是有效的 base64", "the root hash is not valid base64"
            ) from None
        if base64.b64encode(root).decode("ascii") != root_text:
            raise MalformedCheckpoint("根哈希的 base64 编码不规范", "the root hash is not canonical base64")
        return cls(origin=origin, size=int(size_text), root_hash=root, extensions=tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, name: str, private_key: Ed25519PrivateKey) -> str:
    """The signed note of a checkpoint, signed by the log key called ``name``."""
    return sign_note(checkpoint.body(), name, private_key)


def open_checkpoint(
    message: bytes | str, verifiers: list[NoteVerifier], *, origin: str | None = None
) -> tuple[Checkpoint, SignedNote]:
    """Verify a signed checkpoint against trusted keys, then parse it; check its origin if one is given."""
    note = open_note(message, verifiers)
    checkpoint = Checkpoint.parse(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise MalformedCheckpoint(
            f"检查点来自“{checkpoint.origin}”，不是预期的“{origin}”",
            f"the checkpoint's origin is {checkpoint.origin!r}, not the expected {origin!r}",
        )
    return checkpoint, note
