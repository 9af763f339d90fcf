"""Direct float32 conv2d templates on plain layouts: NCHW and NHWC (no packing).

Both accumulate an output tile in registers (cache_write computed at the tile
loop, rows unrolled, the contiguous axis vectorised) and read the input through
a padding stage that is inlined or computed at a chosen loop.

    conv2d_nchw   X (N, C, H, W),  W (F, C, KH, KW),  Y (N, F, OH, OW); the vector
                  runs along OW (output columns), the tile over output channels
    conv2d_nhwc   X (N, H, W, C),  W (KH, KW, C, F),  Y (N, OH, OW, F); the vector
                  runs along F (output channels, contiguous in W and Y), the tile
                  over output columns

Knobs: the vector tile width, the register-tile rows, the split of the input
channels, whether the reduction over channels is outside or inside the kernel
window loops, where the pad stage lives, and parallel.  Every config is legal:
splits may leave tails (guarded), and the vectorised axis is always innermost.
"""
from __future__ import annotations

import numpy as np

from ... import te
from ..space import ConfigSpace, Knob
from ..nn import _pads, _pair
from ..common import parallel_knobs, config_dict, conv_out, conv_out_hw
from .workload import block_lanes, conv2d_reference
from targets import resolve


def _workload(op, N, C, H, W, F, KH, KW, stride=1, pad=0, dilation=1, groups=1):
    sh, sw = _pair(op, "stride", stride, 1)
    dh, dw = _pair(op, "dilation", dilation, 1)
    pads = _pads(op, pad)
    conv_out(op, H, pads[0], pads[2], KH, sh, dh, "height")
    conv_out(op, W, pads[1], pads[3], KW, sw, dw, "width")
    wl = {"op": op, "N": int(N), "C": int(C), "H": int(H), "W": int(W), "F": int(F),
          "KH": int(KH), "KW": int(KW), "stride": [sh, sw], "pad": list(pads),
          "dilation": [dh, dw], "dtype": "float32"}
    if int(groups) != 1:    # only grouped workloads name it: ungrouped keys stay as logged
        if C % groups or F % groups:
            raise ValueError(f"{op}: {groups} groups do not divide {C} -> {F} channels")
        wl["groups"] = int(groups)
    return wl


def _lanes(target) -> int:
    return block_lanes(resolve(target))


def _choices(extent: int, options) -> tuple:
    return tuple(sorted({min(o, extent) for o in options}))


