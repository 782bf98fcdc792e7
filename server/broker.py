"""Embedded MQTT broker (amqtt) for the zero-setup default when ``ZFJL_MQTT_URL`` is not set.

The broker runs amqtt's asyncio ``Broker`` in its own named daemon thread with a private event
loop.  amqtt never opens a socket itself: it is configured with an *external* listener and this
module owns the TCP server, which lets us

* bind strictly to a loopback address (amqtt's own TCP listener defaults to ``0.0.0.0``),
* pick a free port (``port=0``) and report the real one via :attr:`EmbeddedBroker.port`,
* enforce ``max_packet_bytes`` (amqtt has no packet-size limit at all; an oversized packet's
  remaining-length field is checked before its body is read, and the connection is dropped,
  like Mosquitto's ``max_packet_size``).

Known limitations of amqtt 0.12.x, verified by ``tests/test_broker.py``:

* MQTT 3.1.1 only: clients must connect with ``MQTTv311`` (an MQTT 5 CONNECT is refused).
* ``$share/<group>/<filter>`` subscriptions are granted (SUBACK QoS) but deliver nothing;
  do not rely on shared subscriptions with the embedded broker.
* Queued QoS 1/2 messages for an offline persistent session (``clean_session=False``) are only
  kept for *non-anonymous* sessions.  :class:`_LoopbackAuthPlugin` therefore treats a client
  that sends a username as non-anonymous (any password is accepted: the broker is loopback
  only); a client without a username gets no offline queue and its session is dropped on
  disconnect.
* No persistence: retained messages and sessions live in memory and vanish on ``stop()``.
* Throughput is roughly 70-80 MB/s with 256 KiB payloads on one core, far below Mosquitto.

What does work (tested): QoS 1 publishes of 256 KiB payloads from paho-mqtt 2.2 are all
delivered in order, retained messages are delivered to late subscribers, and a client's last
will is published when its connection drops without a DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

__all__ = ["EmbeddedBroker"]

_LOG = logging.getLogger(__name__)
_LISTENER = "default"
_NOISY_LOGGERS = ("amqtt", "transitions")
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 15.0


def _is_loopback(host: str) -> bool:
    """Return True if ``host`` names a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _quiet_amqtt_logging() -> None:
    """Raise amqtt's very chatty loggers to ERROR unless the application configured them."""
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)


class _LoopbackAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Accept every client; a client that sends a username counts as non-anonymous."""

    @dataclass
    class Config:
        """No options."""

    async def authenticate(self, *, session: Session) -> bool | None:
        """Accept the connection and flag username-less sessions as anonymous."""
        session.is_anonymous = not session.username
        return True


class _LimitedStreamReader(ReaderAdapter):  # type: ignore[misc]  # amqtt ships no type hints
    """Stream reader adapter that tracks MQTT framing and rejects oversized packets early."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_packet_bytes: int
    ) -> None:
        """Wrap ``reader``; a packet larger than ``max_packet_bytes`` aborts ``writer``'s connection."""
        self._reader = reader
        self._writer = writer
        self._max = max_packet_bytes
        # Framing state: 0 = expect fixed-header byte, 1 = remaining-length bytes, 2 = body.
        self._state = 0
        self._length = 0
        self._multiplier = 1
        self._header_len = 0
        self._body_left = 0

    async def read(self, n: int = -1) -> bytes:
        """Read exactly ``n`` bytes (or to EOF for ``n == -1``) and check the framing."""
        if n == -1:
            data = await self._reader.read(n)
        else:
            if self._state == 2 and n > self._body_left:
                raise asyncio.IncompleteReadError(b"", n)
            data = await self._reader.readexactly(n)
        self._track(data)
        return data

    def _track(self, data: bytes) -> None:
        """Advance the framing state machine over ``data``."""
        i = 0
        while i < len(data):
            if self._state == 0:
                self._state, self._length, self._multiplier, self._header_len = 1, 0, 1, 1
                i += 1
            elif self._state == 1:
                byte = data[i]
                i += 1
                self._header_len += 1
                self._length += (byte & 0x7F) * self._multiplier
                self._multiplier *= 128
                if byte & 0x80:
                    continue
                if self._header_len + self._length > self._max:
                    _LOG.warning(
                        "embedded MQTT broker: dropping client sending a %d-byte packet (max %d)",
                        self._header_len + self._length,
                        self._max,
                    )
                    self._writer.transport.abort()
                    raise asyncio.IncompleteReadError(b"", None)
                self._body_left = self._length
                self._state = 2 if self._length else 0
            else:
                step = min(self._body_left, len(data) - i)
                self._body_left -= step
                i += step
                if self._body_left == 0:
                    self._state = 0

    def feed_eof(self) -> None:
        """Acknowledge EOF."""
        self._reader.feed_eof()


