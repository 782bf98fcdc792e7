"""Ingest workers on a NATS cluster: core NATS subscribers in one queue group (``ZFJL_INGEST_NATS_URL``).

Recorders speak MQTT to nats-server's MQTT listener, which gives each QoS 1 publish to NATS on the
topic's subject (``protocol.topics.topic_to_subject``). nats-server grants an MQTT ``$share`` filter but
delivers nothing on it, so over MQTT only one ingest process could consume there; a core NATS queue
group splits the same messages between any number of workers and processes, each message to one member.
Acks go back as core NATS publishes on the ack topic's subject, which reach the device's MQTT
subscription (``down/#``; delivered at QoS 0).

Core NATS is at most once: a killed worker loses the messages it had received but not handled, and an
ack can be lost on the way. That is what a clean MQTT session loses too, and the same path recovers
it: the device's ack timeout, status query and resend (``protocol.transfer``), with ``complete`` answered
again for a segment already stored. Nothing here trusts a message header (nats-server's
``Nmqtt-Pub`` included): the subject and the payload are all the worker reads.

nats-py is asyncio: the worker owns one thread running its event loop. Message callbacks run there, one
at a time, like paho's network thread; they hand each message to the shared
:class:`~server.ingest.pipeline.IngestPipeline` and publish the sealed acks of chunks at once, while a
fin's acks are published from the pipeline's finalize threads through ``run_coroutine_threadsafe``.
The client reconnects for ever (each node backs off from 0.5 s doubling to 30 s) and resubscribes by
itself; :meth:`NatsIngestWorker.stop` unsubscribes, finishes the queued finalizes (their acks still go
out), flushes and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import AuthorizationError, SlowConsumerError

from protocol import topics
from protocol.errors import TopicError
from server.infra.config import Settings, split_nats_urls
from server.infra.ingest_key import IngestSigner
from server.ingest.pipeline import IngestPipeline, await_subscription
from server.ingest.service import IngestService

__all__ = ["NatsIngestWorker", "NatsLogin", "reconnect_delay_s", "split_login"]

_LOG = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
PUBLISH_TIMEOUT_S = 10.0
# A chunk is up to ZFJL_MAX_CHUNK_BYTES (1 MiB by default): room for the windows of many devices while
# the loop is busy; beyond it nats-py drops messages (a slow consumer) and the devices re-send them.
PENDING_BYTES_LIMIT = 256 * 1024 * 1024


@dataclass(frozen=True)
class NatsLogin:
    """The cluster's node URLs without credentials, and the one login they name (percent-decoded)."""

    servers: list[str]
    user: str | None = None
    password: str | None = None
    token: str | None = None  # ``nats://TOKEN@host``: a user part and no password


def split_login(urls: list[str]) -> NatsLogin:
    """Take the login out of the URLs: nats-py would send a percent-encoded password as it is, and
    would try the nodes it discovers from the cluster (URLs without a login) with none. Given once as
    options instead, it is decoded and used on every node. Config validation allows one login only."""
    servers: list[str] = []
    user = password = None
    for url in urls:
        parts = urlsplit(url)
        if parts.username is not None:
            user = unquote(parts.username)
            password = unquote(parts.password) if parts.password is not None else None
        servers.append(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
    if user is not None and password is None:
        return NatsLogin(servers=servers, token=user)
    return NatsLogin(servers=servers, user=user, password=password)


def reconnect_delay_s(failed_attempts: int) -> float:
    """How long to wait before trying a node again after ``failed_attempts`` failures in a row."""
    return float(min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2.0 ** min(max(0, failed_attempts), 16)))


