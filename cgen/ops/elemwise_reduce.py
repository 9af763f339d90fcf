"""Reduction template (sum, mean, max, min over given axes) and the reduction compute
and schedule that pooling and softmax reuse (see cgen.ops.elemwise for the workloads)."""
from __future__ import annotations

import math

import numpy as np

from .. import te
from .common import parallel_knobs, check_op, config_dict, pick, positive_shape, vec_choices
from .elemwise import _compute, _rows_schedule, randn, unroll_choices
from .space import ConfigSpace, Knob, split_choices
from targets import resolve


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
    par = c.get("parallel", False) and resolve(target).can_thread
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
            lanes = resolve(target).lanes()
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
            knobs = [Knob("vec", vec_choices(last_out, resolve(target).lanes(), 64)),
                     Knob("unroll", unroll_choices(shape[axes[-1]], 4))]
        knobs += parallel_knobs(target)
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        lanes = max(resolve(target).lanes(), 4)
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
        c = config_dict(config)
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



def reduce_templates() -> list:
    return [ReduceTemplate()]
