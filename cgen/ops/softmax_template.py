"""Softmax and log-softmax templates over any axis (float32).

Workload: {"op": "softmax" | "log_softmax", "shape": [...], "axis": a}.

The stages are cgen.ops.nn.softmax's: the max along the axis, exp(X - max),
its sum, and the output (ex / sum, or X - max - log(sum)).  The `exp` knob
either inlines exp(X - max) into its readers ("inline": nothing stored, for
softmax exp is evaluated twice) or stores it whole ("root": computed once).
The sum is computed per row (the loop just outside the reduced axis when the
axis is innermost, or the loop outside the axis for a strided axis: a slab),
the max per row of the stored exp when exp is stored, else whole first.
The output's last axis is vectorized (ex / sum is contiguous / invariant);
for a strided axis the reductions run outside the last axis, so their loads
are contiguous vectors too; along an innermost axis they are split in `lanes` partial
results, one vector accumulator, combined pairwise at the end of the row.  exp is
te.exp_poly (no libm call), so a stored exp's last axis is vectorized as well, and the
output multiplies by the row's reciprocal sum.
"""
from __future__ import annotations

import math

import numpy as np

from .. import te
from .space import ConfigSpace, Knob
from .common import parallel_knobs, check_op, config_dict, pick, positive_shape, vec_choices
from .nn import softmax as softmax_stages
from targets import resolve


class SoftmaxTemplate:
    """softmax (log=False) or log_softmax (log=True) along one axis."""

    def __init__(self, log: bool = False):
        self.log = bool(log)
        self.name = "log_softmax" if log else "softmax"

    def workload(self, shape, axis: int = -1) -> dict:
        op = self.name
        shape = positive_shape(op, shape)
        r = len(shape)
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool) or not -r <= axis < r:
            raise ValueError(f"{op}: axis {axis!r} is out of range for shape {shape}")
        return {"op": op, "shape": shape, "axis": int(axis) % r, "dtype": "float32"}

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        knobs = [Knob("exp", ("root", "inline")),
                 Knob("vec", vec_choices(wl["shape"][-1], resolve(target).lanes(), 64))]
        knobs += parallel_knobs(target)
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        lanes = resolve(target).lanes()
        # softmax reads exp twice (sum, output): store it; log-softmax reads it once
        want = {"exp": "inline" if self.log else "root", "vec": 2 * lanes if lanes > 1 else 16,
                "parallel": False}
        return pick(self.space(wl, target), want)

    def compute(self, wl: dict, lanes: int = 1):
        """te tensors (X, Y, max, exp, sum); lanes: see cgen.ops.nn.softmax."""
        shape, axis = tuple(wl["shape"]), wl["axis"]
        X = te.placeholder(shape, "float32", name="X")
        out, mx, ex, sm = softmax_stages(X, axis, name="Y" if not self.log else "Ysm",
                                         lanes=lanes)
        if not self.log:
            return X, out, mx, ex, sm

        def at0(i):
            return tuple(0 if d == axis else v for d, v in enumerate(i))
        Y = te.compute(shape, lambda *i: X[i] - mx[at0(i)] - te.log(sm[at0(i)]), name="Y")
        return X, Y, mx, ex, sm

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        c = config_dict(config)
        lanes = resolve(target).lanes()
        X, Y, mx, ex, sm = self.compute(wl, lanes)
        s = te.create_schedule(Y)
        r, k = len(wl["shape"]), wl["axis"]
        st = s[Y]
        axes = list(st.op.axis)
        lo, li = st.split(axes[-1], factor=c["vec"])
        st.vectorize(li)
        # the row (axis innermost) or slab (strided axis) loop: reductions are computed there
        row_dim = r - 2 if k == r - 1 else k - 1
        row = axes[row_dim] if row_dim >= 0 else None
        if row is not None:
            s[sm].compute_at(st, row)
        if c["exp"] == "inline":
            s[ex].compute_inline()
        elif row is not None and not self.log:
            # the stored exp is the max's only reader: the max per row of it
            s[mx].compute_at(s[ex], s[ex].op.axis[row_dim])
        if c["exp"] == "root":
            # exp_poly is arithmetic and bit casts: its loop vectorizes like the output's
            s[ex].vectorize(s[ex].split(s[ex].op.axis[-1], factor=c["vec"])[1])
        for red in (mx, sm):
            rst = s[red]
            part = [t for t in red.op.input_tensors if t.name.endswith("_part")]
            if part:
                # the lanes' partial results, one vector accumulator, per row
                if row is not None:
                    s[part[0]].compute_at(rst, rst.op.axis[row_dim])
                s[part[0]].vectorize(s[part[0]].op.axis[-1])
            if k < r - 1:                 # reduce outside the (contiguous) last axis
                *outer, last = rst.op.axis
                rst.reorder(*outer, *rst.op.reduce_axis, last)
                rst.vectorize(last)
        if c.get("parallel", False) and resolve(target).can_thread and r >= 2:
            st.parallel(axes[0] if row_dim >= 0 else lo)
        return s, [X, Y]

    def inputs(self, wl: dict, rng) -> list:
        x = rng.standard_normal(tuple(wl["shape"]), dtype=np.float32) * np.float32(3.0)
        return [x, np.zeros(tuple(wl["shape"]), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        x = inputs[0].astype(np.float64)
        a = wl["axis"]
        z = x - x.max(axis=a, keepdims=True)
        if self.log:
            y = z - np.log(np.exp(z).sum(axis=a, keepdims=True))
        else:
            e = np.exp(z)
            y = e / e.sum(axis=a, keepdims=True)
        return {"Y": y.astype(np.float32)}

    def flops(self, wl: dict) -> int:
        return 4 * math.prod(wl["shape"])


def softmax_templates() -> list:
    return [SoftmaxTemplate(False), SoftmaxTemplate(True)]


__all__ = ["SoftmaxTemplate"]
