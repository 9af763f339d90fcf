"""Loop-IR ("itervar") features of a tuning candidate, without compiling it.

AutoTVM's itervar features: lower the scheduled nest WITHOUT unrolling or
vectorizing (`lower(..., optimize=False)`: every loop keeps the kind its
schedule recorded, tail guards stay `if`s around constant-extent loops,
tensorized loops stay loops) and describe, loop by loop, the nest that matters.

The nest that matters ("main path") is the chain of loops enclosing the most
expensive leaf statement: cost = executed iterations x (float and integer value
operations + memory accesses; index arithmetic and comparisons in conditions,
such as a padding select's bounds checks, do not count); ties go to the deeper
statement, then to the first in program order.  Other nests (packing, init,
write-back) show up through the body aggregates of the loops they share with
the main path and through the whole-program numbers.

Layout of the vector, `feature_length(L, B) = L * (14 + 4 * B) + 12` float32:

  L loop slots, outermost first, RIGHT-aligned: slot L-1 always holds the
  innermost loop of the main path, slot L-2 its parent, ...  A path of n < L
  loops fills slots L-n .. L-1; the slots before it are all zeros (a real loop
  has extent >= 1, so its `extent` feature log2(1+extent) >= 1: padding is the
  only slot whose extent feature is 0).  A path deeper than L keeps its
  innermost L loops (nest levels stay absolute, the product above still
  includes the dropped outer loops).  Each slot:

    extent       log2(1 + extent)
    level        nest level, 0 = outermost loop of the program (raw, not logged)
    above        log2(1 + product of the extents of the loops enclosing it)
    below        log2(1 + product of the extents of the main-path loops inside it)
    serial unrolled vectorized parallel tensorized
                 one-hot of the annotation; "tensorized" marks the loop given to
                 a micro-kernel (its body becomes one kernel call) and every loop
                 inside it (they run inside the kernel)
    fadd fmul fdiv fother int
                 log2(1 + operations executed by one run of the loop, i.e. its
                 extent times its whole body, every statement under it weighted by
                 its trip count): float + and -, float *, float /, other float
                 math (min, max, math calls, selects, casts), integer and boolean
                 value arithmetic (quantized MACs, padding conditions).  Index
                 arithmetic inside loads and stores is not counted.
    then per buffer slot b (B slots), for one run of the loop:
    buf{b}.count   log2(1 + loads and stores of the buffer executed)
    buf{b}.bytes   log2(1 + bytes touched: unique elements x element size)
    buf{b}.reuse   log2(1 + count / unique elements)
    buf{b}.stride  log2(1 + |coefficient of this loop's variable in the index|);
                   at the innermost slot this is the innermost stride.  The access
                   executed most often under the loop decides (ties: the first).
    A buffer not touched under the loop has zeros.

  Buffer slots, deterministic: outputs (parameter order), then inputs (largest
  first, ties in parameter order), then local buffers by name (a template names
  its temporaries the same in every config, so a slot keeps its meaning while
  tile knobs change their sizes), then single-element buffers (scales, zero
  points: parameters in order, then locals by name).  Buffers past B slots are
  left out of the
  per-buffer features (still counted in the whole-program numbers); unused
  slots are zeros.

  Unique elements of one access are estimated from its linear index: loops of
  equal coefficient merge into one range (x[h+kh] over h<4, kh<3 touches 6),
  the product of those ranges is capped by the index's span, by the number of
  distinct iterations it depends on and by the buffer's size; several accesses
  of one buffer under a loop count as the largest of them (same-region
  read-modify-write is the common case).  Non-affine parts (// and % of fused
  loops, min/max clamps) are bounded by interval arithmetic.  Trip counts are
  products of constant extents: tail guards are not evaluated (upper bounds).

  12 whole-program numbers, after the loop slots:

    flops        log2(1 + float operations executed, whole program)
    int_ops      log2(1 + integer/boolean value operations executed)
    accesses     log2(1 + loads and stores executed)
    outside      log2(1 + loads and stores executed outside the main nest's
                 outermost loop: packing, init and write-back nests elsewhere)
    local_bytes  log2(1 + bytes of local allocations, each counted once)
    kernel_calls log2(1 + micro-kernel calls executed)
    prefetches   log2(1 + prefetch calls executed)
    guards       log2(1 + `if` conditions evaluated)
    loops        log2(1 + number of loops in the program)
    nests        number of root-level loops (raw)
    depth        depth of the main path (raw, before truncation)
    main_share   share of the program's cost (as above) under the main nest's
                 outermost loop, 0..1 (1 when the program has no loop)
    parallel_share share of the program's cost under a parallel loop, 0..1 (a
                 parallel loop outside the main path, e.g. an epilogue nest, is
                 seen only here)
    loop_trips   log2(1 + loop iterations executed, every loop of the program:
                 the loop overhead, which tells apart tilings of nests off the
                 main path)

`itervar_features` is meant for `lower(..., optimize=False)`.  On a fully
lowered PrimFunc it still gives a vector of the same length (vector loads and
stores count their lanes, micro-kernel calls count as calls), but unrolled
loops are gone by then.
"""
from __future__ import annotations

