"""Schedule -> loop IR.

Each stage becomes a nest of its leaf loops (constant extents); root indices
are rebuilt from leaf variables through the split/fuse relations, and a split
that does not divide its axis gets a guard.  A stage computed at a consumer's
loop covers only the region that loop's body reads (bound inference) and
lives in a small local buffer indexed relative to that region's start.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..te.expr import (Binary, Compare, Const, Expr, Logic, Reduce, TensorLoad, Var,
                       INDEX, reduce_identity)
from ..te.tensor import ComputeOp, PlaceholderOp, Tensor
from ..te.visit import free_vars, map_children, substitute, walk
from ..schedule.schedule import Schedule, StageState
from .bounds import sym_bound
from .ir import (Address, Allocate, Buffer, CallKernel, For, IfThenElse, Load, PrimFunc, Seq,
                 Store, seq)
from .simplify import simplify, simplify_expr
from . import passes

KIND = {"unroll": "unrolled", "vectorize": "vectorized", "parallel": "parallel"}


def _i(v) -> Const:
    return Const(int(v), INDEX)


def _add(a, b):
    return Binary("+", a, b, INDEX)


def _sub(a, b):
    return Binary("-", a, b, INDEX)


def _mul(a, b):
    return Binary("*", a, b, INDEX)


@dataclass
class Storage:
    buffer: Buffer
    bases: tuple  # per dimension, the index its element 0 stands for


@dataclass
class Region:
    """Per root data axis: start, a constant bound on the extent, the true extent."""
    bases: tuple
    bounds: tuple
    extents: tuple


class _Lowerer:
    def __init__(self, sch: Schedule, args, name: str, isa=None):
        self.isa = isa
        self.sch = sch
        self.name = name
        self.storage: dict = {}   # Tensor -> Storage
        self.allocs = []          # root temporaries
        self.params = []
        self.outputs = []
        stage_tensors = {st.tensor for st in sch.stages.values()}
        placeholders = self._placeholders()
        for t in args:
            if not isinstance(t, Tensor):
                raise TypeError(f"build args must be tensors, got {t!r}")
            buf = Buffer(t.name, t.dtype, t.shape, "global")
            if buf.name in [p.name for p in self.params]:
                raise ValueError(f"two arguments are named {t.name!r}; give tensors distinct names")
            self.params.append(buf)
            self.storage[t] = Storage(buf, tuple(_i(0) for _ in t.shape))
            if t in stage_tensors:
                if sch.stages[sch.stage_of(t)].attach[0] != "root":
                    raise ValueError(f"argument {t.name} is computed inline or inside another stage; "
                                     "an argument must be computed at root")
                self.outputs.append(t.name)
            elif t not in placeholders:
                raise ValueError(f"argument {t.name} is not an input or a stage of this schedule")
        for t in sch.outputs:
            if t not in self.storage:
                raise ValueError(f"output {t.name} is missing from the build arguments")
        for t in placeholders:
            if t not in self.storage:
                raise ValueError(f"input {t.name} is read but missing from the build arguments")
        self._inlined_body: dict = {}
        self.regions: dict = {}   # stage name -> Region, for stages computed at a loop
        self.tensorized: dict = {}  # loop Var -> TensorIntrin

    def _placeholders(self):
        out = []
        for st in self.sch.stages.values():
            for t in st.op.input_tensors:
                if isinstance(t.op, PlaceholderOp) and t not in out:
                    out.append(t)
        return out

    # ------------------------------------------------------------- inlining
    def body_of(self, st: StageState) -> Expr:
        """The stage's body with every inlined producer substituted."""
        if st.name not in self._inlined_body:
            self._inlined_body[st.name] = self._inline(st.op.body)
        return self._inlined_body[st.name]

    def _inline(self, e):
        sch = self.sch

        def rec(x):
            if isinstance(x, TensorLoad):
                idx = tuple(rec(i) for i in x.indices)
                name = sch.stage_of(x.tensor)
                if name is not None and sch.stages[name].attach[0] == "inline":
                    pst = sch.stages[name]
                    body = self.body_of(pst)
                    return substitute(body, {iv.var: i for iv, i in zip(pst.op.axis, idx)})
                return TensorLoad(x.tensor, idx, x.dtype)
            return map_children(x, rec)
        return rec(e)

    # ------------------------------------------------------------- structure
    def structure(self, st: StageState, root_ext: dict):
        """Leaf vars and extents, root offsets as leaf expressions, tail guards."""
        ext = dict(root_ext)
        tails = []
        for rel in st.relations:
            if rel[0] == "split":
                _, parent, outer, inner, factor, nparts = rel
                E = ext[parent]
                if factor is not None:
                    ei = min(factor, E)
                    eo = -(-E // ei)
                else:
                    eo = min(nparts, E)
                    ei = -(-E // eo)
                ext[outer], ext[inner] = eo, ei
                if eo * ei != E:
                    tails.append(parent)
            else:
                _, outer, inner, fused = rel
                ext[fused] = ext[outer] * ext[inner]
        leaf_vars = {n: Var(n) for n in st.leaves}
        val = {n: leaf_vars[n] for n in st.leaves}
        for rel in reversed(st.relations):
            if rel[0] == "split":
                _, parent, outer, inner, _, _ = rel
                val[parent] = _add(_mul(val[outer], _i(ext[inner])), val[inner])
            else:
                _, outer, inner, fused = rel
                val[outer] = Binary("//", val[fused], _i(ext[inner]), INDEX)
                val[inner] = Binary("%", val[fused], _i(ext[inner]), INDEX)
        guards = [Compare("<", val[p], _i(ext[p])) for p in tails]
        return leaf_vars, ext, val, guards

    # ------------------------------------------------------------- regions
    def region_of(self, producer: Tensor, consumer_body: Expr, inner_ranges: dict) -> Region:
        shape = producer.shape
        loads = []
        walk(consumer_body, lambda x: loads.append(x) if isinstance(x, TensorLoad)
             and x.tensor is producer else None)
        bases, bounds, extents = [], [], []
        for d, n in enumerate(shape):
            lo = hi = None
            ok = True
            for ld in loads:
                b = sym_bound(ld.indices[d], inner_ranges)
                if b is None:
                    ok = False
                    break
                lo = b[0] if lo is None else Binary("min", lo, b[0], INDEX)
                hi = b[1] if hi is None else Binary("max", hi, b[1], INDEX)
            if ok and lo is not None:
                # every variable here is a loop variable, and loops start at 0: knowing
                # that drops clamps like max(4*y, 0) from bases, whose divisions by a
                # consumer would otherwise give up bounding (whole-tensor regions)
                nonneg = {v: (0, None) for v in free_vars(lo) | free_vars(hi)}
                lo, hi = simplify_expr(lo, nonneg), simplify_expr(hi, nonneg)
                width = simplify_expr(_add(_sub(hi, lo), _i(1)))
                if isinstance(width, Const) and width.value < n:
                    base = simplify_expr(Binary("max", lo, _i(0), INDEX), nonneg)
                    top = simplify_expr(Binary("min", hi, _i(n - 1), INDEX), nonneg)
                    bases.append(base)
                    bounds.append(max(1, width.value))
                    extents.append(simplify_expr(_add(_sub(top, base), _i(1))))
                    continue
            bases.append(_i(0))
            bounds.append(n)
            extents.append(_i(n))
        return Region(tuple(bases), tuple(bounds), tuple(extents))

    # ------------------------------------------------------------- loads
    def to_loads(self, e):
        def rec(x):
            if isinstance(x, TensorLoad):
                stor = self.storage.get(x.tensor)
                if stor is None:
                    raise ValueError(f"tensor {x.tensor.name} is read before it is computed "
                                     "(is a producer computed at a loop that does not enclose its use?)")
                idx = [rec(i) for i in x.indices]
                return Load(stor.buffer, flat_index(stor, idx), x.dtype)
            return map_children(x, rec)
        return rec(e)

    # ------------------------------------------------------------- stages
    def stage_nest(self, st: StageState, region: Region):
        op: ComputeOp = st.op
        red = op.reduce_axis
        root_ext = {iv.name: b for iv, b in zip(op.axis, region.bounds)}
        root_ext.update({iv.name: iv.extent for iv in red})
        leaf_vars, ext, val, guards = self.structure(st, root_ext)
        for iv, b, e in zip(op.axis, region.bounds, region.extents):
            if not (isinstance(e, Const) and e.value == b):
                guards.append(Compare("<", val[iv.name], e))
        # root variable -> absolute index
        root_val = {iv.var: simplify_expr(_add(base, val[iv.name]))
                    for iv, base in zip(op.axis, region.bases)}
        root_val.update({iv.var: simplify_expr(_add(_i(iv.lo), val[iv.name])) for iv in red})
        body = substitute(self.body_of(st), root_val)
        leaves = st.leaves
        pos = {n: q for q, n in enumerate(leaves)}

        # stages computed at this stage's loops: regions, then storage
        attached = {}
        for name, other in self.sch.stages.items():
            if other.attach[0] == "at" and other.attach[1] == st.name:
                attached.setdefault(other.attach[2], []).append(name)
        for q, leaf in enumerate(leaves):
            for pname in attached.get(leaf, []):
                pst = self.sch.stages[pname]
                inner = {leaf_vars[n]: (0, ext[n] - 1) for n in leaves[q + 1:]}
                reg = self.region_of(pst.tensor, body, inner)
                buf = Buffer(pname, pst.op.dtype, reg.bounds, "local")
                self.storage[pst.tensor] = Storage(buf, reg.bases)
                self.regions[pname] = reg

        out_stor = self.storage[st.tensor]
        out_idx = flat_index(out_stor, [root_val[iv.var] for iv in op.axis])
        buf = out_stor.buffer

        def guard_pos(g):
            vs = [pos[v.name] for v in _vars(g) if v.name in pos and leaf_vars[v.name] is v]
            return max(vs) if vs else -1

        if isinstance(body, Reduce):
            ident = reduce_identity(body.combiner, body.dtype)
            src = self.to_loads(body.source)
            acc = Load(buf, out_idx, body.dtype)
            new = {"sum": lambda: Binary("+", acc, src, body.dtype),
                   "max": lambda: Binary("max", acc, src, body.dtype),
                   "min": lambda: Binary("min", acc, src, body.dtype)}[body.combiner]()
            update = Store(buf, out_idx, new)
            if body.condition is not None:
                update = IfThenElse(self.to_loads(body.condition), update)
            red_names = self._reduce_leaves(st)
            first = min(pos[n] for n in red_names)
            init_leaves = [n for n in leaves[first:] if n not in red_names]
            init_guards = [g for g in guards if guard_pos(g) >= first
                           and not any(v.name in red_names for v in _vars(g) if v.name in pos)]
            init = self._nest(st, init_leaves, leaf_vars, ext, init_guards,
                              Store(buf, out_idx, ident))
        else:
            update = Store(buf, out_idx, self.to_loads(body))
            first, init = None, None

        def level(q):
            parts = []
            allocs = []
            if q >= 0:
                for pname in attached.get(leaves[q], []):
                    pst = self.sch.stages[pname]
                    parts.append(self.stage_nest(pst, self.regions[pname]))
                    allocs.append(self.storage[pst.tensor].buffer)
            if init is not None and q == first - 1:
                parts.append(init)
            parts.append(loop(q + 1) if q + 1 < len(leaves) else update)
            s = seq(*parts)
            for b in reversed(allocs):
                s = Allocate(b, s)
            gs = [g for g in guards if guard_pos(g) == q]
            if gs:
                s = IfThenElse(_and(gs), s)
            return s

        def loop(q):
            n = leaves[q]
            kind = KIND.get(st.ann.get(n), "serial")
            if n in st.tensorized:
                kind = "tensorized"
                self.tensorized[leaf_vars[n]] = self.sch.intrinsics[st.tensorized[n]]
            body = level(q)
            inner = [leaf_vars[m] for m in leaves[q + 1:]]
            pf = [self._prefetch(t, leaf_vars[n], d, update, inner) for t, a, d in st.prefetch if a == n]
            pf = [x for x in pf if x is not None]
            if pf:
                body = seq(*pf, body)
            return For(leaf_vars[n], _i(0), _i(ext[n]), kind, body, st.pragmas.get(n, ()))
        return level(-1)

    def _prefetch(self, tensor_name: str, var: Var, distance: int, update, inner=()):
        """__builtin_prefetch of the first element of `tensor_name` the body reads,
        `distance` iterations of `var` ahead (clamped inside the buffer)."""
        loads = []
        walk(update, lambda x: loads.append(x) if isinstance(x, Load) and x.buffer.name == tensor_name else None)
        if not loads:
            return None
        ld = loads[0]
        # the first element the loop body reads, `distance` iterations ahead
        ahead = substitute(ld.index, {var: _add(var, _i(distance)), **{v: _i(0) for v in inner}})
        ahead = Binary("min", ahead, _i(ld.buffer.size - 1), INDEX)
        return CallKernel("__builtin_prefetch", (Address(ld.buffer, ahead),))

    def _nest(self, st, names, leaf_vars, ext, guards, inner):
        pos = {n: q for q, n in enumerate(names)}

        def gpos(g):
            vs = [pos[v.name] for v in _vars(g) if v.name in pos]
            return max(vs) if vs else -1

        def level(q):
            s = loop(q + 1) if q + 1 < len(names) else inner
            gs = [g for g in guards if gpos(g) == q]
            return IfThenElse(_and(gs), s) if gs else s

        def loop(q):
            n = names[q]
            return For(leaf_vars[n], _i(0), _i(ext[n]), KIND.get(st.ann.get(n), "serial"),
                       level(q), ())
        return level(-1)

    def _reduce_leaves(self, st: StageState) -> set:
        return {n for n in st.leaves if st.kinds[n] == "reduce"}

    # ------------------------------------------------------------- function
    def run(self, optimize: bool = True) -> PrimFunc:
        body = self.nest()
        if not optimize:
            return PrimFunc(self.name, tuple(self.params), tuple(self.outputs), body, ())
        body = passes.optimize(body, self.isa, self.tensorized)
        # only kernels the body still calls: a nest that is never a full tile (or a loop
        # simplified away) keeps its scalar code, and an unused static definition fails
        # clang's -Wunused-function under -Werror
        called = set()
        walk(body, lambda x: called.add(x.name) if isinstance(x, CallKernel) else None)
        kernels = tuple(dict.fromkeys(b for i in self.tensorized.values()
                                      for b in (i.body, i.zero_body)
                                      if b is not None and b.name in called))
        return PrimFunc(self.name, tuple(self.params), tuple(self.outputs), body, kernels)

    def nest(self):
        """The simplified loop nest of every root stage, before passes.optimize."""
        parts = []
        for name, st in self.sch.stages.items():
            if st.attach[0] != "root":
                continue
            if st.tensor not in self.storage:
                buf = Buffer(name, st.op.dtype, st.op.shape, "local")
                self.storage[st.tensor] = Storage(buf, tuple(_i(0) for _ in st.op.shape))
                self.allocs.append(buf)
            full = Region(tuple(_i(0) for _ in st.op.shape), st.op.shape,
                          tuple(_i(n) for n in st.op.shape))
            parts.append(self.stage_nest(st, full))
        body = seq(*parts)
        for b in reversed(self.allocs):
            body = Allocate(b, body)
        return simplify(body) or Seq(())


def flat_index(stor: Storage, idx) -> Expr:
    shape = stor.buffer.shape
    out = _i(0)
    stride = 1
    for d in range(len(shape) - 1, -1, -1):
        out = _add(out, _mul(_sub(idx[d], stor.bases[d]), _i(stride)))
        stride *= shape[d]
    return simplify_expr(out)


def _vars(e) -> list:
    out = []
    walk(e, lambda x: out.append(x) if isinstance(x, Var) else None)
    return out


def _and(conds):
    out = conds[0]
    for c in conds[1:]:
        out = Logic("&&", out, c)
    return out


def lower(sch: Schedule, args, name: str = "kernel", target=None, *,
          optimize: bool = True) -> PrimFunc:
    """Lower a schedule to a PrimFunc whose parameters are `args` in order.

    The target decides vector lanes (vectorized loops become vector IR for its
    ISA); without one, vectorized loops stay plain loops.

    optimize=False stops before passes.optimize, for analysis (the features of
    cgen.autotune.itervar), not for codegen: every loop keeps its schedule kind
    (unrolled, vectorized, parallel, tensorized; nothing expanded or rewritten),
    tail guards stay IfThenElse around constant-extent loops, tensorized loops stay
    loops (no micro-kernel calls, `kernels` empty)."""
    from ..codegen.isa import isa_for
    return _Lowerer(sch, list(args), name, isa_for(target)).run(optimize)
