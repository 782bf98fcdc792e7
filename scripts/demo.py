"""``make demo``: the whole pipeline on embedded defaults, on one machine, with no system service.

Starts the server (embedded MQTT broker, SQLite, local object folder), provisions two simulated
recorders, records with one of them offline for the first part, shows progress, prints a summary;
then records a penalty case over the session's recordings, has a second user publish its decision
(GS-7, GS-11), closes the case, seals, downloads and verifies its archive package (JL-18), prints the
URLs, and keeps the server running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_tools.provision import provision  # noqa: E402
from server.domain.accounts.service import create_user  # noqa: E402
from server.domain.fleet.models import DeviceAssignment  # noqa: E402
from server.domain.people.models import Agency  # noqa: E402
from server.domain.publicity.identifiers import uscc_check_character  # noqa: E402
from server.infra.db import session_scope  # noqa: E402
from server.runner import ServerRunner  # noqa: E402

ADMIN, PASSWORD = "admin", "zfjl-demo-admin"
# The demo agency's staff: the officer records the case and collects its publication; the legal reviewer
# publishes it (GS-7: never the author) and seals the archive (JL-18); the head closes the case (JL-2).
STAFF = {"officer": "demo-officer", "legal_reviewer": "demo-reviewer", "agency_head": "demo-head"}
AGENCY_USCC = "11340100003000001" + uscc_check_character("11340100003000001")
PARTY_USCC = "91340100MA2N0A0Q0" + uscc_check_character("91340100MA2N0A0Q0")
DECISION_NUMBER = "合市监罚〔2026〕演示1号"
# The decision's publication content (the keys of DecisionContent, docs/publicity.md); amounts in yuan
# as decimal strings.
PUBLICATION: dict[str, Any] = {
    "party_name": "合肥某某餐饮有限公司",
    "party_category": "organisation",
    "party_uscc": PARTY_USCC,
    "document_number": DECISION_NUMBER,
    "violation_type": "经营超过保质期的食品",
    "facts": "经查，当事人经营超过保质期的食品，执法过程全程录像。",
    "basis": "《中华人民共和国食品安全法》第一百二十四条",
    "conclusion": "警告，罚款2000元",
    "penalty_kinds": ["warning", "fine"],
    "fine_yuan": "2000",
    "agency_uscc": AGENCY_USCC,
    # 处罚有效期, required for a penalty (GS-11); a year from the demo's day.
    "valid_until": (datetime.date.today() + datetime.timedelta(days=365)).isoformat(),
}
BIN = Path(sys.executable).parent


class DemoError(RuntimeError):
    """An API call of the demo was refused; carries the server's error body."""


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def _api(base: str, method: str, path: str, body: object = None, token: str = "") -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        # The server's precise error (message and message_en) says more than the status line.
        detail = exc.read().decode(errors="replace").strip()[:500]
        raise DemoError(f"{method} {path}: HTTP {exc.code} {detail}") from exc


