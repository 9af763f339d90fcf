"""Injective and reduction templates: elementwise unary/binary ops with numpy
broadcasting, reductions (sum, mean, max over given axes), concat, transpose,
constant pad.  Also the small helpers the other operator templates of this
family (depthwise, pool, softmax) share.

Workloads are plain dicts (JSON), made by each template's `workload(...)`:

    elemwise   {"op": "elemwise", "fn": "add", "shapes": [[2, 3, 4], [3, 1]]}
               fn: a unary op (relu, relu6, neg, abs, exp, log, sqrt, tanh, sigmoid,
               square, reciprocal) with one shape, or a binary op (add, sub, mul, div,
               maximum, minimum) with two shapes broadcast numpy-style
    reduce     {"op": "reduce", "fn": "sum" | "mean" | "max", "shape": [...],
                "axes": [...], "keepdims": bool}
    concat     {"op": "concat", "shapes": [[...], ...], "axis": int}
    transpose  {"op": "transpose", "shape": [...], "perm": [...]}
    pad        {"op": "pad", "shape": [...], "pads": [[before, after], ...], "value": float}

Schedules share one shape: the outer output axes are fused (and optionally
parallel), the innermost axis is split by a vector factor and vectorized,
the next one optionally unrolled.  A vectorized loop becomes SIMD intrinsics
when its body is contiguous arithmetic (cgen/lower/vectorize.py); selects,
strided loads and calls stay plain C loops, which gcc -O3 may vectorize.
"""
from __future__ import annotations

import math

import numpy as np

from .. import te
from ..autotune.space import ConfigSpace, Knob, split_choices
from ..codegen.isa import isa_for
from targets import resolve


# ================================================================ shared template helpers
def cfg_dict(config) -> dict:
    """A Config (or a plain dict of knob values) as a dict."""
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def pick(space: ConfigSpace, want: dict):
    """The config of `space` closest to `want` (ConfigSpace.nearest)."""
    return space.nearest(want)


def lanes_of(target) -> int:
    """float32 lanes of the target's vector ISA; 1 for portable C."""
    isa = isa_for(resolve(target))
    return isa.lanes if isa is not None else 1


def threads_ok(target) -> bool:
    tgt = resolve(target)
    return bool(tgt.threads) and not tgt.bare_metal


def vec_choices(extent: int, lanes: int, limit: int = 64) -> tuple:
    """Split factors for a vectorized innermost axis: divisors and powers of two up to
    `limit`, plus multiples of the vector width (full vectors; a tail is masked or
    scalar)."""
    limit = max(1, min(limit, extent))
    out = set(split_choices(extent, limit))
    out.update(m for m in range(lanes, limit + 1, lanes) if lanes > 1 and m <= 4 * lanes)
    return tuple(sorted(out))


def unroll_choices(extent: int, limit: int = 8) -> tuple:
    """Split factors for an unrolled axis: 1 (no unroll) and the divisors and powers of
    two of the extent up to `limit`."""
    return split_choices(extent, limit)


def check_op(wl: dict, op: str) -> None:
    if wl.get("op") != op:
        raise ValueError(f"{op}: workload is for {wl.get('op')!r}")


def positive_shape(op: str, shape, what: str = "shape") -> list:
    shape = list(shape)
    if not shape or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                            for n in shape):
        raise ValueError(f"{op}: {what} must be a non-empty list of positive ints, got {shape}")
    return [int(n) for n in shape]


def randn(rng, shape) -> np.ndarray:
    return rng.standard_normal(tuple(shape), dtype=np.float32)


def _compute(shape, fn, name: str):
    """te.compute over len(shape) axes named i0, i1, ... (fn takes the index tuple)."""
    return te.compute(tuple(shape), lambda *i: fn(i), name=name)


