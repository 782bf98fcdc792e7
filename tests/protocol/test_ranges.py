"""Byte range sets: merging, coverage and what is missing."""

from __future__ import annotations

from protocol.ranges import RangeSet


def test_ranges_merge_and_report_missing_parts() -> None:
    held = RangeSet.of([(10, 20), (0, 5), (5, 8), (19, 30)])
    assert held.spans == ((0, 8), (10, 30))
    assert held.missing(40) == ((8, 10), (30, 40))
    assert held.covers(12, 30) and not held.covers(7, 11)
    assert list(held.overlaps(6, 12)) == [(6, 8), (10, 12)]
    assert held.total == 28
    assert RangeSet().missing(3) == ((0, 3),)
    assert RangeSet.of([(0, 3)]).missing(3) == ()
