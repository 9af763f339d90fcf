"""The order kernels run in: independent branches ordered to minimise the peak of live
workspace bytes.

    kernels = best_order(graph, kernels, values, scratch)   # a topological order

The cost of an order is the largest, over its steps, of the bytes live while a kernel
runs: the buffers written earlier and still to be read, the kernel's outputs and its
scratch (graph inputs and outputs are the caller's and not counted; an alias kernel
costs nothing).  For graphs with few orders (memoised over the sets of kernels already
run, up to `EXACT_STATES` of them) the search is exact; otherwise a greedy walk runs
next the ready kernel whose step costs least, then the one leaving least live.  The
given order is kept unless another is strictly better, so the result never costs more.
"""
from __future__ import annotations

from functools import lru_cache

from .memory import storage

EXACT_STATES = 20000


class _Problem:
    def __init__(self, graph, kernels, values, scratch):
        r, _, out_bind, copies, _ = storage(graph, kernels, values)
        self.n = len(kernels)
        producer = {}
        for i, k in enumerate(kernels):
            for v in k.outputs:
                producer[v] = i
        self.deps = []
        for k in kernels:
            self.deps.append(frozenset(producer[a.name] for a in k.inputs
                                       if a.kind == "value" and a.name in producer))
        self.size = {}          # root -> bytes (roots living in the workspace)
        self.writes = []        # kernel -> roots it creates
        for i, k in enumerate(kernels):
            ws = []
            if not k.is_alias:
                for v in k.outputs:
                    if v not in out_bind and r(v) == v:
                        self.size[v] = values[v].nbytes
                        ws.append(v)
            self.writes.append(tuple(ws))
        self.readers = {v: set() for v in self.size}
        for i, k in enumerate(kernels):
            if not k.is_alias:
                for a in k.inputs:
                    if a.kind == "value" and r(a.name) in self.readers:
                        self.readers[r(a.name)].add(i)
        for _, src in copies:       # copied into an output at the end: live to the end
            if src in self.readers:
                self.readers[src].add(self.n)
        self.scratch = [0 if k.is_alias else scratch.get(k.name, 0) for k in kernels]

    def live_after(self, done: frozenset) -> int:
        return sum(s for v, s in self.size.items()
                   if any(v in self.writes[i] for i in done) and not self.readers[v] <= done)

    def step_cost(self, i: int, done: frozenset) -> int:
        return (self.live_after(done) + sum(self.size[v] for v in self.writes[i])
                + self.scratch[i])

    def ready(self, done: frozenset) -> list:
        return [i for i in range(self.n) if i not in done and self.deps[i] <= done]

    def peak(self, order) -> int:
        done, peak = frozenset(), 0
        for i in order:
            peak = max(peak, self.step_cost(i, done))
            done = done | {i}
        return peak


def _exact(p: _Problem):
    """(peak, order) of the best order, or None past EXACT_STATES sets."""
    seen = [0]

    @lru_cache(maxsize=None)
    def best(done: frozenset):
        seen[0] += 1
        if seen[0] > EXACT_STATES:
            raise OverflowError
        if len(done) == p.n:
            return 0, ()
        out = None
        for i in p.ready(done):
            rest, tail = best(done | {i})
            cand = (max(p.step_cost(i, done), rest), (i,) + tail)
            if out is None or cand[0] < out[0]:
                out = cand
        return out
    try:
        return best(frozenset())
    except OverflowError:
        return None


def _greedy(p: _Problem):
    done, order = frozenset(), []
    while len(done) < p.n:
        i = min(p.ready(done), key=lambda j: (p.step_cost(j, done),
                                              p.live_after(done | {j}), j))
        order.append(i)
        done = done | {i}
    return p.peak(order), tuple(order)


def best_order(graph, kernels: list, values: dict, scratch: dict) -> list:
    """The kernels in the order (topological) with the least peak of live bytes."""
    if len(kernels) < 3:
        return list(kernels)
    p = _Problem(graph, kernels, values, scratch)
    given = tuple(range(p.n))
    found = _exact(p) or _greedy(p)
    if found[0] < p.peak(given):
        return [kernels[i] for i in found[1]]
    return list(kernels)
