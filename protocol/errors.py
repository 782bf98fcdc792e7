"""Errors raised by the sans-IO protocol layer, split by whose fault they are (like h11's)."""

from __future__ import annotations

__all__ = [
    "ChunkHashMismatch",
    "LocalProtocolError",
    "ManifestError",
    "ProtocolError",
    "RemoteProtocolError",
    "TopicError",
]


class ProtocolError(Exception):
    """Root of every protocol error."""


class LocalProtocolError(ProtocolError):
    """We were asked to build something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (its fault, not ours)."""


class TopicError(RemoteProtocolError):
    """A topic string is not one of protocol v1's topics."""


class ManifestError(RemoteProtocolError):
    """A segment manifest or its signed envelope is malformed."""


class ChunkHashMismatch(RemoteProtocolError):
    """A chunk's bytes do not hash to the SHA-256 named in its topic (corrupted in transit)."""

    def __init__(self, device_id: str, file_id: str, offset: int) -> None:
        super().__init__(f"chunk at offset {offset} of {device_id}/{file_id} does not match its sha256")
        self.device_id = device_id
        self.file_id = file_id
        self.offset = offset
