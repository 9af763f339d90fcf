"""The schedule builder: TVM-style stage handles over a replayable record list.

Every primitive is checked before it changes anything; an illegal request
raises `ScheduleError` naming the stage, the axis and the rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..te.expr import IterVar, Reduce, TensorLoad, Var
from ..te.tensor import ComputeOp, PlaceholderOp, Tensor
from ..te.visit import map_children
from . import records as R


class ScheduleError(ValueError):
    """An illegal schedule primitive."""

    def __init__(self, stage: str, axis: str | None, rule: str):
        where = f"stage {stage}" + (f", axis {axis}" if axis else "")
        super().__init__(f"{where}: {rule}")
        self.stage, self.axis, self.rule = stage, axis, rule


@dataclass
class StageState:
    """Mutable bookkeeping of one stage while records are applied."""
    name: str
    tensor: Tensor          # the tensor consumers load (identity key)
    op: ComputeOp           # its current definition (cache_write replaces it)
    is_output: bool
    axes: dict = field(default_factory=dict)       # name -> IterVar (every axis ever made)
    kinds: dict = field(default_factory=dict)      # name -> "data" | "reduce"
    root: list = field(default_factory=list)       # root axis names
    relations: list = field(default_factory=list)  # ("split", parent, outer, inner, factor, nparts) | ("fuse", outer, inner, fused)
    leaves: list = field(default_factory=list)
    ann: dict = field(default_factory=dict)        # leaf name -> unroll | vectorize | parallel
    pragmas: dict = field(default_factory=dict)    # leaf name -> tuple of texts
    attach: tuple = ("root",)                      # ("root",) | ("inline",) | ("at", stage, axis)
    tensorized: dict = field(default_factory=dict)  # leaf name -> intrinsic name
    prefetch: list = field(default_factory=list)   # (tensor name, leaf name, distance)

    def reset_axes(self):
        self.axes, self.kinds, self.root = {}, {}, []
        self.relations, self.leaves, self.ann, self.pragmas = [], [], {}, {}
        for iv in tuple(self.op.axis) + tuple(self.op.reduce_axis):
            self.axes[iv.name] = iv
            self.kinds[iv.name] = iv.kind
            self.root.append(iv.name)
            self.leaves.append(iv.name)
        if len(set(self.root)) != len(self.root):
            raise ScheduleError(self.name, None, f"axis names {self.root} must be distinct")

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.axes:
            name = f"{base}{k}"
            k += 1
        return name


class Stage:
    """The user's handle on one stage: `s[C]`."""

    def __init__(self, sch: "Schedule", name: str):
        self._sch = sch
        self.name = name

    @property
    def _st(self) -> StageState:
        return self._sch.stages[self.name]

    @property
    def op(self) -> ComputeOp:
        return self._st.op

    @property
    def leaf_axes(self) -> tuple:
        st = self._st
        return tuple(st.axes[n] for n in st.leaves)

    def _name(self, ax) -> str:
        return self._sch._axis_name(self.name, ax)

    def _do(self, rec):
        self._sch.apply(rec)

    def split(self, axis, factor=None, nparts=None):
        a = self._name(axis)
        self._do(R.Split(self.name, a, factor, nparts))
        _, _, outer, inner, _, _ = self._st.relations[-1]
        return self._st.axes[outer], self._st.axes[inner]

    def tile(self, x, y, x_factor, y_factor):
        xo, xi = self.split(x, x_factor)
        yo, yi = self.split(y, y_factor)
        self.reorder(xo, yo, xi, yi)
        return xo, yo, xi, yi

    def reorder(self, *axes):
        self._do(R.Reorder(self.name, tuple(self._name(a) for a in axes)))

    def fuse(self, *axes):
        if len(axes) < 2:
            raise ScheduleError(self.name, None, "fuse takes at least two axes")
        names = [self._name(a) for a in axes]
        st = self._st
        # one record per pair: if a later pair is illegal, undo the earlier ones
        saved = (dict(st.axes), dict(st.kinds), list(st.relations), list(st.leaves),
                 len(self._sch.records))
        cur = names[0]
        try:
            for nxt in names[1:]:
                self._do(R.Fuse(self.name, cur, nxt))
                cur = st.relations[-1][3]
        except ScheduleError:
            st.axes, st.kinds, st.relations, st.leaves = (dict(saved[0]), dict(saved[1]),
                                                          list(saved[2]), list(saved[3]))
            del self._sch.records[saved[4]:]
            raise
        return st.axes[cur]

    def unroll(self, axis):
        self._do(R.Annotate(self.name, self._name(axis), "unroll"))

    def vectorize(self, axis):
        self._do(R.Annotate(self.name, self._name(axis), "vectorize"))

    def parallel(self, axis):
        self._do(R.Annotate(self.name, self._name(axis), "parallel"))

    def pragma(self, axis, text: str):
        self._do(R.Pragma(self.name, self._name(axis), text))

    def compute_at(self, parent: "Stage", axis):
        if not isinstance(parent, Stage):
            raise ScheduleError(self.name, None, "compute_at takes a stage handle s[T] and one of its axes")
        self._do(R.ComputeAt(self.name, parent.name, parent._name(axis)))

    def compute_inline(self):
        self._do(R.ComputeInline(self.name))

    def tensorize(self, axis, intrin):
        """Replace the loop nest under `axis` by a micro-kernel (cgen.tensorize)."""
        name = getattr(intrin, "name", intrin)
        if not isinstance(name, str):
            raise ScheduleError(self.name, None, "tensorize takes a TensorIntrin")
        if not isinstance(intrin, str):
            self._sch.intrinsics[name] = intrin
        self._do(R.Tensorize(self.name, self._name(axis), name))

    def prefetch(self, tensor, axis, distance: int):
        """Prefetch what `tensor` reads `distance` iterations of `axis` ahead."""
        tname = tensor if isinstance(tensor, str) else tensor.name
        self._do(R.Prefetch(self.name, tname, self._name(axis), distance))

    def compute_root(self):
        self._do(R.ComputeRoot(self.name))