import math

import numpy as np

from ..te.expr import (Binary, Call, Cast, Compare, Const, Logic, Not, Select, Var,
                       INDEX, is_float)
from ..te.visit import children, free_vars
from ..lower.ir import (Allocate, CallKernel, Evaluate, For, IfThenElse, Let, Load,
                        PrimFunc, Seq, Store, VLoad, VStore, split_dtype)
from ..lower.simplify import irange, linear

LOOPS = 10
BUFFERS = 8

KINDS = ("serial", "unrolled", "vectorized", "parallel", "tensorized")
OPS = ("fadd", "fmul", "fdiv", "fother", "int")
LOOP_FEATURES = ("extent", "level", "above", "below") + KINDS + OPS
BUFFER_FEATURES = ("count", "bytes", "reuse", "stride")
GLOBAL_FEATURES = ("flops", "int_ops", "accesses", "outside", "local_bytes", "kernel_calls",
                   "prefetches", "guards", "loops", "nests", "depth", "main_share",
                   "parallel_share", "loop_trips")

_FLOAT_OP = {"+": 0, "-": 0, "*": 1, "/": 2}
# counters of _scan: the five OPS, the last of them split in two: value integer
# arithmetic (4) and index or boolean arithmetic in conditions (5), which the
# "int" feature adds up but the choice of the main statement ignores
_NOPS = len(OPS) + 1
_KIND_AT = LOOP_FEATURES.index(KINDS[0])
_OPS_AT = LOOP_FEATURES.index(OPS[0])


def feature_length(max_loops: int = LOOPS, max_buffers: int = BUFFERS) -> int:
    return max_loops * (len(LOOP_FEATURES) + len(BUFFER_FEATURES) * max_buffers) + len(GLOBAL_FEATURES)


def feature_names(max_loops: int = LOOPS, max_buffers: int = BUFFERS) -> list:
    """One name per feature, in vector order: loop slots are named from the innermost
    (loop[-1] is the innermost loop of the main path, loop[-2] its parent, ...)."""
    out = []
    for slot in range(max_loops):
        p = f"loop[{slot - max_loops}]"
        out += [f"{p}.{f}" for f in LOOP_FEATURES]
        for b in range(max_buffers):
            out += [f"{p}.buf{b}.{f}" for f in BUFFER_FEATURES]
    out += [f"global.{f}" for f in GLOBAL_FEATURES]
    return out


def _log(x) -> float:
    return math.log2(1 + x) if x > 0 else 0.0


# ---------------------------------------------------------------------------
# the walk: loops, leaf statements ("sites") and their accesses


class _Access:
    __slots__ = ("buffer", "index", "lanes", "terms")

    def __init__(self, buffer, index, lanes):
        self.buffer = buffer
        self.index = index
        self.lanes = lanes
        self.terms = None  # (linear terms, free vars) computed on first use


class _Site:
    __slots__ = ("stack", "trips", "ops", "accesses", "cost")

    def __init__(self, stack, trips, ops, accesses):
        self.stack = stack
        self.trips = trips
        self.ops = ops
        self.accesses = accesses
        n = sum(a.lanes for a in accesses)
        self.cost = trips * (sum(ops[:5]) + n)


