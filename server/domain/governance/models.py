"""Tables of the evidence ledger: its leaves and the checkpoints the server signed (JL-6, JL-23).

Both are append-only: migration 0016 gives them triggers that refuse UPDATE and DELETE, like the
evidence tables. A leaf's ``data`` is the canonical JSON of the row it stands for; its ``leaf_hash`` is
the RFC 9162 leaf hash of those bytes, so anyone holding the data can recompute it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["LedgerCheckpoint", "LedgerCosignature", "LedgerLeaf"]


class LedgerLeaf(Base):
    """One fact in the ledger: which row of which append-only table, and the exact bytes hashed."""

    __tablename__ = "ledger_leaves"
    # A row becomes a leaf once: a second sequencer racing the first fails here instead of duplicating.
    __table_args__ = (UniqueConstraint("ref_table", "ref_id", name="uq_ledger_leaves_ref"),)

    leaf_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    kind: Mapped[str] = mapped_column(String(32))
    ref_table: Mapped[str] = mapped_column(String(64))
    ref_id: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[str] = mapped_column(Text)
    sequenced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerCheckpoint(Base):
    """A signed tree head (C2SP tlog-checkpoint in a signed note) as the server issued it."""

    __tablename__ = "ledger_checkpoints"
    # Two processes signing the same head at once: one insert fails instead of two rows for one size.
    __table_args__ = (UniqueConstraint("tree_size", name="uq_ledger_checkpoints_tree_size"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    origin: Mapped[str] = mapped_column(String(255))
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class LedgerCosignature(Base):
    """A witness's cosignature of one checkpoint (c2sp.org/tlog-cosignature), as the witness sent it.

    Append-only (migration 0024). Verified against a configured witness key before it is stored; the
    ``line`` is the note signature line a reader appends to the checkpoint's note to check it again.
    """

    __tablename__ = "ledger_cosignatures"
    __table_args__ = (UniqueConstraint("tree_size", "witness", name="uq_ledger_cosignatures_size_witness"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    witness: Mapped[str] = mapped_column(String(255))
    cosigned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    line: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
