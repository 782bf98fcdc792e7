"""The ledger worker signs a checkpoint on its own, a round at a time (JL-6: at least every few minutes)."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask

from server.domain.governance import ledger
from server.infra.db import session_scope
from server.workers.loops import LedgerWorker
from tests.fixtures.evidence import record_evidence


def test_jl6_the_worker_sequences_new_evidence_and_signs_without_being_asked(
    app: Flask, tmp_path: Path
) -> None:
    record_evidence(app, tmp_path / "dev-1", "dev-1", session_id="sess-1", clips=1)
    worker = LedgerWorker(app, interval_s=0.05)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        signed = None
        while signed is None and time.monotonic() < deadline:
            with session_scope(app) as session:
                signed = ledger.latest_checkpoint(session)
                size = signed.tree_size if signed else 0
            time.sleep(0.05)
    finally:
        worker.stop()
    assert signed is not None and size >= 4  # one recording, three session events
    with session_scope(app) as session:
        report = ledger.verify_ledger(session, worker.signer.verifier)
    assert report.ok and report.leaves == size
    # A round with nothing new appends nothing and signs nothing more.
    assert worker.step() == 0