class EmbeddedBroker:
    """In-process amqtt MQTT 3.1.1 broker bound to loopback, running in its own thread."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, max_packet_bytes: int = 2 * 1024 * 1024
    ) -> None:
        """Configure the broker; ``port=0`` picks a free port at ``start()``."""
        if not _is_loopback(host):
            raise ValueError(f"embedded MQTT broker must bind a loopback address, not {host!r}")
        if max_packet_bytes < 1024:
            raise ValueError("max_packet_bytes must be at least 1024")
        self.host = host
        self.port = port
        self.max_packet_bytes = max_packet_bytes
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.socknames: list[tuple[Any, ...]] = []
        """Addresses the listening sockets are bound to (filled by ``start()``)."""

    @property
    def url(self) -> str:
        """Broker URL such as ``mqtt://127.0.0.1:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the broker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the broker thread and return once it accepts connections."""
        if self.running:
            return
        _quiet_amqtt_logging()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"zfjl-mqtt-broker-{self.host}", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            self.stop()
            raise RuntimeError("embedded MQTT broker did not start in time")
        if self._error is not None:
            self._thread.join(_STOP_TIMEOUT_S)
            self._thread = None
            raise RuntimeError(f"embedded MQTT broker failed to start: {self._error}") from self._error

    def stop(self) -> None:
        """Shut the broker down cleanly and join its thread; safe to call more than once."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed between check and call
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            _LOG.error("embedded MQTT broker thread did not stop within %.0f s", _STOP_TIMEOUT_S)
        self._thread = None

    def restart(self) -> None:
        """Stop, then start again on the same port (all sessions and retained messages are lost)."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedBroker:
        """Start the broker for a ``with`` block."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the broker at the end of a ``with`` block."""
        self.stop()

    def _run(self) -> None:
        """Thread body: run the broker's event loop until stopped."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() or logged
            if not self._ready.is_set():
                self._error = exc
            else:
                _LOG.exception("embedded MQTT broker crashed")
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        """Start amqtt plus our loopback TCP server, wait for the stop signal, then tear down."""
        self._stop_event = asyncio.Event()
        config = {
            "listeners": {_LISTENER: {"type": "external"}},
            "plugins": {f"{__name__}._LoopbackAuthPlugin": {}},
        }
        broker = Broker(config)
        await broker.start()
        try:
            server = await asyncio.start_server(
                lambda r, w: self._on_connect(broker, r, w), self.host, self.port, reuse_address=True
            )
        except BaseException:
            await broker.shutdown()
            raise
        self.socknames = [sock.getsockname() for sock in server.sockets]
        self.port = self.socknames[0][1]
        _LOG.info("embedded MQTT broker listening on %s", self.url)
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await broker.shutdown()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.wait(self._connections, timeout=5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=5)
            _LOG.info("embedded MQTT broker on %s stopped", self.url)

    async def _on_connect(
        self, broker: Broker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Hand a new TCP connection to amqtt through the size-limiting reader."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        writer_adapter = StreamWriterAdapter(writer)
        try:
            await broker.external_connected(
                _LimitedStreamReader(reader, writer, self.max_packet_bytes), writer_adapter, _LISTENER
            )
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            _LOG.debug("embedded MQTT broker: client connection ended: %s", exc)
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)
