"""Server side of signed updates: bundle upload verified against trusted keys, device download tokens,
staged rollouts batch by batch with halting, and the whole path from upload to device results."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from edge_agent.updater import UpdateError, Updater
from firmware_tools.bundle import build_bundle, sign_bundle
from protocol import fleet
from protocol.fleet import CommandState, CommandStatus
from server.domain.errors import Invalid
from server.domain.fleet import commands, dispatch, rollouts
from server.domain.fleet.devices import register_device
from server.domain.fleet.models import DeviceCommand
from server.domain.fleet.service import set_profile
from server.infra.db import session_scope
from server.infra.storage import STORE_KEY
from server.ingest.service import IngestService
from tests.conftest import raw_public_key
from tests.edge_agent.test_updates import CREATED, make_bundle, make_wheel


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """The offline update signing key."""
    return Ed25519PrivateKey.generate()


def _trust(app: Flask, key: Ed25519PrivateKey) -> None:
    """Install the update public key where the server looks for trusted keys."""
    folder = app.extensions["zfjl.settings"].data_dir / rollouts.UPDATE_KEYS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (folder / "offline-2026.pem").write_bytes(pem)


def _group(session: Session, count: int, group: str = "traffic") -> list[str]:
    ids = [f"rec-{n}" for n in range(1, count + 1)]
    for device_id in ids:
        register_device(session, device_id, raw_public_key(Ed25519PrivateKey.generate()), actor="t")
        set_profile(session, device_id, group_name=group, actor="t")
    return ids


def _register(app: Flask, session: Session, bundle: Path) -> str:
    keys = rollouts.trusted_update_keys(app.extensions["zfjl.settings"])
    return rollouts.register_bundle(session, app.extensions[STORE_KEY], bundle, keys=keys, actor="a").id


def _report(session: Session, device_id: str, command_id: str | None, state: CommandState) -> None:
    assert command_id is not None
    status = CommandStatus(device_id=device_id, command_id=command_id, state=state)
    assert commands.apply_status(session, status) is not None


def _by_device(session: Session, rollout_id: int) -> dict[str, dict[str, Any]]:
    rollout = rollouts.get_rollout(session, rollout_id)
    return {t["device_id"]: t for t in rollouts.rollout_to_dict(session, rollout)["devices"]}


def test_upload_accepts_only_bundles_signed_by_a_trusted_key(
    client: FlaskClient, auth: dict[str, str], app: Flask, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    wheel = make_wheel(tmp_path / "w", "1.1.0")
    padding = tmp_path / "w" / "assets.bin"
    padding.write_bytes(b"\0" * (3 * 1024 * 1024))  # larger than the API's 1 MiB default body limit
    bundle = tmp_path / "agent.bundle"
    build_bundle(bundle, version="1.1.0", files=[wheel, padding], created_at=CREATED)
    headers = auth | {"Content-Type": "application/octet-stream"}

    refused = client.post("/api/v1/fleet/updates", headers=headers, data=bundle.read_bytes())
    assert refused.status_code == 422 and "no trusted update key" in refused.get_json()["error"]["message_en"]
    _trust(app, key)
    unsigned = client.post("/api/v1/fleet/updates", headers=headers, data=bundle.read_bytes())
    assert unsigned.status_code == 422 and unsigned.get_json()["error"]["code"] == "bundle_refused"
    foreign = make_bundle(tmp_path / "f", "1.1.0", Ed25519PrivateKey.generate())
    answer = client.post("/api/v1/fleet/updates", headers=headers, data=foreign.read_bytes())
    assert answer.status_code == 422 and "any trusted update key" in answer.get_json()["error"]["message_en"]

    sign_bundle(bundle, key)
    accepted = client.post("/api/v1/fleet/updates", headers=headers, data=bundle.read_bytes())
    assert accepted.status_code == 201, accepted.get_json()
    body = accepted.get_json()
    assert body["version"] == "1.1.0" and body["size"] == bundle.stat().st_size
    assert [f["path"] for f in body["metadata"]["files"]] == ["assets.bin", wheel.name]
    # The same bytes again, as a multipart form this time: the same registration.
    form = {"bundle": (io.BytesIO(bundle.read_bytes()), "agent.bundle")}
    again = client.post("/api/v1/fleet/updates", headers=auth, data=form, content_type="multipart/form-data")
    assert again.status_code == 201 and again.get_json()["bundle_id"] == body["bundle_id"]
    listed = client.get("/api/v1/fleet/updates", headers=auth).get_json()["items"]
    assert [item["bundle_id"] for item in listed] == [body["bundle_id"]]
    assert client.post("/api/v1/fleet/updates", data=bundle.read_bytes()).status_code == 401


def test_rollout_starts_the_next_batch_only_after_success_and_halts_on_failure(
    app: Flask, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    _trust(app, key)
    bundle = make_bundle(tmp_path, "1.1.0", key)
    with session_scope(app) as session:
        _group(session, 5)
    with session_scope(app) as session:
        bundle_id = _register(app, session, bundle)
        rollout = rollouts.create_rollout(
            session,
            bundle_id=bundle_id,
            group="traffic",
            base_url="https://zfjl.example/",
            actor="a",
            batch_size=2,
        )
        rollout_id = rollout.id
        targets = _by_device(session, rollout_id)
        assert [targets[d]["batch"] for d in sorted(targets)] == [0, 0, 1, 1, 2]
        assert [targets[d]["state"] for d in sorted(targets)] == ["queued"] * 2 + ["pending"] * 3
        cmd = session.get(DeviceCommand, targets["rec-1"]["command_id"])
        assert cmd is not None and cmd.kind == "apply_update"
        assert cmd.params["url"].startswith(f"https://zfjl.example/updates/v1/bundles/{bundle_id}?token=")
        assert (
            cmd.params["version"] == "1.1.0"
            and cmd.params["sha256"] == rollouts.get_bundle(session, bundle_id).sha256
        )

    with session_scope(app) as session:
        _report(session, "rec-1", targets["rec-1"]["command_id"], CommandState.SUCCEEDED)
        rollouts.advance_all(session)
        assert rollouts.get_rollout(session, rollout_id).current_batch == 0  # rec-2 still running
        _report(session, "rec-2", targets["rec-2"]["command_id"], CommandState.IN_PROGRESS)
        _report(session, "rec-2", targets["rec-2"]["command_id"], CommandState.SUCCEEDED)
        dispatch.dispatch_once(session)  # the dispatcher's round advances rollouts too
        targets = _by_device(session, rollout_id)
        assert rollouts.get_rollout(session, rollout_id).current_batch == 1
        assert targets["rec-3"]["state"] == "queued" and targets["rec-5"]["state"] == "pending"

    with session_scope(app) as session:
        _report(session, "rec-3", targets["rec-3"]["command_id"], CommandState.FAILED)
        rollouts.advance_all(session)
        view = rollouts.rollout_to_dict(session, rollouts.get_rollout(session, rollout_id))
        # Halted at once: rec-4 may still finish, but 100 % of batch 2 can no longer succeed.
        assert view["state"] == "halted"
        assert view["halted_reason"] == "batch 2: 1 of 2 devices failed; 100% must succeed"
        assert view["counts"] == {"succeeded": 2, "failed": 1, "queued": 1, "pending": 1}
        assert view["devices"][4]["command_id"] is None  # batch 3 never got a command


def test_threshold_tolerates_some_failures_and_percent_batches(
    app: Flask, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    _trust(app, key)
    bundle = make_bundle(tmp_path, "1.1.0", key)
    with session_scope(app) as session:
        _group(session, 4)
        bundle_id = _register(app, session, bundle)
        with pytest.raises(Invalid):
            rollouts.create_rollout(
                session, bundle_id=bundle_id, group="nobody", base_url="http://x", actor="a", batch_size=1
            )
        rollout = rollouts.create_rollout(
            session,
            bundle_id=bundle_id,
            group="traffic",
            base_url="http://x",
            actor="a",
            batch_percent=50,
            success_threshold_pct=50,
        )
        rollout_id = rollout.id
        assert rollout.batch_size == 2
    with session_scope(app) as session:
        targets = _by_device(session, rollout_id)
        _report(session, "rec-1", targets["rec-1"]["command_id"], CommandState.SUCCEEDED)
        _report(session, "rec-2", targets["rec-2"]["command_id"], CommandState.REJECTED)
        rollouts.advance_all(session)
        targets = _by_device(session, rollout_id)
        _report(session, "rec-3", targets["rec-3"]["command_id"], CommandState.SUCCEEDED)
        _report(session, "rec-4", targets["rec-4"]["command_id"], CommandState.SUCCEEDED)
        rollouts.advance_all(session)
        assert rollouts.get_rollout(session, rollout_id).state == "completed"


def _client_fetch(client: FlaskClient) -> Any:
    """The device's download, through the Flask test client instead of a socket."""

    def fetch(url: str, dest: Path, max_bytes: int) -> None:
        response = client.get("/" + url.split("://", 1)[1].split("/", 1)[1])
        if response.status_code != 200:
            raise UpdateError(f"download refused: HTTP {response.status_code}")
        dest.write_bytes(response.get_data())

    return fetch


