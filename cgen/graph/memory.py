"""Static memory planning: every intermediate gets an offset in one workspace.

Buffers whose lifetimes overlap must not overlap in memory.  Two greedy
placements (microTVM USMP's greedy-by-size and greedy-by-conflicts) are run and
the smaller workspace kept.  In-place reuse (an elementwise op writing over an
input that dies there) is the caller's: it passes the two as one interval.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64


@dataclass(frozen=True)
class Interval:
    """A buffer living from step `start` to step `end` (inclusive)."""
    name: str
    size: int
    start: int
    end: int


@dataclass(frozen=True)
class Plan:
    offsets: dict       # name -> byte offset
    total: int          # workspace bytes
    algorithm: str

    def check(self, intervals) -> None:
        """Raise if two live-at-once buffers overlap (an invariant test helper)."""
        items = [(iv, self.offsets[iv.name]) for iv in intervals]
        for i, (a, oa) in enumerate(items):
            for b, ob in items[i + 1:]:
                if _live_together(a, b) and oa < ob + _round(b.size) and ob < oa + _round(a.size):
                    raise AssertionError(f"{a.name} and {b.name} overlap while both live")


def _round(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _live_together(a: Interval, b: Interval) -> bool:
    return a.start <= b.end and b.start <= a.end


def _place(order, intervals) -> dict:
    placed = []  # (interval, offset)
    offsets = {}
    for iv in order:
        busy = sorted((off, off + _round(other.size)) for other, off in placed
                      if _live_together(iv, other))
        off = 0
        for lo, hi in busy:
            if off + _round(iv.size) <= lo:
                break
            off = max(off, hi)
        offsets[iv.name] = off
        placed.append((iv, off))
    return offsets


def greedy_by_size(intervals) -> Plan:
    order = sorted(intervals, key=lambda iv: (-iv.size, iv.start, iv.name))
    offs = _place(order, intervals)
    return Plan(offs, _total(offs, intervals), "greedy_by_size")


def greedy_by_conflicts(intervals) -> Plan:
    conflicts = {iv.name: sum(_live_together(iv, o) for o in intervals if o is not iv)
                 for iv in intervals}
    order = sorted(intervals, key=lambda iv: (-conflicts[iv.name], -iv.size, iv.name))
    offs = _place(order, intervals)
    return Plan(offs, _total(offs, intervals), "greedy_by_conflicts")


def _total(offsets, intervals) -> int:
    return max((offsets[iv.name] + _round(iv.size) for iv in intervals), default=0)


def plan(intervals) -> Plan:
    """The smaller of the two greedy plans (ties: by size, deterministic)."""
    intervals = list(intervals)
    a = greedy_by_size(intervals)
    b = greedy_by_conflicts(intervals)
    return a if a.total <= b.total else b
