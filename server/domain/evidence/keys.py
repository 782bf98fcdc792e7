"""A device's key history as validity periods: which keys may have signed a segment at a moment (JL-23)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.fleet.models import DeviceKey

__all__ = ["KEY_OPENING_EVENTS", "KeyPeriod", "device_key_periods", "key_periods", "keys_valid_at"]


@dataclass(frozen=True)
class KeyPeriod:
    """A device key and the time it was valid ([valid_from, valid_until), open-ended when None)."""

    public_key: bytes
    valid_from: datetime
    valid_until: datetime | None

    def covers(self, moment: datetime) -> bool:
        """Whether the key was valid at ``moment``."""
        return self.valid_from <= moment and (self.valid_until is None or moment < self.valid_until)


def key_periods(entries: Iterable[DeviceKey]) -> list[KeyPeriod]:
    """Validity periods from a device's key-history entries (pure; entries in insertion order).

    An opening event starts a period for its key unless one is open; ``revoked`` closes the key's open
    period at its ``valid_until``. Entries are only ever appended, so history cannot be rewritten.
    """
    open_from: dict[bytes, datetime] = {}
    periods: list[KeyPeriod] = []
    for entry in sorted(entries, key=lambda e: e.id):
        key = bytes(entry.public_key)
        if entry.event in KEY_OPENING_EVENTS:
            open_from.setdefault(key, entry.valid_from)
        elif entry.event == "revoked" and key in open_from:
            periods.append(KeyPeriod(key, open_from.pop(key), entry.valid_until or entry.recorded_at))
    periods.extend(KeyPeriod(key, start, None) for key, start in open_from.items())
    return periods


def keys_valid_at(periods: Sequence[KeyPeriod], moment: datetime) -> list[bytes]:
    """The keys that were valid at ``moment``."""
    return [p.public_key for p in periods if p.covers(moment)]


def device_key_periods(session: Session, device_id: str) -> list[KeyPeriod]:
    """The device's key validity periods from the append-only history."""
    return key_periods(session.scalars(select(DeviceKey).where(DeviceKey.device_id == device_id)))


# Key-history events that open a validity period; "revoked" closes the open one at its valid_until.
KEY_OPENING_EVENTS = ("provisioned", "backfill", "reinstated")
