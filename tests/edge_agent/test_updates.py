"""Signed A/B updates: bundle format, signature and hash checks, forward-only versions, slot switch,
self-test health check with automatic rollback, and waiting for an open enforcement session."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands import CommandHandler
from edge_agent.config import AgentConfig
from edge_agent.updater import (
    STATE_FILE,
    WAITING_NOTE,
    UpdateDeferred,
    UpdateError,
    Updater,
    fetch_bundle,
)
from firmware_tools import cli as fw_cli
from firmware_tools.bundle import (
    BundleHashError,
    BundleSignatureError,
    build_bundle,
    compare_versions,
    read_metadata,
    sign_bundle,
    verify_bundle,
)
from protocol import fleet
from protocol.downlink import seal
from protocol.fleet import Command, CommandKind, CommandState
from tests.edge_agent.server_stub import INGEST_KEY, INGEST_PUBLIC_KEYS

ROOT = Path(__file__).resolve().parents[2]
CREATED = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def make_wheel(directory: Path, version: str, *, broken: bool = False) -> Path:
    """A wheel of this checkout's agent packages (a zip, as `pip wheel` makes); ``broken`` fails import."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"zfjl-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for package in ("edge_agent", "protocol", "firmware_tools", "zfjl_common"):
            for source in sorted((ROOT / package).rglob("*.py")):
                name = source.relative_to(ROOT).as_posix()
                data = source.read_bytes()
                if broken and name == "edge_agent/app.py":
                    data = b'raise ImportError("this build is broken")\n'
                archive.writestr(zipfile.ZipInfo(name, (2026, 1, 1, 0, 0, 0)), data)
        meta = f"Metadata-Version: 2.1\nName: zfjl\nVersion: {version}\n"
        archive.writestr(f"zfjl-{version}.dist-info/METADATA", meta)
    return wheel


def make_bundle(
    directory: Path, version: str, key: Ed25519PrivateKey | None, *, broken: bool = False
) -> Path:
    """A bundle of one agent wheel, signed with ``key`` (unsigned if None)."""
    out = directory / f"agent-{version}.bundle"
    wheel = make_wheel(directory / f"wheels-{version}", version, broken=broken)
    build_bundle(out, version=version, files=[wheel], created_at=CREATED)
    if key is not None:
        sign_bundle(out, key)
    return out


def copy_fetch(bundles: dict[str, Path]) -> Any:
    """A fetch that 'downloads' ``bundles[url]`` from disk."""

    def fetch(url: str, dest: Path, max_bytes: int) -> None:
        data = bundles[url].read_bytes()
        if len(data) > max_bytes:
            raise UpdateError("too large")
        dest.write_bytes(data)

    return fetch


def params_for(url: str, bundle: Path, version: str | None = None) -> dict[str, Any]:
    """apply_update parameters as the server sends them."""
    out: dict[str, Any] = {"url": url, "sha256": hashlib.sha256(bundle.read_bytes()).hexdigest()}
    if version is not None:
        out["version"] = version
    return out


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """The offline update signing key."""
    return Ed25519PrivateKey.generate()


# -- the bundle format ------------------------------------------------------------------------------


