"""Static memory planning: every intermediate gets an offset in one workspace.

Buffers whose lifetimes overlap must not overlap in memory.  Two greedy
placements (microTVM USMP's greedy-by-size and greedy-by-conflicts) are run and
the smaller workspace kept.

`storage` says which values share a buffer before any placement: an alias kernel
(reshape) writes nothing, its output is its input's buffer; an elementwise kernel
writes over a same-sized input that dies there (in place); a kernel producing a
graph output writes into the caller's buffer.  `lifetimes` turns that into the
intervals the planner places: one per buffer from the step writing it to the last
step reading it, and one per kernel scratch (im2col, packing) for its own step.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64
SMALL_ALIGN = 16    # bare-metal targets: no cache lines to keep buffers apart


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
    align: int = ALIGN

    def check(self, intervals) -> None:
        """Raise if two live-at-once buffers overlap (an invariant test helper)."""
        items = [(iv, self.offsets[iv.name]) for iv in intervals]
        for i, (a, oa) in enumerate(items):
            for b, ob in items[i + 1:]:
                if _live_together(a, b) and oa < ob + _round(b.size, self.align) \
                        and ob < oa + _round(a.size, self.align):
                    raise AssertionError(f"{a.name} and {b.name} overlap while both live")


def _round(n: int, align: int = ALIGN) -> int:
    return -(-n // align) * align


def _live_together(a: Interval, b: Interval) -> bool:
    return a.start <= b.end and b.start <= a.end


def _place(order, align: int = ALIGN) -> dict:
    placed = []  # (interval, offset)
    offsets = {}
    for iv in order:
        busy = sorted((off, off + _round(other.size, align)) for other, off in placed
                      if _live_together(iv, other))
        off = 0
        for lo, hi in busy:
            if off + _round(iv.size, align) <= lo:
                break
            off = max(off, hi)
        offsets[iv.name] = off
        placed.append((iv, off))
    return offsets


def greedy_by_size(intervals, align: int = ALIGN) -> Plan:
    order = sorted(intervals, key=lambda iv: (-iv.size, iv.start, iv.name))
    offs = _place(order, align)
    return Plan(offs, _total(offs, intervals, align), "greedy_by_size", align)


def greedy_by_conflicts(intervals, align: int = ALIGN) -> Plan:
    conflicts = {iv.name: sum(_live_together(iv, o) for o in intervals if o is not iv)
                 for iv in intervals}
    order = sorted(intervals, key=lambda iv: (-conflicts[iv.name], -iv.size, iv.name))
    offs = _place(order, align)
    return Plan(offs, _total(offs, intervals, align), "greedy_by_conflicts", align)


def _total(offsets, intervals, align: int = ALIGN) -> int:
    return max((offsets[iv.name] + _round(iv.size, align) for iv in intervals), default=0)


def plan(intervals, align: int = ALIGN) -> Plan:
    """The smaller of the two greedy plans (ties: by size, deterministic)."""
    intervals = list(intervals)
    a = greedy_by_size(intervals, align)
    b = greedy_by_conflicts(intervals, align)
    return a if a.total <= b.total else b


def peak_live(intervals, steps: int) -> int:
    """The most bytes live at one step: no placement can use less."""
    return max((sum(iv.size for iv in intervals if iv.start <= t <= iv.end)
                for t in range(steps + 1)), default=0)


# ====================================================================== storage
def _in_place_ok(k, values: dict) -> tuple:
    """Inputs the kernel may overwrite with its output: an elementwise chain (every node
    pointwise or broadcasting) reads each input element at its own output index only, so
    an input of the output's shape and element size may be the output's buffer."""
    from .opset import BROADCAST, ELEMWISE, OP_PATTERNS
    if k.is_alias or k.group.kind != "injective" or len(k.outputs) != 1 or not all(
            OP_PATTERNS.get(n.op) in (ELEMWISE, BROADCAST) for n in k.group.nodes):
        return ()
    out = values[k.outputs[0]]
    return tuple(a.name for a in k.inputs if a.kind == "value"
                 and tuple(values[a.name].shape) == tuple(out.shape)
                 and values[a.name].nbytes == out.nbytes)


def storage(graph, kernels: list, values: dict, in_place: bool = False):
    """Roots, storage and lifetimes of the kernels' values (in call order).

    Returns (root, produced, out_bind, copies, reads): root(name) is the value owning
    the name's buffer, produced maps a root to the step writing it, out_bind a root to
    the graph output index it is written into, copies lists (output index, source root)
    made at the end, reads a root to the last step reading it.  With `in_place`, an
    elementwise kernel's output takes the buffer of an input that dies at its step."""
    link = {}
    for k in kernels:
        if k.is_alias:
            link[k.outputs[0]] = k.inputs[0].name

    def r(name):
        while name in link:
            name = link[name]
        return name
    produced = {}
    for step, k in enumerate(kernels):
        if not k.is_alias:
            for v in k.outputs:
                produced[v] = step
    graph_out = {v.name for v in graph.outputs}
    out_bind, copies = {}, []

    def bind():
        out_bind.clear()
        copies.clear()
        for j, v in enumerate(graph.outputs):
            src = r(v.name)
            if src in produced and src not in out_bind:
                out_bind[src] = j
            else:
                copies.append((j, src))

    def last_reads():
        rd = {}
        for step, k in enumerate(kernels):
            if not k.is_alias:
                for a in k.inputs:
                    if a.kind == "value":
                        rd[r(a.name)] = max(rd.get(r(a.name), -1), step)
        for _, src in copies:
            rd[src] = len(kernels)
        return rd
    bind()
    reads = last_reads()
    if in_place:
        for step, k in enumerate(kernels):
            out = k.outputs[0] if k.outputs else None
            if out is None or out in graph_out or r(out) in out_bind:
                continue
            for name in _in_place_ok(k, values):
                src = r(name)
                if (src in produced and produced[src] < step and src not in out_bind
                        and reads.get(src) == step):
                    link[out] = src
                    bind()
                    reads = last_reads()
                    break
    return r, produced, out_bind, copies, reads


def lifetimes(kernels: list, values: dict, store, scratch: dict) -> list:
    """The intervals to place: a buffer per root written by a kernel (graph outputs are
    the caller's), and each kernel's scratch (`scratch`: kernel name -> bytes) for its
    own step."""
    r, _, out_bind, _, reads = store
    intervals = []
    for step, k in enumerate(kernels):
        if k.is_alias:
            continue
        for v in k.outputs:
            if v in out_bind or r(v) != v:
                continue
            intervals.append(Interval(f"v:{v}", values[v].nbytes, step,
                                      max(step, reads.get(v, step))))
        if scratch.get(k.name):
            intervals.append(Interval(f"s:{k.name}", scratch[k.name], step, step))
    return intervals
