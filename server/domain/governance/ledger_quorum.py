"""A quorum of witnesses over the ledger's checkpoints (JL-6, JL-23; docs/ledger.md, "Quorum").

A checkpoint the server signed proves only what the server says. It counts as *witnessed* once
``ZFJL_LEDGER_WITNESS_QUORUM`` distinct witnesses of ``ZFJL_LEDGER_WITNESS_KEYS`` cosigned it: each kept an
earlier checkpoint and checked that this one extends it. The stored cosignatures are verified again on every
read, against the witness keys configured now, by the same judge ``zfjl-verify`` uses
(:func:`zfjl_verify.judge_cosignatures`): a row an insider slipped into ``ledger_cosignatures`` counts for
nothing and is shown as forged, a second row of one witness counts once, a witness no longer configured
counts no more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.errors import Invalid
from server.domain.governance.ledger import cosignatures_of
from server.domain.governance.models import LedgerCheckpoint, LedgerCosignature
from zfjl_verify import Checkpoint, CosignerKey, QuorumVerdict, VerifyError, judge_cosignatures

if TYPE_CHECKING:
    from server.infra.config import Settings

__all__ = [
    "WitnessPolicy",
    "WitnessedCheckpoint",
    "judge",
    "latest_witnessed",
    "recent_checkpoints",
]

# How many checkpoints with enough cosignature rows are checked, newest first, for the latest witnessed one:
# a candidate fails only when its stored rows were tampered with, which must not make a public page slow.
_CANDIDATES = 50


@dataclass(frozen=True, kw_only=True)
class WitnessPolicy:
    """The trusted witness keys and how many distinct witnesses make a checkpoint witnessed."""

    witnesses: tuple[CosignerKey, ...]
    quorum: int

    def __post_init__(self) -> None:
        if self.quorum < 1:
            raise Invalid("见证法定数至少为 1", "the witness quorum is at least 1")

    @classmethod
    def parse(cls, keys_text: str, quorum: int) -> WitnessPolicy:
        """The policy from the settings' text (comma-separated vkeys, already checked at start-up)."""
        try:
            keys = tuple(CosignerKey.parse(item) for item in map(str.strip, keys_text.split(",")) if item)
        except VerifyError as exc:
            raise Invalid(exc.message, exc.message_en) from None
        return cls(witnesses=keys, quorum=quorum)

    @classmethod
    def from_settings(cls, settings: Settings) -> WitnessPolicy:
        """``ZFJL_LEDGER_WITNESS_KEYS`` and ``ZFJL_LEDGER_WITNESS_QUORUM``."""
        return cls.parse(settings.ledger_witness_keys, settings.ledger_witness_quorum)

    @property
    def names(self) -> tuple[str, ...]:
        """The distinct trusted witnesses (a witness with a rotated key has two keys, one name)."""
        return tuple(dict.fromkeys(key.name for key in self.witnesses))

    @property
    def reachable(self) -> bool:
        """Whether enough witnesses are configured for the quorum ever to be met."""
        return len(self.names) >= self.quorum


@dataclass(frozen=True, kw_only=True)
class WitnessedCheckpoint:
    """A signed checkpoint with its stored cosignatures judged against the policy."""

    checkpoint: LedgerCheckpoint
    verdict: QuorumVerdict


def _head(row: LedgerCheckpoint) -> Checkpoint:
    """The checkpoint body the cosignatures sign: the note's text, as signed (never the row's columns)."""
    return Checkpoint.parse(row.note.split("\n\n", 1)[0] + "\n")


def _lines_by_size(session: Session, sizes: list[int]) -> dict[int, list[str]]:
    """The stored cosignature lines of each checkpoint size, oldest first, in one query."""
    lines: dict[int, list[str]] = {size: [] for size in sizes}
    if sizes:
        for size, line in session.execute(
            select(LedgerCosignature.tree_size, LedgerCosignature.line)
            .where(LedgerCosignature.tree_size.in_(sizes))
            .order_by(LedgerCosignature.id)
        ):
            lines[size].append(line)
    return lines


def _judged(row: LedgerCheckpoint, lines: list[str], policy: WitnessPolicy) -> WitnessedCheckpoint:
    verdict = judge_cosignatures(_head(row), lines, policy.witnesses, policy.quorum)
    return WitnessedCheckpoint(checkpoint=row, verdict=verdict)


def judge(session: Session, row: LedgerCheckpoint, policy: WitnessPolicy) -> WitnessedCheckpoint:
    """One checkpoint's stored cosignatures, each verified again against the trusted witness keys."""
    return _judged(row, [stored.line for stored in cosignatures_of(session, row.tree_size)], policy)


def recent_checkpoints(
    session: Session, policy: WitnessPolicy, *, limit: int, before: int | None = None
) -> tuple[list[WitnessedCheckpoint], bool]:
    """The newest ``limit`` checkpoints (those smaller than ``before``, if given), each judged, and
    whether older ones remain."""
    query = select(LedgerCheckpoint).order_by(LedgerCheckpoint.tree_size.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(LedgerCheckpoint.tree_size < before)
    rows = list(session.scalars(query))
    shown = rows[:limit]
    lines = _lines_by_size(session, [row.tree_size for row in shown])
    return [_judged(row, lines[row.tree_size], policy) for row in shown], len(rows) > limit


def latest_witnessed(session: Session, policy: WitnessPolicy) -> WitnessedCheckpoint | None:
    """The largest checkpoint a quorum of trusted witnesses cosigned, or None."""
    if not policy.witnesses or not policy.reachable:
        return None
    # Sizes with rows of at least ``quorum`` distinct configured witnesses; the judge then decides.
    sizes = session.scalars(
        select(LedgerCosignature.tree_size)
        .where(LedgerCosignature.witness.in_(policy.names))
        .group_by(LedgerCosignature.tree_size)
        .having(func.count(func.distinct(LedgerCosignature.witness)) >= policy.quorum)
        .order_by(LedgerCosignature.tree_size.desc())
        .limit(_CANDIDATES)
    )
    for size in list(sizes):
        row = session.scalars(select(LedgerCheckpoint).where(LedgerCheckpoint.tree_size == size)).first()
        if row is None:
            continue
        judged = judge(session, row, policy)
        if judged.verdict.met:
            return judged
    return None