def _extent(e) -> int:
    if isinstance(e, Const) and isinstance(e.value, int):
        return max(0, e.value)
    hi = irange(e, {})[1]
    return max(0, hi) if hi is not None else 1


def _scan(e, loads, ops):
    """Collect the loads of a value expression and count its operations (not
    descending into indices)."""
    t = type(e)
    if t is Load:
        loads.append(_Access(e.buffer, e.index, 1))
        return
    if t is VLoad:
        loads.append(_Access(e.buffer, e.index, split_dtype(e.dtype)[1]))
        return
    if t is Const or t is Var:
        return
    if t is Binary:
        base, lanes = split_dtype(e.dtype)
        if is_float(base):
            ops[_FLOAT_OP.get(e.op, 3)] += lanes
        else:
            ops[5 if base == INDEX else 4] += lanes
        _scan(e.a, loads, ops)
        _scan(e.b, loads, ops)
        return
    if t is Call or t is Select or t is Cast:
        base, lanes = split_dtype(e.dtype)
        if is_float(base) or (t is Cast and is_float(split_dtype(e.value.dtype)[0])):
            ops[3] += lanes
        else:
            ops[4] += lanes
    elif t is Compare or t is Logic or t is Not:
        ops[5] += 1
    for c in children(e):
        _scan(c, loads, ops)


class _Walk:
    def __init__(self):
        self.ext = []      # per loop
        self.kind = []
        self.depth = []
        self.var = []
        self.sites = []
        self.local_bytes = 0
        self.locals = []   # buffers allocated, in program order
        self.kernel_calls = 0
        self.prefetches = 0
        self.guards = 0
        self.nests = 0

    def site(self, stack, trips, loads, ops, store=None):
        if store is not None:
            loads.append(store)
        if loads or any(ops):
            self.sites.append(_Site(stack, trips, ops, loads))

    def stmt(self, s, stack, trips, in_kernel):
        t = type(s)
        if t is For:
            n = len(self.ext)
            e = _extent(s.extent)
            self.ext.append(e)
            self.var.append(s.var)
            self.depth.append(len(stack))
            if not stack:
                self.nests += 1
            if s.kind == "tensorized" and not in_kernel:
                self.kernel_calls += trips
            inside = in_kernel or s.kind == "tensorized"
            self.kind.append("tensorized" if inside else s.kind)
            self.stmt(s.body, stack + (n,), trips * e, inside)
        elif t is Seq:
            for x in s.stmts:
                self.stmt(x, stack, trips, in_kernel)
        elif t is Store or t is VStore:
            loads, ops = [], [0] * _NOPS
            _scan(s.value, loads, ops)
            lanes = split_dtype(s.value.dtype)[1] if t is VStore else 1
            self.site(stack, trips, loads, ops, _Access(s.buffer, s.index, lanes))
        elif t is Allocate:
            self.local_bytes += s.buffer.nbytes
            self.locals.append(s.buffer)
            self.stmt(s.body, stack, trips, in_kernel)
        elif t is IfThenElse:
            self.guards += trips
            loads, ops = [], [0] * _NOPS
            _scan(s.cond, loads, ops)
            if loads:
                self.site(stack, trips, loads, [0] * _NOPS)
            self.stmt(s.then, stack, trips, in_kernel)
            if s.else_ is not None:
                self.stmt(s.else_, stack, trips, in_kernel)
        elif t is Let:
            loads, ops = [], [0] * _NOPS
            _scan(s.value, loads, ops)
            self.site(stack, trips, loads, ops)
            self.stmt(s.body, stack, trips, in_kernel)
        elif t is Evaluate:
            loads, ops = [], [0] * _NOPS
            _scan(s.value, loads, ops)
            self.site(stack, trips, loads, ops)
        elif t is CallKernel:
            if s.name == "__builtin_prefetch":
                self.prefetches += trips
            else:
                self.kernel_calls += trips
        else:  # an unknown statement: its children
            for c in children(s):
                if not hasattr(c, "dtype"):
                    self.stmt(c, stack, trips, in_kernel)


