"""Topics of protocol v1: exact strings, round trips, and refusal of anything else."""

from __future__ import annotations

import random

import pytest

from protocol import topics
from protocol.errors import LocalProtocolError, TopicError
from protocol.topics import TopicKind

SHA = "ab" * 32
DEV = "rec-0001"
FID = "0123456789abcdef0123456789abcdef"


def test_upload_topics_are_exactly_the_documented_strings() -> None:
    assert topics.file_init(DEV, FID) == f"zfjl/v1/rec-0001/up/file/{FID}/init"
    assert topics.file_chunk(DEV, FID, 262144, SHA) == f"zfjl/v1/rec-0001/up/file/{FID}/262144/{SHA}"
    assert topics.file_fin(DEV, FID, 1000, SHA) == f"zfjl/v1/rec-0001/up/file/{FID}/fin/1000/{SHA}"
    assert topics.file_abort(DEV, FID) == f"zfjl/v1/rec-0001/up/file/{FID}/abort"
    assert topics.file_status(DEV, FID) == f"zfjl/v1/rec-0001/up/file/{FID}/status"
    assert topics.presence(DEV) == "zfjl/v1/rec-0001/up/presence"
    assert topics.health(DEV) == "zfjl/v1/rec-0001/up/health"
    assert topics.ack(DEV, FID) == f"zfjl/v1/rec-0001/down/ack/{FID}"


def test_device_may_touch_only_its_own_subtrees() -> None:
    assert topics.device_uplink_filter(DEV) == "zfjl/v1/rec-0001/up/#"
    assert topics.device_downlink_filter(DEV) == "zfjl/v1/rec-0001/down/#"
    assert topics.ingest_filter() == "zfjl/v1/+/up/#"
    assert topics.ingest_filter("zfjl-ingest") == "$share/zfjl-ingest/zfjl/v1/+/up/#"


@pytest.mark.parametrize(
    ("topic", "kind", "fields"),
    [
        (topics.file_init(DEV, FID), TopicKind.FILE_INIT, {"file_id": FID}),
        (topics.file_chunk(DEV, FID, 0, SHA), TopicKind.FILE_CHUNK, {"offset": 0, "sha256": SHA}),
        (topics.file_fin(DEV, FID, 77, SHA), TopicKind.FILE_FIN, {"size": 77, "sha256": SHA}),
        (topics.file_abort(DEV, FID), TopicKind.FILE_ABORT, {}),
        (topics.file_status(DEV, FID), TopicKind.FILE_STATUS, {}),
        (topics.presence(DEV), TopicKind.PRESENCE, {}),
        (topics.health(DEV), TopicKind.HEALTH, {}),
        (topics.ack(DEV, FID), TopicKind.ACK, {"file_id": FID}),
    ],
)
def test_every_built_topic_parses_back(topic: str, kind: TopicKind, fields: dict[str, object]) -> None:
    parsed = topics.parse(topic)
    assert parsed.kind is kind
    assert parsed.device_id == DEV
    for name, value in fields.items():
        assert getattr(parsed, name) == value


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "zfjl",
        "zfjl/v2/rec/up/presence",
        "other/v1/rec/up/presence",
        "zfjl/v1/../up/presence",
        "zfjl/v1/+/up/presence",
        "zfjl/v1/#/up/presence",
        "zfjl/v1/rec/up/unknown",
        "zfjl/v1/rec/sideways/presence",
        f"zfjl/v1/rec/up/file/{FID}/-1/{SHA}",
        f"zfjl/v1/rec/up/file/{FID}/01/{SHA}",
        f"zfjl/v1/rec/up/file/{FID}/0/{SHA.upper()}",
        f"zfjl/v1/rec/up/file/{FID}/0/abc",
        f"zfjl/v1/rec/up/file/{FID}/fin/x/{SHA}",
        f"zfjl/v1/rec/up/file/{FID}/fin/10",
        f"zfjl/v1/rec/up/file/{FID}/99999999999999999/{SHA}",
        "zfjl/v1/rec/up/file/a+b/init",
        f"zfjl/v1/rec/down/ack/{FID}/extra",
    ],
)
def test_malformed_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        topics.parse(topic)


