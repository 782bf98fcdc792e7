"""``zfjl-server`` command line: create-admin, db upgrade, broker-acl, scrub, ingest-key, agency-key, backup,
restore, calendar load, run."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

__all__ = [
    "build_parser",
    "cmd_agency_key",
    "cmd_backup",
    "cmd_broker_acl",
    "cmd_calendar_load",
    "cmd_create_admin",
    "cmd_db_upgrade",
    "cmd_ingest_key",
    "cmd_restore",
    "cmd_run",
    "cmd_scrub",
    "main",
]


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from server.infra.config import load_settings

    overrides = {"database_url": args.database_url} if getattr(args, "database_url", None) else {}
    return load_settings(overrides)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply all database migrations."""
    from server.infra.db import run_migrations

    settings = _settings(args)
    run_migrations(settings.database_url)
    print("数据库已升级到最新版本 / database upgraded to head")
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    """Create a system_admin user (migrating the database first)."""
    from sqlalchemy.orm import Session

    from server.domain.accounts.service import create_user
    from server.domain.errors import ServiceError
    from server.infra.db import make_engine, run_migrations

    settings = _settings(args)
    password = args.password
    if password is None:
        password = getpass.getpass("密码 / password: ")
    run_migrations(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            try:
                user = create_user(session, args.username, password, "system_admin", actor="cli")
                session.commit()
            except ServiceError as exc:
                print(f"错误 / error: {exc.message} / {exc.message_en}", file=sys.stderr)
                return 1
            print(f"已创建管理员 / created system_admin {user.username} (id {user.id})")
    finally:
        engine.dispose()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the server: migrate, embedded broker (unless ZFJL_MQTT_URL), ingest workers (or processes),
    HTTP API and background loops — the roles of ``--roles`` / ZFJL_ROLES."""
    import logging
    import os
    import signal
    import threading
    from pathlib import Path

    from server.infra.config import ConfigError, load_settings
    from server.infra.logging_setup import configure_logging
    from server.runner import ServerRunner

    overrides: dict[str, object] = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    for name in ("roles", "ingest_processes", "ingest_workers"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    try:
        configure_logging(load_settings(overrides).log_format)  # ZFJL_LOG_FORMAT: text | json
    except ConfigError as exc:
        print(f"错误 / error: {exc}", file=sys.stderr)
        return 2
    log = logging.getLogger("zfjl.server")
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    # Handlers first, so a signal during start-up still leads to an orderly stop.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    runner = ServerRunner(
        overrides,
        metrics_dir=Path(args.metrics_dir) if getattr(args, "metrics_dir", None) else None,
        ingest_index=getattr(args, "ingest_index", None) or 0,
    )
    try:
        runner.start()
        log.info(
            "zfjl server running: HTTP %s, MQTT for devices %s",
            runner.http.url if runner.http else "?",
            runner.mqtt_url,
        )
        if args.ready_fd is not None:
            # The parent runner waits for this byte before it counts this ingest process as up.
            os.write(args.ready_fd, b"1")
            os.close(args.ready_fd)
        runner.wait(stop)
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def cmd_broker_acl(args: argparse.Namespace) -> int:
    """Write the Mosquitto password and ACL files from the device registry."""
    from pathlib import Path

    from sqlalchemy.orm import Session

    from server.domain.fleet.broker_accounts import BrokerAccountError, write_broker_files
    from server.infra.db import make_engine

    settings = _settings(args)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            passwords, acl = write_broker_files(session, settings, Path(args.out))
    except BrokerAccountError as exc:
        print(f"未生成，原文件保持不变 / not written, the previous files stay: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"已生成 / written: {passwords} {acl}")
    return 0


def cmd_scrub(args: argparse.Namespace) -> int:
    """Check stored evidence against the signed manifests now (JL-6); exit 1 when anything is wrong."""
    from datetime import timedelta

    from sqlalchemy.orm import Session

    from server.domain.evidence.scrub import scrub
    from server.domain.fleet.alerts import evaluate_alerts
    from server.infra.db import make_engine
    from server.infra.storage import make_object_store

    settings = _settings(args)
    store = make_object_store(settings)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            report = scrub(session, store, device_id=args.device, source="cli", checkpoint=session.commit)
            if report.new_findings:
                evaluate_alerts(
                    session, offline_after=timedelta(minutes=settings.fleet_offline_alert_minutes)
                )
                session.commit()
    finally:
        engine.dispose()
    for finding in report.findings:
        print(
            f"{finding.device_id} #{finding.sequence if finding.sequence is not None else '-'} "
            f"{finding.code}: {finding.message} / {finding.message_en}"
        )
    print(
        f"已校验 / checked: {report.devices} 台设备 devices, {report.recordings} 段录像 recordings, "
        f"{report.bytes_read} 字节 bytes; 问题 / findings: {len(report.findings)} "
        f"(新 / new: {report.new_findings})"
    )
    return 1 if report.findings else 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Back up the database and every stored object into a new folder with a SHA-256 manifest."""
    from pathlib import Path

    from server.infra.backup import BackupError, backup
    from server.infra.storage import make_object_store

    settings = _settings(args)
    try:
        result = backup(settings, make_object_store(settings), Path(args.out))
    except BackupError as exc:
        print(f"备份失败 / backup failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"已备份 / backed up: {result.engine} 数据库 database, {result.objects} 个对象 objects, "
        f"{result.object_bytes} 字节 bytes -> {result.directory}"
    )
    for key in result.mismatched:
        print(f"对象与其 SHA-256 不符 (按现状备份) / object differs from its SHA-256: {key}", file=sys.stderr)
    return 1 if result.mismatched else 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup into an empty database and store, then re-check every segment (JL-6)."""
    from pathlib import Path

    from server.infra.backup import BackupError, restore
    from server.infra.db import run_migrations
    from server.infra.storage import make_object_store

    settings = _settings(args)
    store = make_object_store(settings)
    ensure_bucket = getattr(store, "ensure_bucket", None)
    if ensure_bucket is not None:
        ensure_bucket()
    try:
        result = restore(settings, store, Path(args.source))
    except BackupError as exc:
        print(f"恢复失败 / restore refused: {exc}", file=sys.stderr)
        return 1
    run_migrations(settings.database_url)  # a backup of an older release is brought up to this one
    print(f"已恢复 / restored: {result.objects} 个对象 objects, {result.object_bytes} 字节 bytes")
    # Every restored segment is checked against its signed manifest and its bytes re-hashed, as
    # `zfjl-server scrub` does; exit 1 on any finding.
    return cmd_scrub(args)


def cmd_ingest_key(args: argparse.Namespace) -> int:
    """Print the ingest key's id and the public keys recorders pin; ``--new``: a fresh key for rotation."""
    import base64
    import json
    import os

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.infra.ingest_key import IngestSigner

    if args.new:
        private = base64.b64encode(os.urandom(32)).decode("ascii")
        signer = IngestSigner(Ed25519PrivateKey.from_private_bytes(base64.b64decode(private)))
        # Shown once, for ZFJL_INGEST_KEY at the switch (docs/protocol.md, "Rotating the ingest key").
        print(
            json.dumps(
                {"key_id": signer.key_id, "public_key": signer.public_keys()[0], "private_key": private}
            )
        )
        return 0
    signer = IngestSigner.from_settings(_settings(args))
    print(json.dumps({"key_id": signer.key_id, "ingest_public_keys": signer.public_keys()}))
    return 0


def cmd_agency_key(args: argparse.Namespace) -> int:
    """Show an agency's seal keys, or rotate its key (JL-18): the old public half stays published."""
    import json

    from sqlalchemy.orm import Session

    from server.domain.audit import write_audit
    from server.domain.people.models import Agency
    from server.errors import ZfjlError
    from server.infra.agency_keys import AgencyKeyring
    from server.infra.db import make_engine

    settings = _settings(args)
    keyring = AgencyKeyring.from_settings(settings)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            if session.get(Agency, args.agency) is None:
                print(f"机关 {args.agency} 不存在 / agency {args.agency} not found", file=sys.stderr)
                return 1
            try:
                if args.agency_key_command == "show":
                    keys = [key.to_dict() for key in keyring.seal_keys(args.agency)]
                    print(json.dumps({"agency_id": args.agency, "seal_keys": keys}, ensure_ascii=False))
                    return 0
                rotation = keyring.rotate(args.agency)
            except (ZfjlError, OSError) as exc:
                print(f"印章密钥操作失败 / seal key operation failed: {exc}", file=sys.stderr)
                return 1
            # The rotation is an audit row, so a ledger leaf: when the key changed is itself proved.
            write_audit(
                session,
                actor="cli",
                action="agency.seal_key_rotate",
                target_type="agency",
                target_id=args.agency,
                detail={
                    "retired": rotation.retired.verifier.encode(),
                    "current": rotation.current.verifier.encode(),
                    "at": rotation.at.isoformat(),
                },
            )
            session.commit()
    finally:
        engine.dispose()
    print(
        json.dumps(
            {
                "agency_id": args.agency,
                "retired": rotation.retired.to_dict(),
                "current": rotation.current.to_dict(),
            },
            ensure_ascii=False,
        )
    )
    return 0


def cmd_calendar_load(args: argparse.Namespace) -> int:
    """Load a year's official holiday schedule (the JSON of ``POST /api/v1/publicity/calendar``) and
    recount the deadlines it changes (GS-9, GS-11, GS-12); print each change."""
    import json
    from pathlib import Path

    from sqlalchemy.orm import Session

    from server.domain.people.service import Caller
    from server.domain.publicity.schedules import load_schedule, parse_schedule
    from server.errors import ZfjlError
    from server.infra.db import make_engine

    settings = _settings(args)
    try:
        schedule = parse_schedule(json.loads(Path(args.file).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"无法读取节假日安排 / cannot read the schedule: {exc}", file=sys.stderr)
        return 1
    except ZfjlError as exc:
        print(f"节假日安排有误 / bad schedule: {exc.message} / {exc.message_en}", file=sys.stderr)
        return 1
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            # The operator at the console acts as the system administrator; the audit rows say "cli".
            loaded = load_schedule(
                session, Caller(user_id="cli", role="system_admin", agency_id=None), schedule
            )
            session.commit()
    finally:
        engine.dispose()
    print(f"已载入 / loaded {loaded.year} ({loaded.version}): {schedule.source}")
    for change in loaded.changes:
        status = "临时 / provisional" if change.provisional else "正式 / official"
        print(
            f"{change.target} #{change.id}: {change.due_before.isoformat()} -> "
            f"{change.due_after.isoformat()} [{status}] {change.calendar_version}"
        )
    print(f"重算期限 / deadlines recounted: {len(loaded.changes)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="zfjl-server", description="执法全过程记录服务 / zfjl server")
    parser.add_argument("--database-url", help="覆盖 ZFJL_DATABASE_URL / override ZFJL_DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)

    admin = sub.add_parser("create-admin", help="创建系统管理员 / create a system_admin user")
    admin.add_argument("--username", required=True)
    admin.add_argument("--password", help="省略则交互输入 / prompted when omitted")
    admin.set_defaults(func=cmd_create_admin)

    db = sub.add_parser("db", help="数据库 / database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="执行迁移 / apply migrations")
    upgrade.set_defaults(func=cmd_db_upgrade)

    acl = sub.add_parser("broker-acl", help="生成代理密码与 ACL 文件 / write Mosquitto password + ACL files")
    acl.add_argument("--out", required=True, help="输出目录 / output directory")
    acl.set_defaults(func=cmd_broker_acl)

    scrub = sub.add_parser(
        "scrub", help="按签名清单校验存储的证据 / check stored evidence against the signed manifests"
    )
    scrub.add_argument("--device", help="只校验该设备 / only this device")
    scrub.set_defaults(func=cmd_scrub)
    key = sub.add_parser(
        "ingest-key", help="应答签名公钥 (设备固定信任) / the ingest public keys recorders pin"
    )
    key.add_argument("--new", action="store_true", help="生成新密钥用于轮换 / make a new key for rotation")
    key.set_defaults(func=cmd_ingest_key)

    agency_key = sub.add_parser("agency-key", help="机关电子印章密钥 / an agency's seal keys (JL-18)")
    agency_key_sub = agency_key.add_subparsers(dest="agency_key_command", required=True)
    for name, text in (
        ("show", "列出现用与已轮换的公钥 / list the current and retired public keys"),
        (
            "rotate",
            "轮换：启用新密钥，旧公钥继续公布 / rotate: a new key from now, the old one stays published",
        ),
    ):
        command = agency_key_sub.add_parser(name, help=text)
        command.add_argument("--agency", type=int, required=True, help="机关编号 / agency id")
        command.set_defaults(func=cmd_agency_key)

    back = sub.add_parser("backup", help="备份数据库与证据对象 / back up the database and the object store")
    back.add_argument("--out", required=True, help="新的空目录 / a new, empty folder")
    back.set_defaults(func=cmd_backup)
    rest = sub.add_parser(
        "restore", help="恢复到空库并逐段校验 / restore into an empty target, then verify every segment"
    )
    rest.add_argument("--from", dest="source", required=True, help="备份目录 / the backup folder")
    rest.set_defaults(func=cmd_restore, device=None)

    calendar = sub.add_parser("calendar", help="法定节假日安排 / official holiday schedules")
    calendar_sub = calendar.add_subparsers(dest="calendar_command", required=True)
    calendar_load = calendar_sub.add_parser(
        "load", help="载入某年安排并重算期限 / load a year's schedule and recount deadlines"
    )
    calendar_load.add_argument("file", help="JSON 文件（与 API 相同格式）/ JSON file, the API's format")
    calendar_load.set_defaults(func=cmd_calendar_load)

    run = sub.add_parser("run", help="运行服务 / run the server")
    run.add_argument(
        "--roles",
        help="本进程的角色，覆盖 ZFJL_ROLES / roles of this process, overrides ZFJL_ROLES "
        "(comma-separated: api, ingest, workers; default all three)",
    )
    run.add_argument(
        "--ingest-processes",
        type=int,
        help="入库进程数，覆盖 ZFJL_INGEST_PROCESSES / ingest worker processes sharing the broker's "
        "$share group, overrides ZFJL_INGEST_PROCESSES",
    )
    run.add_argument(
        "--ingest-workers",
        type=int,
        help="每个入库进程的连接数，覆盖 ZFJL_INGEST_WORKERS / MQTT connections per ingest process, "
        "overrides ZFJL_INGEST_WORKERS",
    )
    # Internal: an ingest child writes one byte here once its workers have subscribed.
    run.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    # Internal: an ingest child writes its counters to this folder of its runner (server.infra.metrics).
    run.add_argument("--metrics-dir", help=argparse.SUPPRESS)
    run.add_argument("--ingest-index", type=int, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    from server.infra.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"配置错误 / configuration error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
