"""Static memory planning: every intermediate gets an offset in one workspace.

Buffers whose lifetimes overlap must not overlap in memory.  Two greedy
placements (microTVM USMP's greedy-by-size and greedy-by-conflicts) are run and
the smaller workspace kept.

`storage` says which values share a buffer before any placement: an alias kernel
(reshape) writes nothing, its output is its input's buffer; an elementwise kernel
writes over a same-sized input that dies there (in place); a kernel producing a
graph output writes into the caller's buffer; a concat whose parts are contiguous
ranges of its output (`concat_views`) has its parts written in place by their
producers, and a split's parts are read as ranges of its input (`split_views`), where
the plan does not grow (`choose_views`).  `lifetimes` turns that into the
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


class Roots:
    """name -> the value owning its buffer (`r(name)`), and the byte offset of the name's
    bytes in that buffer (`r.offset(name)`: 0 but for the parts of a concat or split
    made in place).  `views` maps such a concat's output to its first and last producer
    steps; `skipped` names the concat and split kernels not run."""

    def __init__(self):
        self.link = {}          # name -> (the name holding it, byte offset there)
        self.views = {}         # concat output -> (first, last) step writing a part
        self.skipped = set()

    def __call__(self, name: str) -> str:
        while name in self.link:
            name = self.link[name][0]
        return name

    def offset(self, name: str) -> int:
        off = 0
        while name in self.link:
            name, o = self.link[name]
            off += o
        return off


def storage(graph, kernels: list, values: dict, in_place: bool = False, views=None):
    """Roots, storage and lifetimes of the kernels' values (in call order).

    Returns (root, produced, out_bind, copies, reads): root (a `Roots`) maps a name to
    the value owning its buffer, produced maps a root to the step writing it, out_bind a
    root to the graph output index it is written into, copies lists (output index, source
    root) made at the end, reads a root to the last step reading it.  With `in_place`, an
    elementwise kernel's output takes the buffer of an input that dies at its step.
    `views` (from `concat_views` and `split_views`: kernel name -> its parts and their byte
    offsets) are concats and splits made in place, their kernels not run: a concat's part
    is its producer's output placed in the concat's buffer, which lives from the first
    part's producer on; a split's part is its range of the split's input."""
    views = views or {}
    r = Roots()
    link = r.link
    r.skipped.update(views)
    for k in kernels:
        if k.is_alias:
            link[k.outputs[0]] = (k.inputs[0].name, 0)
    produced = {}
    for step, k in enumerate(kernels):
        if not k.is_alias and k.name not in views:
            for v in k.outputs:
                produced[v] = step
    for k in kernels:
        if k.name not in views:
            continue
        if k.group.nodes[0].op == "split":
            for x, off in views[k.name]:
                link[x] = (k.inputs[0].name, off)
            continue
        steps = [produced[x] for x, _ in views[k.name]]
        r.views[k.outputs[0]] = (min(steps), max(steps))
        produced[k.outputs[0]] = min(steps)
        for x, off in views[k.name]:
            link[x] = (k.outputs[0], off)
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
            if not k.is_alias and k.name not in views:
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
            if out is None or out in graph_out or out in link or r(out) in out_bind:
                continue
            for name in _in_place_ok(k, values):
                src = r(name)
                if (src in produced and produced[src] < step and src not in out_bind
                        and reads.get(src) == step):
                    link[out] = (name, 0)     # the same bytes as the input (a concat's part)
                    bind()
                    reads = last_reads()
                    break
    return r, produced, out_bind, copies, reads


# ====================================================================== concats and splits in place
def concat_views(graph, kernels: list, values: dict) -> dict:
    """The concat kernels whose parts may be written straight into the concat's buffer:
    concat kernel name -> ((part, byte offset), ...).

    A concat qualifies when it is a kernel of its own (no fused op), every dim before its
    axis is 1 (each part is one contiguous range of the output), its output is no graph
    output, and each part is the one output of a kernel writing its own buffer (not a
    graph input, constant, graph output, alias, loop or another concat written in place),
    read by no alias and a part of no other concat written in place."""
    made = {v: k for k in kernels for v in k.outputs}
    graph_io = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    viewed = {a.name for k in kernels if k.is_alias for a in k.inputs}
    out, claimed = {}, set()
    for k in kernels:
        nodes = k.group.nodes
        if k.is_alias or len(nodes) != 1 or nodes[0].op != "concat" or len(k.outputs) != 1:
            continue
        node, c = nodes[0], k.outputs[0]
        shape = tuple(values[c].shape)
        axis = node.attr("axis") % len(shape)
        parts = [v.name for v in node.inputs]
        if (c in graph_io or c in viewed or any(d != 1 for d in shape[:axis])
                or len(set(parts)) != len(parts) or any(a.kind != "value" for a in k.inputs)):
            continue
        ok = True
        for x in parts:
            p = made.get(x)
            ok = ok and not (x in graph_io or x in graph.constants or x in viewed
                             or x in claimed or p is None or p.is_alias or p.name in out
                             or getattr(p, "body", None) is not None or len(p.outputs) != 1
                             or values[x].dtype != values[c].dtype)
        if not ok:
            continue
        offs, off = [], 0
        for x in parts:
            offs.append((x, off))
            off += values[x].nbytes
        if off != values[c].nbytes:
            continue
        claimed.update(parts)
        out[k.name] = tuple(offs)
    return out


