"""A device's key history as validity periods: which keys may have signed a segment at a moment (JL-23).

Only **authorised** entries count (JL-6). Whoever can write to the database can append an entry, dated
now, naming a key of their own; the ledger makes it a leaf but cannot tell it from one the server wrote.
So every entry must show what authorises it (:func:`authorize`, a pure function over the history):

* each entry names the audit row of the act that wrote it (``audit_id``): registration, revocation,
  reinstatement or rotation of this device, with this key's fingerprint, one entry per key per act;
* a **new key** (any key but the device's first) also carries the signature, by the key it replaces, of
  the change (``protocol.key_rotation``) — which only the recorder holding that key can make;
* entries written before entries carried this (up to ``key_history_baselines.through_id``) are trusted
  as they stood.

An entry that fails is reported (``key_history_unauthorised``: chain report, scrubber and its alert,
ledger check) and left out of the periods, so what a forged key signed does not verify.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.errors import LocalProtocolError
from protocol.key_rotation import KeyRotation
from server.domain.audit import AuditLog
from server.domain.fleet.models import DeviceKey, KeyHistoryBaseline

__all__ = [
    "ACTIONS_FOR_EVENT",
    "KEY_OPENING_EVENTS",
    "AuditFact",
    "KeyPeriod",
    "Unauthorised",
    "UnauthorisedEntry",
    "authorize",
    "device_key_periods",
    "history_authorization",
    "key_periods",
    "keys_valid_at",
]


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
    """The device's key validity periods from the authorised entries of its append-only history."""
    entries, refused = history_authorization(session, device_id)
    bad = {u.entry_id for u in refused}
    return key_periods(e for e in entries if e.id not in bad)


# Key-history events that open a validity period; "revoked" closes the open one at its valid_until.
KEY_OPENING_EVENTS = ("provisioned", "backfill", "reinstated", "rotated")

# The audit action that must have written an entry of each event (server/domain/fleet/devices.py).
ACTIONS_FOR_EVENT: Mapping[str, tuple[str, ...]] = {
    "provisioned": ("device.register",),
    "revoked": ("device.revoke", "device.key_rotate"),
    "reinstated": ("device.status",),
    "rotated": ("device.key_rotate",),
}


class Unauthorised(StrEnum):
    """Why a key-history entry is not authorised."""

    NO_AUTHORISATION = "no_authorisation"  # no audit row named, and newer than the baseline
    AUDIT_MISSING = "audit_missing"  # the named audit row does not exist or is of another device
    AUDIT_MISMATCH = "audit_mismatch"  # the audit row records another act or another key
    AUDIT_REUSED = "audit_reused"  # a second entry for the same key claims the same act
    KEY_CHANGE_UNSIGNED = "key_change_unsigned"  # a new key without the replaced key's signature


@dataclass(frozen=True, kw_only=True)
class AuditFact:
    """The part of an audit row that can authorise a key-history entry."""

    audit_id: int
    device_id: str | None
    action: str
    key_fingerprint: str | None


@dataclass(frozen=True, kw_only=True)
class UnauthorisedEntry:
    """A key-history entry that nothing authorises, and why."""

    entry_id: int
    device_id: str
    event: str
    key_fingerprint: str
    reason: Unauthorised


def authorize(
    entries: Iterable[DeviceKey], audits: Mapping[int, AuditFact], baseline: int | None
) -> list[UnauthorisedEntry]:
    """The entries of one device's history that nothing authorises (pure; see the module's rules).

    ``baseline`` is the last entry id trusted as it stood (None: none is). Entries are judged in id
    order; a refused entry opens no key, so a later entry cannot build on it.
    """
    out: list[UnauthorisedEntry] = []
    known: set[bytes] = set()  # keys an authorised entry opened for this device
    current: bytes | None = None  # the key the device holds after the authorised entries so far
    claimed: set[tuple[int, bytes]] = set()
    for entry in sorted(entries, key=lambda e: e.id):
        key = bytes(entry.public_key)
        reason = _reason(entry, key, audits, baseline, known, current, claimed)
        if reason is not None:
            out.append(
                UnauthorisedEntry(
                    entry_id=entry.id,
                    device_id=entry.device_id,
                    event=entry.event,
                    key_fingerprint=entry.key_fingerprint,
                    reason=reason,
                )
            )
            continue
        if entry.audit_id is not None:
            claimed.add((entry.audit_id, key))
        if entry.event in KEY_OPENING_EVENTS:
            known.add(key)
            current = key
    return out


def _reason(
    entry: DeviceKey,
    key: bytes,
    audits: Mapping[int, AuditFact],
    baseline: int | None,
    known: set[bytes],
    current: bytes | None,
    claimed: set[tuple[int, bytes]],
) -> Unauthorised | None:
    if entry.audit_id is None:
        trusted = baseline is not None and entry.id <= baseline
        return None if trusted else Unauthorised.NO_AUTHORISATION
    fact = audits.get(entry.audit_id)
    if fact is None or fact.device_id != entry.device_id:
        return Unauthorised.AUDIT_MISSING
    if fact.action not in ACTIONS_FOR_EVENT.get(entry.event, ()):
        return Unauthorised.AUDIT_MISMATCH
    # The act names the key it concerns (a rotation: the new one, whose entry opens it, or the old one).
    rotation_closes_old_key = fact.action == "device.key_rotate" and entry.event == "revoked"
    if fact.key_fingerprint not in (None, entry.key_fingerprint) and not rotation_closes_old_key:
        return Unauthorised.AUDIT_MISMATCH
    if (entry.audit_id, key) in claimed:
        return Unauthorised.AUDIT_REUSED
    if key in known or (current is None and entry.event == "provisioned"):
        return None  # the device's first key, or one it already held
    if entry.event != "rotated" or current is None or entry.rotation_signature is None:
        return Unauthorised.KEY_CHANGE_UNSIGNED
    try:
        rotation = KeyRotation(device_id=entry.device_id, old_public_key=current, new_public_key=key)
    except LocalProtocolError:
        return Unauthorised.KEY_CHANGE_UNSIGNED
    return None if rotation.verify(bytes(entry.rotation_signature)) else Unauthorised.KEY_CHANGE_UNSIGNED


def history_authorization(
    session: Session, device_id: str
) -> tuple[list[DeviceKey], list[UnauthorisedEntry]]:
    """The device's key-history entries and those of them nothing authorises."""
    entries = list(
        session.scalars(select(DeviceKey).where(DeviceKey.device_id == device_id).order_by(DeviceKey.id))
    )
    ids = {e.audit_id for e in entries if e.audit_id is not None}
    audits: dict[int, AuditFact] = {}
    if ids:
        for row in session.scalars(select(AuditLog).where(AuditLog.id.in_(sorted(ids)))):
            detail = row.detail_dict()
            fingerprint = detail.get("key_fingerprint")
            audits[row.id] = AuditFact(
                audit_id=row.id,
                device_id=row.target_id if row.target_type == "device" else None,
                action=row.action,
                key_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            )
    baseline = session.scalar(select(KeyHistoryBaseline.through_id).order_by(KeyHistoryBaseline.id).limit(1))
    return entries, authorize(entries, audits, baseline)