# ---------------------------------------------------------------------------
# footprints and strides of one access under a loop


class _NoEval(Exception):
    pass


def _eval(e, env) -> int:
    t = type(e)
    if t is Const:
        return int(e.value)
    if t is Var:
        return env.get(e, 0)
    if t is Cast:
        return _eval(e.value, env)
    if t is Binary:
        a, b = _eval(e.a, env), _eval(e.b, env)
        op = e.op
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "min":
            return min(a, b)
        if op == "max":
            return max(a, b)
        if b != 0 and op in ("//", "/"):
            return a // b
        if b != 0 and op == "%":
            return a % b
    raise _NoEval


def _terms(acc: _Access):
    if acc.terms is None:
        terms, _ = linear(acc.index)
        out = []
        for atom, c in terms.items():
            vs = (atom,) if type(atom) is Var else tuple(free_vars(atom))
            out.append((atom, c, vs))
        acc.terms = out
    return acc.terms


def _footprint(acc: _Access, under: dict) -> int:
    """Distinct elements the access touches while the loops in `under` (var -> extent)
    run through their ranges, the other variables fixed."""
    groups = {}
    span = 1
    dep = set()
    for atom, c, vs in _terms(acc):
        inner = [v for v in vs if v in under]
        if not inner:
            continue
        dep.update(inner)
        if type(atom) is Var:
            e = under[atom]
        else:
            prod = math.prod(under[v] for v in inner)
            lo, hi = irange(atom, {v: ((0, under[v] - 1) if v in under else (0, 0)) for v in vs})
            e = prod if lo is None or hi is None else max(1, min(prod, hi - lo + 1))
        c = abs(c)
        groups[c] = groups.get(c, 1) + e - 1
        span += c * (e - 1)
    lanes = acc.lanes
    if lanes > 1:
        groups[1] = groups.get(1, 1) + lanes - 1
        span += lanes - 1
    uniq = math.prod(groups.values())
    cap = math.prod(under[v] for v in dep) * lanes
    return max(1, min(uniq, span, cap, acc.buffer.size))


def _stride(acc: _Access, var) -> int:
    s = 0
    for atom, c, vs in _terms(acc):
        if atom is var:
            s += c
        elif var in vs:
            try:
                s += c * (_eval(atom, {var: 1}) - _eval(atom, {var: 0}))
            except _NoEval:
                pass
    return abs(s)


# ---------------------------------------------------------------------------


def _buffer_slots(func: PrimFunc, w: _Walk, max_buffers: int) -> dict:
    params = list(func.params)
    outs = [b for b in params if b.name in func.outputs]
    ins = sorted((b for b in params if b.name not in func.outputs and b.size > 1),
                 key=lambda b: (-b.size, params.index(b)))
    seen = dict.fromkeys(w.locals)
    for s in w.sites:
        for a in s.accesses:
            seen.setdefault(a.buffer)
    known = set(params)
    locs = [b for b in seen if b not in known]
    order = {b: i for i, b in enumerate(locs)}
    locs.sort(key=lambda b: (b.name, order[b]))
    scalars = [b for b in params if b.name not in func.outputs and b.size <= 1]
    ranked = outs + ins + [b for b in locs if b.size > 1] + scalars + [b for b in locs if b.size <= 1]
    return {b: i for i, b in enumerate(ranked[:max_buffers])}