def split_views(graph, kernels: list, values: dict, concats: dict) -> dict:
    """The split kernels whose parts may be read in place, as ranges of the split's input:
    split kernel name -> ((part, byte offset), ...).  As for a concat (`concat_views`,
    whose choices `concats` are): a kernel of its own, every dim before the axis 1, and
    its input and parts none of the graph's inputs or outputs, read by no alias, and no
    concat's part or output in place; its input is written by a kernel of its own."""
    made = {v: k for k in kernels for v in k.outputs}
    graph_io = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    viewed = {a.name for k in kernels if k.is_alias for a in k.inputs}
    taken = {x for parts in concats.values() for x, _ in parts}
    taken |= {k.outputs[0] for k in kernels if k.name in concats}
    out = {}
    for k in kernels:
        nodes = k.group.nodes
        if k.is_alias or len(nodes) != 1 or nodes[0].op != "split" or len(k.inputs) != 1:
            continue
        node, whole = nodes[0], k.inputs[0].name
        shape = tuple(values[whole].shape)
        axis = node.attr("axis") % len(shape)
        parts = [v.name for v in node.outputs]
        p = made.get(whole)
        if (k.inputs[0].kind != "value" or whole != node.inputs[0].name or p is None
                or p.is_alias or p.name in out or getattr(p, "body", None) is not None
                or any(d != 1 for d in shape[:axis])
                or any(x in graph_io or x in viewed or x in taken for x in [whole, *parts])):
            continue
        offs, off = [], 0
        for x in parts:
            offs.append((x, off))
            off += values[x].nbytes
        out[k.name] = tuple(offs)
    return out


def choose_views(graph, kernels: list, values: dict, candidates: dict, scratch: dict,
                 in_place: bool = False, align: int = ALIGN) -> dict:
    """The candidate concats and splits made in place whose plan needs no more workspace
    than copying them (all of them when that holds, else each kept only where the plan
    does not grow): a concat's buffer lives from its first part's producer on, a split's
    input until its last part's last reader, so in place can cost bytes while a long
    branch runs beside them."""
    def total(chosen):
        ivs = lifetimes(kernels, values, storage(graph, kernels, values, in_place, chosen),
                        scratch)
        return plan(ivs, align).total if ivs else 0
    if not candidates:
        return {}
    base = total({})
    if total(candidates) <= base:
        return dict(candidates)
    chosen = {}
    for name, parts in candidates.items():
        t = total({**chosen, name: parts})
        if t <= base:
            chosen[name], base = parts, t
    return chosen


def lifetimes(kernels: list, values: dict, store, scratch: dict) -> list:
    """The intervals to place: a buffer per root written by a kernel (graph outputs are
    the caller's), and each kernel's scratch (`scratch`: kernel name -> bytes) for its
    own step."""
    r, _, out_bind, _, reads = store
    intervals = []
    for step, k in enumerate(kernels):
        if k.is_alias:
            continue
        if k.outputs and k.outputs[0] in r.views:      # a concat written in place
            v = k.outputs[0]
            first, last = r.views[v]
            intervals.append(Interval(f"v:{v}", values[v].nbytes, first,
                                      max(last, reads.get(v, last))))
        if k.name in r.skipped:
            continue
        for v in k.outputs:
            if v in out_bind or r(v) != v:
                continue
            intervals.append(Interval(f"v:{v}", values[v].nbytes, step,
                                      max(step, reads.get(v, step))))
        if scratch.get(k.name):
            intervals.append(Interval(f"s:{k.name}", scratch[k.name], step, step))
    return intervals
