"""``zfjl-fw``: provision recorders; build, sign and verify signed update bundles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from firmware_tools.bundle import add_bundle_commands, run_bundle_command
from firmware_tools.provision import ProvisionError, ProvisionPending, provision

__all__ = ["main"]


def _cmd_provision(args: argparse.Namespace) -> int:
    try:
        result = provision(
            server_url=args.server,
            token=args.token,
            device_id=args.device_id,
            out_dir=Path(args.out),
            mqtt_url=args.mqtt_url,
            serial=args.serial,
            model=args.model,
        )
    except ProvisionPending as exc:
        print(f"waiting for approval / 等待管理员审批: {exc}", file=sys.stderr)
        return 3
    except ProvisionError as exc:
        print(f"provisioning failed / 注册失败: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "device_id": result.device_id,
                "config": str(result.config_path),
                "key_fingerprint": result.key_fingerprint,
            },
            ensure_ascii=False,
        )
    )
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    return run_bundle_command(args)


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = argparse.ArgumentParser(prog="zfjl-fw", description="zfjl device tools / 记录仪工具")
    commands = parser.add_subparsers(dest="command", required=True)
    prov = commands.add_parser("provision", help="make a device key, register it, write the agent config")
    prov.add_argument("--server", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    prov.add_argument(
        "--token", default=None, help="access token of a device admin; without it, --serial asks to join"
    )
    prov.add_argument("--device-id", required=True)
    prov.add_argument("--out", required=True, help="folder for the key and agent.toml")
    prov.add_argument("--mqtt-url", default=None, help="broker URL the device should use")
    prov.add_argument("--serial", default=None, help="serial number (allow-listed = approved at once)")
    prov.add_argument("--model", default=None)
    prov.set_defaults(func=_cmd_provision)
    bundle = commands.add_parser("bundle", help="signed agent update bundles / 签名升级包")
    bundle.set_defaults(func=_cmd_bundle)
    add_bundle_commands(bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``zfjl-fw``."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
