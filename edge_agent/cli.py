"""Command line: ``zfjl-agent run | status | retry | session | keygen | self-test``."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edge_agent.errors import AgentError
from protocol.session import BOOKMARK_TYPES, DECLARED_CAUSES

__all__ = ["main"]

logger = logging.getLogger("edge_agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zfjl-agent", description="zfjl body-worn recorder agent")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="record segments and upload them")
    run.add_argument("--config", required=True, type=Path, help="agent TOML config")
    run.add_argument("--simulate", action="store_true", help="synthetic camera and microphone")
    run.add_argument("--segment-seconds", type=float, default=None, help="override segment length")
    run.add_argument(
        "--duration", type=float, default=None, help="record this long, then upload the backlog and exit"
    )
    run.add_argument(
        "--offline-for", type=float, default=0.0, metavar="S", help="do not connect MQTT for S seconds"
    )

    status = sub.add_parser("status", help="print the outbox state as JSON (safe while the agent runs)")
    status.add_argument("--config", required=True, type=Path)

    retry = sub.add_parser("retry", help="put a segment the server refused back in the upload queue")
    retry.add_argument("--config", required=True, type=Path)
    retry.add_argument("--sequence", required=True, type=int, help="the failed segment's sequence number")

    session = sub.add_parser("session", help="drive the running agent's enforcement session (JL-16)")
    session.add_argument("--config", required=True, type=Path)
    session.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the agent")
    actions = session.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="arrival: start the session")
    start.add_argument("--officer", default="", help="officer id (default: the config's officer_id)")
    start.add_argument("--case", default="", help="case id")
    start.add_argument("--note", default="")
    end = actions.add_parser("end", help="the enforcement is over")
    end.add_argument("--note", default="")
    bookmark = actions.add_parser("bookmark", help="tag this moment (JL-15)")
    bookmark.add_argument("--type", required=True, choices=sorted(BOOKMARK_TYPES))
    bookmark.add_argument("--note", default="")
    interrupt = actions.add_parser("interrupt", help="stop recording for a declared reason")
    interrupt.add_argument("--reason", required=True, choices=sorted(DECLARED_CAUSES))
    interrupt.add_argument("--note", default="")
    actions.add_parser("resume", help="resume after a declared interruption")
    actions.add_parser("skip", help="give no spoken explanation (recorded as missing)")
    actions.add_parser("status", help="the session's state")

    sub.add_parser("self-test", help="import the agent and answer (the health check after an update)")

    keygen = sub.add_parser("keygen", help="generate an Ed25519 device key (PEM, mode 0600)")
    keygen.add_argument("--out", required=True, type=Path)
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        # paho logs nothing by default; keep third parties quiet in any case.
        logging.getLogger("paho").setLevel(logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    from edge_agent.app import AgentApp
    from edge_agent.config import AgentConfig

    for name in ("segment_seconds", "duration"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise AgentError(f"--{name.replace('_', '-')} must be positive")
    if args.offline_for < 0:
        raise AgentError("--offline-for must not be negative")
    config = AgentConfig.load(args.config)
    app = AgentApp(
        config, simulate=args.simulate, segment_seconds=args.segment_seconds, offline_for=args.offline_for
    )
    return app.run(args.duration)


_STATUS_TRIES = 10


def _outbox_has_no_tables(path: Path) -> bool:
    """Whether the outbox file holds no journal yet (its agent is still creating it)."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT 1 FROM sqlite_master WHERE name='segments'").fetchone() is None
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def _status(args: argparse.Namespace) -> int:
    from edge_agent.config import AgentConfig
    from edge_agent.outbox import Outbox, OutboxStats

    config = AgentConfig.load(args.config)
    empty = OutboxStats(
        segments_recorded=0,
        segments_pending=0,
        segments_complete=0,
        segments_failed=0,
        backlog_bytes=0,
        oldest_pending_age_s=None,
        last_sequence=None,
        files_deleted=0,
    )
    stats, failed = empty, []  # the agent has never run with this data_dir: nothing recorded yet
    # The agent may be creating its outbox right now: the file exists before its tables do. That is
    # "nothing recorded yet", not an error; anything else still fails after a short retry.
    for attempt in range(_STATUS_TRIES):
        if not config.outbox_path.exists():
            break
        try:
            outbox = Outbox(config.outbox_path, readonly=True)
            try:
                stats = outbox.stats()
                failed = outbox.failed()
            finally:
                outbox.close()
            break
        except sqlite3.OperationalError:
            if attempt == _STATUS_TRIES - 1:
                if _outbox_has_no_tables(config.outbox_path):
                    break
                raise
            time.sleep(0.2)
    report: dict[str, object] = {
        "device_id": config.device_id,
        "outbox": str(config.outbox_path),
        "outbox_exists": config.outbox_path.exists(),
        **stats.to_dict(),
        # Crash leftovers with nothing playable: kept for inspection, never deleted (JL-19).
        "unrecoverable_files": sorted(p.name for p in config.segment_dir.glob("*.unrecoverable")),
    }
    report["failed"] = [
        {"sequence": seg.sequence, "code": seg.error_code, "message": seg.error_message} for seg in failed
    ]
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


