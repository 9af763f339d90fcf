"""Injective and reduction templates: elementwise unary/binary ops with numpy
broadcasting, reductions (sum, mean, max over given axes), concat, transpose,
constant pad, in three modules: elemwise.py (the shared injective schedule and the
elementwise template), elemwise_reduce.py (reductions), elemwise_layout.py (concat,
transpose, pad).

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
from .nn import broadcast_binary
from .common import parallel_knobs, broadcast_shape, check_op, config_dict, pick, positive_shape, vec_choices
from .space import ConfigSpace, Knob, split_choices
from targets import resolve


# ================================================================ shared schedule helpers
def unroll_choices(extent: int, limit: int = 8) -> tuple:
    """Split factors for an unrolled axis: 1 (no unroll) and the divisors and powers of
    two of the extent up to `limit`."""
    return split_choices(extent, limit)



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
    if c.get("parallel", False) and resolve(target).can_thread:
        st.parallel(loops[0])
    return loops


def _rows_knobs(shape, target, fuse: bool = True) -> list:
    knobs = [Knob("vec", vec_choices(shape[-1], resolve(target).lanes(), 64))]
    knobs.append(Knob("unroll", unroll_choices(shape[-2], 4) if len(shape) >= 2 else (1,)))
    if fuse:
        knobs.append(Knob("fuse", (False, True) if len(shape) >= 4 else (False,)))
    knobs += parallel_knobs(target)
    return knobs


def _rows_default(space: ConfigSpace, shape, target, **extra):
    lanes = resolve(target).lanes()
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


class RowsTemplate:
    """The space and default of a template scheduled by _rows_schedule over its
    out_shape(wl) (elementwise, concat, pad)."""
    name = ""

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        return ConfigSpace(tuple(_rows_knobs(self.out_shape(wl), target)))

    def default(self, wl: dict, target):
        return _rows_default(self.space(wl, target), self.out_shape(wl), target)


class ElemwiseTemplate(RowsTemplate):
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
            broadcast_shape(tuple(shapes[0]), tuple(shapes[1]))
        return {"op": op, "fn": fn, "shapes": shapes, "dtype": "float32"}

    def out_shape(self, wl: dict) -> tuple:
        if len(wl["shapes"]) == 1:
            return tuple(wl["shapes"][0])
        return broadcast_shape(tuple(wl["shapes"][0]), tuple(wl["shapes"][1]))

    def compute(self, wl: dict):
        fn, shapes = wl["fn"], wl["shapes"]
        if fn in UNARY:
            A = te.placeholder(tuple(shapes[0]), "float32", name="A")
            f = UNARY[fn][0]
            return [A], _compute(shapes[0], lambda i: f(A[i]), "Y")
        A = te.placeholder(tuple(shapes[0]), "float32", name="A")
        B = te.placeholder(tuple(shapes[1]), "float32", name="B")
        return [A, B], broadcast_binary(fn, A, B, name="Y")

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        ins, Y = self.compute(wl)
        s = te.create_schedule(Y)
        _rows_schedule(s, Y, config_dict(config), target)
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



def elemwise_templates() -> list:
    return [ElemwiseTemplate()]
