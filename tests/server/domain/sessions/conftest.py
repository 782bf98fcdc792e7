"""A recorder that signs real session events and segments, and an app over SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import select

from protocol import topics
from protocol.manifest import SegmentManifest, SignedManifest
from protocol.session import EventAck, SessionEvent, SessionEventKind, SignedSessionEvent
from server.domain.accounts.models import User
from server.domain.accounts.service import create_user
from server.domain.evidence.commit import commit_segment
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.domain.fleet.models import DeviceAssignment
from server.domain.people.models import Agency, Officer
from server.infra.db import get_engine, session_scope
from server.infra.storage import STORE_KEY
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory, migrated_app

T0 = datetime(2026, 3, 4, 9, 0, 0, tzinfo=UTC)
PASSWORD = "officer-password-1"


@dataclass
class Recorder:
    """One device: signs session events (its own ``seq``) and commits segments of its chain."""

    app: Flask
    segments: SegmentFactory
    session_id: str = "sess-a"
    seq: int = 0
    counter: int = 0
    key: Ed25519PrivateKey | None = None
    sent: list[SessionEvent] = field(default_factory=list)

    @property
    def device_id(self) -> str:
        """The device id."""
        return self.segments.device_id

    def event(self, kind: SessionEventKind, at: datetime, **fields: Any) -> tuple[str, bytes]:
        """Sign the next event and return its real topic and payload."""
        self.counter += 1
        event = SessionEvent(
            event_id=fields.pop("event_id", f"ev-{self.counter}"),
            device_id=self.device_id,
            session_id=fields.pop("session_id", self.session_id),
            kind=kind,
            at=at,
            mono_ns=int((at - T0).total_seconds() * 1e9) if at >= T0 else 0,
            seq=fields.pop("seq", self.seq),
            officer_id=fields.pop("officer_id", "officer-7"),
            **fields,
        )
        self.seq = max(self.seq, event.seq + 1)
        self.sent.append(event)
        signed = SignedSessionEvent.sign(event, self.key or self.segments.key)
        return topics.session_event(self.device_id, event.event_id), signed.to_envelope()

    def clip(
        self, start: datetime, seconds: float, *, kind: str = "segment", marker_id: str = ""
    ) -> Recording:
        """Sign and commit one segment of ``seconds`` from ``start`` (kind "explanation" names a marker)."""
        seg = self.segments
        data = f"{kind} {seg.device_id} {seg.sequence} ".encode() * 20
        end = start + timedelta(seconds=seconds)
        mono = int((start - T0).total_seconds() * 1e9) + 10**12
        manifest = SegmentManifest(
            device_id=seg.device_id,
            sequence=seg.sequence,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            started_at=start,
            ended_at=end,
            started_mono_ns=mono,
            ended_mono_ns=mono + int(seconds * 1e9),
            prev_manifest_hash=seg.prev_hash,
            kind=kind,
            officer_id="officer-7",
            session_id=self.session_id,
            marker_id=marker_id,
            boot_id="boot-1",
        )
        signed = SignedManifest.sign(manifest, seg.key)
        path = seg.directory / f"{seg.device_id}-{seg.sequence}.mp4"
        path.write_bytes(data)
        seg.sequence += 1
        seg.prev_hash = signed.manifest_hash
        with session_scope(self.app) as session:
            result = commit_segment(session, self.app.extensions[STORE_KEY], signed, path)
            return result.recording


@pytest.fixture
def sapp(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database, with an admin."""
    app = migrated_app(tmp_path / "var", db_url)
    with session_scope(app) as session:
        create_user(session, "admin", "correct-horse-battery", "system_admin")
    yield app
    get_engine(app).dispose()


@pytest.fixture
def recorder(sapp: Flask, segments: SegmentFactory) -> Recorder:
    """A registered recorder, checked out since before T0 to an officer of the default agency (JL-20)."""
    with session_scope(sapp) as session:
        register_device(session, segments.device_id, segments.public_key)
    holder = make_officer(sapp, "recorder-holder", register=False)
    hand_over(sapp, segments.device_id, holder, at=T0 - timedelta(days=30))
    return Recorder(sapp, segments)


def hand_over(app: Flask, device_id: str, user_id: int, *, at: datetime = T0 - timedelta(hours=1)) -> None:
    """Check ``device_id`` in (if out) and out to ``user_id`` at ``at``; its evidence is that agency's."""
    with session_scope(app) as session:
        user = session.get(User, user_id)
        assert user is not None
        for row in session.scalars(
            select(DeviceAssignment).where(
                DeviceAssignment.device_id == device_id, DeviceAssignment.checked_in_at.is_(None)
            )
        ):
            row.checked_in_at, row.checked_in_by = at, "test"
        session.add(
            DeviceAssignment(
                device_id=device_id,
                user_id=user_id,
                agency_id=user.agency_id,
                checked_out_at=at,
                checked_out_by="test",
            )
        )


@pytest.fixture
def ingest(sapp: Flask) -> IngestService:
    """The ingest service of ``sapp``."""
    return IngestService.from_app(sapp)


def send(ingest: IngestService, message: tuple[str, bytes]) -> EventAck:
    """Hand one session event to ingest; exactly one ack must come back on the session-ack topic."""
    out = ingest.handle(*message)
    assert len(out) == 1, out
    topic, payload = out[0]
    parsed = topics.parse(topic)
    assert parsed.kind is topics.TopicKind.SESSION_ACK
    assert parsed.event_id is not None
    return EventAck.from_payload(parsed.device_id, parsed.event_id, payload)


def agency_id(app: Flask, name: str = "某市市场监督管理局") -> int:
    """The id of the agency called ``name``, created on first use."""
    with session_scope(app) as session:
        agency = session.scalar(select(Agency).where(Agency.name == name))
        if agency is None:
            agency = Agency(name=name)
            session.add(agency)
            session.flush()
        return agency.id


def make_officer(
    app: Flask,
    username: str,
    role: str = "officer",
    *,
    kind: str | None = None,
    status: str = "active",
    valid_to: date | None = None,
    certificate: str | None = None,
    agency: str = "某市市场监督管理局",
    register: bool = True,
) -> int:
    """Create a user and (JL-16) its officer-register entry, valid today by default; return the user id."""
    home = agency_id(app, agency)
    with session_scope(app) as session:
        user = create_user(session, username, PASSWORD, role, agency_id=home)
        if register:
            today = datetime.now(UTC).date()
            session.add(
                Officer(
                    agency_id=home,
                    kind=kind or ("auxiliary" if role == "auxiliary" else "officer"),
                    name=f"{username} 姓名",
                    certificate_number=certificate or f"CERT-{username}",
                    valid_from=today - timedelta(days=365),
                    valid_to=valid_to or today + timedelta(days=365),
                    status=status,
                    user_id=user.id,
                )
            )
        return user.id