@pytest.mark.parametrize("device_id", ["", "a/b", "+", "#", "x" * 65, "-lead", "名"])
def test_building_a_topic_with_a_bad_device_id_is_our_bug(device_id: str) -> None:
    with pytest.raises(LocalProtocolError):
        topics.presence(device_id)


# -- the NATS subjects of a topic (ingest on a NATS cluster: server/ingest/nats_worker.py) ------------

_ALL_BUILT_TOPICS = [
    topics.file_init(DEV, FID),
    topics.file_chunk(DEV, FID, 262144, SHA),
    topics.file_fin(DEV, FID, 1000, SHA),
    topics.file_abort(DEV, FID),
    topics.file_status(DEV, FID),
    topics.presence(DEV),
    topics.health(DEV),
    topics.session_event(DEV, FID),
    topics.config_reported(DEV),
    topics.command_status(DEV, FID),
    topics.case_event(DEV),
    topics.ack(DEV, FID),
    topics.session_ack(DEV, FID),
    topics.case_event_ack(DEV, FID),
    topics.config_desired(DEV),
    topics.command(DEV, FID),
]


def _nats_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` one or more trailing tokens."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or token not in ("*", have[index]):
            return False
    return len(want) == len(have)


@pytest.mark.parametrize("topic", _ALL_BUILT_TOPICS)
def test_every_topic_has_the_subject_nats_server_gives_it_and_maps_back(topic: str) -> None:
    """Protocol v1 has no dots and no empty levels: the subject is the topic with ``/`` as ``.``."""
    subject = topics.topic_to_subject(topic)
    assert subject == topic.replace("/", ".")
    assert topics.subject_to_topic(subject) == topic
    uplink = topics.parse(topic).kind.value not in {
        "ack",
        "session_ack",
        "case_event_ack",
        "config_desired",
        "command",
    }
    # The ingest workers' queue subscription takes every uplink subject and no downlink one.
    assert _nats_matches(topics.ingest_subject(), subject) is uplink


def test_ingest_subject_is_the_ingest_filter_in_nats_wildcards() -> None:
    assert topics.ingest_subject() == "zfjl.v1.*.up.>"
    assert topics.ingest_filter() == "zfjl/v1/+/up/#"
    assert not _nats_matches(topics.ingest_subject(), "zfjl.v2.rec-0001.up.health")


@pytest.mark.parametrize(
    ("topic", "subject"),
    [
        ("a/b", "a.b"),
        ("/a", "/.a"),  # nats-server: an empty level is the token "/" (checked against 2.9.10)
        ("a//b", "a./.b"),
        ("a/", "a./"),
        ("a.b/c", "a//b.c"),  # nats-server 2.10+: a dot inside a level is "//" (2.9 refuses the topic)
        ("x/../y", "x.////.y"),
        ("./", "//./"),
        ("a*b/c>", "a*b.c>"),  # not whole-token wildcards: plain characters
    ],
)
def test_subject_mapping_is_nats_servers_for_dots_and_empty_levels(topic: str, subject: str) -> None:
    assert topics.topic_to_subject(topic) == subject
    assert topics.subject_to_topic(subject) == topic


def test_subject_mapping_round_trips_any_topic_name() -> None:
    rng = random.Random(7)
    alphabet = "ab./-_é0*>"
    for _ in range(2000):
        topic = "/".join(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(1, 5))
        )
        try:
            subject = topics.topic_to_subject(topic)
        except LocalProtocolError:
            assert topic in ("", "/") or any(level in ("*", ">") for level in topic.split("/"))
            continue
        assert topics.subject_to_topic(subject) == topic
        assert all(token for token in subject.split("."))  # no empty token: a valid NATS subject


@pytest.mark.parametrize(
    "subject",
    ["", "a..b", "a.", ".a", "a.///.b", "a./b", "a.*.b", "a.>", "a b.c", "a\tb", "zfjl.v1.d.up.x y", "///"],
)
def test_a_subject_no_topic_maps_to_is_the_publishers_fault(subject: str) -> None:
    with pytest.raises(TopicError):
        topics.subject_to_topic(subject)


@pytest.mark.parametrize("topic", ["", "/", "a/+/b", "a/#", "a/*/b", "a/>", "a b/c", "a/\x00"])
def test_a_topic_without_a_subject_is_our_bug(topic: str) -> None:
    with pytest.raises(LocalProtocolError):
        topics.topic_to_subject(topic)