def _agent_status(config: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(BIN / "zfjl-agent"), "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        return {}
    return data


def _session(config: Path, *args: str) -> dict[str, Any]:
    """Send one session command to a running recorder (what the officer's button does)."""
    result = subprocess.run(
        [str(BIN / "zfjl-agent"), "session", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    try:
        reply: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        reply = {}
    return reply or {"ok": False, "error": result.stderr.strip()[-200:]}


# The officer's day on recorder 1 (seconds after recording starts): JL-16 and JL-15 in action.
OFFICER_SCRIPT: tuple[tuple[float, str, tuple[str, ...]], ...] = (
    (4.0, "到达现场，开始执法 / arrival: session start", ("start", "--officer", "officer-001")),
    (8.0, "标记：送达文书 / bookmark: document served", ("bookmark", "--type", "document_served")),
    (
        10.0,
        "暴雨，中断录像 / interruption: bad weather",
        ("interrupt", "--reason", "bad_weather", "--note", "暴雨"),
    ),
    (14.0, "恢复录像并口头说明原因 / resume + spoken explanation", ("resume",)),
    (25.0, "执法结束 / session end", ("end",)),
)


def main() -> int:
    """Run the demo."""
    parser = argparse.ArgumentParser(description="zfjl demo / 演示")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each recorder records")
    parser.add_argument("--offline", type=float, default=15.0, help="how long recorder 2 starts offline")
    parser.add_argument("--segment-seconds", type=float, default=5.0)
    parser.add_argument("--data-dir", default=str(ROOT / "var" / "demo"))
    parser.add_argument("--no-wait", action="store_true", help="exit after the summary (for scripted runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    data_dir = Path(args.data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    http_port = _free_port(8080)
    print(f"== zfjl 演示 / demo — data in {data_dir}")
    runner = ServerRunner({"data_dir": str(data_dir / "server"), "http_port": http_port})
    runner.start()
    assert runner.http is not None
    base = runner.http.url
    with session_scope(runner.app) as session:
        create_user(session, ADMIN, PASSWORD, "system_admin")
        agency = Agency(name="合肥市市场监督管理局（演示）", head="", duties="", address="", contacts="")
        session.add(agency)
        session.flush()
        users = {role: create_user(session, name, PASSWORD, role, agency_id=agency.id)
                 for role, name in STAFF.items()}  # fmt: skip
        demo_officer_id, demo_agency_id = users["officer"].id, agency.id
    token = _api(base, "POST", "/api/v1/auth/login", {"username": ADMIN, "password": PASSWORD})[
        "access_token"
    ]
    print(f"   server: {base}   MQTT for devices: {runner.mqtt_url}")

    devices = ["rec-demo-1", "rec-demo-2"]
    configs: dict[str, Path] = {}
    for device_id in devices:
        result = provision(
            server_url=base,
            token=token,
            device_id=device_id,
            out_dir=data_dir / device_id,
            mqtt_url=runner.mqtt_url,
        )
        configs[device_id] = result.config_path
        with result.config_path.open("a", encoding="utf-8") as handle:
            handle.write("explanation_seconds = 5\n")  # a short spoken explanation for the demo
        print(f"   provisioned {device_id}: key {result.key_fingerprint[:16]}…")

    # Recorder 1 is checked out to the demo officer before it records, so its segments are the agency's
    # evidence and the demo case may link them (JL-20: a case links only its agency's recordings).
    with session_scope(runner.app) as session:
        session.add(
            DeviceAssignment(
                device_id=devices[0],
                user_id=demo_officer_id,
                agency_id=demo_agency_id,
                checked_out_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1),
                checked_out_by=ADMIN,
            )
        )
    agents: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    for device_id in devices:
        command = [
            str(BIN / "zfjl-agent"),
            "run",
            "--config",
            str(configs[device_id]),
            "--simulate",
            "--segment-seconds",
            str(args.segment_seconds),
            "--duration",
            str(args.seconds),
        ]
        if device_id == devices[1]:
            command += ["--offline-for", str(args.offline)]
        log = open(data_dir / f"{device_id}.log", "wb")  # noqa: SIM115 - the agent's log for its lifetime
        agents[device_id] = subprocess.Popen(command, stdout=log, stderr=log)
    print(
        f"   recording {args.seconds:.0f} s each; {devices[1]} offline for the first {args.offline:.0f} s\n"
    )

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stored: dict[str, list[dict[str, Any]]] = {}
    script = list(OFFICER_SCRIPT)
    while not stop.is_set():
        while script and time.monotonic() - started >= script[0][0]:
            _, label, command = script.pop(0)
            reply = _session(configs[devices[0]], *command)
            print(f"   >> {devices[0]}: {label} — {'ok' if reply.get('ok') else reply}", flush=True)
        parts = []
        for device_id in devices:
            status = _agent_status(configs[device_id])
            items = _api(base, "GET", f"/api/v1/recordings?device_id={device_id}&limit=200", token=token)[
                "items"
            ]
            stored[device_id] = items
            offline = device_id == devices[1] and time.monotonic() - started < args.offline
            parts.append(
                f"{device_id}: 录制 recorded {status.get('segments_recorded', 0):>2}  "
                f"已入库 stored {len(items):>2}  待传 pending {status.get('segments_pending', 0):>2}"
                + ("  (离线 offline)" if offline else "")
            )
        print(f"[{time.monotonic() - started:5.1f}s] " + " | ".join(parts), flush=True)
        if all(proc.poll() is not None for proc in agents.values()):
            break
        stop.wait(2.0)
    elapsed = time.monotonic() - started

    print("\n== 汇总 / summary")
    total_bytes = 0
    failures = 0
    for device_id in devices:
        code = agents[device_id].wait()
        status = _agent_status(configs[device_id])
        items = _api(base, "GET", f"/api/v1/recordings?device_id={device_id}&limit=200", token=token)["items"]
        chain = _api(base, "GET", f"/api/v1/devices/{device_id}/chain", token=token)
        size = sum(int(item["size"]) for item in items)
        total_bytes += size
        verified = sum(1 for item in items if item["verified"])
        failures += int(code != 0 or not chain["verified"])
        print(
            f"   {device_id}: recorded {status.get('segments_recorded')}  uploaded {len(items)}  "
            f"verified {verified}  chain {'完整 intact' if chain['verified'] else '异常 BROKEN'}  "
            f"{size / 1e6:.2f} MB  (agent exit {code})"
        )
    # The recorders, not the pipeline, set this pace: `make bench` measures ingest throughput.
    print(
        f"   total {total_bytes / 1e6:.2f} MB stored in {elapsed:.1f} s = "
        f"{total_bytes / 1e6 / elapsed:.2f} MB/s (real-time recorders set the pace)"
    )
    sessions = _api(base, "GET", f"/api/v1/sessions?device_id={devices[0]}", token=token)["items"]
    if sessions:
        session_id = sessions[0]["id"]
        timeline = _api(base, "GET", f"/api/v1/sessions/{session_id}/timeline", token=token)
        print(f"\n== 执法过程 / enforcement session {session_id} on {devices[0]} (JL-16)")
        print(f"   verdict / 结论: {timeline['verdict']}")
        for marker in timeline["markers"]:
            clips = ", ".join(base + clip["media_url"] for clip in marker["explanation_clips"]) or "none"
            print(
                f"   interruption / 中断: {marker['cause']} ({marker['status']}); spoken explanation: {clips}"
            )
        for gap in timeline["gaps"]:
            print(f"   gap / 空档: {gap['duration_s']} s")
        for bookmark in timeline["bookmarks"]:
            print(f"   bookmark / 标记: {bookmark['bookmark_type']} at {bookmark.get('at', '')}")
        failures += int(timeline["verdict"] == "gaps_unexplained")
        print(f"   timeline: {base}/api/v1/sessions/{session_id}/timeline")
        print(f"   workspace / 证据工作台: {base}/workspace/sessions/{session_id}   (login: {ADMIN})")
    else:
        print(f"\n   no session recorded on {devices[0]}")
        failures += 1
    failures += _case_to_archive(base, data_dir, [int(item["id"]) for item in stored.get(devices[0], [])])
    print("\n== URLs")
    print(f"   API health:      {base}/healthz")
    print(f"   OpenAPI:         {base}/openapi.json")
    print(f"   recordings:      {base}/api/v1/recordings   (login: {ADMIN} / {PASSWORD})")
    print(f"   device chain:    {base}/api/v1/devices/{devices[0]}/chain")
    print(f"   MQTT (devices):  {runner.mqtt_url}")
    print(f"   admin console:   {base}/admin/   (same login)")
    print(f"   workspace:       {base}/workspace/   (cases, sessions and playback; same login)")
    print(f"   officer mobile:  {base}/m/   · public verification: {base}/verify")
    if not args.no_wait and not stop.is_set():
        print("\n服务器保持运行，按 Ctrl-C 结束 / server keeps running, Ctrl-C to stop")
        stop.wait()
    runner.stop()
    return 1 if failures else 0


def _case_to_archive(base: str, data_dir: Path, recording_ids: list[int]) -> int:
    """Record a penalty case, publish its decision (GS-7, GS-11), close it and seal, download and verify its
    archive package (JL-18); return the number of failures."""
    login = "/api/v1/auth/login"
    tokens = {
        role: _api(base, "POST", login, {"username": name, "password": PASSWORD})["access_token"]
        for role, name in STAFF.items()
    }
    officer, reviewer, head = tokens["officer"], tokens["legal_reviewer"], tokens["agency_head"]
    case = _api(
        base,
        "POST",
        "/api/v1/cases",
        {"number": "合市监立〔2026〕演示1号", "act_kind": "penalty", "origin": "ex_officio",
         "party": PUBLICATION["party_name"]},
        token=officer,
    )  # fmt: skip
    case_id = int(case["id"])
    print(f"\n== 案件 / case {case['number']} (id {case_id})")
    evidence: dict[str, Any] = {"event_type": "investigation.on_site_inspection", "place": "合肥市蜀山区"}
    try:
        # The recorded session is the case's on-site evidence (JL-11); a link the server refuses (the
        # recorder's officer is not the case's) leaves the case without recordings, not the demo broken.
        _api(base, "POST", f"/api/v1/cases/{case_id}/events", {**evidence, "recording_ids": recording_ids},
             token=officer)  # fmt: skip
        print(f"   on-site inspection with {len(recording_ids)} recordings linked")
    except DemoError as exc:
        _api(base, "POST", f"/api/v1/cases/{case_id}/events", evidence, token=officer)
        print(f"   on-site inspection (recordings not linked: {exc})")
    # Recording the decision opens its publication item at once, due 7 working days later (GS-11).
    decision = _api(
        base,
        "POST",
        f"/api/v1/cases/{case_id}/events",
        {"event_type": "decision.decided", "text": "作出行政处罚决定", "data": {"publication": PUBLICATION}},
        token=officer,
    )
    items = _api(base, "GET", "/api/v1/publicity/items", token=officer)["items"]
    matching = [item for item in items if item.get("source_event_id") == decision["id"]]
    if not matching:
        print("   no publication item was opened for the decision")
        return 1
    item_path = f"/api/v1/publicity/items/{matching[0]['id']}"
    _api(base, "POST", f"{item_path}/submit", token=officer)
    item = _api(base, "POST", f"{item_path}/publish", token=reviewer)  # GS-7: not the author
    provisional = " (provisional / 暂定)" if item.get("deadline_provisional") else ""
    print(f"\n== 公示 / publication {DECISION_NUMBER}: {item['state']}")
    print(f"   publication deadline / 公示期限 (GS-11, 7 working days): {item['due_on']}{provisional}")
    print(f"   portal / 公示网页: {base}/portal/items/{item['id']}")

    # A case is archived once it has ended (JL-18); the head closes it although the demo's record is short.
    _api(
        base,
        "POST",
        f"/api/v1/cases/{case_id}/status",
        {"status": "closed", "reason": "演示案件结案 / demo case closed", "force": True},
        token=head,
    )
    sealed = _api(base, "POST", f"/api/v1/cases/{case_id}/archives", token=reviewer)
    package = data_dir / f"archive-case-{case_id}.zip"
    request = urllib.request.Request(
        base + sealed["download_url"], headers={"Authorization": f"Bearer {reviewer}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        package.write_bytes(response.read())
    # docs/ledger.md: a superior body obtains the ledger's verifier key once and pins it; the demo plays
    # that body and pins the key the server publishes with its checkpoint.
    key = data_dir / "ledger.pub"
    with urllib.request.urlopen(base + "/ledger/v1/checkpoint", timeout=30) as response:
        key.write_text(json.loads(response.read())["verifier_key"] + "\n", encoding="utf-8")
    verify = [str(BIN / "zfjl-verify"), "package", "--key", str(key), str(package)]
    result = subprocess.run(verify, capture_output=True, text=True, timeout=300, check=False)
    print(f"\n== 档案 / archive package (JL-18): {package}  ({package.stat().st_size / 1e6:.2f} MB)")
    print(f"   $ zfjl-verify package --key {key} {package}")
    for line in (result.stdout + result.stderr).strip().splitlines():
        print(f"   {line}")
    print(f"   zfjl-verify verdict / 结论: {'通过 OK' if result.returncode == 0 else '失败 FAILED'} "
          f"(exit {result.returncode})")  # fmt: skip
    return int(result.returncode != 0)


if __name__ == "__main__":
    raise SystemExit(main())
