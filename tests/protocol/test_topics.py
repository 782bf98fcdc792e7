"""Topics of protocol v1: exact strings, round trips, and refusal of anything else."""

from __future__ import annotations

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