class Schedule:
    def __init__(self, outputs):
        if isinstance(outputs, Tensor):
            outputs = [outputs]
        self.outputs = tuple(outputs)
        for t in self.outputs:
            if not isinstance(t, Tensor) or not isinstance(t.op, ComputeOp):
                raise TypeError(f"create_schedule takes computed tensors, got {t!r}")
        self.stages: dict = {}
        self._stage_of: dict = {}
        self.records: list = []
        self.intrinsics: dict = {}   # name -> TensorIntrin used by tensorize records
        self._collect()

    # ------------------------------------------------------------------ graph
    def _collect(self):
        order = []
        seen = set()

        def visit(t):
            if t in seen or isinstance(t.op, PlaceholderOp):
                return
            seen.add(t)
            for u in t.op.input_tensors:
                visit(u)
            order.append(t)
        for t in self.outputs:
            visit(t)
        used = set()
        for t in order:
            name = t.op.name
            k = 1
            while name in used:
                name = f"{t.op.name}_{k}"
                k += 1
            used.add(name)
            st = StageState(name, t, t.op, t in self.outputs)
            st.reset_axes()
            self.stages[name] = st
            self._stage_of[t] = name

    def stage_of(self, t: Tensor) -> str | None:
        return self._stage_of.get(t)

    def reads(self, name: str) -> list:
        """Stage names whose tensors stage `name` loads directly."""
        out = []
        for t in self.stages[name].op.input_tensors:
            s = self._stage_of.get(t)
            if s is not None and s not in out:
                out.append(s)
        return out

    def effective_reads(self, name: str) -> list:
        """Stages read by `name` once inlined stages are substituted."""
        out = []
        for s in self.reads(name):
            if self.stages[s].attach[0] == "inline":
                for u in self.effective_reads(s):
                    if u not in out:
                        out.append(u)
            elif s not in out:
                out.append(s)
        return out

    def effective_consumers(self, name: str) -> list:
        return [c for c in self.stages
                if self.stages[c].attach[0] != "inline" and name in self.effective_reads(c)]

    def __getitem__(self, t) -> Stage:
        if isinstance(t, Stage):
            return t
        if isinstance(t, Tensor):
            name = self._stage_of.get(t)
            if name is None:
                raise ScheduleError(t.name, None, "not a computed stage of this schedule")
            return Stage(self, name)
        if isinstance(t, str) and t in self.stages:
            return Stage(self, t)
        raise ScheduleError(str(t), None, "not a stage of this schedule")

    def _axis_name(self, stage: str, ax) -> str:
        st = self.stages[stage]
        if isinstance(ax, str):
            return ax
        if isinstance(ax, IterVar):
            for n, iv in st.axes.items():
                if iv is ax:
                    return n
            raise ScheduleError(stage, ax.name, "not an axis of this stage")
        if isinstance(ax, Var):
            for n, iv in st.axes.items():
                if iv.var is ax:
                    return n
        raise ScheduleError(stage, str(ax), "axes are given as IterVars (or their names)")

    # ------------------------------------------------------------- primitives
    def cache_write(self, tensor, scope: str = "local") -> Tensor:
        name = self[tensor].name
        self.apply(R.CacheWrite(name, scope))
        return self.stages[self._last_cache].tensor

    def cache_read(self, tensor, scope: str, readers) -> Tensor:
        """A stage copying `tensor`, read by `readers` (tensors) in its place."""
        if isinstance(readers, Tensor):
            readers = [readers]
        names = tuple(self[r].name for r in readers)
        self.apply(R.CacheRead(tensor.name, scope, names))
        return self.stages[self._last_cache].tensor

    def apply(self, rec):
        """Check one record against the current state, then apply it."""
        fn = getattr(self, "_" + type(rec).__name__.lower())
        if rec.stage not in self.stages and not isinstance(rec, R.CacheRead):
            raise ScheduleError(rec.stage, None, "no such stage")
        fn(rec)
        self.records.append(rec)

    def _leaf(self, st: StageState, a: str):
        if a not in st.axes:
            raise ScheduleError(st.name, a, f"unknown axis (leaves are {st.leaves})")
        if a not in st.leaves:
            raise ScheduleError(st.name, a, "no longer a leaf axis: it was split or fused")

    def _attached_at(self, stage: str, axis: str) -> list:
        return [n for n, s in self.stages.items() if s.attach == ("at", stage, axis)]

    def _split(self, r: R.Split):
        st = self.stages[r.stage]
        self._leaf(st, r.axis)
        if (r.factor is None) == (r.nparts is None):
            raise ScheduleError(st.name, r.axis, "split takes exactly one of factor and nparts")
        n = r.factor if r.factor is not None else r.nparts
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ScheduleError(st.name, r.axis, f"split factor/nparts must be a positive integer, got {n!r}")
        if r.axis in st.ann:
            raise ScheduleError(st.name, r.axis, f"cannot split an axis annotated {st.ann[r.axis]}")
        if self._attached_at(st.name, r.axis):
            raise ScheduleError(st.name, r.axis, "stages are computed at this axis; split before compute_at")
        kind = st.kinds[r.axis]
        outer, inner = st.fresh(f"{r.axis}_o"), st.fresh(f"{r.axis}_i")
        st.axes[outer] = IterVar(Var(outer), 0, 0, kind)
        st.axes[inner] = IterVar(Var(inner), 0, 0, kind)
        st.kinds[outer] = st.kinds[inner] = kind
        st.relations.append(("split", r.axis, outer, inner, r.factor, r.nparts))
        pos = st.leaves.index(r.axis)
        st.leaves[pos:pos + 1] = [outer, inner]
        if r.axis in st.pragmas:
            st.pragmas[outer] = st.pragmas.pop(r.axis)

    def _reorder(self, r: R.Reorder):
        st = self.stages[r.stage]
        for a in r.axes:
            self._leaf(st, a)
        if len(set(r.axes)) != len(r.axes):
            dup = next(a for a in r.axes if r.axes.count(a) > 1)
            raise ScheduleError(st.name, dup, f"reorder names an axis twice: {list(r.axes)}")
        positions = sorted(st.leaves.index(a) for a in r.axes)
        new = list(st.leaves)
        for p, a in zip(positions, r.axes):
            new[p] = a
        for a, k in st.ann.items():
            if k == "vectorize" and not _lanes_innermost(st, new[new.index(a) + 1:]):
                raise ScheduleError(st.name, a, "a vectorized axis must stay the innermost "
                                    "data-parallel loop (reduction loops and unrolled loops "
                                    "may sit inside it)")
        st.leaves = new

    def _fuse(self, r: R.Fuse):
        st = self.stages[r.stage]
        self._leaf(st, r.outer)
        self._leaf(st, r.inner)
        i = st.leaves.index(r.outer)
        if i + 1 >= len(st.leaves) or st.leaves[i + 1] != r.inner:
            raise ScheduleError(st.name, r.inner, f"can only fuse adjacent loops, {r.outer} directly outside {r.inner}")
        if st.kinds[r.outer] != st.kinds[r.inner]:
            raise ScheduleError(st.name, r.inner, "cannot fuse a reduction axis with a data-parallel axis")
        for a in (r.outer, r.inner):
            if a in st.ann:
                raise ScheduleError(st.name, a, f"cannot fuse an axis annotated {st.ann[a]}")
            if self._attached_at(st.name, a):
                raise ScheduleError(st.name, a, "stages are computed at this axis; fuse before compute_at")
        fused = st.fresh(f"{r.outer}_{r.inner}_f")
        st.axes[fused] = IterVar(Var(fused), 0, 0, st.kinds[r.outer])
        st.kinds[fused] = st.kinds[r.outer]
        st.relations.append(("fuse", r.outer, r.inner, fused))
        st.leaves[i:i + 2] = [fused]

    def _annotate(self, r: R.Annotate):
        st = self.stages[r.stage]
        self._leaf(st, r.axis)
        if r.kind not in ("unroll", "vectorize", "parallel"):
            raise ScheduleError(st.name, r.axis, f"unknown annotation {r.kind!r}")
        if r.kind == "vectorize":
            if st.kinds[r.axis] == "reduce":
                raise ScheduleError(st.name, r.axis, "cannot vectorize a reduction axis (it carries a dependence)")
            if not _lanes_innermost(st, st.leaves[st.leaves.index(r.axis) + 1:]):
                raise ScheduleError(st.name, r.axis, "only the innermost data-parallel loop can "
                                    "be vectorized (reduction loops and unrolled loops may "
                                    "sit inside it)")
            if self._attached_at(st.name, r.axis):
                raise ScheduleError(st.name, r.axis, "cannot vectorize a loop that other stages are computed in")
        if r.kind == "parallel" and st.kinds[r.axis] == "reduce":
            raise ScheduleError(st.name, r.axis, "cannot parallelize a reduction axis (it carries a dependence)")
        st.ann[r.axis] = r.kind

    def _pragma(self, r: R.Pragma):
        st = self.stages[r.stage]
        self._leaf(st, r.axis)
        if not r.text or "\n" in r.text:
            raise ScheduleError(st.name, r.axis, "a pragma is one non-empty line")
        st.pragmas[r.axis] = st.pragmas.get(r.axis, ()) + (r.text,)

    def _computeat(self, r: R.ComputeAt):
        st = self.stages[r.stage]
        if r.target not in self.stages:
            raise ScheduleError(st.name, None, f"compute_at target {r.target} is not a stage")
        tgt = self.stages[r.target]
        if st.is_output:
            raise ScheduleError(st.name, r.axis, "an output stage cannot be computed inside another")
        if r.target == r.stage:
            raise ScheduleError(st.name, r.axis, "compute_at into itself")
        if tgt.attach[0] == "inline":
            raise ScheduleError(st.name, r.axis, f"compute_at into {r.target}, which is inlined")
        self._leaf(tgt, r.axis)
        if st.name not in self.effective_reads(r.target):
            raise ScheduleError(st.name, r.axis, f"compute_at to a non-enclosing loop: {r.target} does not read {st.name}")
        others = [c for c in self.effective_consumers(st.name) if c != r.target]
        if others:
            raise ScheduleError(st.name, r.axis, f"also read by {others}; it can only be computed at its single consumer")
        if tgt.ann.get(r.axis) == "vectorize":
            raise ScheduleError(st.name, r.axis, "cannot compute inside a vectorized loop")
        st.attach = ("at", r.target, r.axis)

    def _computeinline(self, r: R.ComputeInline):
        st = self.stages[r.stage]
        if st.is_output:
            raise ScheduleError(st.name, None, "an output stage cannot be inlined")
        if isinstance(st.op.body, Reduce):
            raise ScheduleError(st.name, None, "a reduction cannot be inlined")
        at = [n for n, s in self.stages.items() if s.attach[0] == "at" and s.attach[1] == st.name]
        if at:
            raise ScheduleError(st.name, None, f"stages {at} are computed at its loops; it cannot be inlined")
        st.attach = ("inline",)

    def _computeroot(self, r: R.ComputeRoot):
        self.stages[r.stage].attach = ("root",)

    def _cachewrite(self, r: R.CacheWrite):
        st = self.stages[r.stage]
        if r.scope != "local":
            raise ScheduleError(st.name, None, f"cache_write scope must be 'local', got {r.scope!r}")
        if st.attach[0] == "inline":
            raise ScheduleError(st.name, None, "cache_write of an inlined stage")
        if st.relations or st.ann or st.pragmas or any(
                s.attach[0] == "at" and s.attach[1] == st.name for s in self.stages.values()):
            raise ScheduleError(st.name, None, "cache_write must come before other primitives on the stage")
        name = f"{st.name}_{r.scope}"
        k = 1
        while name in self.stages:
            name = f"{st.name}_{r.scope}{k}"
            k += 1
        old = st.op
        local = Tensor(ComputeOp(name, old.axis, old.body, old.dtype))
        new_axis = tuple(IterVar(Var(iv.name), iv.lo, iv.extent, "data") for iv in old.axis)
        st.op = ComputeOp(old.name, new_axis, TensorLoad(local, tuple(iv.var for iv in new_axis), old.dtype), old.dtype)
        st.reset_axes()
        lst = StageState(name, local, local.op, False)
        lst.reset_axes()
        # keep producers before consumers
        items = list(self.stages.items())
        pos = [n for n, _ in items].index(st.name)
        items.insert(pos, (name, lst))
        self.stages = dict(items)
        self._stage_of[local] = name
        self._last_cache = name

    def _tensor_named(self, name: str):
        for st in self.stages.values():
            if st.name == name:
                return st.tensor
            for t in st.op.input_tensors:
                if t.name == name and isinstance(t.op, PlaceholderOp):
                    return t
        return None

    def _cacheread(self, r: R.CacheRead):
        src = self._tensor_named(r.stage)
        if src is None:
            raise ScheduleError(r.stage, None, "cache_read of a tensor this schedule does not read")
        if r.scope not in ("local", "packed", "shared"):
            raise ScheduleError(r.stage, None, f"cache_read scope must be local/packed/shared, got {r.scope!r}")
        if not r.readers:
            raise ScheduleError(r.stage, None, "cache_read needs at least one reader")
        for rd in r.readers:
            if rd not in self.stages:
                raise ScheduleError(r.stage, None, f"reader {rd} is not a stage")
            if src not in self.stages[rd].op.input_tensors:
                raise ScheduleError(r.stage, None, f"stage {rd} does not read {r.stage}")
            if self.stages[rd].attach[0] == "inline":
                raise ScheduleError(r.stage, None, f"reader {rd} is inlined")
        name = f"{r.stage}_{r.scope}"
        k = 1
        while name in self.stages:
            name = f"{r.stage}_{r.scope}{k}"
            k += 1
        from ..te.tensor import compute
        copy = compute(src.shape, lambda *idx: src[idx], name=name)
        copy_st = StageState(name, copy, copy.op, False)
        copy_st.reset_axes()

        def swap(x):
            if isinstance(x, TensorLoad) and x.tensor is src:
                return TensorLoad(copy, tuple(swap(i) for i in x.indices), x.dtype)
            return map_children(x, swap)
        for rd in r.readers:
            st = self.stages[rd]
            st.op = ComputeOp(st.op.name, st.op.axis, swap(st.op.body), st.op.dtype)
        items = list(self.stages.items())
        first = min([n for n, _ in items].index(rd) for rd in r.readers)
        items.insert(first, (name, copy_st))
        self.stages = dict(items)
        self._stage_of[copy] = name
        self._last_cache = name

    def _tensorize(self, r: R.Tensorize):
        st = self.stages[r.stage]
        self._leaf(st, r.axis)
        if r.intrin not in self.intrinsics:
            raise ScheduleError(st.name, r.axis, f"unknown intrinsic {r.intrin!r}; pass the TensorIntrin object")
        if any(self._attached_at(st.name, a) for a in st.leaves[st.leaves.index(r.axis):]):
            raise ScheduleError(st.name, r.axis, "stages are computed inside the tensorized loops")
        if not isinstance(st.op.body, Reduce):
            raise ScheduleError(st.name, r.axis, "tensorize needs a reduction stage")
        st.tensorized[r.axis] = r.intrin

    def _prefetch(self, r: R.Prefetch):
        st = self.stages[r.stage]
        self._leaf(st, r.axis)
        if not isinstance(r.distance, int) or r.distance < 1:
            raise ScheduleError(st.name, r.axis, f"prefetch distance must be a positive integer, got {r.distance!r}")
        if r.tensor not in {t.name for t in st.op.input_tensors}:
            raise ScheduleError(st.name, r.axis, f"the stage does not read {r.tensor}")
        st.prefetch.append((r.tensor, r.axis, r.distance))

    # --------------------------------------------------------------- replay
    def to_json(self) -> str:
        return R.records_to_json(self.records)

    @classmethod
    def from_records(cls, outputs, records, intrinsics=None) -> "Schedule":
        """Replay records; tensorize records find their TensorIntrin in `intrinsics` (by name)."""
        s = cls(outputs)
        s.intrinsics.update(intrinsics or {})
        for r in records:
            s.apply(r)
        return s

    @classmethod
    def from_json(cls, outputs, text: str, intrinsics=None) -> "Schedule":
        return cls.from_records(outputs, R.records_from_json(text), intrinsics)


def _lanes_innermost(st, inner) -> bool:
    """Whether the loops inside a vectorized axis leave it the innermost data-parallel
    one: reduction loops (lowering sinks the lanes below them) and loops already unrolled
    (the lanes then run over their copies of the body) may sit inside."""
    return all(st.kinds[a] == "reduce" or st.ann.get(a) == "unroll" for a in inner)
