"""MQTT ingest workers: paho-mqtt 2 clients feeding uplink messages to an :class:`IngestService`.

Each worker subscribes to every device's uplink at QoS 1 — as a member of a shared-subscription group
where the broker supports ``$share`` (Mosquitto, EMQX), so several workers split the load; with the
embedded amqtt broker (``$share`` is granted but delivers nothing, MQTT 3.1.1 only) a single worker
uses the plain filter.

Sessions are clean: Mosquitto 2.0 loses the in-flight messages of a crashed member of a shared group
anyway, so a persistent session would buy nothing; the device's ack timeout, status query and resend
are the recovery path, and the protocol tolerates reordering and duplicates.

paho calls ``on_message`` on its network thread. Chunks are handled there (a ``pwrite``, an index
append and the running SHA-256). A ``fin`` may fsync, hash, talk to the object store and the database,
so it goes to the finalize pipeline and the network thread goes straight back to chunks: it never waits
for a commit. The pipeline is a bounded queue owned by this worker and drained by its finalize threads
(4 by default, so object-store puts of different transfers overlap: an S3 put is mostly waiting);
the transfer's acks are published after handling, ``complete`` strictly after ``commit_segment``
returned (object store and database durable). Backpressure without blocking the network thread: a fin
already queued is not queued twice, and when the queue is full a fin is dropped unanswered (counted),
as if it were lost on the way — the device re-sends it after its ack timeout, and nothing was acked.
Broker PUBACKs stay automatic: MQTT wants them in order, and holding a fin's PUBACK would not save it
from a crash (clean session, see above). ``stop()`` finishes queued finalizes first.

Acks are sealed here, at the one place the ingest path publishes them: ``IngestService`` returns the
plain ack (or the config and commands re-sent on presence) and :class:`~server.infra.ingest_key.IngestSigner`
signs it over its topic (``protocol.downlink``), so a recorder can tell the server's answer from anyone
else's who can publish on its ``down/`` tree. The fleet dispatcher's pushes use the same signer.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol import topics
from server.infra.config import Settings
from server.infra.ingest_key import IngestSigner
from server.ingest.service import IngestService

__all__ = ["BrokerAddress", "IngestWorker", "parse_broker_url"]

_LOG = logging.getLogger(__name__)

_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883, "ws": 80, "wss": 443}
_STOP = object()
_RESUBSCRIBE_MIN_S = 1.0
_RESUBSCRIBE_MAX_S = 30.0


@dataclass(frozen=True)
class BrokerAddress:
    """Where and how to connect, from a ``mqtt://user:pass@host:port`` style URL."""

    host: str
    port: int
    tls: bool
    websockets: bool
    path: str = "/mqtt"
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse an MQTT broker URL (mqtt, mqtts, tcp, ssl, ws, wss)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an MQTT broker URL: {url!r}")
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or _DEFAULT_PORTS[scheme],
        tls=scheme in ("mqtts", "ssl", "wss"),
        websockets=scheme in ("ws", "wss"),
        path=parts.path or "/mqtt",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class IngestWorker:
    """One MQTT connection subscribed to the ingest filter, handing messages to the ingest service."""

    def __init__(
        self,
        settings: Settings,
        service: IngestService,
        name: str,
        url: str,
        *,
        shared: bool | None = None,
        finalize_threads: int = 4,
        finalize_queue_max: int = 256,
        keepalive_s: int = 30,
        signer: IngestSigner | None = None,
    ) -> None:
        self.settings = settings
        # Every ack leaves this process signed with the ingest key (protocol.downlink; finding 1).
        self.signer = signer or IngestSigner.from_settings(settings)
        self.service = service
        self.name = name
        self.address = parse_broker_url(url)
        if shared is None:
            # Only an external broker is trusted with $share: the embedded one grants it but delivers nothing.
            shared = bool(settings.mqtt_url)
        self.shared = shared
        self.subscription = topics.ingest_filter(settings.mqtt_share_group if shared else None)
        self.keepalive_s = keepalive_s
        self.client_id = f"zfjl-ingest-{name}-{os.getpid()}-{os.urandom(3).hex()}"
        self._finalize_queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, finalize_queue_max))
        # Fin topics queued or being finalized: a repeated fin (ack timeout) is not queued twice.
        self._finalize_pending: set[str] = set()
        self._finalize_lock = threading.Lock()
        self.finalize_dropped = 0  # fins dropped because the queue was full (the device re-sends them)
        self._finalizers = [
            threading.Thread(target=self._finalize_loop, name=f"zfjl-finalize-{name}-{i}", daemon=True)
            for i in range(max(1, finalize_threads))
        ]
        self._subscribed = threading.Event()
        self._failure: str | None = None
        self._running = threading.Event()  # start() returned: later refusals are retried, not fatal
        self.subscribe_refusals = 0  # refusals after start, each retried (for /metrics and tests)
        self._refusals_in_a_row = 0
        self._stopping = threading.Event()
        self._started = False
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,  # the embedded broker speaks 3.1.1 only; Mosquitto and EMQX share it
            clean_session=True,
            transport="websockets" if self.address.websockets else "tcp",
        )
        if self.address.websockets:
            client.ws_set_options(path=self.address.path)
        if self.address.tls:
            # CERT_REQUIRED and hostname checking are paho's defaults; never turned off here.
            client.tls_set(ca_certs=self.settings.mqtt_ca_file or None)
        if self.address.username is not None:
            client.username_pw_set(self.address.username, self.address.password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Outgoing acks queue up while a finalize runs; allow a window like the devices' chunk windows.
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # -- lifecycle ---------------------------------------------------------------------------

    def finalize_queue_depth(self) -> int:
        """Finalizes (hash, store, commit) waiting for a finalize thread (for /metrics)."""
        return self._finalize_queue.qsize()

    @property
    def subscribed(self) -> bool:
        """Whether the worker is connected and its subscription was granted."""
        return self._subscribed.is_set()

    def start(self, timeout_s: float = 15.0) -> None:
        """Connect, subscribe and return once messages can flow; raise if the broker refuses us."""
        if self._started:
            return
        self._started = True
        for thread in self._finalizers:
            thread.start()
        self.client.connect_async(self.address.host, self.address.port, keepalive=self.keepalive_s)
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s
        while not self._subscribed.wait(0.05):
            if self._failure is not None or time.monotonic() > deadline:
                reason = self._failure or f"no subscription within {timeout_s:.0f} s"
                self.stop()
                raise ConnectionError(f"ingest worker {self.name} on {self.address.host}: {reason}")
        self._running.set()
        _LOG.info(
            "ingest worker %s subscribed to %s on %s:%d",
            self.name,
            self.subscription,
            self.address.host,
            self.address.port,
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop taking messages, finish the queued finalizes (their acks still go out), disconnect."""
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        if self._subscribed.is_set():
            self.client.unsubscribe(self.subscription)
        for _ in self._finalizers:
            # Blocks only while the queue is full: the finalize threads are draining it meanwhile.
            self._finalize_queue.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for thread in self._finalizers:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    _LOG.error("ingest worker %s: finalize thread still busy at shutdown", self.name)
        self.client.disconnect()
        self.client.loop_stop()
        self._subscribed.clear()
        _LOG.info("ingest worker %s stopped", self.name)

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self._failure = f"connection refused: {reason_code}"
            _LOG.error("ingest worker %s: broker refused the connection: %s", self.name, reason_code)
            return
        if self._stopping.is_set():
            return
        # (Re)subscribe on every connect: a clean session forgets subscriptions.
        client.subscribe(self.subscription, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any], properties: Any
    ) -> None:
        """A refusal at start is a configuration fault (start() raises it). Later, a clustered broker
        refuses while it re-elects after losing a node (NATS cannot create the subscription's JetStream
        consumer in time) without dropping the connection: a worker that gave up then would stay
        connected and deaf while every device's backlog grows. Retry with backoff (1 s doubling to 30 s)
        on a timer, off paho's network thread."""
        failed = [code for code in reason_codes if code.is_failure]
        if not failed:
            self._refusals_in_a_row = 0
            self._subscribed.set()
            return
        reason = f"subscription to {self.subscription} refused: {failed[0]}"
        if not self._running.is_set():
            self._failure = reason
            _LOG.error("ingest worker %s: %s", self.name, reason)
            return
        self.subscribe_refusals += 1
        self._refusals_in_a_row += 1
        delay = min(_RESUBSCRIBE_MAX_S, _RESUBSCRIBE_MIN_S * 2 ** (self._refusals_in_a_row - 1))
        _LOG.error("ingest worker %s: %s; retrying in %.0f s", self.name, reason, delay)
        timer = threading.Timer(delay, self._resubscribe)
        timer.daemon = True
        timer.start()

    def _resubscribe(self) -> None:
        """Ask again (a reconnect in between subscribes by itself, and a granted one is not repeated)."""
        if self._stopping.is_set() or self._subscribed.is_set() or not self.client.is_connected():
            return
        self.client.subscribe(self.subscription, qos=1)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._subscribed.clear()
        if not self._stopping.is_set():
            _LOG.warning("ingest worker %s disconnected (%s); reconnecting", self.name, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # An exception escaping a paho callback would kill the network loop: never let one out.
        try:
            topic = message.topic
        except UnicodeDecodeError:
            _LOG.warning("ingest worker %s: dropped a message with a non-UTF-8 topic", self.name)
            return
        try:
            if self.service.is_finalize(topic):
                self._enqueue_finalize(topic, message)
                return
            self._process(topic, message)
        except Exception:
            _LOG.exception("ingest worker %s: failed on %r", self.name, topic[:300])

    # -- handling ----------------------------------------------------------------------------

    def _process(self, topic: str, message: mqtt.MQTTMessage) -> None:
        """Handle one message and publish its acks, each sealed with the ingest key."""
        for ack_topic, ack_payload in self.service.handle(topic, bytes(message.payload)):
            self.client.publish(ack_topic, self.signer.seal(ack_topic, ack_payload), qos=1)

    def _enqueue_finalize(self, topic: str, message: mqtt.MQTTMessage) -> None:
        """Hand a fin to the finalize pipeline without ever blocking the network thread."""
        with self._finalize_lock:
            if topic in self._finalize_pending:
                return  # the same fin is queued or being finalized: its answer covers this one too
            try:
                self._finalize_queue.put_nowait(message)
            except queue.Full:
                self.finalize_dropped += 1
                _LOG.warning(
                    "ingest worker %s: finalize queue full (%d); fin dropped, the device re-sends it",
                    self.name,
                    self._finalize_queue.maxsize,
                )
                return
            self._finalize_pending.add(topic)

    def _finalize_loop(self) -> None:
        while True:
            message = self._finalize_queue.get()
            if message is _STOP:
                return
            try:
                self._process(message.topic, message)
            except Exception:
                _LOG.exception("ingest worker %s: finalize failed", self.name)
            finally:
                with self._finalize_lock:
                    self._finalize_pending.discard(message.topic)