class _DirectConv:
    """Shared knobs and build steps; subclasses give the compute and the axis roles."""
    name = ""

    def workload(self, N, C, H, W, F, KH, KW, stride=1, pad=0, dilation=1, groups=1) -> dict:
        if groups != 1 and self.name != "conv2d_nchw":
            raise ValueError(f"{self.name}: grouped convolutions go to conv2d_nchw")
        return _workload(self.name, N, C, H, W, F, KH, KW, stride, pad, dilation, groups)

    def space(self, wl: dict, target) -> ConfigSpace:
        tgt = resolve(target)
        L = _lanes(tgt)
        vec_extent, row_extent = self._vec_row_extents(wl)
        knobs = [Knob("vec", _choices(vec_extent, (L, 2 * L, 4 * L))),
                 Knob("rows", _choices(row_extent, (1, 2, 4, 6, 8))),
                 Knob("c_split", _choices(wl["C"] // wl.get("groups", 1), (1, 4, 8, 16, 64))),
                 Knob("order", ("c_outer", "c_inner")),
                 Knob("pad_at", ("inline", "root"))]
        knobs += parallel_knobs(tgt)
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        sp = self.space(wl, target)
        L = _lanes(target)
        want = {"vec": 2 * L, "rows": 4, "c_split": 16, "order": "c_outer", "pad_at": "inline",
                "parallel": False}
        return sp.nearest(want)

    def build(self, wl: dict, target, config):
        c = config_dict(config)
        X, Wt, Y, P = self._compute(wl)
        s = te.create_schedule(Y)
        if P is not None and c["pad_at"] == "inline":
            s[P].compute_inline()
        YL = s.cache_write(Y, "local")
        n, a0, a1, a2 = s[Y].op.axis
        outer_axis, row_axis, vec_axis = self._roles(a0, a1, a2)
        vo, vi = s[Y].split(vec_axis, c["vec"])
        ro, ri = s[Y].split(row_axis, c["rows"])
        s[Y].reorder(n, outer_axis, ro, vo, ri, vi)
        s[Y].vectorize(vi)
        if c.get("parallel"):
            s[Y].parallel(outer_axis)
        s[YL].compute_at(s[Y], vo)
        ln, l0, l1, l2 = s[YL].op.axis
        l_outer, l_row, l_vec = self._roles(l0, l1, l2)
        rc, ry, rx = s[YL].op.reduce_axis
        rco, rci = s[YL].split(rc, c["c_split"])
        if c["order"] == "c_outer":
            s[YL].reorder(ln, l_outer, rco, ry, rx, rci, l_row, l_vec)
        else:
            s[YL].reorder(ln, l_outer, ry, rx, rco, rci, l_row, l_vec)
        s[YL].unroll(l_row)
        s[YL].vectorize(l_vec)
        return s, [X, Wt, Y]

    def flops(self, wl: dict) -> int:
        oh, ow = conv_out_hw(wl)
        return (2 * wl["N"] * wl["F"] * oh * ow * (wl["C"] // wl.get("groups", 1))
                * wl["KH"] * wl["KW"])


class Conv2dNCHWTemplate(_DirectConv):
    name = "conv2d_nchw"

    def _vec_row_extents(self, wl):
        oh, ow = conv_out_hw(wl)
        return ow, wl["F"]

    def _roles(self, f, y, x):
        # (outer, row, vector): output rows outermost, channels as tile rows, columns as vector
        return y, f, x

    def _compute(self, wl):
        from ..nn import _window
        G = wl.get("groups", 1)
        cg, fg = wl["C"] // G, wl["F"] // G
        X = te.placeholder((wl["N"], wl["C"], wl["H"], wl["W"]), "float32", name="X")
        Wt = te.placeholder((wl["F"], cg, wl["KH"], wl["KW"]), "float32", name="Wt")
        (sh, sw), (dh, dw), (oh, ow), P = _window(self.name, X, wl["KH"], wl["KW"], wl["stride"],
                                                  wl["pad"], wl["dilation"], "Y")
        src = P if P is not None else X
        rc = te.reduce_axis((0, cg), name="rc")
        ry = te.reduce_axis((0, wl["KH"]), name="ry")
        rx = te.reduce_axis((0, wl["KW"]), name="rx")
        # a grouped convolution reads only its group's input channels (no im2col, no packing)
        chan = (lambda o: rc) if G == 1 else (lambda o: o // fg * cg + rc)
        Y = te.compute((wl["N"], wl["F"], oh, ow), lambda b, o, y, x: te.sum(
            src[b, chan(o), y * sh + ry * dh, x * sw + rx * dw] * Wt[o, rc, ry, rx],
            axis=(rc, ry, rx)), name="Y")
        return X, Wt, Y, P

    def inputs(self, wl, rng) -> list:
        oh, ow = conv_out_hw(wl)
        cg = wl["C"] // wl.get("groups", 1)
        return [rng.standard_normal((wl["N"], wl["C"], wl["H"], wl["W"]), dtype=np.float32),
                rng.standard_normal((wl["F"], cg, wl["KH"], wl["KW"]), dtype=np.float32),
                np.zeros((wl["N"], wl["F"], oh, ow), np.float32)]

    def reference(self, wl, inputs) -> dict:
        return {"Y": conv2d_reference(inputs[0], inputs[1], wl["stride"], wl["pad"],
                                      wl["dilation"], wl.get("groups", 1))}


class Conv2dNHWCTemplate(_DirectConv):
    name = "conv2d_nhwc"

    def _vec_row_extents(self, wl):
        oh, ow = conv_out_hw(wl)
        return wl["F"], ow

    def _roles(self, y, x, f):
        return y, x, f

    def _compute(self, wl):
        N, C, H, W, F, KH, KW = (wl[k] for k in ("N", "C", "H", "W", "F", "KH", "KW"))
        (sh, sw), (dh, dw), p = wl["stride"], wl["dilation"], wl["pad"]
        oh, ow = conv_out_hw(wl)
        X = te.placeholder((N, H, W, C), "float32", name="X")
        Wt = te.placeholder((KH, KW, C, F), "float32", name="Wt")
        if any(p):
            P = te.compute((N, H + p[0] + p[2], W + p[1] + p[3], C), lambda n, y, x, c: te.if_then_else(
                te.all(y >= p[0], y < H + p[0], x >= p[1], x < W + p[1]),
                X[n, te.minimum(te.maximum(y - p[0], 0), H - 1), te.minimum(te.maximum(x - p[1], 0), W - 1), c],
                0.0), name="Y_pad")
        else:
            P = None
        src = P if P is not None else X
        rc = te.reduce_axis((0, C), name="rc")
        ry = te.reduce_axis((0, KH), name="ry")
        rx = te.reduce_axis((0, KW), name="rx")
        Y = te.compute((N, oh, ow, F), lambda n, y, x, f: te.sum(
            src[n, y * sh + ry * dh, x * sw + rx * dw, rc] * Wt[ry, rx, rc, f], axis=(rc, ry, rx)),
            name="Y")
        return X, Wt, Y, P

    def inputs(self, wl, rng) -> list:
        oh, ow = conv_out_hw(wl)
        return [rng.standard_normal((wl["N"], wl["H"], wl["W"], wl["C"]), dtype=np.float32),
                rng.standard_normal((wl["KH"], wl["KW"], wl["C"], wl["F"]), dtype=np.float32),
                np.zeros((wl["N"], oh, ow, wl["F"]), np.float32)]

    def reference(self, wl, inputs) -> dict:
        x = inputs[0].transpose(0, 3, 1, 2)
        w = inputs[1].transpose(3, 2, 0, 1)
        y = conv2d_reference(x, w, wl["stride"], wl["pad"], wl["dilation"], 1)
        return {"Y": np.ascontiguousarray(y.transpose(0, 2, 3, 1))}


def direct_conv_templates() -> list:
    return [Conv2dNCHWTemplate(), Conv2dNHWCTemplate()]