def test_whole_update_path_over_the_api(
    client: FlaskClient, auth: dict[str, str], app: Flask, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Upload, staged rollout, download with the command's token, install, report; a failure halts it."""
    _trust(app, key)
    with session_scope(app) as session:
        _group(session, 3)
    bundle = make_bundle(tmp_path, "1.1.0", key)
    upload = client.post(
        "/api/v1/fleet/updates",
        headers=auth | {"Content-Type": "application/octet-stream"},
        data=bundle.read_bytes(),
    )
    bundle_id = upload.get_json()["bundle_id"]
    made = client.post(
        "/api/v1/fleet/rollouts",
        headers=auth,
        json={"bundle_id": bundle_id, "group": "traffic", "batch_size": 1},
    )
    assert made.status_code == 201, made.get_json()
    rollout_id = made.get_json()["rollout_id"]
    assert [d["state"] for d in made.get_json()["devices"]] == ["queued", "pending", "pending"]
    busy = client.post(
        "/api/v1/fleet/rollouts",
        headers=auth,
        json={"bundle_id": bundle_id, "group": "traffic", "batch_size": 1},
    )
    assert busy.status_code == 409  # one running rollout per group

    ingest = IngestService.from_app(app)

    def device(device_id: str, health: str | None) -> dict[str, Any]:
        """One recorder: take its queued command, run the updater, report through ingest."""
        with session_scope(app) as session:
            command_id = _by_device(session, rollout_id)[device_id]["command_id"]
            cmd = commands.command_message(commands.get_command(session, command_id))
        updater = Updater(
            tmp_path / device_id / "slots",
            [key.public_key()],
            installed_version="1.0.0",
            fetch=_client_fetch(client),
            health_check=lambda pointer: health,
        )
        try:
            state, detail = CommandState.SUCCEEDED, updater.apply(cmd.params)
        except UpdateError as exc:
            state, detail = CommandState.FAILED, exc.detail
        ingest.handle(
            *fleet.encode(
                CommandStatus(device_id=device_id, command_id=cmd.command_id, state=state, detail=detail)
            )
        )
        with session_scope(app) as session:
            dispatch.dispatch_once(session)
        return dict(cmd.params)

    download = f"/updates/v1/bundles/{bundle_id}"
    assert client.get(download).status_code == 403
    assert client.get(download + "?token=guess").status_code == 403
    first = device("rec-1", None)
    assert client.get(first["url"].removeprefix("http://localhost")).status_code == 403  # its command is done
    second = device("rec-2", "self-test exited with 1")
    assert second["url"] != first["url"]

    view = client.get(f"/api/v1/fleet/rollouts/{rollout_id}", headers=auth).get_json()
    assert view["state"] == "halted" and view["version"] == "1.1.0"
    results = {d["device_id"]: d for d in view["devices"]}
    assert results["rec-1"]["state"] == "succeeded" and results["rec-1"]["result"]["version"] == "1.1.0"
    assert results["rec-2"]["state"] == "failed" and results["rec-2"]["result"]["rolled_back"] is True
    assert results["rec-3"] == {
        "device_id": "rec-3",
        "batch": 2,
        "state": "pending",
        "command_id": None,
        "result": {},
    }
    assert client.get(f"/api/v1/fleet/rollouts/{rollout_id + 1}", headers=auth).status_code == 404
