"""The device's MQTT connection: paho-mqtt 2 by composition, persistent session, presence and acks.

Every ack is verified here, and only here, before it reaches the uploader or the session machine: it
must be a ``protocol.downlink`` envelope signed by one of the ingest keys pinned in ``agent.toml`` over
this very topic. Anything else — a bare forged ``{"state":"complete"}``, an unknown key, a genuine ack
replayed onto another file's topic — is logged, counted in ``untrusted_acks`` and dropped; the transfer
keeps waiting and asks the server again after its timeout (finding 1; JL-19).

With several broker URLs (``mqtt_urls``: a cluster's nodes, or a standby) the link moves to the next one
when the current broker has stayed unreachable or refusing for ``mqtt_failover_after_s``, so a lost
broker host delays uploads by that long, not until it is repaired (JL-17: stored within 24 hours)
(:class:`BrokerRotation`). It never holds two connections: paho's one client is pointed at the next
broker between two attempts. Nothing is lost or sent twice by moving: the outbox keeps every segment
until a signed ``complete`` (any node's ingest signs with the pinned keys), and after every connect the
uploader asks the status of its transfers in flight and resumes them (docs/protocol.md).
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import AgentConfig, BrokerAddress
from protocol import topics
from protocol.downlink import IngestKeyring, UntrustedDownlink, is_signed_topic
from protocol.errors import ProtocolError
from protocol.manifest import format_time
from protocol.messages import (
    Message,
    Presence,
    PresenceState,
    TransferAck,
    decode,
    encode,
    qos_of,
    retain_of,
)
from protocol.session import EventAck, SignedSessionEvent

__all__ = ["AGENT_VERSION", "BrokerRotation", "MqttLink"]

logger = logging.getLogger(__name__)

AGENT_VERSION = "zfjl-agent/0.1.0"
# A device may be offline for days; its broker session (queued acks) should outlive that (MQTT 5).
_SESSION_EXPIRY_S = 7 * 24 * 3600
_KEEPALIVE_S = 30
_RECONNECT_MIN_S = 1
_RECONNECT_MAX_S = 30
# paho's backoff has no jitter: a fleet reconnecting after a broker restart would arrive in lockstep.
_JITTER_MAX_S = 2.0
_RESUBSCRIBE_MIN_S = 1.0
_RESUBSCRIBE_MAX_S = 30.0


class BrokerRotation:
    """Which broker the next connection attempt goes to: the current one until it has failed for
    ``failover_after_s``, then the next in the list (wrapping round). Pure: the caller reports what
    happened and gets told where to go; the clock comes in, so tests drive it."""

    def __init__(
        self,
        brokers: tuple[BrokerAddress, ...],
        failover_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start on the first broker."""
        if not brokers:
            raise ValueError("at least one broker")
        self.brokers = brokers
        self.failover_after_s = failover_after_s
        self._clock = clock
        self.index = 0
        self._failing_since: float | None = None
        self.moves_without_success = 0
        self.failovers = 0  # moves to another broker since start

    @property
    def current(self) -> BrokerAddress:
        """The broker the link connects to now."""
        return self.brokers[self.index]

    def connected(self) -> None:
        """The current broker accepted us: it stays ours until it fails again."""
        self._failing_since = None
        self.moves_without_success = 0

    def failed(self) -> BrokerAddress | None:
        """A connection to the current broker was lost or an attempt failed (unreachable, refused).

        Returns the broker to move to, or None to try the current one again. The failure window opens
        with the first failure, so one lost connection never moves a recorder whose broker restarts at
        once; each broker moved to gets a whole window of its own.
        """
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
            return None
        if len(self.brokers) < 2 or now - self._failing_since < self.failover_after_s:
            return None
        self.index = (self.index + 1) % len(self.brokers)
        self._failing_since = now
        self.moves_without_success += 1
        self.failovers += 1
        return self.current

    @property
    def round_failed(self) -> bool:
        """Whether every broker of the list has been tried since the last success (back off fully)."""
        return self.moves_without_success >= len(self.brokers)


