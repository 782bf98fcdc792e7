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

A recorder that moved to a later broker goes back to the first one (a primary and its standby) once the
first accepts it again: every ``mqtt_return_to_first_s`` it tries the first broker, a TCP connect and then
a real MQTT connect with the device's login and TLS, and when the broker also granted its downlink
subscription it makes that connection its own and only then closes the old one (make before break;
:class:`FirstBrokerReturn`). Tries that fail, and returns that do not last, double the wait (up to
eight times), so a first broker that keeps failing never makes the recorder flap.
"""

from __future__ import annotations

import logging
import random
import socket
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

__all__ = ["AGENT_VERSION", "BrokerRotation", "FirstBrokerReturn", "LinkClient", "MqttLink"]

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
# Trying the first broker again: how long its TCP connect, and then its CONNACK and SUBACK, may take.
_PROBE_TCP_TIMEOUT_S = 5.0
_PROBE_MQTT_TIMEOUT_S = 30.0
# A first broker that refuses or drops the recorder again makes it wait up to this many intervals.
_RETURN_BACKOFF_MAX = 8


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
        self.returns = 0  # moves back to the first broker while connected elsewhere

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

    def returned_to_first(self) -> None:
        """The link moved back to the first broker (it accepted a new connection): it is ours now."""
        self.index = 0
        self._failing_since = None
        self.moves_without_success = 0
        self.returns += 1

    @property
    def on_first(self) -> bool:
        """Whether the link is on the first broker of its list (the preferred one)."""
        return self.index == 0

    @property
    def round_failed(self) -> bool:
        """Whether every broker of the list has been tried since the last success (back off fully)."""
        return self.moves_without_success >= len(self.brokers)


class FirstBrokerReturn:
    """When a link connected to a later broker tries the first one again. Pure: the link says where it
    is and what a try gave; the clock comes in, so tests drive it.

    Every ``interval_s`` while away from the first broker (0: never). A failed try doubles the wait, up
    to ``_RETURN_BACKOFF_MAX`` intervals; so does a return that did not last one interval (the first
    broker failed again and the rotation moved the link away: flapping). A return that lasted an
    interval brings the wait back to one interval.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Nothing due until the link has been away from the first broker for one interval."""
        self.interval_s = interval_s
        self._clock = clock
        self.backoff = 1
        self._next_at: float | None = None
        self._returned_at: float | None = None

    def due(self, *, on_first: bool) -> bool:
        """Whether to try the first broker now (call it often; ``on_first``: where the link is)."""
        if self.interval_s <= 0:
            return False
        now = self._clock()
        if on_first:
            self._next_at = None
            if self._returned_at is not None and now - self._returned_at >= self.interval_s:
                self.backoff, self._returned_at = 1, None  # the return lasted
            return False
        if self._returned_at is not None:
            # Back on a later broker after a return: the first one failed again. Within an interval
            # that is flapping, and the next try waits longer.
            lasted = now - self._returned_at >= self.interval_s
            self.backoff = 1 if lasted else min(self.backoff * 2, _RETURN_BACKOFF_MAX)
            self._returned_at = None
        if self._next_at is None:
            self._next_at = now + self.interval_s * self.backoff
            return False
        return now >= self._next_at

    def tried(self, *, accepted: bool) -> None:
        """The try's outcome: moved back (``accepted``), or the first broker is still unusable."""
        now = self._clock()
        self._next_at = None
        if accepted:
            self._returned_at = now
            return
        self.backoff = min(self.backoff * 2, _RETURN_BACKOFF_MAX)
        self._next_at = now + self.interval_s * self.backoff


