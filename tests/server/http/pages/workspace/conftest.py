"""A scene for the workspace: an agency's case, a recorder session with real H.264/AAC segments (fragmented
MP4 made by ffmpeg), one gap explained by voice and one nobody explained, officers who can co-sign, and
an officer of another agency.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from protocol.manifest import SegmentManifest, SignedManifest
from protocol.session import SessionEventKind
from server.domain.accounts.models import User
from server.domain.cases import service as case_service
from server.domain.cases.inputs import CaseEventInput, NewCase
from server.domain.evidence.commit import commit_segment
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.domain.people.models import Officer
from server.domain.people.service import Caller
from server.domain.sessions.models import EnforcementSessionRecord
from server.infra.db import session_scope
from server.infra.storage import STORE_KEY
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory
from tests.server.domain.sessions.conftest import PASSWORD, T0, Recorder, hand_over, make_officer, send

__all__ = ["PASSWORD", "Scene", "at", "commit_media", "login", "make_clip"]

K = SessionEventKind
_LOGIN_CSRF = re.compile(r'name="login_csrf" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CERT_WANG, CERT_LI, CERT_OTHER = "AH-1001", "AH-1002", "AH-9001"
CASE_NUMBER = "皖合市监罚〔2026〕13号"


def at(seconds: float) -> datetime:
    """``seconds`` after the scene's start (T0)."""
    return T0 + timedelta(seconds=seconds)


def make_clip(directory: Path, name: str, seconds: float, pattern: str) -> bytes:
    """A fragmented MP4 of ``seconds`` with H.264 video and AAC audio, as a body-worn recorder writes."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    out = directory / f"{name}.mp4"
    if not out.exists():
        subprocess.run(
            [
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", f"{pattern}=size=320x240:rate=25",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                "-t", str(seconds), "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p",
                "-g", "25", "-c:a", "aac", "-b:a", "64k",
                "-movflags", "frag_keyframe+empty_moov+default_base_moof", str(out),
            ],
            check=True,
            timeout=120,
        )  # fmt: skip
    return out.read_bytes()


def commit_media(
    recorder: Recorder,
    start: datetime,
    seconds: float,
    data: bytes,
    *,
    officer_id: str,
    kind: str = "segment",
    marker_id: str = "",
) -> int:
    """Sign a manifest for ``data`` as the recorder's next segment and store it; the recording id."""
    seg = recorder.segments
    mono = int((start - T0).total_seconds() * 1e9) + 10**12
    manifest = SegmentManifest(
        device_id=seg.device_id,
        sequence=seg.sequence,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        started_at=start,
        ended_at=start + timedelta(seconds=seconds),
        started_mono_ns=mono,
        ended_mono_ns=mono + int(seconds * 1e9),
        prev_manifest_hash=seg.prev_hash,
        kind=kind,
        officer_id=officer_id,
        session_id=recorder.session_id,
        marker_id=marker_id,
        boot_id="boot-1",
    )
    signed = SignedManifest.sign(manifest, seg.key)
    path = seg.directory / f"{seg.device_id}-{seg.sequence}.mp4"
    path.write_bytes(data)
    seg.sequence += 1
    seg.prev_hash = signed.manifest_hash
    with session_scope(recorder.app) as session:
        result = commit_segment(session, recorder.app.extensions[STORE_KEY], signed, path)
        return result.recording.id


@dataclass
class Scene:
    """Ids the tests ask for."""

    app: Flask
    case_id: int = 0
    session_pk: int = 0
    device_id: str = "rec-ws-1"
    recording_ids: list[int] = field(default_factory=list)
    users: dict[str, int] = field(default_factory=dict)
    officers: dict[str, int] = field(default_factory=dict)


