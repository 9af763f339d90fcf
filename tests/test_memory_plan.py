"""Static memory planning: no two live buffers overlap; the plan is no larger than greedy-by-size."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from cgen.graph.memory import Interval, greedy_by_conflicts, greedy_by_size, plan


@st.composite
def lifetimes(draw):
    n = draw(st.integers(1, 25))
    out = []
    for k in range(n):
        a = draw(st.integers(0, 30))
        b = draw(st.integers(a, a + 10))
        out.append(Interval(f"t{k}", draw(st.integers(1, 5000)), a, b))
    return out


@given(lifetimes())
def test_plans_never_overlap_live_buffers(ivs):
    for p in (greedy_by_size(ivs), greedy_by_conflicts(ivs), plan(ivs)):
        p.check(ivs)
        assert all(off % 64 == 0 for off in p.offsets.values())
    assert plan(ivs).total <= greedy_by_size(ivs).total
    # never more than everything side by side, never less than the largest live set
    side_by_side = sum(-(-iv.size // 64) * 64 for iv in ivs)
    assert plan(ivs).total <= side_by_side
    peak = max(sum(-(-iv.size // 64) * 64 for iv in ivs if iv.start <= t <= iv.end) for t in range(41))
    assert plan(ivs).total >= peak


def test_chain_reuses_memory():
    # a chain a -> b -> c -> d: only neighbours are alive together
    ivs = [Interval(n, 1024, i, i + 1) for i, n in enumerate("abcd")]
    p = plan(ivs)
    p.check(ivs)
    assert p.total == 2 * 1024


def test_deterministic():
    ivs = [Interval(f"t{k}", 100 * (k % 3 + 1), k % 4, k % 4 + 2) for k in range(12)]
    assert plan(ivs) == plan(list(ivs))
