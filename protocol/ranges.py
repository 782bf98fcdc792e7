"""Sets of half-open byte ranges ``[start, end)``: what a server holds of a file."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from protocol.errors import LocalProtocolError

__all__ = ["RangeSet"]


@dataclass(frozen=True)
class RangeSet:
    """An immutable, normalised (sorted, merged) set of byte ranges."""

    spans: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, spans: Iterable[tuple[int, int]]) -> RangeSet:
        """Build a normalised set from any ranges (overlapping or touching ones are merged)."""
        items = sorted((int(s), int(e)) for s, e in spans)
        merged: list[tuple[int, int]] = []
        for start, end in items:
            if start < 0 or end < start:
                raise LocalProtocolError(f"bad range [{start}, {end})")
            if start == end:
                continue
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return cls(tuple(merged))

    def add(self, start: int, end: int) -> RangeSet:
        """This set with ``[start, end)`` added."""
        return RangeSet.of((*self.spans, (start, end)))

    def covers(self, start: int, end: int) -> bool:
        """Whether every byte of ``[start, end)`` is in the set."""
        if start >= end:
            return True
        return any(s <= start and end <= e for s, e in self.spans)

    def overlaps(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The parts of ``[start, end)`` that are already in the set."""
        for s, e in self.spans:
            lo, hi = max(s, start), min(e, end)
            if lo < hi:
                yield (lo, hi)

    def missing(self, size: int) -> tuple[tuple[int, int], ...]:
        """The ranges of ``[0, size)`` not in the set."""
        gaps: list[tuple[int, int]] = []
        cursor = 0
        for s, e in self.spans:
            if s >= size:
                break
            if s > cursor:
                gaps.append((cursor, s))
            cursor = max(cursor, e)
        if cursor < size:
            gaps.append((cursor, size))
        return tuple(gaps)

    @property
    def total(self) -> int:
        """How many bytes the set holds."""
        return sum(e - s for s, e in self.spans)

    def to_json(self) -> list[list[int]]:
        """JSON form: a list of ``[start, end]`` pairs."""
        return [[s, e] for s, e in self.spans]
