"""The login throttle: back-off per account and per client address, kept in the database (JL-20)."""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.domain.accounts.models import LoginThrottle

__all__ = [
    "ACCOUNT_FREE_FAILURES",
    "ADDRESS_FREE_FAILURES",
    "BACKOFF_BASE",
    "MAX_BACKOFF",
    "THROTTLE_WINDOW",
    "ThrottleKeys",
    "address_key",
    "backoff_for",
    "record_failure",
    "seconds_to_wait",
    "throttle_key",
    "throttle_rows",
]


# Login throttle (no hard lock): failures allowed per account and per account-at-address before an
# exponential backoff starts, and per address across all names (password spraying).
ACCOUNT_FREE_FAILURES = 5
ADDRESS_FREE_FAILURES = 20
BACKOFF_BASE = timedelta(seconds=2)
MAX_BACKOFF = timedelta(minutes=15)
# Counts idle this long start again from zero (and their rows are purged).
THROTTLE_WINDOW = timedelta(hours=1)


def address_key(client_ip: str | None) -> str:
    """The throttled unit of an address: IPv4 as is, IPv6 by /64 (one host's usual allocation)."""
    try:
        ip = ipaddress.ip_address(client_ip or "")
    except ValueError:
        return "unknown"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def throttle_key(kind: str, *parts: str) -> str:
    # Hashed: people type passwords into the user name field, and those must not be stored in clear.
    return hashlib.sha256("\0".join((kind, *parts)).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ThrottleKeys:
    """The three throttle keys of one login attempt, with the free failures each one allows."""

    account: str
    address: str
    pair: str

    @classmethod
    def of(cls, username: str, client_ip: str | None) -> ThrottleKeys:
        """Keys of ``username`` tried from ``client_ip`` (the same whether the account exists or not)."""
        address = address_key(client_ip)
        return cls(
            account=throttle_key("account", username),
            address=throttle_key("address", address),
            pair=throttle_key("pair", username, address),
        )

    def free(self) -> dict[str, int]:
        """Key -> failures allowed before the backoff starts."""
        return {
            self.account: ACCOUNT_FREE_FAILURES,
            self.pair: ACCOUNT_FREE_FAILURES,
            self.address: ADDRESS_FREE_FAILURES,
        }


def backoff_for(failures: int, free: int) -> timedelta:
    """Exponential backoff after ``failures`` (BACKOFF_BASE, doubled per failure, at most MAX_BACKOFF)."""
    over = failures - free
    if over <= 0:
        return timedelta(0)
    doublings: int = min(over - 1, 30)
    return min(MAX_BACKOFF, BACKOFF_BASE * (1 << doublings))


def throttle_rows(session: Session, keys: ThrottleKeys, now: datetime) -> dict[str, LoginThrottle]:
    """The keys' rows, with counts older than THROTTLE_WINDOW (and no running backoff) treated as zero."""
    rows = {
        row.key: row
        for row in session.scalars(
            select(LoginThrottle).where(LoginThrottle.key.in_([keys.account, keys.address, keys.pair]))
        )
    }
    for row in rows.values():
        if row.updated_at < now - THROTTLE_WINDOW and (row.blocked_until is None or row.blocked_until <= now):
            row.failures, row.blocked_until = 0, None
    return rows


def seconds_to_wait(rows: dict[str, LoginThrottle], keys: ThrottleKeys, now: datetime) -> int:
    """Seconds until this attempt may be checked; 0 if it may be checked now."""

    def left(key: str) -> float:
        row = rows.get(key)
        if row is None or row.blocked_until is None or row.blocked_until <= now:
            return 0.0
        return (row.blocked_until - now).total_seconds()

    waits = [left(keys.address), left(keys.pair)]
    pair = rows.get(keys.pair)
    # The account-wide backoff (guessing from many addresses) spares an address that has not failed
    # for this account: otherwise anyone could keep the real owner out from anywhere.
    if pair is not None and pair.failures > 0:
        waits.append(left(keys.account))
    return math.ceil(max(waits))


def record_failure(session: Session, keys: ThrottleKeys, now: datetime) -> None:
    """Count a failed check on every key (atomic increments, so concurrent processes add up)."""
    for key, free in keys.free().items():
        if session.get(LoginThrottle, key) is None:
            try:
                with session.begin_nested():
                    session.add(LoginThrottle(key=key, failures=0, blocked_until=None, updated_at=now))
            except IntegrityError:
                # Another process inserted the row meanwhile: it exists either way, and the atomic
                # increment below counts this failure on top of theirs.
                pass
        session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key)
            .values(failures=LoginThrottle.failures + 1, updated_at=now)
        )
        row = session.get(LoginThrottle, key, populate_existing=True)
        assert row is not None
        delay = backoff_for(row.failures, free)
        if delay:
            row.blocked_until = now + delay
    # Keep the table small: forget keys that are idle and not backing off (indexed by updated_at).
    session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.updated_at < now - THROTTLE_WINDOW,
            or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until < now),
        )
    )