def _session(args: argparse.Namespace) -> int:
    from edge_agent.config import AgentConfig
    from edge_agent.session import send_control_command

    config = AgentConfig.load(args.config)
    command: dict[str, object] = {"action": args.action, "note": getattr(args, "note", "")}
    if args.action == "start":
        command.update(officer_id=args.officer, case_id=args.case)
    elif args.action == "bookmark":
        command["type"] = args.type
    elif args.action == "interrupt":
        command["reason"] = args.reason
    reply = send_control_command(config.data_dir, command, timeout=args.timeout)
    print(json.dumps(reply, ensure_ascii=False))
    return 0 if reply.get("ok") else 1


def _keygen(args: argparse.Namespace) -> int:
    from edge_agent.keys import generate_private_key, public_key_raw, save_private_key
    from protocol.manifest import public_key_fingerprint

    key = generate_private_key()
    save_private_key(key, args.out, overwrite=args.force)
    raw = public_key_raw(key)
    print(
        json.dumps(
            {
                "key_file": str(args.out),
                "public_key_hex": raw.hex(),
                "fingerprint": public_key_fingerprint(raw),
            }
        )
    )
    return 0


def _self_test(args: argparse.Namespace) -> int:
    """Import every part the agent runs with and say from where: a broken update fails here."""
    import edge_agent
    import edge_agent.app
    import edge_agent.commands
    import edge_agent.updater

    answer = {
        "ok": True,
        "version": edge_agent.updater.running_version(),
        "path": str(Path(edge_agent.__file__).resolve().parent),
        "modules": [edge_agent.app.__name__, edge_agent.commands.__name__],
    }
    print(json.dumps(answer))
    return 0


def _retry(args: argparse.Namespace) -> int:
    """Set a ``failed`` segment back to ``pending``; JSON on stdout; unknown or not failed is an error."""
    from edge_agent.config import AgentConfig
    from edge_agent.outbox import Outbox

    config = AgentConfig.load(args.config)
    if not config.outbox_path.exists():
        raise AgentError(f"no outbox at {config.outbox_path}: nothing was recorded with this config")
    outbox = Outbox(config.outbox_path)
    try:
        segment = outbox.get(args.sequence)
        if segment is None:
            raise AgentError(f"segment {args.sequence} is not in the outbox")
        if segment.state != "failed":
            raise AgentError(
                f"segment {args.sequence} is {segment.state}, not failed: only refused ones can be retried"
            )
        outbox.retry_failed(args.sequence)
        # Read back: the update only applies to a failed row, so this reports what really happened.
        after = outbox.get(args.sequence)
    finally:
        outbox.close()
    state = after.state if after is not None else "missing"
    print(
        json.dumps(
            {
                "device_id": config.device_id,
                "sequence": args.sequence,
                "state": state,
                "previous_error_code": segment.error_code,
                "previous_error_message": segment.error_message,
            }
        )
    )
    return 0 if state == "pending" else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zfjl-agent``; returns the process exit code."""
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    handlers = {
        "run": _run,
        "status": _status,
        "retry": _retry,
        "keygen": _keygen,
        "session": _session,
        "self-test": _self_test,
    }
    try:
        return handlers[args.command](args)
    except AgentError as exc:
        logger.error("%s", exc)
        return 4 if args.command == "run" else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
