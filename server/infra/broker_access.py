"""The embedded broker's enforcer of the one access model: mqtt_acl's logins and topic rules, live."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from server.infra.mqtt_acl import AccessAction, BrokerAccount, permits, verify_broker_password

# The broker's own logger: refusals are read next to the broker's other messages.
_LOG = logging.getLogger("server.infra.broker")

__all__ = ["AccountLookup", "StaticAccounts"]


AccountLookup = Callable[[str], "BrokerAccount | None"]


class StaticAccounts:
    """A fixed, thread-safe set of broker accounts (the service account, tests, benchmarks)."""

    def __init__(self, accounts: list[BrokerAccount] | tuple[BrokerAccount, ...] = ()) -> None:
        """Start with ``accounts``."""
        self._lock = threading.Lock()
        self._accounts = {a.username: a for a in accounts}

    def add(self, account: BrokerAccount) -> None:
        """Add or replace the account of ``account.username``."""
        with self._lock:
            self._accounts[account.username] = account

    def remove(self, username: str) -> None:
        """Forget a login (its next connect is refused)."""
        with self._lock:
            self._accounts.pop(username, None)

    def __call__(self, username: str) -> BrokerAccount | None:
        """The account of ``username``, if any."""
        with self._lock:
            return self._accounts.get(username)


class Gatekeeper:
    """Checks logins against an :data:`AccountLookup`; the amqtt plugin and the broker share one."""

    def __init__(self, lookup: AccountLookup) -> None:
        self.lookup = lookup
        # PBKDF2 costs ~10 ms; amqtt asks twice per connect, so remember recent successful checks.
        self._verified: dict[tuple[str, str, str], None] = {}
        self._lock = threading.Lock()

    def authenticate(self, username: str | None, password: str | None) -> BrokerAccount | None:
        """The account if ``username``/``password`` log in, else None (blocking: run in a thread)."""
        if not username or password is None:
            return None  # no anonymous access, and no login without a password
        try:
            account = self.lookup(username)
        except Exception:  # the registry is down: refuse rather than let anyone in
            _LOG.exception("embedded MQTT broker: account lookup for %r failed", username)
            return None
        if account is None:
            return None
        key = (username, account.password_hash, password)
        with self._lock:
            if key in self._verified:
                return account
        if not verify_broker_password(password, account.password_hash):
            return None
        with self._lock:
            if len(self._verified) > 1024:
                self._verified.clear()
            self._verified[key] = None
        return account


ACCOUNT_ATTR = "zfjl_account"

ACTIONS = {
    Action.PUBLISH: AccessAction.PUBLISH,
    Action.SUBSCRIBE: AccessAction.SUBSCRIBE,
    Action.RECEIVE: AccessAction.RECEIVE,
}


def session_account(session: Session | None) -> BrokerAccount | None:
    """The account a session logged in with (set by :class:`AccessPlugin`)."""
    account = getattr(session, ACCOUNT_ATTR, None) if session is not None else None
    return account if isinstance(account, BrokerAccount) else None


class AccessPlugin(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Authenticates logins and authorises topics with :mod:`server.infra.mqtt_acl` (one model,
    two enforcers)."""

    @dataclass
    class Config:
        """No options: the gatekeeper is attached by :class:`EmbeddedBroker` after loading."""

    gatekeeper: Gatekeeper | None = None

    async def authenticate(self, *, session: Session) -> bool | None:
        """Accept a session only with a valid login; remember its account on the session."""
        gatekeeper = self.gatekeeper
        if gatekeeper is None:
            return False
        account = await asyncio.get_running_loop().run_in_executor(
            None, gatekeeper.authenticate, session.username, session.password
        )
        setattr(session, ACCOUNT_ATTR, account)
        if account is None:
            _LOG.warning(
                "embedded MQTT broker: refused login %r from %s", session.username, session.remote_address
            )
            return False
        session.is_anonymous = False  # authenticated: amqtt keeps its offline QoS 1 queue
        return True

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        """Allow exactly what the account's ``write``/``read`` filters allow."""
        access = ACTIONS.get(action) if action is not None else None
        if access is None or not topic:
            return False
        allowed = permits(session_account(session), access, topic)
        if not allowed and access is not AccessAction.RECEIVE:
            _LOG.info(
                "embedded MQTT broker: denied %s of %r to %r",
                access.value,
                topic,
                session.username if session else None,
            )
        return allowed
