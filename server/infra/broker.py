"""Embedded MQTT broker (amqtt) for the zero-setup default when ``ZFJL_MQTT_URL`` is not set.

The broker runs amqtt's asyncio ``Broker`` in its own named daemon thread with a private event
loop.  amqtt never opens a socket itself: it is configured with an *external* listener and this
module owns the TCP server, which lets us

* bind strictly to a loopback address (amqtt's own TCP listener defaults to ``0.0.0.0``),
* pick a free port (``port=0``) and report the real one via :attr:`EmbeddedBroker.port`,
* enforce ``max_packet_bytes`` (amqtt has no packet-size limit at all; an oversized packet's
  remaining-length field is checked before its body is read, and the connection is dropped,
  like Mosquitto's ``max_packet_size``).

Known limitations of amqtt 0.12.x, verified by ``tests/server/infra/test_broker.py``:

* MQTT 3.1.1 only: clients must connect with ``MQTTv311`` (an MQTT 5 CONNECT is refused).
* ``$share/<group>/<filter>`` subscriptions are granted (SUBACK QoS) but deliver nothing;
  do not rely on shared subscriptions with the embedded broker.
* Queued QoS 1/2 messages for an offline persistent session (``clean_session=False``) are only
  kept for *non-anonymous* sessions; every accepted client here is authenticated, so every
  persistent session keeps its queue.
* No persistence: retained messages and sessions live in memory and vanish on ``stop()``.
* Throughput is roughly 70-80 MB/s with 256 KiB payloads on one core, far below Mosquitto.

Access control (the same model as the generated Mosquitto files, :mod:`server.infra.mqtt_acl`):

* :class:`~server.infra.broker_access.AccessPlugin` is an amqtt auth *and* topic plugin.  A client
  must log in with an account that ``accounts(username)`` returns (the server looks devices up in
  the registry at every connect, so a revoked, lost or retired device is refused at its next connect) and
  whose ``$7$`` password hash matches; there is no anonymous access.  Publishing, subscribing
  and receiving are checked with :func:`server.infra.mqtt_acl.permits`.
* amqtt 0.12 looks up, and for a clean session deletes, the session of a client id *before* it
  asks the auth plugins, so any unauthenticated client could wipe the ingest worker's
  subscriptions by reusing its client id.  :class:`_GuardedBroker` authenticates first, and never
  lets one login resume or take over a session held by another login (Mosquitto likewise starts a
  fresh session when the username changes).  It refuses a CONNECT whose last will the login may
  not publish (amqtt never checks wills), filters the retained messages amqtt sends on connect
  through the ``receive`` rule (amqtt skips it), awaits the access check inline, and routes the
  messages a client already got PUBACKs for before ending its session at DISCONNECT (amqtt
  dropped them).
* A login is checked against the registry at every connect; an already connected client whose
  login is revoked is dropped by :meth:`EmbeddedBroker.revalidate`, which the server calls after
  every registry change (as Mosquitto re-checks its clients when the files are reloaded).

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
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from server.infra.broker_access import (
    ACCOUNT_ATTR,
    AccessPlugin,
    AccountLookup,
    Gatekeeper,
    StaticAccounts,
    session_account,
)
from server.infra.mqtt_acl import AccessAction, BrokerAccount, permits

__all__ = ["EmbeddedBroker"]

"""Returns the current account for a login name, or None (called in a worker thread at each connect)."""

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


class _GuardedBroker(Broker):  # type: ignore[misc]  # amqtt ships no type hints
    """amqtt's broker, authenticating before a client id touches any session, filtering retained sends."""

    access: AccessPlugin | None = None

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """Ask the access plugin directly.

        amqtt's plugin manager runs every check as a task and gathers it, a suspension per message;
        that slowed the client loop enough for amqtt to drop messages it had already PUBACKed when a
        publisher disconnected right after (see :meth:`_handle_disconnect`).  The check itself never
        waits, so it is awaited inline.
        """
        if self.access is None:
            return False
        return bool(await self.access.topic_filtering(session=session, topic=topic, action=action))

    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        """Route the messages a client published (and got PUBACKs for) before it disconnected, then end it.

        amqtt 0.12 leaves the loop on DISCONNECT and drops whatever is still in the session's delivery
        queue, although each of those messages was already acknowledged to the publisher (MQTT 3.1.1
        §4.3.2: after PUBACK the receiver owns the message).
        """
        queue = client_session.delivered_message_queue
        while not queue.empty():
            pending: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            pending.set_result(queue.get_nowait())
            await self._handle_message_delivery(client_session, handler, pending)
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """Read CONNECT, authenticate, then find or create the session (amqtt 0.12's order, reversed)."""
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError:
            await writer.close()
            raise
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        if not await self._authenticate(session, self.listeners_config[_LISTENER]):
            await self._refuse(writer, "bad login")
        if session.will_flag and not permits(
            session_account(session), AccessAction.PUBLISH, session.will_topic or ""
        ):
            # amqtt publishes a last will without any check; Mosquitto refuses such a CONNECT.
            await self._refuse(writer, f"last will on {session.will_topic!r} is not allowed")
        held = self._sessions.get(session.client_id) if session.client_id else None
        if held is not None and held[0].username != session.username:
            if held[0].transitions.is_connected():
                # Never hand one login's session (and its queued messages) to another.
                await self._refuse(writer, f"client id {session.client_id!r} is held by another login")
            await self._delete_session(session.client_id)  # Mosquitto too starts afresh for a new user
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            carried = ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive")
            for name in (*carried, "username", "password", ACCOUNT_ATTR, "is_anonymous"):
                setattr(existing, name, getattr(session, name, None))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _refuse(self, writer: WriterAdapter, why: str) -> None:
        """Answer CONNACK 5 (not authorised), close, and end this connection's handling."""
        with contextlib.suppress(Exception):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
        raise AMQTTError(f"connection refused: {why}")

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Send matching retained messages, but only those the session may receive."""
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
                continue
            tasks.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(
                        retained.topic, retained.data, min(qos, retained.qos or qos), retain=True
                    )
                )
            )
        if tasks:
            await asyncio.wait(tasks)


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
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_packet_bytes: int = 2 * 1024 * 1024,
        accounts: AccountLookup | None = None,
    ) -> None:
        """Configure the broker; ``port=0`` picks a free port at ``start()``.

        ``accounts`` says who may log in (see :mod:`server.infra.mqtt_acl`); without it nobody can.
        """
        if not _is_loopback(host):
            raise ValueError(f"embedded MQTT broker must bind a loopback address, not {host!r}")
        if max_packet_bytes < 1024:
            raise ValueError("max_packet_bytes must be at least 1024")
        self.host = host
        self.port = port
        self.max_packet_bytes = max_packet_bytes
        self.accounts: AccountLookup = accounts if accounts is not None else StaticAccounts()
        self._broker: _GuardedBroker | None = None
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

    def connected_accounts(self, timeout_s: float = 5.0) -> dict[str, BrokerAccount]:
        """The accounts of the clients connected now, by login."""
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or loop.is_closed() or not self.running:
            return {}

        async def snapshot() -> dict[str, BrokerAccount]:
            out: dict[str, BrokerAccount] = {}
            for session, _handler in list(broker._sessions.values()):
                account = session_account(session)
                if account is not None and session.transitions.is_connected():
                    out[account.username] = account
            return out

        return asyncio.run_coroutine_threadsafe(snapshot(), loop).result(timeout_s)

    def revalidate(self) -> list[str]:
        """After a registry change: drop connected clients whose login no longer holds; return their logins.

        A login no longer holds when ``accounts`` no longer knows it (revoked, lost, retired) or its
        password hash changed (rotated).  Mosquitto does the same when it reloads its files on SIGHUP.
        """
        dropped = []
        for username, account in self.connected_accounts().items():
            try:
                current = self.accounts(username)
            except Exception:
                _LOG.exception("embedded MQTT broker: account lookup for %r failed", username)
                continue
            if current is None or current.password_hash != account.password_hash:
                self.disconnect_user(username)
                dropped.append(username)
        if dropped:
            _LOG.info("embedded MQTT broker: dropped the clients of revoked logins %s", dropped)
        return dropped

    def disconnect_user(self, username: str, timeout_s: float = 5.0) -> int:
        """Drop every connected client logged in as ``username`` (after a revocation); return how many."""
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or loop.is_closed() or not self.running:
            return 0

        async def drop() -> int:
            count = 0
            for session, handler in list(broker._sessions.values()):
                if session.username == username and session.transitions.is_connected():
                    with contextlib.suppress(Exception):
                        await handler.handle_connection_closed()
                        await handler.stop()
                    count += 1
            return count

        return asyncio.run_coroutine_threadsafe(drop(), loop).result(timeout_s)

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
            "plugins": {f"{__name__}.AccessPlugin": {}},
        }
        broker = _GuardedBroker(config)
        gatekeeper = Gatekeeper(lambda username: self.accounts(username))
        for plugin in broker.plugins_manager.plugins:
            if isinstance(plugin, AccessPlugin):
                plugin.gatekeeper = gatekeeper
                broker.access = plugin
        self._broker = broker
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
