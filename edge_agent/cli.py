"""Command line: ``zfjl-agent run | status | keygen``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_agent.errors import AgentError

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


def _status(args: argparse.Namespace) -> int:
    from edge_agent.config import AgentConfig
    from edge_agent.outbox import Outbox, OutboxStats

    config = AgentConfig.load(args.config)
    if not config.outbox_path.exists():
        # The agent has never run with this data_dir: nothing recorded yet.
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
        stats, failed = empty, []
    else:
        outbox = Outbox(config.outbox_path, readonly=True)
        try:
            stats = outbox.stats()
            failed = outbox.failed()
        finally:
            outbox.close()
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zfjl-agent``; returns the process exit code."""
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    handlers = {"run": _run, "status": _status, "keygen": _keygen}
    try:
        return handlers[args.command](args)
    except AgentError as exc:
        logger.error("%s", exc)
        return 4 if args.command == "run" else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
