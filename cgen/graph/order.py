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

EXACT_STATES = 5000


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
        # bit masks over kernels: who writes each root, who reads it
        self.roots = [(self.size[v], 1 << next(i for i in range(self.n) if v in self.writes[i]),
                       sum(1 << i for i in self.readers[v] if i < self.n),
                       self.n in self.readers[v]) for v in self.size]
        self.dep_mask = [sum(1 << j for j in d) for d in self.deps]
        self.out_bytes = [sum(self.size[v] for v in w) for w in self.writes]

    def live_after(self, done: int) -> int:
        """Bytes written by the kernels in `done` (a bit mask) and still to be read."""
        return sum(size for size, w, rd, to_end in self.roots
                   if done & w and (to_end or rd & ~done))

    def step_cost(self, i: int, done: int) -> int:
        return self.live_after(done) + self.out_bytes[i] + self.scratch[i]

    def ready(self, done: int) -> list:
        return [i for i in range(self.n)
                if not done >> i & 1 and self.dep_mask[i] & ~done == 0]

    def peak(self, order) -> int:
        done, peak = 0, 0
        for i in order:
            peak = max(peak, self.step_cost(i, done))
            done |= 1 << i
        return peak


def _exact(p: _Problem):
    """(peak, order) of the best order, or None past EXACT_STATES sets."""
    seen = [0]
    full = (1 << p.n) - 1

    @lru_cache(maxsize=None)
    def best(done: int):
        seen[0] += 1
        if seen[0] > EXACT_STATES:
            raise OverflowError
        if done == full:
            return 0, ()
        out = None
        for i in p.ready(done):
            rest, tail = best(done | 1 << i)
            cand = (max(p.step_cost(i, done), rest), (i,) + tail)
            if out is None or cand[0] < out[0]:
                out = cand
        return out
    try:
        return best(0)
    except OverflowError:
        return None


def _greedy(p: _Problem):
    done, order = 0, []
    while len(order) < p.n:
        i = min(p.ready(done), key=lambda j: (p.step_cost(j, done),
                                              p.live_after(done | 1 << j), j))
        order.append(i)
        done |= 1 << i
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
