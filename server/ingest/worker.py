"""MQTT ingest workers: paho-mqtt 2 clients feeding uplink messages to an :class:`IngestService`.

Each worker subscribes to every device's uplink at QoS 1 — as a member of a shared-subscription group
where the broker supports ``$share`` (Mosquitto, EMQX), so several workers split the load; with the
embedded amqtt broker (``$share`` is granted but delivers nothing, MQTT 3.1.1 only) a single worker
uses the plain filter.

Sessions are clean: Mosquitto 2.0 loses the in-flight messages of a crashed member of a shared group
anyway, so a persistent session would buy nothing; the device's ack timeout, status query and resend
are the recovery path, and the protocol tolerates reordering and duplicates.

paho calls ``on_message`` on its network thread, which hands the message to the worker's
:class:`~server.ingest.pipeline.IngestPipeline` (shared with the NATS worker): chunks are handled there
and their sealed acks published at once, fins go to the pipeline's finalize threads, which publish
through this worker's client. Broker PUBACKs stay automatic: MQTT wants them in order, and holding a
fin's PUBACK would not save it from a crash (clean session, see above). ``stop()`` finishes queued
finalizes first.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol import topics
from server.infra.config import Settings
from server.infra.ingest_key import IngestSigner
from server.ingest.pipeline import IngestPipeline, await_subscription
from server.ingest.service import IngestService

__all__ = ["BrokerAddress", "IngestWorker", "parse_broker_url"]

_LOG = logging.getLogger(__name__)

_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883, "ws": 80, "wss": 443}
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
        self.pipeline = IngestPipeline(
            service, name, self._publish, signer=signer,
            finalize_threads=finalize_threads, finalize_queue_max=finalize_queue_max,
        )  # fmt: skip
        self.signer = self.pipeline.signer  # what the fleet pushes of this process seal with too
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

    @property
    def subscribed(self) -> bool:
        """Whether the worker is connected and its subscription was granted."""
        return self._subscribed.is_set()

    def start(self, timeout_s: float = 15.0) -> None:
        """Connect, subscribe and return once messages can flow; raise if the broker refuses us."""
        if self._started:
            return
        self._started = True
        self.pipeline.start()
        self.client.connect_async(self.address.host, self.address.port, keepalive=self.keepalive_s)
        self.client.loop_start()
        reason = await_subscription(self._subscribed, lambda: self._failure, timeout_s)
        if reason is not None:
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
        self.pipeline.stop(timeout_s)
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
            for ack_topic, sealed in self.pipeline.receive(topic, bytes(message.payload)):
                self._publish(ack_topic, sealed)
        except Exception:
            _LOG.exception("ingest worker %s: failed to answer %r", self.name, topic[:300])

    def _publish(self, topic: str, payload: bytes) -> None:
        """Publish one sealed ack (paho queues it while reconnecting)."""
        self.client.publish(topic, payload, qos=1)
