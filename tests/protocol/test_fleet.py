"""Fleet messages: exact bytes, round trips, validation and the command transition table."""

from __future__ import annotations

import pytest

from protocol import fleet, topics
from protocol.errors import RemoteProtocolError
from protocol.fleet import (
    COMMAND_TRANSITIONS,
    Command,
    CommandKind,
    CommandState,
    CommandStatus,
    DesiredConfig,
    ReportedConfig,
)
from protocol.messages import decode as transfer_decode


def test_desired_config_exact_bytes_and_retained() -> None:
    """Desired config is retained on down/config with sorted compact JSON."""
    msg = DesiredConfig(
        device_id="rec-1", version=7, settings={"segment_seconds": 60, "resolution": "1280x720"}
    )
    assert fleet.encode(msg) == (
        "zfjl/v1/rec-1/down/config",
        b'{"settings":{"resolution":"1280x720","segment_seconds":60},"version":7}',
    )
    assert fleet.retain_of(msg) and fleet.decode(*fleet.encode(msg)) == msg


def test_command_and_status_round_trip() -> None:
    """Commands and their status reports survive encode/decode unchanged."""
    cmd = Command(
        device_id="rec-1",
        command_id="c1",
        kind=CommandKind.LOCATE,
        expires_at="2026-01-01T00:00:00Z",
        issued_at="2025-12-31T00:00:00Z",
    )
    assert fleet.encode(cmd)[0] == "zfjl/v1/rec-1/down/cmd/c1"
    assert fleet.decode(*fleet.encode(cmd)) == cmd
    status = CommandStatus(
        device_id="rec-1", command_id="c1", state=CommandState.SUCCEEDED, detail={"lat": 31.8}
    )
    assert fleet.encode(status) == (
        "zfjl/v1/rec-1/up/cmd/c1/status",
        b'{"at":"","detail":{"lat":31.8},"state":"succeeded"}',
    )
    assert fleet.decode(*fleet.encode(status)) == status
    reported = ReportedConfig(device_id="rec-1", version=3, settings={"prerecord_seconds": 10}, at="x")
    assert fleet.decode(*fleet.encode(reported)) == reported
    assert topics.parse("zfjl/v1/rec-1/up/config/reported").kind is topics.TopicKind.CONFIG_REPORTED


@pytest.mark.parametrize(
    "settings",
    [
        {"segment_seconds": 5},
        {"resolution": "4k"},
        {"upload_window": "25:00-01:00"},
        {"colour": 1},
        {"bitrate_kbps": True},
    ],
)
def test_invalid_config_is_refused(settings: dict[str, object]) -> None:
    """Unknown keys and out-of-range values never become a config."""
    with pytest.raises(RemoteProtocolError):
        DesiredConfig(device_id="rec-1", version=1, settings=settings)


def test_device_cannot_report_queued_or_expired_and_terminal_states_are_final() -> None:
    """Only the server queues and expires; nothing leaves a terminal state."""
    for state in (CommandState.QUEUED, CommandState.EXPIRED):
        with pytest.raises(RemoteProtocolError):
            CommandStatus(device_id="d", command_id="c", state=state)
    assert all(not COMMAND_TRANSITIONS[s] for s in CommandState if s.terminal)


def test_transfer_decoder_refuses_fleet_topics() -> None:
    """protocol.messages.decode does not mistake a fleet message for health."""
    with pytest.raises(RemoteProtocolError, match="fleet"):
        transfer_decode("zfjl/v1/rec-1/down/config", b"{}")
