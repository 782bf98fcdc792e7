"""systemd notifications from the agent: READY, the watchdog keep-alive and STOPPING (sd_notify(3)).

Plain datagrams to ``$NOTIFY_SOCKET``, no library: the recorder image carries no libsystemd binding.
When ``NOTIFY_SOCKET`` is unset (not run by systemd, tests, development) every call does nothing. With
``WatchdogSec=`` in the unit, systemd restarts an agent whose main loop stops sending ``WATCHDOG=1``: a
hung recorder loses a watchdog period of the JL-16 continuous record, not the rest of the shift.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["SystemdNotifier"]

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify states to the socket systemd named in ``NOTIFY_SOCKET``; inert without it."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address or None
        # Keep-alives at half the watchdog period (the interval sd_watchdog_enabled(3) recommends).
        self.ping_interval_s = watchdog_usec / 2_000_000 if watchdog_usec else 0.0
        self._clock = clock
        self._last_ping: float | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """The notifier for this process: ``NOTIFY_SOCKET``, and ``WATCHDOG_USEC`` if meant for this pid."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC", "").isdigit() and (not pid or pid == str(os.getpid())):
            usec = int(env["WATCHDOG_USEC"])
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        """Whether systemd asked for notifications."""
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one state datagram (``READY=1``, ``WATCHDOG=1`` …); False when not sent."""
        if self.address is None:
            return False
        # A leading "@" names a socket in the abstract namespace (a NUL byte on the wire).
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(target)
                sock.sendall(state.encode("utf-8"))
        except OSError as exc:
            if not self._warned:  # systemd restarts us if this keeps failing; say why once
                logger.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def ready(self) -> bool:
        """Start-up is complete (``Type=notify`` units count as started from here)."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """Shutdown has begun (the watchdog no longer applies; TimeoutStopSec does)."""
        return self.notify("STOPPING=1")

    def ping(self) -> bool:
        """``WATCHDOG=1`` when due: at most every half watchdog period, every call without a period."""
        if self.address is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.ping_interval_s:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")
