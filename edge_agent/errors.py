"""Exception hierarchy of the edge agent."""

from __future__ import annotations

__all__ = ["AgentError", "EncoderError", "SourceError"]


class AgentError(Exception):
    """Root of every error the edge agent raises on purpose."""


class SourceError(AgentError):
    """A capture source (camera, microphone) cannot be opened or used."""


class EncoderError(AgentError):
    """A segment cannot be encoded or written."""