def itervar_features(func: PrimFunc, max_loops: int = LOOPS, max_buffers: int = BUFFERS) -> np.ndarray:
    """The fixed-length float32 feature vector of a lowered function (layout in the
    module docstring; length `feature_length(max_loops, max_buffers)`)."""
    nl, nb = len(LOOP_FEATURES), len(BUFFER_FEATURES)
    per_loop = nl + nb * max_buffers
    out = np.zeros(feature_length(max_loops, max_buffers), np.float32)
    w = _Walk()
    w.stmt(func.body, (), 1, False)
    slots = _buffer_slots(func, w, max_buffers)
    ext, sites = w.ext, w.sites

    main = None
    for s in sites:
        if main is None or (s.cost, len(s.stack)) > (main.cost, len(main.stack)):
            main = s
    path = main.stack if main is not None else ()

    kept = path[-max_loops:] if max_loops > 0 else ()
    first = len(path) - len(kept)
    base = max_loops - len(kept)
    itemsize = {slot: np.dtype(b.dtype).itemsize for b, slot in slots.items()}
    row = [0.0] * per_loop
    for j, L in enumerate(kept):
        d = first + j
        above = math.prod(ext[x] for x in path[:d])
        below = math.prod(ext[x] for x in path[d + 1:])
        row[:] = [0.0] * per_loop
        row[0] = _log(ext[L])
        row[1] = float(d)
        row[2] = _log(above)
        row[3] = _log(below)
        kind = w.kind[L]
        row[_KIND_AT + (KINDS.index(kind) if kind in KINDS else 0)] = 1.0  # unknown: serial
        ops = [0] * _NOPS
        count, uniq, best, stride = {}, {}, {}, {}
        var = w.var[L]
        for s in sites:
            st = s.stack
            if len(st) <= d or st[d] != L:
                continue
            weight = s.trips // above if above else 0
            for k in range(_NOPS):
                ops[k] += weight * s.ops[k]
            under = None
            for a in s.accesses:
                b = a.buffer
                slot = slots.get(b)
                if slot is None:
                    continue
                if under is None:
                    under = {w.var[x]: ext[x] for x in st[d:]}
                n = weight * a.lanes
                count[slot] = count.get(slot, 0) + n
                u = _footprint(a, under)
                if u > uniq.get(slot, 0):
                    uniq[slot] = u
                if n > best.get(slot, -1):
                    best[slot] = n
                    stride[slot] = _stride(a, var)
        for k in range(4):
            row[_OPS_AT + k] = _log(ops[k])
        row[_OPS_AT + 4] = _log(ops[4] + ops[5])
        for slot, n in count.items():
            o = nl + nb * slot
            u = uniq[slot]
            row[o] = _log(n)
            row[o + 1] = _log(u * itemsize[slot])
            row[o + 2] = _log(n / u)
            row[o + 3] = _log(stride[slot])
        out[(base + j) * per_loop:(base + j + 1) * per_loop] = row

    # whole program
    flops = int_ops = accesses = outside = 0
    total_cost = main_cost = parallel_cost = 0
    trips = {}                         # loop -> iterations it executes
    top = path[0] if path else None
    for s in sites:
        if any(w.kind[L] == "parallel" for L in s.stack):
            parallel_cost += s.cost
        reach = 1
        for L in s.stack:
            reach *= ext[L]
            trips[L] = reach
        flops += s.trips * (s.ops[0] + s.ops[1] + s.ops[2] + s.ops[3])
        int_ops += s.trips * (s.ops[4] + s.ops[5])
        n = s.trips * sum(a.lanes for a in s.accesses)
        accesses += n
        total_cost += s.cost
        if top is not None and s.stack and s.stack[0] == top:
            main_cost += s.cost
        else:
            outside += n
    g = max_loops * per_loop
    out[g:] = [_log(flops), _log(int_ops), _log(accesses), _log(outside), _log(w.local_bytes),
               _log(w.kernel_calls), _log(w.prefetches), _log(w.guards), _log(len(ext)),
               float(w.nests), float(len(path)),
               main_cost / total_cost if total_cost and top is not None else 1.0,
               parallel_cost / total_cost if total_cost else 0.0,
               _log(sum(trips.values()))]
    return out


def candidate_features(template, wl: dict, target, config, max_loops: int = LOOPS,
                       max_buffers: int = BUFFERS) -> np.ndarray:
    """Build one config of a template, lower it without unroll/vectorize, and take its
    itervar features (what a tuner caches by config index)."""
    from targets import resolve
    from ..lower.lower import lower
    tgt = resolve(target)
    sch, args = template.build(wl, tgt, config)
    func = lower(sch, args, getattr(template, "name", "kernel"), tgt, optimize=False)
    return itervar_features(func, max_loops, max_buffers)
