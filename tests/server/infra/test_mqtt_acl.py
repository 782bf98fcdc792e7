"""The broker access model as a table: what each account may publish, subscribe to and receive."""

from __future__ import annotations

import pytest

from server.infra.mqtt_acl import (
    AccessAction,
    BrokerAccountError,
    check_accounts,
    device_account,
    filter_covers,
    is_reserved_name,
    permits,
    service_account,
    topic_matches,
)

DEV = device_account("rec-a", "$7$x")
SVC = service_account("zfjl-ingest", "$7$y")
P, S, R = AccessAction.PUBLISH, AccessAction.SUBSCRIBE, AccessAction.RECEIVE

TABLE = [
    # (account, action, topic, allowed)
    (DEV, P, "zfjl/v1/rec-a/up/file/f1/init", True),
    (DEV, P, "zfjl/v1/rec-a/up/presence", True),
    (DEV, P, "zfjl/v1/rec-b/up/health", False),
    (DEV, P, "zfjl/v1/rec-a/down/ack/f1", False),  # only the service writes down/
    (DEV, P, "zfjl/v1/rec-a/up/#", False),  # never a wildcard topic
    (DEV, P, "zfjl/v1/rec-a", False),
    (DEV, S, "zfjl/v1/rec-a/down/#", True),
    (DEV, S, "zfjl/v1/rec-a/down/ack/+", True),
    (DEV, S, "zfjl/v1/rec-a/down/config", True),
    (DEV, S, "zfjl/v1/+/down/#", False),
    (DEV, S, "zfjl/v1/rec-a/#", False),
    (DEV, S, "#", False),
    (DEV, S, "zfjl/v1/rec-a/up/#", False),
    (DEV, S, "$share/g/zfjl/v1/rec-b/down/#", False),
    (DEV, S, "$SYS/#", False),
    (DEV, R, "zfjl/v1/rec-a/down/ack/f1", True),
    (DEV, R, "zfjl/v1/rec-b/down/ack/f1", False),
    (DEV, R, "zfjl/v1/rec-b/up/file/f1/init", False),
    (SVC, P, "zfjl/v1/rec-b/down/ack/f1", True),
    (SVC, P, "zfjl/v1/rec-b/up/health", False),
    (SVC, S, "zfjl/v1/+/up/#", True),
    (SVC, S, "$share/zfjl-ingest/zfjl/v1/+/up/#", True),
    (SVC, S, "zfjl/v1/rec-b/up/file/+/init", True),
    (SVC, S, "zfjl/v1/+/down/#", False),
    (SVC, S, "#", False),
    (SVC, R, "zfjl/v1/rec-b/up/file/f1/0/" + "0" * 64, True),
    (SVC, R, "zfjl/v1/rec-b/down/ack/f1", False),
    (None, P, "zfjl/v1/rec-a/up/health", False),  # no account: nothing at all
    (None, S, "zfjl/v1/rec-a/down/#", False),
    (None, R, "zfjl/v1/rec-a/down/ack/f1", False),
]


@pytest.mark.parametrize(("account", "action", "topic", "allowed"), TABLE)
def test_permits_follows_the_table(account: object, action: AccessAction, topic: str, allowed: bool) -> None:
    """Each row is one decision both enforcers must make the same way."""
    assert permits(account, action, topic) is allowed  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flt", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/+", "a/b/c", False),
        ("+/b", "$SYS/b", False),
        ("#", "$SYS/x", False),
        ("a/b", "a/b/", False),
    ],
)
def test_topic_matches_mqtt_rules(flt: str, topic: str, matches: bool) -> None:
    """MQTT 3.1.1 §4.7 matching, ``$`` topics excluded from leading wildcards."""
    assert topic_matches(flt, topic) is matches


@pytest.mark.parametrize(
    ("acl", "sub", "covered"),
    [("a/#", "a/+/c", True), ("a/+/c", "a/#", False), ("a/+", "a/+", True), ("a/+", "a/#", False)],
)
def test_filter_covers_only_narrower_subscriptions(acl: str, sub: str, covered: bool) -> None:
    """A subscription is allowed only inside a read filter."""
    assert filter_covers(acl, sub) is covered


def test_reserved_names_and_duplicates_are_refused() -> None:
    """Finding 8: no device may carry a system name, and no login may appear twice."""
    assert is_reserved_name("zfjl-ingest") and is_reserved_name("ZFJL-x") and is_reserved_name("$SYS")
    assert not is_reserved_name("rec-zfjl-1")
    check_accounts([SVC, DEV])
    with pytest.raises(BrokerAccountError, match="twice"):
        check_accounts([SVC, device_account("zfjl-ingest", "$7$z")])
    with pytest.raises(BrokerAccountError, match="reserved"):
        check_accounts([device_account("zfjl-service", "$7$z")])
    with pytest.raises(BrokerAccountError, match="twice"):
        check_accounts([DEV, DEV])
