"""Pluggable local UI of the recorder: how the officer is told to explain an interruption (JL-16).

A body-worn camera has a buzzer, an LED and perhaps a small screen; the simulator has a console. Each
is a :class:`Prompter`. The hardware ones here are no-op-safe stubs that only log, so a device without
that part (or a test) never fails on a prompt; a board support package replaces them.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TextIO

__all__ = [
    "CompositePrompter",
    "ConsolePrompter",
    "LedPrompter",
    "MemoryPrompter",
    "Prompt",
    "PromptKind",
    "Prompter",
    "ScreenPrompter",
    "TonePrompter",
    "default_prompter",
]

logger = logging.getLogger(__name__)


class PromptKind(Enum):
    """Why the officer is being told something."""

    EXPLAIN = "explain"  # recording resumed: say why it was interrupted (JL-16)
    INTERRUPTED = "interrupted"  # recording stopped
    STORAGE_LOW = "storage_low"
    INFO = "info"  # session started/ended, bookmark taken


@dataclass(frozen=True, kw_only=True)
class Prompt:
    """One thing to tell the officer."""

    kind: PromptKind
    message: str
    marker_id: str = ""


class Prompter(Protocol):
    """A local UI channel; ``show`` must not block the recorder and must never raise."""

    def show(self, prompt: Prompt) -> None: ...


class _LoggingStub:
    """Base of the hardware stubs: log what the part would do."""

    part = "ui"

    def show(self, prompt: Prompt) -> None:
        """Log the prompt as this part would present it."""
        logger.info("[%s] %s: %s", self.part, prompt.kind.value, prompt.message)


class TonePrompter(_LoggingStub):
    """Buzzer stub (two short beeps for EXPLAIN on real hardware)."""

    part = "tone"


class LedPrompter(_LoggingStub):
    """LED stub (blinking amber while an explanation is expected)."""

    part = "led"


class ScreenPrompter(_LoggingStub):
    """Small-screen stub."""

    part = "screen"


class ConsolePrompter:
    """Writes prompts to a text stream (stderr by default): the simulator's UI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        """Use ``stream`` or stderr."""
        self.stream = stream

    def show(self, prompt: Prompt) -> None:
        """Print one line."""
        stream = self.stream or sys.stderr
        try:
            stream.write(f"[zfjl {prompt.kind.value}] {prompt.message}\n")
            stream.flush()
        except (OSError, ValueError):
            logger.debug("console prompt could not be written", exc_info=True)


class MemoryPrompter:
    """Keeps every prompt (tests and status output)."""

    def __init__(self) -> None:
        """Start empty."""
        self.prompts: list[Prompt] = []
        self._lock = threading.Lock()

    def show(self, prompt: Prompt) -> None:
        """Remember the prompt."""
        with self._lock:
            self.prompts.append(prompt)

    def of_kind(self, kind: PromptKind) -> list[Prompt]:
        """Prompts of one kind, in order."""
        with self._lock:
            return [p for p in self.prompts if p.kind is kind]


class CompositePrompter:
    """Shows each prompt on every channel; a failing channel is logged and skipped."""

    def __init__(self, *channels: Prompter) -> None:
        """Channels in order."""
        self.channels = list(channels)

    def show(self, prompt: Prompt) -> None:
        """Show on all channels."""
        for channel in self.channels:
            try:
                channel.show(prompt)
            except Exception:
                logger.exception("prompt channel %r failed", channel)


def default_prompter(simulate: bool) -> CompositePrompter:
    """Console for the simulator; tone, LED and screen stubs on a device."""
    if simulate:
        return CompositePrompter(ConsolePrompter())
    return CompositePrompter(TonePrompter(), LedPrompter(), ScreenPrompter())