def build_scene(app: Flask, tmp: Path, media: Path) -> Scene:
    """Officers 王 and 李 of agency A, a reviewer, an officer of agency B; the session and the case."""
    scene = Scene(app)
    scene.users["reviewer"] = make_officer(app, "reviewer", "legal_reviewer", register=False)
    scene.users["wang"] = make_officer(app, "officer-wang", certificate=CERT_WANG)
    scene.users["li"] = make_officer(app, "officer-li", certificate=CERT_LI)
    scene.users["head"] = make_officer(app, "head", "agency_head", certificate="AH-1000")
    scene.users["other"] = make_officer(
        app, "officer-other", agency="芜湖市城市管理局", certificate=CERT_OTHER
    )
    scene.users["supervisor"] = make_officer(app, "supervisor", "supervisor", register=False)
    with session_scope(app) as session:
        for key in ("wang", "li"):
            pk = session.scalar(select(Officer.id).where(Officer.user_id == scene.users[key]))
            assert pk is not None
            scene.officers[key] = pk
    staged = tmp / "staged"
    staged.mkdir(parents=True, exist_ok=True)
    segments = SegmentFactory(staged, device_id=scene.device_id)
    with session_scope(app) as session:
        register_device(session, scene.device_id, segments.public_key)
    hand_over(app, scene.device_id, scene.users["wang"], at=T0 - timedelta(days=30))
    recorder = Recorder(app, segments, session_id="ws-sess-1")
    ingest = IngestService.from_app(app)
    clip_a = make_clip(media, "a", 4, "testsrc2")
    clip_x = make_clip(media, "x", 2, "smptebars")
    clip_b = make_clip(media, "b", 4, "testsrc")
    ev = {"officer_id": CERT_WANG}
    # 0–4 s recorded; 4–8 s gap, m1 explained by voice (clip 8–10 s); 10–14 s recorded; 14–18 s gap, m2
    # with no spoken reason; 18–22 s recorded; a JL-15 bookmark at 2 s.
    send(ingest, recorder.event(K.STARTED, at(0), case_id=CASE_NUMBER, **ev))
    scene.recording_ids.append(commit_media(recorder, at(0), 4, clip_a, officer_id=CERT_WANG))
    send(ingest, recorder.event(K.BOOKMARK, at(2), bookmark_type="credential_shown", note="出示证件", **ev))
    send(ingest, recorder.event(K.INTERRUPTED, at(4), marker_id="m1", cause="obstruction", **ev))
    send(ingest, recorder.event(K.RESUMED, at(8), marker_id="m1", **ev))
    scene.recording_ids.append(
        commit_media(recorder, at(8), 2, clip_x, officer_id=CERT_WANG, kind="explanation", marker_id="m1")
    )
    scene.recording_ids.append(commit_media(recorder, at(10), 4, clip_b, officer_id=CERT_WANG))
    send(ingest, recorder.event(K.INTERRUPTED, at(14), marker_id="m2", cause="device_fault", **ev))
    send(ingest, recorder.event(K.RESUMED, at(18), marker_id="m2", **ev))
    send(ingest, recorder.event(K.EXPLANATION_MISSING, at(18.1), marker_id="m2", **ev))
    scene.recording_ids.append(commit_media(recorder, at(18), 4, clip_a, officer_id=CERT_WANG))
    send(ingest, recorder.event(K.ENDED, at(22), **ev))
    with session_scope(app) as session:
        pk = session.scalar(
            select(EnforcementSessionRecord.id).where(EnforcementSessionRecord.device_id == scene.device_id)
        )
        assert pk is not None
        scene.session_pk = pk
        wang = session.get(User, scene.users["wang"])
        assert wang is not None
        caller = Caller(str(wang.id), "officer", wang.agency_id)
        case = case_service.create_case(
            session,
            caller,
            NewCase.from_json(
                {
                    "number": CASE_NUMBER,
                    "act_kind": "penalty",
                    "origin": "ex_officio",
                    "title": "销售过期食品",
                    "party": "某超市",
                    "officer_ids": [scene.officers["wang"]],
                }
            ),
        )
        scene.case_id = case.id
        for event_type, second in (
            ("initiation.ex_officio_source", -600),
            ("investigation.credential_shown", 2),
        ):
            case_service.record_event(
                session,
                caller,
                case.id,
                CaseEventInput.from_json(
                    {"event_type": event_type, "occurred_at": at(second).isoformat(), "text": event_type}
                ),
            )
    return scene


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the ffmpeg clips are made once per test run."""
    return tmp_path_factory.mktemp("workspace-media")


@pytest.fixture
def scene(app: Flask, tmp_path: Path, media_dir: Path) -> Scene:
    """The workspace scene on the test app."""
    return build_scene(app, tmp_path, media_dir)


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the workspace form; the CSRF value of the first page."""
    form = client.get("/workspace/login").get_data(as_text=True)
    token = _LOGIN_CSRF.search(form)
    assert token is not None
    answer = client.post(
        "/workspace/login", data={"username": username, "password": password, "login_csrf": token.group(1)}
    )
    assert answer.status_code == 303, answer.get_data(as_text=True)
    page = client.get(answer.headers["Location"])
    assert page.status_code == 200, page.get_data(as_text=True)
    match = _CSRF.search(page.get_data(as_text=True))
    assert match is not None
    return match.group(1)


def recordings_of(app: Flask, device_id: str) -> list[int]:
    """Ids of a device's stored recordings."""
    with session_scope(app) as session:
        return list(session.scalars(select(Recording.id).where(Recording.device_id == device_id)))