def _rows_schedule(s, T, c: dict, target, inner: bool = True):
    """The shared injective schedule: last axis split by c["vec"] and vectorized, the
    axis before it split by c["unroll"] (inner part unrolled), the remaining outer
    loops fused when c["fuse"], the outermost parallel when c["parallel"]."""
    st = s[T]
    axes = list(st.op.axis)
    *outer, last = axes
    lo, li = st.split(last, factor=c.get("vec", 1))
    tail = [lo, li]
    if outer and c.get("unroll", 1) > 1:
        so, si = st.split(outer.pop(), factor=c["unroll"])
        outer.append(so)
        tail = [lo, si, li]
    st.reorder(*outer, *tail)
    if len(tail) == 3:
        st.unroll(tail[1])
    st.vectorize(li)
    if c.get("fuse", False) and len(outer) >= 2:
        outer = [st.fuse(*outer)]
    loops = outer or [lo]
    if c.get("parallel", False) and threads_ok(target):
        st.parallel(loops[0])
    return loops


def _rows_knobs(shape, target, fuse: bool = True) -> list:
    knobs = [Knob("vec", vec_choices(shape[-1], lanes_of(target), 64))]
    knobs.append(Knob("unroll", unroll_choices(shape[-2], 4) if len(shape) >= 2 else (1,)))
    if fuse:
        knobs.append(Knob("fuse", (False, True) if len(shape) >= 4 else (False,)))
    if threads_ok(target):
        knobs.append(Knob("parallel", (False, True)))
    return knobs


def _rows_default(space: ConfigSpace, shape, target, **extra):
    lanes = lanes_of(target)
    want = {"vec": 2 * lanes if lanes > 1 else 16, "unroll": 1, "fuse": True, "parallel": False}
    want.update(extra)
    return pick(space, want)


# ================================================================ elementwise
UNARY = {
    "relu": (lambda x: te.maximum(x, 0.0), lambda x: np.maximum(x, 0.0)),
    "relu6": (lambda x: te.clip(x, 0.0, 6.0), lambda x: np.clip(x, 0.0, 6.0)),
    "neg": (lambda x: -x, lambda x: -x),
    "abs": (te.abs, np.abs),
    "exp": (te.exp, np.exp),
    "log": (te.log, np.log),
    "sqrt": (te.sqrt, np.sqrt),
    "tanh": (te.tanh, np.tanh),
    "sigmoid": (te.sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x))),
    "square": (lambda x: x * x, np.square),
    "reciprocal": (lambda x: 1.0 / x, lambda x: 1.0 / x),
}
BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "maximum": np.maximum, "minimum": np.minimum,
}
_POSITIVE = ("log", "sqrt", "reciprocal")   # inputs drawn away from 0 / negatives