class LinkClient:
    """The calls of paho's client the command handler makes, on the connection the link holds now and
    remembered for the ones it makes later (a move back to the first broker replaces the client)."""

    def __init__(self, link: MqttLink) -> None:
        """Act on ``link``'s connection."""
        self._link = link

    def message_callback_add(self, sub: str, callback: mqtt.CallbackOnMessage) -> None:
        """Route messages matching ``sub`` to ``callback``, on this connection and every later one."""
        with self._link._swap_lock:
            self._link._topic_callbacks[sub] = callback
            self._link.client.message_callback_add(sub, callback)

    def message_callback_remove(self, sub: str) -> None:
        """Stop routing ``sub`` to its callback."""
        with self._link._swap_lock:
            self._link._topic_callbacks.pop(sub, None)
            self._link.client.message_callback_remove(sub)

    def publish(
        self, topic: str, payload: bytes | str | None = None, qos: int = 0, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Publish on the connection the link holds now."""
        return self._link.client.publish(topic, payload, qos=qos, retain=retain)

    def username_pw_set(self, username: str | None, password: str | None = None) -> None:
        """Log in with a new password from the next connection on (a rotated password)."""
        with self._link._swap_lock:
            self._link._login = (username or "", password or "")
            self._link.client.username_pw_set(username, password)


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
        # What other parts of the agent set on the connection (LinkClient); every new connection gets it.
        self._login = (config.mqtt_username, config.mqtt_password)
        self._topic_callbacks: dict[str, mqtt.CallbackOnMessage] = {}
        self.client = self._new_client()
        self._attach(self.client)
        # Moving back to the first broker swaps ``client``; close() and the callbacks see one at a time.
        self._swap_lock = threading.Lock()
        self.returner = FirstBrokerReturn(config.mqtt_return_to_first_s)
        self._return_thread: threading.Thread | None = None
        self.subscribe_refusals = 0  # downlink subscriptions the broker refused (each retried)
        # Set once the broker granted this connection's downlink subscription: until then an ack the server
        # publishes is not delivered to us (the device's status query after a reconnect covers that).
        self._downlink_granted = threading.Event()
        self._refusals_in_a_row = 0

    def _new_client(self) -> mqtt.Client:
        """A paho client with the device's identity, login, TLS and last will (not connected)."""
        config = self.config
        if self._v5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv5)
        else:
            # clean_session=False: the broker keeps our subscription and queued acks across reconnects.
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.device_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
            )
        username, password = self._login
        if username:
            client.username_pw_set(username, password or None)
        for sub, callback in self._topic_callbacks.items():
            client.message_callback_add(sub, callback)
        if config.mqtt_tls:
            client.tls_set(
                ca_certs=config.mqtt_ca_file or None, cert_reqs=ssl.CERT_REQUIRED, tls_version=None
            )
        client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        client.max_inflight_messages_set(config.window * 2)
        topic, payload = encode(self._presence(PresenceState.OFFLINE))
        client.will_set(topic, payload, qos=1, retain=True)
        return client

    @property
    def device_client(self) -> LinkClient:
        """The connection as the command handler uses it: on whichever broker the link is now."""
        return LinkClient(self)

    def _attach(self, client: mqtt.Client) -> None:
        """Make ``client`` the link's connection as far as paho's callbacks go."""
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe

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
        if len(self.rotation.brokers) > 1 and self.returner.interval_s > 0:
            self._return_thread = threading.Thread(
                target=self._return_loop, name="mqtt-return-first", daemon=True
            )
            self._return_thread.start()

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
        if self._return_thread is not None:
            # A try of the first broker in progress gives up at once (it waits on _closing).
            self._return_thread.join(timeout)
            self._return_thread = None
        with self._swap_lock:
            client = self.client
        if self.connected:
            self._say_offline(client, timeout)
        client.disconnect()
        client.loop_stop()
        self._connected.clear()

    def _say_offline(self, client: mqtt.Client, timeout: float) -> None:
        """Publish the retained ``offline`` presence on ``client`` (a clean disconnect fires no will)."""
        topic, payload = encode(self._presence(PresenceState.OFFLINE))
        info = client.publish(topic, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            logger.debug("offline presence not confirmed: %s", exc)

    # -- moving back to the first broker (own thread) -------------------------------------------

    def _return_loop(self) -> None:
        """While connected to a later broker, try the first one when :class:`FirstBrokerReturn` says."""
        poll = max(0.05, min(5.0, self.returner.interval_s / 4))
        while not self._closing.wait(poll):
            if not self.connected:
                continue  # the rotation is at work; a try would race it
            if not self.returner.due(on_first=self.rotation.on_first):
                continue
            try:
                accepted = self._return_to_first()
            except Exception:
                logger.exception("moving back to the first broker failed")
                accepted = False
            self.returner.tried(accepted=accepted)

    def _return_to_first(self) -> bool:
        """Connect to the first broker beside the current connection; once it granted the downlink
        subscription, make it the link's connection and close the old one. False if it is not usable.

        Make before break: acks the server publishes on the first broker are heard from the moment its
        SUBACK arrives, before the old connection goes. What was in flight on the old connection (QoS 1
        chunks without PUBACK, acks queued on the old broker) is recovered as after any reconnect:
        ``on_connected`` makes the uploader ask the status of every transfer and resume it.
        """
        first = self.rotation.brokers[0]
        try:
            with socket.create_connection((first.host, first.port), timeout=_PROBE_TCP_TIMEOUT_S):
                pass  # cheap: no TLS, no login, before a real MQTT connect
        except OSError as exc:
            logger.debug("first broker %s still unreachable: %s", first.url, exc)
            return False
        candidate = self._new_client()
        settled = threading.Event()
        granted: list[bool] = []

        def on_connect(
            client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
        ) -> None:
            if reason_code.is_failure:
                logger.info("first broker %s refused the connection: %s", first.url, reason_code)
                settled.set()
                return
            client.subscribe(topics.device_downlink_filter(self.device_id), qos=1)

        def on_subscribe(
            client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], properties: Any
        ) -> None:
            granted.append(not any(code.is_failure for code in codes))
            settled.set()

        def on_lost(client: mqtt.Client, userdata: Any, *args: Any) -> None:
            settled.set()

        candidate.on_connect = on_connect
        candidate.on_subscribe = on_subscribe
        candidate.on_connect_fail = on_lost
        candidate.on_disconnect = on_lost
        candidate.on_message = self._handle_message  # acks heard here already count
        candidate.connect_async(first.host, first.port, **self._connect_kwargs())
        candidate.loop_start()
        deadline = time.monotonic() + _PROBE_MQTT_TIMEOUT_S
        while not settled.is_set() and not self._closing.is_set() and time.monotonic() < deadline:
            settled.wait(0.1)
        if granted != [True] or not self._swap_to(candidate):
            candidate.on_disconnect = candidate.on_connect_fail = None
            candidate.disconnect()
            candidate.loop_stop()
            return False
        return True

    def _swap_to(self, candidate: mqtt.Client) -> bool:
        """Make ``candidate`` (connected to the first broker, downlink granted) the link's connection."""
        old, old_url = self.client, self.broker_url
        # Offline on the old broker before online on the new one: the newer presence wins. Outside the
        # lock: the old connection's own thread may need it to report a loss meanwhile.
        self._say_offline(old, _PROBE_TCP_TIMEOUT_S)
        with self._swap_lock:
            if self._closing.is_set() or not self._connected.is_set() or self.client is not old:
                return False  # lost meanwhile: the rotation reconnects (and says online again)
            for name in ("on_connect", "on_connect_fail", "on_disconnect", "on_subscribe", "on_message"):
                setattr(old, name, None)
            self._attach(candidate)
            self.client = candidate
            self.rotation.returned_to_first()
            self.connects += 1
            self._downlink_granted.set()
            topic, payload = encode(self._presence(PresenceState.ONLINE))
            candidate.publish(topic, payload, qos=1, retain=True)
        logger.info("moved back to the first broker %s (from %s)", self.broker_url, old_url)
        old.disconnect()
        old.loop_stop()
        if self._on_connected is not None:
            try:
                self._on_connected()
            except Exception:
                logger.exception("on_connected callback failed")
        return True

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self.client:
            return  # a connection the link has moved away from
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
        with self._swap_lock:
            if client is not self.client:
                return  # the old connection of a move back to the first broker
            was_connected = self._connected.is_set()
            self._connected.clear()
            self._downlink_granted.clear()
        if self._closing.is_set():
            return
        if was_connected:
            self.disconnects += 1
            logger.warning("disconnected from %s: %s; reconnecting", self.broker_url, reason_code)
        self._after_failure(client)

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """A connection attempt failed before the broker answered (refused, unreachable, timed out)."""
        if self._closing.is_set() or client is not self.client:
            return
        logger.debug("cannot reach %s", self.broker_url)
        self._after_failure(client)

    def _after_failure(self, client: mqtt.Client) -> None:
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
            client.connect_async(target.host, target.port, **self._connect_kwargs())
            if not self.rotation.round_failed:
                client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
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