def test_bundle_build_is_deterministic_and_its_metadata_pins_every_file(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    wheel = make_wheel(tmp_path / "w", "1.2.0")
    extra = tmp_path / "w" / "notes.txt"
    notes = b"release notes\n"
    extra.write_bytes(notes)
    first, second = tmp_path / "one.bundle", tmp_path / "two.bundle"
    meta = build_bundle(first, version="1.2.0", files=[wheel, extra], created_at=CREATED)
    build_bundle(second, version="1.2.0", files=[extra, wheel], created_at=CREATED)
    assert first.read_bytes() == second.read_bytes()  # same inputs, same bytes, whatever the order given
    assert (
        meta.to_bytes()
        == (
            '{"created_at":"2026-03-01T08:00:00Z","files":['
            f'{{"path":"notes.txt","sha256":"{hashlib.sha256(notes).hexdigest()}","size":14}},'
            f'{{"path":"{wheel.name}","sha256":"{hashlib.sha256(wheel.read_bytes()).hexdigest()}",'
            f'"size":{wheel.stat().st_size}}}],'
            '"format":"zfjl-bundle/1","min_agent_version":"0.0.0","name":"zfjl-agent","version":"1.2.0"}'
        ).encode()
    )
    with tarfile.open(first) as tar:
        assert tar.getnames() == ["metadata.json", "files/notes.txt", f"files/{wheel.name}"]
    with pytest.raises(BundleSignatureError, match="not signed"):
        verify_bundle(first, [key.public_key()])

    sign_bundle(first, key)
    with tarfile.open(first) as tar:
        assert tar.getnames() == ["metadata.json", "metadata.sig", "files/notes.txt", f"files/{wheel.name}"]
        stream = tar.extractfile("metadata.json")
        assert stream is not None and stream.read() == meta.to_bytes()
    verified, signer = verify_bundle(first, [Ed25519PrivateKey.generate().public_key(), key.public_key()])
    assert verified == meta and len(signer) == 16


def _rewrite_member(bundle: Path, name: str, data: bytes) -> None:
    """Replace one member's bytes, keeping every other member (metadata and signature) as it was."""
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(bundle) as tar:
        for info in tar:
            stream = tar.extractfile(info)
            assert stream is not None
            members.append((info, data if info.name == name else stream.read()))
    with tarfile.open(bundle, "w") as tar:
        for info, content in members:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_tampered_file_and_wrong_key_are_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    bundle = make_bundle(tmp_path, "1.2.0", key)
    wheel_name = read_metadata(bundle).files[0].path
    with pytest.raises(BundleSignatureError, match="any trusted update key"):
        verify_bundle(bundle, [Ed25519PrivateKey.generate().public_key()])

    original = bundle.read_bytes()
    with tarfile.open(bundle) as tar:
        stream = tar.extractfile(f"files/{wheel_name}")
        assert stream is not None
        payload = bytearray(stream.read())
    payload[100] ^= 0x01  # one flipped bit, same size
    _rewrite_member(bundle, f"files/{wheel_name}", bytes(payload))
    with pytest.raises(BundleHashError, match="SHA-256 does not match"):
        verify_bundle(bundle, [key.public_key()])

    bundle.write_bytes(original)
    meta = json.loads(read_metadata(bundle).to_bytes())
    meta["version"] = "9.9.9"  # edited metadata: the signature no longer covers it
    _rewrite_member(bundle, "metadata.json", json.dumps(meta).encode())
    with pytest.raises(BundleSignatureError):
        verify_bundle(bundle, [key.public_key()])


def test_semantic_versions_compare_by_precedence() -> None:
    assert compare_versions("1.10.0", "1.9.9") == 1
    assert compare_versions("1.0.0-rc.1", "1.0.0") == -1
    assert compare_versions("1.0.0-rc.2", "1.0.0-rc.10") == -1
    assert compare_versions("2.0.0", "2.0.0") == 0


def test_zfjl_fw_bundle_keygen_build_sign_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "update-key.pem"
    assert fw_cli.main(["bundle", "keygen", "--out", str(key_file)]) == 0
    keygen = json.loads(capsys.readouterr().out)
    pub = Path(keygen["public_key"])
    assert pub.name == "update-key.pub.pem" and (key_file.stat().st_mode & 0o777) == 0o600
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "1.3.0")
    out = tmp_path / "agent.bundle"
    args = ["bundle", "build", "--version", "1.3.0", "--out", str(out), "--wheel-dir", str(wheels)]
    assert fw_cli.main(args) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["version"] == "1.3.0"
    assert fw_cli.main(["bundle", "verify", "--pubkey", str(pub), str(out)]) == 1
    assert "not signed" in capsys.readouterr().err
    assert fw_cli.main(["bundle", "sign", "--key", str(key_file), str(out)]) == 0
    capsys.readouterr()
    assert fw_cli.main(["bundle", "verify", "--pubkey", str(pub), str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "version": "1.3.0",
        "key_id": keygen["key_id"],
        "files": 1,
    }


# -- the updater ------------------------------------------------------------------------------------


def _updater(tmp_path: Path, key: Ed25519PrivateKey, bundles: dict[str, Path], **kw: Any) -> Updater:
    kw.setdefault("health_check", lambda pointer: None)
    return Updater(
        tmp_path / "slots",
        [key.public_key()],
        installed_version="1.0.0",
        fetch=copy_fetch(bundles),
        poll_interval_s=0.01,
        **kw,
    )


def test_update_installs_into_the_inactive_slot_and_passes_the_real_self_test(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    first, second = make_bundle(tmp_path, "1.1.0", key), make_bundle(tmp_path, "1.2.0", key)
    bundles = {"http://s/1": first, "http://s/2": second}
    from edge_agent.updater import self_test_health_check

    updater = _updater(tmp_path, key, bundles, health_check=self_test_health_check)
    slots = tmp_path / "slots"
    detail = updater.apply(params_for("http://s/1", first, "1.1.0"))
    assert detail["version"] == "1.1.0" and detail["previous_version"] == "1.0.0" and detail["slot"] == "a"
    assert (slots / "current").readlink() == Path("a")
    assert (slots / "a" / "edge_agent" / "updater.py").is_file()
    assert json.loads((slots / "a" / ".zfjl-slot.json").read_text())["version"] == "1.1.0"

    detail = updater.apply(params_for("http://s/2", second))
    assert detail["slot"] == "b" and (slots / "current").readlink() == Path("b")
    state = json.loads((slots / STATE_FILE).read_text())
    assert state["active"] == "b" and state["versions"] == {"a": "1.1.0", "b": "1.2.0"}
    assert state["highest_version"] == "1.2.0" and "trying" not in state
    assert not (slots / "incoming.bundle").exists()


def test_bundle_failing_its_health_check_is_rolled_back(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    good, broken = make_bundle(tmp_path, "1.1.0", key), make_bundle(tmp_path, "1.2.0", key, broken=True)
    fixed = make_bundle(tmp_path, "1.2.1", key)
    bundles = {"http://s/good": good, "http://s/broken": broken, "http://s/fixed": fixed}
    from edge_agent.updater import self_test_health_check

    updater = _updater(tmp_path, key, bundles, health_check=self_test_health_check)
    updater.apply(params_for("http://s/good", good))
    with pytest.raises(UpdateError) as failure:
        updater.apply(params_for("http://s/broken", broken))
    assert failure.value.detail["rolled_back"] is True
    assert "health check failed: self-test exited with 1" in failure.value.detail["reason"]
    assert "this build is broken" in failure.value.detail["reason"]
    slots = tmp_path / "slots"
    assert (slots / "current").readlink() == Path("a")  # back on the slot that worked
    assert updater.installed_version == "1.1.0" and updater.highest_version == "1.1.0"
    # The broken version never counted as installed, so the fix can follow it.
    assert updater.apply(params_for("http://s/fixed", fixed))["slot"] == "b"


def test_first_update_failing_its_check_leaves_the_base_install_running(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    bundle = make_bundle(tmp_path, "1.1.0", key)
    updater = _updater(tmp_path, key, {"http://s/x": bundle}, health_check=lambda p: "no answer")
    with pytest.raises(UpdateError, match="health check failed: no answer"):
        updater.apply(params_for("http://s/x", bundle))
    assert not (tmp_path / "slots" / "current").exists() and updater.active_slot is None


def test_downgrade_and_replay_of_old_signed_bundles_are_refused(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    old, new = make_bundle(tmp_path, "1.1.0", key), make_bundle(tmp_path, "1.3.0", key)
    bundles = {"http://s/old": old, "http://s/new": new}
    updater = _updater(tmp_path, key, bundles)
    updater.apply(params_for("http://s/new", new))
    with pytest.raises(
        UpdateError, match=r"downgrade refused: 1\.1\.0 is not newer than the installed 1\.3\.0"
    ):
        updater.apply(params_for("http://s/old", old))  # announced nothing: refused after verifying
    with pytest.raises(UpdateError, match="downgrade refused"):
        updater.apply(params_for("http://s/new", new))  # the same bundle again

    # A device re-imaged with an old base still remembers the highest version it ever ran.
    (tmp_path / "slots" / STATE_FILE).write_text(json.dumps({"highest_version": "1.3.0"}))
    middle = make_bundle(tmp_path, "1.2.0", key)
    again = _updater(tmp_path, key, {"http://s/mid": middle})
    assert again.installed_version == "1.0.0"
    with pytest.raises(UpdateError, match=r"replay refused: 1\.2\.0 is not newer than 1\.3\.0"):
        again.apply(params_for("http://s/mid", middle))


def test_untrusted_tampered_or_mismatching_downloads_are_refused(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    foreign = make_bundle(tmp_path / "f", "1.1.0", Ed25519PrivateKey.generate())
    mine = make_bundle(tmp_path, "1.1.0", key)
    updater = _updater(tmp_path, key, {"http://s/f": foreign, "http://s/m": mine})
    with pytest.raises(UpdateError, match="bundle refused: the signature does not verify"):
        updater.apply({"url": "http://s/f"})
    with pytest.raises(UpdateError, match="does not match the sha256 in the command"):
        updater.apply({"url": "http://s/m", "sha256": "0" * 64})
    with pytest.raises(UpdateError, match=r"bundle is version 1\.1\.0, the command announced 1\.5\.0"):
        updater.apply({"url": "http://s/m", "version": "1.5.0"})
    with pytest.raises(UpdateError, match="http") as bad:
        updater.apply({"url": "file:///etc/passwd"})
    assert bad.value.rejected
    assert updater.active_slot is None


def test_unconfirmed_switch_is_undone_at_the_next_start(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    bundle = make_bundle(tmp_path, "1.1.0", key)
    updater = _updater(tmp_path, key, {"http://s/x": bundle})
    updater.apply(params_for("http://s/x", bundle))
    slots = tmp_path / "slots"
    # Power lost during the next update's check: pointer on b, state says "trying b".
    state = json.loads((slots / STATE_FILE).read_text())
    state["trying"] = "b"
    (slots / STATE_FILE).write_text(json.dumps(state))
    (slots / "current").unlink()
    (slots / "current").symlink_to("b")
    restarted = _updater(tmp_path, key, {})
    assert (slots / "current").readlink() == Path("a") and restarted.installed_version == "1.1.0"


def test_update_waits_for_the_open_session_and_proceeds_after_it_ends(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    bundle = make_bundle(tmp_path, "1.1.0", key)
    session_open = threading.Event()
    session_open.set()
    updater = _updater(tmp_path, key, {"http://s/x": bundle}, session_open=session_open.is_set)
    notes: list[dict[str, Any]] = []
    noted = threading.Event()

    def progress(detail: dict[str, Any]) -> None:
        notes.append(detail)
        noted.set()

    result: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: result.update(updater.apply(params_for("http://s/x", bundle), progress=progress))
    )
    worker.start()
    assert noted.wait(5)
    worker.join(0.2)
    assert worker.is_alive() and updater.active_slot is None  # nothing touched during the session
    assert notes == [{"note": WAITING_NOTE}] and updater.progress_note() == {"note": WAITING_NOTE}
    session_open.clear()
    worker.join(10)
    assert result["version"] == "1.1.0" and updater.active_slot == "a"


def test_update_is_deferred_not_failed_when_the_agent_stops_during_a_session(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    bundle = make_bundle(tmp_path, "1.1.0", key)
    stop = threading.Event()
    stop.set()
    updater = _updater(tmp_path, key, {"http://s/x": bundle}, session_open=lambda: True, stop_event=stop)
    with pytest.raises(UpdateDeferred):
        updater.apply(params_for("http://s/x", bundle))


def test_fetch_streams_over_http_and_enforces_the_size_limit(tmp_path: Path) -> None:
    payload = b"b" * 5000

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()  # no Content-Length: the limit must hold on what arrives
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/bundle"
        fetch_bundle(url, tmp_path / "ok.bundle", 10_000)
        assert (tmp_path / "ok.bundle").read_bytes() == payload
        with pytest.raises(UpdateError, match="exceeds the 4096 bytes allowed"):
            fetch_bundle(url, tmp_path / "big.bundle", 4096)
        assert not (tmp_path / "big.bundle").exists() and not (tmp_path / "big.bundle.part").exists()
    finally:
        server.shutdown()
        server.server_close()


# -- the command handler ----------------------------------------------------------------------------


class FakeClient:
    """Records publishes; stands in for paho at the outermost edge."""

    def __init__(self) -> None:
        self.published: list[fleet.FleetMessage] = []
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        with self.lock:
            self.published.append(fleet.decode(topic, payload))

    def message_callback_add(self, *args: Any) -> None:
        pass

    def message_callback_remove(self, *args: Any) -> None:
        pass


def test_command_handler_runs_apply_update_and_reports_the_waiting_note(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    bundle = make_bundle(tmp_path, "1.1.0", key)
    session_open = threading.Event()
    session_open.set()
    updater = _updater(tmp_path, key, {"http://s/x": bundle}, session_open=session_open.is_set)
    config = AgentConfig(
        device_id="rec-1",
        private_key_file=tmp_path / "k.pem",
        data_dir=tmp_path / "data",
        mqtt_url="mqtt://127.0.0.1:1883",
        ingest_public_keys=INGEST_PUBLIC_KEYS,
    )
    client = FakeClient()
    handler = CommandHandler(config, client, state_dir=tmp_path / "data", updater=updater)  # type: ignore[arg-type]
    cmd = Command(
        device_id="rec-1",
        command_id="c" * 32,
        kind=CommandKind.APPLY_UPDATE,
        expires_at="2999-01-01T00:00:00Z",
        params=params_for("http://s/x", bundle, "1.1.0"),
    )
    topic, body = fleet.encode(cmd)
    payload = seal(topic, body, INGEST_KEY)  # commands are signed with the ingest key (protocol.downlink)

    class Message:
        def __init__(self) -> None:
            self.topic, self.payload = topic, payload

    handler._on_command(client, None, Message())  # type: ignore[arg-type]
    handler._on_command(client, None, Message())  # type: ignore[arg-type]  # re-sent: not run twice
    deadline = threading.Event()
    for _ in range(200):
        if client.published:
            break
        deadline.wait(0.01)
    first = client.published[0]
    assert isinstance(first, fleet.CommandStatus)
    assert first.state is CommandState.IN_PROGRESS and first.detail == {"note": WAITING_NOTE}
    session_open.clear()
    for _ in range(500):
        if any(getattr(m, "state", None) is CommandState.SUCCEEDED for m in client.published):
            break
        deadline.wait(0.01)
    final = [m for m in client.published if getattr(m, "state", None) is CommandState.SUCCEEDED]
    assert len(final) == 1 and isinstance(final[0], fleet.CommandStatus)
    assert final[0].detail["version"] == "1.1.0" and final[0].detail["restart_required"] is True
    assert handler.run(cmd).state is CommandState.SUCCEEDED  # a repeat gets the stored outcome
    assert updater.installed_version == "1.1.0"