class ElemwiseTemplate:
    """Unary ops on one tensor, binary ops on two broadcast numpy-style (float32)."""
    name = "elemwise"

    def workload(self, fn: str, *shapes) -> dict:
        op = self.name
        if fn in UNARY:
            if len(shapes) != 1:
                raise ValueError(f"{op}: unary {fn!r} takes one shape, got {len(shapes)}")
        elif fn in BINARY:
            if len(shapes) != 2:
                raise ValueError(f"{op}: binary {fn!r} takes two shapes, got {len(shapes)}")
        else:
            raise ValueError(f"{op}: unknown fn {fn!r}; one of {sorted(UNARY) + sorted(BINARY)}")
        shapes = [positive_shape(op, s) for s in shapes]
        if len(shapes) == 2:
            from .nn import broadcast_shape
            broadcast_shape(tuple(shapes[0]), tuple(shapes[1]))
        return {"op": op, "fn": fn, "shapes": shapes, "dtype": "float32"}

    def out_shape(self, wl: dict) -> tuple:
        if len(wl["shapes"]) == 1:
            return tuple(wl["shapes"][0])
        from .nn import broadcast_shape
        return broadcast_shape(tuple(wl["shapes"][0]), tuple(wl["shapes"][1]))

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        return ConfigSpace(tuple(_rows_knobs(self.out_shape(wl), target)))

    def default(self, wl: dict, target):
        return _rows_default(self.space(wl, target), self.out_shape(wl), target)

    def compute(self, wl: dict):
        fn, shapes = wl["fn"], wl["shapes"]
        if fn in UNARY:
            A = te.placeholder(tuple(shapes[0]), "float32", name="A")
            f = UNARY[fn][0]
            return [A], _compute(shapes[0], lambda i: f(A[i]), "Y")
        from .nn import broadcast_binary
        A = te.placeholder(tuple(shapes[0]), "float32", name="A")
        B = te.placeholder(tuple(shapes[1]), "float32", name="B")
        return [A, B], broadcast_binary(fn, A, B, name="Y")

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        ins, Y = self.compute(wl)
        s = te.create_schedule(Y)
        _rows_schedule(s, Y, cfg_dict(config), target)
        return s, ins + [Y]

    def inputs(self, wl: dict, rng) -> list:
        arrs = [randn(rng, sh) for sh in wl["shapes"]]
        if wl["fn"] in _POSITIVE:
            arrs[0] = np.abs(arrs[0]) + np.float32(0.25)
        if wl["fn"] == "div":
            arrs[1] = (np.sign(arrs[1]) * (np.abs(arrs[1]) + 0.5)).astype(np.float32)
            arrs[1][arrs[1] == 0] = 1.0
        return arrs + [np.zeros(self.out_shape(wl), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        fn = wl["fn"]
        xs = [a.astype(np.float64) for a in inputs[:-1]]
        y = UNARY[fn][1](xs[0]) if fn in UNARY else BINARY[fn](xs[0], xs[1])
        return {"Y": np.asarray(y, np.float64).astype(np.float32).reshape(self.out_shape(wl))}

    def flops(self, wl: dict) -> int:
        return math.prod(self.out_shape(wl))


# ================================================================ reductions
REDUCE_FNS = ("sum", "mean", "max", "min")


def reduce_out_shape(shape, axes, keepdims: bool) -> tuple:
    """numpy's result shape, except that a full reduction without keepdims gives (1,)."""
    out = tuple(1 if d in axes else n for d, n in enumerate(shape)) if keepdims else \
        tuple(n for d, n in enumerate(shape) if d not in axes)
    return out or (1,)


def reduce_compute(X, axes, keepdims: bool, fn: str, rfactor: int = 1, name: str = "Y"):
    """te stages (out, red, partial) of fn over `axes` of X.

    red reduces; out is red divided by the count for mean (else out is red);
    partial (or None) holds, when the last axis is reduced and rfactor > 1 divides
    it, the reduction of every axis but a last-axis lane j: partial[kept..., j] =
    fn over (other axes, i) of X[..., i * rfactor + j], so the lanes vectorize.
    """
    shape = X.shape
    r = len(shape)
    axes = tuple(sorted(axes))
    kept = [d for d in range(r) if d not in axes]
    out_shape = reduce_out_shape(shape, axes, keepdims)
    comb = {"sum": te.sum, "mean": te.sum, "max": te.max, "min": te.min}[fn]
    red_name = f"{name}_red" if fn == "mean" else name
    last_red = (r - 1) in axes
    V = rfactor if last_red and rfactor > 1 and shape[-1] % rfactor == 0 else 1

    def kept_index(o):
        """output indices -> the kept input dims' indices."""
        if keepdims:
            return {d: o[d] for d in kept}
        return {d: o[k] for k, d in enumerate(kept)}

    partial = None
    if V > 1:
        rv = {d: te.reduce_axis((0, shape[d]), name=f"r{d}") for d in axes if d != r - 1}
        ri = te.reduce_axis((0, shape[-1] // V), name="ri")
        pshape = tuple(shape[d] for d in kept) + (V,)

        def pfn(p):
            kidx = {d: p[k] for k, d in enumerate(kept)}
            idx = tuple(kidx[d] if d in kidx else (rv[d] if d != r - 1 else ri * V + p[-1])
                        for d in range(r))
            return comb(X[idx], axis=tuple(rv.values()) + (ri,))
        partial = _compute(pshape, pfn, f"{name}_partial")
        rj = te.reduce_axis((0, V), name="rj")

        def rfn(o):
            kidx = kept_index(o)
            return comb(partial[tuple(kidx[d] for d in kept) + (rj,)], axis=rj)
        red = _compute(out_shape, rfn, red_name)
    else:
        rv = {d: te.reduce_axis((0, shape[d]), name=f"r{d}") for d in axes}

        def rfn(o):
            kidx = kept_index(o)
            return comb(X[tuple(kidx[d] if d in kidx else rv[d] for d in range(r))],
                        axis=tuple(rv.values()))
        red = _compute(out_shape, rfn, red_name)
    out = red
    if fn == "mean":
        count = float(math.prod(shape[d] for d in axes))
        out = _compute(out_shape, lambda o: red[o] / count, name)
    return out, red, partial


def reduce_schedule(s, out, red, partial, c: dict, target) -> None:
    """Vectorize along the last output axis when it is kept (reductions outside it),
    along the rfactor lanes when the last axis is reduced; parallel outermost."""
    par = c.get("parallel", False) and threads_ok(target)
    if out is not red:                                   # mean: red at out's rows
        loops = _rows_schedule(s, out, {"vec": c.get("vec", 1), "parallel": par}, target)
        s[red].compute_at(s[out], loops[-1])
        par = False
    rst = s[red]
    *o_outer, o_last = rst.op.axis
    raxes = list(rst.op.reduce_axis)
    if partial is None and c.get("kept_last", False):
        lo, li = rst.split(o_last, factor=c.get("vec", 1))
        ru = []
        if c.get("unroll", 1) > 1:
            ro, ri = rst.split(raxes.pop(), factor=c["unroll"])
            raxes.append(ro)
            ru = [ri]
        rst.reorder(*o_outer, lo, *raxes, *ru, li)
        for a in ru:
            rst.unroll(a)
        rst.vectorize(li)
        first = o_outer[0] if o_outer else lo
    else:
        first = o_outer[0] if o_outer else o_last
        if partial is not None:
            # one row of rfactor partial accumulators per output element: whole vectors
            # when rfactor is a multiple of the vector width, else independent scalar
            # chains (a masked vector accumulated through memory stalls on store
            # forwarding)
            s[partial].compute_at(rst, o_last)
            pst = s[partial]
            *p_outer, pj = pst.op.axis
            pr = list(pst.op.reduce_axis)
            pst.reorder(*p_outer, *pr, pj)
            lanes = lanes_of(target)
            if lanes > 1 and pst.op.axis[-1].extent % lanes == 0:
                pst.vectorize(pj)
            else:
                pst.unroll(pj)
        elif c.get("unroll", 1) > 1:
            ro, ri = rst.split(raxes[-1], factor=c["unroll"])
            rst.unroll(ri)
    if par:
        rst.parallel(first)


class ReduceTemplate:
    """sum / mean / max / min over given axes (keepdims or not), float32."""
    name = "reduce"

    def workload(self, fn: str, shape, axes, keepdims: bool = False) -> dict:
        op = self.name
        if fn not in REDUCE_FNS:
            raise ValueError(f"{op}: fn must be one of {REDUCE_FNS}, got {fn!r}")
        shape = positive_shape(op, shape)
        r = len(shape)
        axes = list(axes)
        if not axes or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                                and -r <= a < r for a in axes) \
                or len({int(a) % r for a in axes}) != len(axes):
            raise ValueError(f"{op}: axes must be distinct ints in [-{r}, {r}), got {axes!r}")
        axes = sorted(int(a) % r for a in axes)
        return {"op": op, "fn": fn, "shape": shape, "axes": axes, "keepdims": bool(keepdims),
                "dtype": "float32"}

    def out_shape(self, wl: dict) -> tuple:
        return reduce_out_shape(wl["shape"], wl["axes"], wl["keepdims"])

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        shape, axes = wl["shape"], wl["axes"]
        r = len(shape)
        if (r - 1) in axes:
            n = shape[-1]
            rf = tuple(d for d in sorted(set(split_choices(n, 64, near=False))))
            knobs = [Knob("rfactor", rf), Knob("unroll", unroll_choices(shape[axes[-1]], 4))]
        else:
            last_out = self.out_shape(wl)[-1]
            knobs = [Knob("vec", vec_choices(last_out, lanes_of(target), 64)),
                     Knob("unroll", unroll_choices(shape[axes[-1]], 4))]
        if threads_ok(target):
            knobs.append(Knob("parallel", (False, True)))
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        lanes = max(lanes_of(target), 4)
        sp = self.space(wl, target)
        # the largest rfactor that divides the axis and is a multiple of the vector
        # width, else the largest divisor up to 4 vectors (a masked vector)
        rf = 1
        if sp.knobs[0].name == "rfactor":
            ch = sp.knobs[0].choices
            rf = max([d for d in ch if d % lanes == 0 and d <= 4 * lanes]
                     or [d for d in ch if 4 <= d <= 4 * lanes] or [1])
        return pick(sp, {"rfactor": rf, "vec": 2 * lanes, "unroll": 1, "parallel": False})

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        c = cfg_dict(config)
        X = te.placeholder(tuple(wl["shape"]), "float32", name="X")
        shape = wl["shape"]
        kept_last = (len(shape) - 1) not in wl["axes"]
        out, red, partial = reduce_compute(X, wl["axes"], wl["keepdims"], wl["fn"],
                                           c.get("rfactor", 1))
        s = te.create_schedule(out)
        reduce_schedule(s, out, red, partial, dict(c, kept_last=kept_last), target)
        return s, [X, out]

    def inputs(self, wl: dict, rng) -> list:
        return [randn(rng, wl["shape"]), np.zeros(self.out_shape(wl), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        x = inputs[0].astype(np.float64)
        f = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}[wl["fn"]]
        y = f(x, axis=tuple(wl["axes"]), keepdims=wl["keepdims"])
        return {"Y": np.asarray(y).astype(np.float32).reshape(self.out_shape(wl))}

    def flops(self, wl: dict) -> int:
        return math.prod(wl["shape"])


# ================================================================ concat
class ConcatTemplate:
    """Concatenation of float32 tensors along one axis (inputs A0, A1, ...)."""
    name = "concat"

    def workload(self, shapes, axis: int) -> dict:
        op = self.name
        shapes = [positive_shape(op, s) for s in shapes]
        if not shapes:
            raise ValueError(f"{op}: needs at least one input")
        r = len(shapes[0])
        if not isinstance(axis, (int, np.integer)) or not -r <= axis < r:
            raise ValueError(f"{op}: axis {axis!r} is out of range for rank {r}")
        axis = int(axis) % r
        for sh in shapes[1:]:
            if len(sh) != r or any(a != b for d, (a, b) in enumerate(zip(sh, shapes[0]))
                                   if d != axis):
                raise ValueError(f"{op}: shapes {shapes} differ outside axis {axis}")
        return {"op": op, "shapes": shapes, "axis": axis, "dtype": "float32"}

    def out_shape(self, wl: dict) -> tuple:
        out = list(wl["shapes"][0])
        out[wl["axis"]] = sum(sh[wl["axis"]] for sh in wl["shapes"])
        return tuple(out)

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        return ConfigSpace(tuple(_rows_knobs(self.out_shape(wl), target)))

    def default(self, wl: dict, target):
        return _rows_default(self.space(wl, target), self.out_shape(wl), target)

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        ax = wl["axis"]
        ins = [te.placeholder(tuple(sh), "float32", name=f"A{k}") for k, sh in enumerate(wl["shapes"])]
        starts = np.cumsum([0] + [sh[ax] for sh in wl["shapes"]]).tolist()

        def fn(i):
            # the last input, then each earlier one where the index falls before its end
            k = len(ins) - 1
            val = ins[k][tuple(i[d] - starts[k] if d == ax else i[d] for d in range(len(i)))]
            for k in range(len(ins) - 2, -1, -1):
                here = ins[k][tuple(i[d] - starts[k] if d == ax else i[d] for d in range(len(i)))]
                val = te.if_then_else(i[ax] < starts[k + 1], here, val)
            return val
        Y = _compute(self.out_shape(wl), fn, "Y")
        s = te.create_schedule(Y)
        _rows_schedule(s, Y, cfg_dict(config), target)
        return s, ins + [Y]

    def inputs(self, wl: dict, rng) -> list:
        return [randn(rng, sh) for sh in wl["shapes"]] + [np.zeros(self.out_shape(wl), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        return {"Y": np.concatenate(inputs[:-1], axis=wl["axis"])}

    def flops(self, wl: dict) -> int:
        return math.prod(self.out_shape(wl))


# ================================================================ transpose
class TransposeTemplate:
    """Y = X.transpose(perm), float32.

    When the input's last axis stays last, rows are copied with vector loads and
    stores; otherwise the output is tiled over its last axis and the axis that
    reads the input's last axis (tile_a x tile_l blocks, the inner rows unrolled),
    so both sides touch a few cache lines per block.
    """
    name = "transpose"

    def workload(self, shape, perm) -> dict:
        op = self.name
        shape = positive_shape(op, shape)
        perm = [int(p) for p in perm]
        if sorted(perm) != list(range(len(shape))):
            raise ValueError(f"{op}: perm {perm} is not a permutation of {len(shape)} axes")
        return {"op": op, "shape": shape, "perm": perm, "dtype": "float32"}

    def out_shape(self, wl: dict) -> tuple:
        return tuple(wl["shape"][p] for p in wl["perm"])

    def _a(self, wl: dict) -> int:
        """The output axis that reads the input's last axis."""
        return wl["perm"].index(len(wl["shape"]) - 1)

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        out = self.out_shape(wl)
        a = self._a(wl)
        if a == len(out) - 1:
            return ConfigSpace(tuple(_rows_knobs(out, target)))
        knobs = [Knob("tile_a", split_choices(out[a], 16)),
                 Knob("tile_l", vec_choices(out[-1], lanes_of(target), 32)),
                 Knob("order", ("a_outer", "l_outer"))]
        if threads_ok(target):
            knobs.append(Knob("parallel", (False, True)))
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        sp = self.space(wl, target)
        if self._a(wl) == len(wl["shape"]) - 1:
            return _rows_default(sp, self.out_shape(wl), target)
        lanes = max(lanes_of(target), 4)
        return pick(sp, {"tile_a": 8, "tile_l": lanes, "order": "a_outer", "parallel": False})

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        c = cfg_dict(config)
        perm = wl["perm"]
        inv = [perm.index(d) for d in range(len(perm))]
        X = te.placeholder(tuple(wl["shape"]), "float32", name="X")
        Y = _compute(self.out_shape(wl), lambda o: X[tuple(o[inv[d]] for d in range(len(inv)))], "Y")
        s = te.create_schedule(Y)
        a = self._a(wl)
        if a == len(perm) - 1:
            _rows_schedule(s, Y, c, target)
            return s, [X, Y]
        st = s[Y]
        axes = list(st.op.axis)
        ao, ai = st.split(axes[a], factor=c["tile_a"])
        lo, li = st.split(axes[-1], factor=c["tile_l"])
        rest = [ax for d, ax in enumerate(axes[:-1]) if d != a]
        blocks = [ao, lo] if c["order"] == "a_outer" else [lo, ao]
        st.reorder(*rest, *blocks, ai, li)
        st.unroll(ai)
        st.vectorize(li)
        if c.get("parallel", False) and threads_ok(target):
            st.parallel((rest + blocks)[0])
        return s, [X, Y]

    def inputs(self, wl: dict, rng) -> list:
        return [randn(rng, wl["shape"]), np.zeros(self.out_shape(wl), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        return {"Y": np.ascontiguousarray(inputs[0].transpose(wl["perm"]))}

    def flops(self, wl: dict) -> int:
        return math.prod(wl["shape"])


# ================================================================ pad
class PadTemplate:
    """ONNX Pad, constant mode: pads[d] = [before, after] (negative values crop)."""
    name = "pad"

    def workload(self, shape, pads, value: float = 0.0) -> dict:
        op = self.name
        shape = positive_shape(op, shape)
        pads = [[int(b), int(a)] for b, a in pads]
        if len(pads) != len(shape):
            raise ValueError(f"{op}: {len(pads)} pads for a rank-{len(shape)} shape")
        out = [n + b + a for n, (b, a) in zip(shape, pads)]
        if any(n < 1 for n in out):
            raise ValueError(f"{op}: pads {pads} leave no elements of shape {shape}")
        if any(n + min(b, 0) + min(a, 0) < 1 for n, (b, a) in zip(shape, pads)):
            # every output would be the pad value and the kernel would not read X
            raise ValueError(f"{op}: pads {pads} crop away all of shape {shape}")
        return {"op": op, "shape": shape, "pads": pads, "value": float(value), "dtype": "float32"}

    def out_shape(self, wl: dict) -> tuple:
        return tuple(n + b + a for n, (b, a) in zip(wl["shape"], wl["pads"]))

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        return ConfigSpace(tuple(_rows_knobs(self.out_shape(wl), target)))

    def default(self, wl: dict, target):
        return _rows_default(self.space(wl, target), self.out_shape(wl), target)

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        shape, pads = wl["shape"], wl["pads"]
        X = te.placeholder(tuple(shape), "float32", name="X")

        def fn(o):
            conds, idx = [], []
            for d, (n, (b, a)) in enumerate(zip(shape, pads)):
                i = o[d] - b
                idx.append(i)
                if b > 0:                 # leading pad (a negative b crops)
                    conds.append(i >= 0)
                if a > 0:                 # trailing pad
                    conds.append(i < n)
            if not conds:
                return X[tuple(idx)]
            return te.if_then_else(te.all(*conds), X[tuple(idx)], wl["value"])
        Y = _compute(self.out_shape(wl), fn, "Y")
        s = te.create_schedule(Y)
        _rows_schedule(s, Y, cfg_dict(config), target)
        return s, [X, Y]

    def inputs(self, wl: dict, rng) -> list:
        return [randn(rng, wl["shape"]), np.zeros(self.out_shape(wl), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        x = inputs[0]
        crop = tuple(slice(max(0, -b), n - max(0, -a)) for n, (b, a) in zip(x.shape, wl["pads"]))
        width = [(max(0, b), max(0, a)) for b, a in wl["pads"]]
        return {"Y": np.pad(x[crop], width, constant_values=wl["value"]).astype(np.float32)}

    def flops(self, wl: dict) -> int:
        return math.prod(self.out_shape(wl))


# ================================================================ the family's table
def misc_templates() -> list:
    """Fresh instances of this family's templates: depthwise, pooling, softmax,
    elementwise, reductions, concat, transpose, pad."""
    from .depthwise import DepthwiseNCHWTemplate, DepthwiseNCHWcTemplate
    from .pool import GlobalAvgPoolTemplate, Pool2dTemplate
    from .softmax_template import SoftmaxTemplate
    return [DepthwiseNCHWTemplate(), DepthwiseNCHWcTemplate(), Pool2dTemplate("max"),
            Pool2dTemplate("avg"), GlobalAvgPoolTemplate(), SoftmaxTemplate(False),
            SoftmaxTemplate(True), ElemwiseTemplate(), ReduceTemplate(), ConcatTemplate(),
            TransposeTemplate(), PadTemplate()]
