"""What every ingest worker does whatever its transport: handle a message, seal its acks, finalize fins.

An ingest worker (MQTT through paho in :mod:`server.ingest.worker`, core NATS in
:mod:`server.ingest.nats_worker`) owns one :class:`IngestPipeline` and gives it every uplink message
from its receiving thread (paho's network thread, the NATS event loop's thread). Chunks are handled
there (a ``pwrite``, an index append and the running SHA-256) and their sealed acks handed back for the
transport to publish at once. A ``fin`` may fsync, hash, talk to the object store and the database, so
it goes to the finalize pipeline and the receiving thread goes straight back to chunks: it never waits
for a commit. The pipeline is a bounded queue drained by its finalize threads (4 by default, so
object-store puts of different transfers overlap: an S3 put is mostly waiting); the transfer's acks
are published after handling, ``complete`` strictly after ``commit_segment`` returned (object store and
database durable). Backpressure without blocking the receiving thread: a fin already queued is not
queued twice, and when the queue is full a fin is dropped unanswered (counted), as if it were lost on
the way — the device re-sends it after its ack timeout, and nothing was acked. :meth:`stop` finishes
the queued finalizes first, while the transport can still publish their acks.

Acks are sealed here, at the one place the ingest path publishes them: ``IngestService`` returns the
plain ack (or the config and commands re-sent on presence) and :class:`~server.infra.ingest_key.IngestSigner`
signs it over its topic (``protocol.downlink``), so a recorder can tell the server's answer from anyone
else's who can publish on its ``down/`` tree.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

from server.infra.ingest_key import IngestSigner
from server.ingest.service import IngestService

__all__ = ["IngestPipeline", "Publish", "SealedAck", "await_subscription"]

_LOG = logging.getLogger(__name__)

SealedAck = tuple[str, bytes]
"""An ack's MQTT topic and its sealed payload, ready to publish."""
Publish = Callable[[str, bytes], None]
"""How a finalize thread publishes one sealed ack (topic, payload) on the worker's transport."""

_STOP = object()


def await_subscription(
    subscribed: threading.Event, failure: Callable[[], str | None], timeout_s: float
) -> str | None:
    """Wait until a worker's subscription is in place; why not (a refusal, the timeout), or None."""
    deadline = time.monotonic() + timeout_s
    while not subscribed.wait(0.05):
        reason = failure()
        if reason is not None:
            return reason
        if time.monotonic() > deadline:
            return f"no subscription within {timeout_s:.0f} s"
    return None


class IngestPipeline:
    """The transport-independent half of an ingest worker: message handling, ack sealing, finalizes."""

    def __init__(
        self,
        service: IngestService,
        name: str,
        publish: Publish,
        *,
        signer: IngestSigner | None = None,
        finalize_threads: int = 4,
        finalize_queue_max: int = 256,
    ) -> None:
        self.service = service
        # Every ack leaves this process signed with the ingest key (protocol.downlink; finding 1).
        self.signer = signer or IngestSigner.from_settings(service.settings)
        self.name = name
        self._publish = publish
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, finalize_queue_max))
        # Fin topics queued or being finalized: a repeated fin (ack timeout) is not queued twice.
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self.dropped = 0  # fins dropped because the queue was full (the device re-sends them)
        self._threads = [
            threading.Thread(target=self._finalize_loop, name=f"zfjl-finalize-{name}-{i}", daemon=True)
            for i in range(max(1, finalize_threads))
        ]
        self._started = False

    def queue_depth(self) -> int:
        """Finalizes (hash, store, commit) waiting for a finalize thread (for /metrics)."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the finalize threads."""
        if self._started:
            return
        self._started = True
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the queued finalizes (their acks are published meanwhile), then end the threads."""
        if not self._started:
            return
        for _ in self._threads:
            # Blocks only while the queue is full: the finalize threads are draining it meanwhile.
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    _LOG.error("ingest worker %s: finalize thread still busy at shutdown", self.name)

    def receive(self, topic: str, payload: bytes) -> list[SealedAck]:
        """One uplink message, on the transport's receiving thread: a fin is queued for the finalize
        threads (nothing to publish now); anything else is handled here and its sealed acks returned
        for the caller to publish. Never raises: an exception would kill the receiving thread."""
        try:
            if self.service.is_finalize(topic):
                self._enqueue_finalize(topic, payload)
                return []
            return self.seal(self.service.handle(topic, payload))
        except Exception:
            _LOG.exception("ingest worker %s: failed on %r", self.name, topic[:300])
            return []

    def seal(self, acks: Iterable[tuple[str, bytes]]) -> list[SealedAck]:
        """Each ack sealed with the ingest key over its topic (protocol.downlink)."""
        return [(topic, self.signer.seal(topic, payload)) for topic, payload in acks]

    def _enqueue_finalize(self, topic: str, payload: bytes) -> None:
        """Hand a fin to the finalize threads without ever blocking the receiving thread."""
        with self._lock:
            if topic in self._pending:
                return  # the same fin is queued or being finalized: its answer covers this one too
            try:
                self._queue.put_nowait((topic, payload))
            except queue.Full:
                self.dropped += 1
                _LOG.warning(
                    "ingest worker %s: finalize queue full (%d); fin dropped, the device re-sends it",
                    self.name,
                    self._queue.maxsize,
                )
                return
            self._pending.add(topic)

    def _finalize_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, tuple)
            topic, payload = item
            try:
                for ack_topic, sealed in self.seal(self.service.handle(topic, payload)):
                    self._publish(ack_topic, sealed)
            except Exception:
                _LOG.exception("ingest worker %s: finalize failed", self.name)
            finally:
                with self._lock:
                    self._pending.discard(topic)