class MqttLink:
    """One device's broker connection; acks are handed to ``on_ack`` from paho's network thread."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        on_ack: Callable[[TransferAck], None],
        on_connected: Callable[[], None] | None = None,
        on_session_ack: Callable[[EventAck], None] | None = None,
    ) -> None:
        """Build the paho client (nothing connects until :meth:`connect`)."""
        self.config = config
        self.device_id = config.device_id
        self._on_ack = on_ack
        self._on_connected = on_connected
        self.on_session_ack = on_session_ack
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        self.connects = 0
        self.disconnects = 0
        self.malformed_downlink = 0
        self.untrusted_acks = 0  # acks refused because their signature is missing, unknown or wrong
        self.untrusted_reasons: dict[str, int] = {}
        self.keyring = IngestKeyring.of(config.ingest_public_keys_raw)
        self.last_error = ""
        self.rotation = BrokerRotation(config.brokers, config.mqtt_failover_after_s)
        self._v5 = config.mqtt_protocol == "5"
        if self._v5:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv5
            )
        else:
            # clean_session=False: the broker keeps our subscription and queued acks across reconnects.
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.device_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
            )
        if config.mqtt_username:
            self.client.username_pw_set(config.mqtt_username, config.mqtt_password or None)
        if config.mqtt_tls:
            self.client.tls_set(
                ca_certs=config.mqtt_ca_file or None, cert_reqs=ssl.CERT_REQUIRED, tls_version=None
            )
        self.client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        self.client.max_inflight_messages_set(config.window * 2)
        topic, payload = encode(self._presence(PresenceState.OFFLINE))
        self.client.will_set(topic, payload, qos=1, retain=True)
        self.client.on_connect = self._handle_connect
        self.client.on_connect_fail = self._handle_connect_fail
        self.client.on_disconnect = self._handle_disconnect
        self.client.on_message = self._handle_message
        self.client.on_subscribe = self._handle_subscribe
        self.subscribe_refusals = 0  # downlink subscriptions the broker refused (each retried)
        # Set once the broker granted this connection's downlink subscription: until then an ack the server
        # publishes is not delivered to us (the device's status query after a reconnect covers that).
        self._downlink_granted = threading.Event()
        self._refusals_in_a_row = 0

    def _presence(self, state: PresenceState) -> Presence:
        return Presence(
            device_id=self.device_id,
            state=state,
            at=format_time(datetime.now(UTC)),
            agent_version=AGENT_VERSION,
        )

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is up."""
        return self._connected.is_set()

    @property
    def downlink_subscribed(self) -> bool:
        """Whether the broker granted the downlink subscription of the current connection."""
        return self._downlink_granted.is_set()

    def wait_downlink(self, timeout: float) -> bool:
        """Block until the current connection's downlink subscription is granted, or ``timeout`` passes."""
        return self._downlink_granted.wait(timeout)

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or ``timeout`` passes."""
        return self._connected.wait(timeout)

    def connect(self) -> None:
        """Start connecting in the background; paho retries with backoff until :meth:`close`."""
        with self._lock:
            if self._started or self._closing.is_set():
                return
            self._started = True
        broker = self.rotation.current
        logger.info("connecting to %s as %s", broker.url, self.device_id)
        self.client.connect_async(broker.host, broker.port, **self._connect_kwargs())
        # paho names its network thread "paho-mqtt-client-<client id>".
        self.client.loop_start()

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"keepalive": _KEEPALIVE_S}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = _SESSION_EXPIRY_S
            kwargs.update(clean_start=False, properties=props)
        return kwargs

    @property
    def broker_url(self) -> str:
        """The URL of the broker the link is connected (or connecting) to."""
        return self.rotation.current.url

    def publish(self, msg: Message) -> bool:
        """Publish a protocol message at its protocol QoS; False if it could not be handed to paho."""
        topic, payload = encode(msg)
        info = self.client.publish(topic, payload, qos=qos_of(msg), retain=retain_of(msg))
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.debug("publish to %s not sent now: %s", topic, mqtt.error_string(info.rc))
            return False
        return True

    def publish_session_event(self, signed: SignedSessionEvent) -> bool:
        """Publish a signed session event (QoS 1, JL-16); False if it could not be handed to paho."""
        topic = topics.session_event(self.device_id, signed.event.event_id)
        info = self.client.publish(topic, signed.to_envelope(), qos=1)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def close(self, timeout: float = 5.0) -> None:
        """Say ``offline`` (a clean disconnect does not fire the will), disconnect and stop the loop."""
        self._closing.set()
        with self._lock:
            started, self._started = self._started, False
        if not started:
            return
        if self.connected:
            topic, payload = encode(self._presence(PresenceState.OFFLINE))
            info = self.client.publish(topic, payload, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                logger.debug("offline presence not confirmed: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            # e.g. bad credentials: paho keeps retrying with backoff; we stay "not connected".
            self.last_error = str(reason_code)
            logger.error("broker refused the connection: %s", reason_code)
            return
        self.connects += 1
        self.rotation.connected()
        logger.info("connected to %s (session present: %s)", self.broker_url, flags.session_present)
        # Subscribe on every connect: the broker may have lost the session (restart without persistence).
        self._downlink_granted.clear()
        client.subscribe(topics.device_downlink_filter(self.device_id), qos=1)
        topic, payload = encode(self._presence(PresenceState.ONLINE))
        client.publish(topic, payload, qos=1, retain=True)
        self._connected.set()
        if self._on_connected is not None:
            try:
                self._on_connected()
            except Exception:
                logger.exception("on_connected callback failed")

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        """A refused downlink subscription would leave every ack unheard (the uploads stall): retry it.

        A clustered broker may refuse it while it re-elects after losing a node (NATS cannot create the
        subscription's JetStream consumer in time) without dropping the connection. Retries back off
        (1 s doubling to 30 s) on a timer, never blocking paho's network thread (keep-alives go on).
        """
        if not any(code.is_failure for code in reason_codes):
            self._refusals_in_a_row = 0
            self._downlink_granted.set()
            return
        self.subscribe_refusals += 1
        self._refusals_in_a_row += 1
        delay = min(_RESUBSCRIBE_MAX_S, _RESUBSCRIBE_MIN_S * 2 ** (self._refusals_in_a_row - 1))
        logger.warning(
            "broker refused the downlink subscription (%s); retrying in %.0f s", reason_codes[0], delay
        )
        timer = threading.Timer(delay, self._resubscribe)
        timer.daemon = True
        timer.start()

    def _resubscribe(self) -> None:
        """Ask again for the downlink (a reconnect in between subscribes by itself)."""
        if self._closing.is_set() or not self._connected.is_set():
            return
        self.client.subscribe(topics.device_downlink_filter(self.device_id), qos=1)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._downlink_granted.clear()
        if self._closing.is_set():
            return
        if was_connected:
            self.disconnects += 1
            logger.warning("disconnected from %s: %s; reconnecting", self.broker_url, reason_code)
        self._after_failure()

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """A connection attempt failed before the broker answered (refused, unreachable, timed out)."""
        if self._closing.is_set():
            return
        logger.debug("cannot reach %s", self.broker_url)
        self._after_failure()

    def _after_failure(self) -> None:
        """Move to the next broker when the current one has failed long enough; then jitter.

        Runs in paho's network thread with no connection open, just before paho's backoff wait, so
        pointing the client at another broker here never makes a second connection. A move restarts the
        backoff at its minimum (the next broker is likely up) unless every broker failed in this round.
        """
        target = self.rotation.failed()
        if target is not None:
            logger.warning(
                "no connection to the broker for %.0f s or more; moving to %s",
                self.rotation.failover_after_s,
                target.url,
            )
            self.client.connect_async(target.host, target.port, **self._connect_kwargs())
            if not self.rotation.round_failed:
                self.client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        # paho's backoff has no jitter: add it here, before its wait.
        self._closing.wait(random.uniform(0.0, _JITTER_MAX_S))

    def _verified(self, message: mqtt.MQTTMessage) -> bytes | None:
        """The body of a signed ack, or None (logged and counted) if it is not signed by a pinned key."""
        try:
            return self.keyring.open(message.topic, bytes(message.payload))
        except UntrustedDownlink as exc:
            with self._lock:
                self.untrusted_acks += 1
                reason = exc.reason.value
                self.untrusted_reasons[reason] = self.untrusted_reasons.get(reason, 0) + 1
            logger.warning("REFUSED untrusted ack on %s (%s); nothing marked or freed", message.topic, exc)
            return None

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not is_signed_topic(message.topic):
            self.malformed_downlink += 1
            logger.warning("unexpected downlink message on %s", message.topic)
            return
        body = self._verified(message)
        if body is None:
            return
        if self._route_session_ack(message, body):
            return
        try:
            msg = decode(message.topic, body)
        except ProtocolError as exc:
            self.malformed_downlink += 1
            logger.warning("ignoring malformed downlink message on %s: %s", message.topic, exc)
            return
        except Exception:
            # A bug in decoding must not kill paho's network thread (no more acks would arrive).
            self.malformed_downlink += 1
            logger.exception("cannot decode downlink message on %s", message.topic)
            return
        if not isinstance(msg, TransferAck) or msg.device_id != self.device_id:
            self.malformed_downlink += 1
            logger.warning("unexpected downlink message on %s", message.topic)
            return
        try:
            self._on_ack(msg)
        except Exception:
            logger.exception("ack handler failed for %s", message.topic)

    def _route_session_ack(self, message: mqtt.MQTTMessage, body: bytes) -> bool:
        """Hand a session-event ack (JL-16) to ``on_session_ack``; False if the topic is not one."""
        try:
            parsed = topics.parse(message.topic)
        except ProtocolError:
            return False
        if parsed.kind is not topics.TopicKind.SESSION_ACK or parsed.event_id is None:
            return False
        if parsed.device_id != self.device_id or self.on_session_ack is None:
            return True
        try:
            ack = EventAck.from_payload(parsed.device_id, parsed.event_id, body)
        except ProtocolError as exc:
            self.malformed_downlink += 1
            logger.warning("ignoring malformed session ack on %s: %s", message.topic, exc)
            return True
        try:
            self.on_session_ack(ack)
        except Exception:
            logger.exception("session ack handler failed for %s", message.topic)
        return True
