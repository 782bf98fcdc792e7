"""One simulated recorder for ``bench/ingest.py``: drains a prepared outbox through the real uploader.

Run as ``python -m bench._upload_agent CONFIG.toml``. It connects, prints ``{"event": "ready"}``,
waits for a ``go`` line on stdin, drains the outbox and prints its own CPU seconds and counters.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from bench._procutil import emit
from edge_agent.config import AgentConfig
from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox
from edge_agent.uploader import Uploader
from protocol.messages import TransferAck


def main() -> int:
    """Connect, wait for ``go``, upload everything pending, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="agent TOML config")
    parser.add_argument("--timeout", type=float, default=600.0, help="drain timeout in seconds")
    parser.add_argument("--max-active", type=int, default=2, help="concurrent segment transfers")
    parser.add_argument(
        "--max-awaiting",
        type=int,
        default=None,
        help="transfers waiting only for complete, besides the active ones (default: --max-active)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="agent %(levelname)s %(name)s: %(message)s")
    config = AgentConfig.load(args.config)
    outbox = Outbox(config.outbox_path)
    holder: list[Uploader] = []

    def on_ack(ack: TransferAck) -> None:
        holder[0].on_ack(ack)

    def on_connected() -> None:
        if holder:
            holder[0].on_connected()

    link = MqttLink(config, on_ack=on_ack, on_connected=on_connected)
    uploader = Uploader(outbox, link, config, max_active=args.max_active, max_awaiting=args.max_awaiting)
    holder.append(uploader)
    link.connect()
    if not link.wait_connected(30):
        emit(event="error", message=f"{config.device_id}: not connected to {config.mqtt_url}")
        return 1
    pending = outbox.stats().segments_pending
    emit(event="ready", device_id=config.device_id, pending=pending)
    if sys.stdin.readline().strip() != "go":
        return 1
    cpu0, t0 = time.process_time(), time.monotonic()
    uploader.start()
    ok = uploader.drain(args.timeout)
    t1, cpu1 = time.monotonic(), time.process_time()
    stats = uploader.stats()
    outbox_stats = outbox.stats()
    emit(
        event="done",
        device_id=config.device_id,
        ok=ok,
        t_start=t0,
        t_done=t1,
        cpu_s=cpu1 - cpu0,
        bytes_sent=stats.bytes_sent,
        chunks_sent=stats.chunks_sent,
        chunks_resent=stats.chunks_resent,
        segments_completed=stats.segments_completed,
        segments_failed=stats.segments_failed,
        pending=outbox_stats.segments_pending,
        reconnects=link.disconnects,
    )
    uploader.stop()
    link.close()
    outbox.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