def _next_server(servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
    """nats-py's ``reconnect_to_server_handler``: the node that failed least often, after its backoff
    (with up to 10 % jitter, so the workers of a fleet do not knock at the same instant)."""
    chosen = min(servers, key=lambda server: server.reconnects)
    delay = reconnect_delay_s(chosen.reconnects) if chosen.reconnects else RECONNECT_MIN_S
    return chosen, delay * random.uniform(1.0, 1.1)


class NatsIngestWorker:
    """One NATS connection in the ingest queue group, handing messages to the ingest service."""

    def __init__(
        self,
        settings: Settings,
        service: IngestService,
        name: str,
        *,
        finalize_threads: int = 4,
        finalize_queue_max: int = 256,
        signer: IngestSigner | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.name = name
        # The login is the ingest account's password: kept here, never logged (hosts only, below).
        self._login = split_login(split_nats_urls(settings.ingest_nats_url))
        if not self._login.servers:
            raise ValueError("NatsIngestWorker needs ZFJL_INGEST_NATS_URL")
        self.queue_group = settings.ingest_nats_queue
        self.subject = topics.ingest_subject()
        self.client_name = f"zfjl-ingest-{name}-{os.getpid()}-{os.urandom(3).hex()}"
        self.pipeline = IngestPipeline(
            service, name, self._publish_from_thread, signer=signer,
            finalize_threads=finalize_threads, finalize_queue_max=finalize_queue_max,
        )  # fmt: skip
        self.signer = self.pipeline.signer  # what the fleet pushes of this process seal with too
        self.bad_subjects = 0  # messages whose subject is no MQTT topic (refused, for tests and logs)
        self.slow_consumer_drops = 0  # times nats-py dropped messages because the loop fell behind
        self._nc: NatsClient | None = None
        self._sub: Subscription | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._loop_ready = threading.Event()
        self._subscribed = threading.Event()
        self._failure: str | None = None
        self._stopping = threading.Event()
        self._started = False
        self._thread = threading.Thread(target=self._run, name=f"zfjl-nats-{name}", daemon=True)

    @property
    def hosts(self) -> list[str]:
        """``host:port`` of each configured node (what may be logged: no credentials)."""
        return [url.split("://", 1)[-1] for url in self._login.servers]

    @property
    def subscribed(self) -> bool:
        """Whether the queue subscription reached the server (and the connection is up)."""
        nc = self._nc
        return self._subscribed.is_set() and nc is not None and nc.is_connected

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 15.0) -> None:
        """Connect, subscribe and return once messages can flow; raise if the cluster refuses us."""
        if self._started:
            return
        self._started = True
        self.pipeline.start()
        self._thread.start()
        reason = await_subscription(self._subscribed, self._start_failure, timeout_s)
        if reason is not None:
            self.stop()
            raise ConnectionError(f"ingest worker {self.name} on NATS {', '.join(self.hosts)}: {reason}")
        _LOG.info(
            "ingest worker %s subscribed to %s (queue group %s) on NATS %s",
            self.name,
            self.subject,
            self.queue_group,
            ", ".join(self.hosts),
        )

    def _start_failure(self) -> str | None:
        if self._failure is None and not self._thread.is_alive():
            return "the NATS loop ended"
        return self._failure

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop taking messages, finish the queued finalizes (their acks still go out), close."""
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        loop = self._loop if self._loop_ready.wait(5) else None
        if loop is not None and self._subscribed.is_set():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._unsubscribe(), loop).result(PUBLISH_TIMEOUT_S)
        self.pipeline.stop(timeout_s)
        if loop is not None and self._stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended (a failed start)
                loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join(PUBLISH_TIMEOUT_S + 5)
        if self._thread.is_alive():
            _LOG.error("ingest worker %s: NATS connection still closing at shutdown", self.name)
        self._subscribed.clear()
        _LOG.info("ingest worker %s stopped", self.name)

    # -- the event loop's thread -------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        except Exception:
            _LOG.exception("ingest worker %s: NATS loop failed", self.name)
            self._failure = self._failure or "the NATS loop failed"
        finally:
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connect and subscribe, run until stop() asks, then flush and close."""
        self._loop = loop
        self._stop_requested = asyncio.Event()
        self._loop_ready.set()
        nc = NatsClient()
        self._nc = nc
        connect = asyncio.ensure_future(self._connect(nc))
        stop_wait = asyncio.ensure_future(self._stop_requested.wait())
        await asyncio.wait({connect, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not connect.done() or connect.exception() is not None:
            if connect.done() and connect.exception() is not None:
                self._failure = self._failure or f"cannot connect: {type(connect.exception()).__name__}"
            connect.cancel()
            with contextlib.suppress(BaseException):
                await connect
            with contextlib.suppress(Exception):
                await nc.close()
            stop_wait.cancel()
            return
        try:
            self._sub = await nc.subscribe(
                self.subject,
                queue=self.queue_group,
                cb=self._on_message,
                pending_bytes_limit=PENDING_BYTES_LIMIT,
            )
            # The server has the subscription once it answers a PING sent after the SUB; a permissions
            # violation it sent before that answer has reached _on_error by then. Two round trips: the
            # first PONG may answer a PING nats-py sent earlier (its PONGs resolve the oldest waiter
            # first), which let a refusal arrive after the start had already been declared good.
            await nc.flush()
            await nc.flush()
        except Exception as exc:
            self._failure = f"subscription to {self.subject} refused: {type(exc).__name__}: {exc}"
        if self._failure is None:
            self._subscribed.set()
        await stop_wait
        with contextlib.suppress(Exception):
            await nc.flush(timeout=5)  # the last acks of the finalizes stop() waited for
        with contextlib.suppress(Exception):
            await nc.close()

    async def _connect(self, nc: NatsClient) -> None:
        tls: ssl.SSLContext | None = None
        login = self._login
        if any(url.startswith("tls://") for url in login.servers):  # one scheme for all (config)
            # Hostname checking and CERT_REQUIRED are the defaults of create_default_context.
            tls = ssl.create_default_context(cafile=self.settings.mqtt_ca_file or None)
        await nc.connect(
            servers=login.servers,
            user=login.user,
            password=login.password,
            token=login.token,
            name=self.client_name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # for ever: a worker that gave up would stay deaf
            reconnect_time_wait=int(RECONNECT_MIN_S * 4),  # initial connect only; then _next_server
            reconnect_to_server_handler=_next_server,
            connect_timeout=5,
            tls=tls,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )

    async def _unsubscribe(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        """One message, on the loop's thread. Headers are ignored: nothing a publisher sets is trusted."""
        try:
            topic = topics.subject_to_topic(msg.subject)
        except TopicError as exc:
            self.bad_subjects += 1
            self.service.drop_bad_topic(msg.subject, str(exc))
            return
        for ack_topic, sealed in self.pipeline.receive(topic, msg.data):
            try:
                await self._publish(ack_topic, sealed)
            except Exception as exc:
                # A lost ack: the device's ack timeout and status query ask again.
                _LOG.warning("ingest worker %s: ack not published (%s)", self.name, type(exc).__name__)

    async def _publish(self, topic: str, payload: bytes) -> None:
        nc = self._nc
        assert nc is not None
        await nc.publish(topics.topic_to_subject(topic), payload)

    def _publish_from_thread(self, topic: str, payload: bytes) -> None:
        """A finalize thread's ack, published on the loop (nats-py buffers it while reconnecting)."""
        loop = self._loop
        if loop is None:
            raise ConnectionError("no NATS connection")
        asyncio.run_coroutine_threadsafe(self._publish(topic, payload), loop).result(PUBLISH_TIMEOUT_S)

    async def _on_error(self, exc: Exception) -> None:
        # Only the error's type and text: nats-py's own default would log the whole exception chain.
        if isinstance(exc, SlowConsumerError):
            self.slow_consumer_drops += 1
            _LOG.warning("ingest worker %s: fell behind, NATS dropped messages (devices re-send)", self.name)
            return
        text = str(exc).lower()
        if not self._subscribed.is_set():
            # At start a refusal is a configuration fault: start() raises it instead of waiting.
            if isinstance(exc, AuthorizationError) or "authorization" in text:
                self._failure = "the NATS server refused the login (authorization violation)"
            elif "permissions violation" in text and "subscription" in text:
                self._failure = f"the NATS server refused the subscription to {self.subject} (permissions)"
        level = logging.DEBUG if self._stopping.is_set() else logging.ERROR
        _LOG.log(level, "ingest worker %s: NATS error: %s: %s", self.name, type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if not self._stopping.is_set():
            _LOG.warning("ingest worker %s disconnected from NATS; reconnecting", self.name)

    async def _on_reconnected(self) -> None:
        nc = self._nc
        url = nc.connected_url if nc is not None else None
        where = f"{url.hostname}:{url.port}" if url is not None else "?"
        _LOG.info("ingest worker %s reconnected to NATS %s (subscription restored)", self.name, where)
