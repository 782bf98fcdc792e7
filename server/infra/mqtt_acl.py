"""The broker access model, pure: who may log in, publish, subscribe and receive.

One model, two enforcers: :mod:`server.domain.fleet.broker_accounts` renders it as Mosquitto
``password_file`` and ``acl_file`` text, and :mod:`server.infra.broker` checks it live in the embedded
broker (an amqtt plugin).
Both take their accounts from :func:`device_account` and :func:`service_account`, so a device may
publish only under its own ``zfjl/v1/{id}/up/#`` and read only its own ``zfjl/v1/{id}/down/#``, and only
the service (ingest) account reads every ``up`` tree and writes every ``down`` tree.

The matching rules are Mosquitto 2's ``acl_file`` rules (``mosquitto.conf(5)``): a publish is allowed
when its topic matches a ``topic write`` filter; a subscription when its filter lies inside a ``topic
read`` filter (a ``$share/{group}/`` prefix is ignored, MQTT 5 §4.8.2); a delivered message when its
topic matches a ``topic read`` filter. Everything else is denied, and there is no anonymous account.

Names that belong to the system (the service accounts, anything starting with ``zfjl-`` or ``$``) are
reserved: no device may carry one, so a recorder can never become the ingest account (issue finding 8).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from protocol import topics
from server.errors import ErrorKind, ZfjlError

__all__ = [
    "DEFAULT_SERVICE_USERNAME",
    "RESERVED_PREFIXES",
    "AccessAction",
    "AccountKind",
    "BrokerAccount",
    "BrokerAccountError",
    "check_accounts",
    "device_account",
    "filter_covers",
    "hash_broker_password",
    "is_reserved_name",
    "permits",
    "service_account",
    "topic_matches",
    "verify_broker_password",
]

# The ingest workers' login on the embedded broker (and the documented name for an external one).
DEFAULT_SERVICE_USERNAME = "zfjl-ingest"
# Case-insensitive prefixes no device id or device login may start with.
RESERVED_PREFIXES: tuple[str, ...] = ("zfjl-", "$")
_SHARE_PREFIX = "$share/"

# Mosquitto 2 "$7$" hashes: PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte digest. Mosquitto reads the
# iteration count from the hash, so a higher count than its own default (101) is accepted.
_PBKDF2_ITERATIONS = 20_000
_SALT_BYTES = 12


class AccountKind(Enum):
    """Whose login an account is."""

    SERVICE = "service"
    DEVICE = "device"


class AccessAction(Enum):
    """What a client asks the broker to do with a topic."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


class BrokerAccountError(ZfjlError, ValueError):
    """The account list would let one login stand for another (a duplicate or a reserved name)."""

    kind = ErrorKind.CONFLICT
    code = "broker_account_error"


@dataclass(frozen=True, kw_only=True)
class BrokerAccount:
    """One broker login and the topic filters it may publish to and read from."""

    username: str
    password_hash: str
    write: tuple[str, ...]
    read: tuple[str, ...]
    kind: AccountKind = AccountKind.DEVICE


def hash_broker_password(password: str, *, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """A Mosquitto ``$7$`` PBKDF2-SHA512 hash of ``password``."""
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_broker_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against a ``$7$`` hash."""
    try:
        _, scheme, iterations, salt_b64, hash_b64 = stored.split("$")
        if scheme != "7":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(iterations))
    except (ValueError, TypeError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(digest, expected)


def is_reserved_name(name: str) -> bool:
    """Whether ``name`` belongs to the system and may not be a device id or device login."""
    return name.lower().startswith(RESERVED_PREFIXES)


def device_account(device_id: str, password_hash: str) -> BrokerAccount:
    """A recorder's login: it writes only its own ``up`` tree and reads only its own ``down`` tree."""
    return BrokerAccount(
        username=device_id,
        password_hash=password_hash,
        write=(topics.device_uplink_filter(device_id),),
        read=(topics.device_downlink_filter(device_id),),
        kind=AccountKind.DEVICE,
    )


def service_account(username: str, password_hash: str) -> BrokerAccount:
    """The ingest service's login: reads every device's ``up`` tree and writes every ``down`` tree."""
    return BrokerAccount(
        username=username,
        password_hash=password_hash,
        write=(topics.fleet_downlink_filter(),),
        read=(topics.ingest_filter(),),
        kind=AccountKind.SERVICE,
    )


def check_accounts(accounts: Iterable[BrokerAccount]) -> None:
    """Raise :class:`BrokerAccountError` on a duplicate login or a device carrying a reserved name.

    Mosquitto takes the *last* line for a duplicated user, so a second ``zfjl-ingest`` line would hand
    the ingest account to whoever owns it; the file is refused instead.
    """
    seen: set[str] = set()
    for account in accounts:
        if not account.username or any(c in account.username for c in ":\n\r\0 \t#+"):
            raise BrokerAccountError(f"broker login {account.username!r} cannot be written to the files")
        if account.username in seen:
            raise BrokerAccountError(f"broker login {account.username!r} appears twice")
        seen.add(account.username)
        if account.kind is AccountKind.DEVICE and is_reserved_name(account.username):
            raise BrokerAccountError(f"device login {account.username!r} uses a reserved name")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 3.1.1 §4.7; ``$`` topics never match wildcards)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    flt, top = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(flt):
        if level == "#":
            return index == len(flt) - 1
        if index >= len(top) or level not in ("+", top[index]):
            return False
    return len(flt) == len(top)


def filter_covers(acl_filter: str, subscription: str) -> bool:
    """Whether every topic ``subscription`` can match also matches ``acl_filter``."""
    acl, sub = acl_filter.split("/"), subscription.split("/")
    for index, level in enumerate(acl):
        if level == "#":
            return index == len(acl) - 1
        if index >= len(sub):
            return False
        if level == "+":
            if sub[index] == "#":
                return False
            continue
        if sub[index] != level:
            return False
    return len(acl) == len(sub)


def _strip_share(subscription: str) -> str:
    """The filter of a shared subscription (``$share/{group}/{filter}``), else the subscription itself."""
    if subscription.startswith(_SHARE_PREFIX):
        parts = subscription.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    return subscription


def permits(account: BrokerAccount | None, action: AccessAction, topic: str) -> bool:
    """Whether ``account`` may do ``action`` on ``topic`` (a topic filter for SUBSCRIBE); no account: no."""
    if account is None or not topic:
        return False
    if action is AccessAction.PUBLISH:
        return "+" not in topic and "#" not in topic and any(topic_matches(f, topic) for f in account.write)
    if action is AccessAction.SUBSCRIBE:
        flt = _strip_share(topic)
        return bool(flt) and any(filter_covers(f, flt) for f in account.read)
    return any(topic_matches(f, topic) for f in account.read)
