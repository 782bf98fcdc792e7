"""One round of fleet delivery: expire stale commands, advance rollouts, and say what to publish.

It composes commands, rollouts and desired configuration, so it sits above all three; keeping it out
of :mod:`server.domain.fleet.commands` is what lets rollouts queue ``apply_update`` commands without an
import cycle. The caller (the dispatcher thread in :mod:`server.workers.loops`) commits, then publishes.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from protocol import fleet as fleet_protocol
from server.domain.fleet import commands as command_service
from server.domain.fleet import config as config_service
from server.domain.fleet import rollouts as rollout_service
from server.domain.fleet.commands import Publication

__all__ = ["dispatch_once"]


def dispatch_once(session: Session) -> list[Publication]:
    """Expire stale commands; new commands for online devices; configs newer than last published."""
    command_service.expire_stale(session)
    rollout_service.advance_all(session)  # a batch that just passed queues the next one for this same round
    out = command_service.publish_unsent(session)
    for desired in config_service.pending_publications(session):
        topic, payload = fleet_protocol.encode(desired)
        out.append((topic, payload, True))  # retained: an offline device gets it when it connects
        config_service.record_published(session, desired.device_id, desired.version)
    session.flush()
    return out
