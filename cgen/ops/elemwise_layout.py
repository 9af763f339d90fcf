"""Data-movement templates: concat, transpose, constant pad (see cgen.ops.elemwise for
the workloads and the shared row schedule)."""
from __future__ import annotations

import math

import numpy as np

from .. import te
from .common import parallel_knobs, check_op, config_dict, pick, positive_shape, vec_choices
from .elemwise import RowsTemplate, _compute, _rows_default, _rows_knobs, _rows_schedule, randn
from .space import ConfigSpace, Knob, split_choices
from targets import resolve


# ================================================================ concat
class ConcatTemplate(RowsTemplate):
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
        _rows_schedule(s, Y, config_dict(config), target)
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
                 Knob("tile_l", vec_choices(out[-1], resolve(target).lanes(), 32)),
                 Knob("order", ("a_outer", "l_outer"))]
        knobs += parallel_knobs(target)
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        sp = self.space(wl, target)
        if self._a(wl) == len(wl["shape"]) - 1:
            return _rows_default(sp, self.out_shape(wl), target)
        lanes = max(resolve(target).lanes(), 4)
        return pick(sp, {"tile_a": 8, "tile_l": lanes, "order": "a_outer", "parallel": False})

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        c = config_dict(config)
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
        if c.get("parallel", False) and resolve(target).can_thread:
            st.parallel((rest + blocks)[0])
        return s, [X, Y]

    def inputs(self, wl: dict, rng) -> list:
        return [randn(rng, wl["shape"]), np.zeros(self.out_shape(wl), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        return {"Y": np.ascontiguousarray(inputs[0].transpose(wl["perm"]))}

    def flops(self, wl: dict) -> int:
        return math.prod(wl["shape"])


# ================================================================ pad
class PadTemplate(RowsTemplate):
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
        _rows_schedule(s, Y, config_dict(config), target)
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



def layout_templates() -> list:
    return [ConcatTemplate(), TransposeTemplate(), PadTemplate()]
