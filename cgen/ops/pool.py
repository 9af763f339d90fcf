"""Pooling templates (float32, NCHW) with ONNX semantics.

Workloads (`Pool2dTemplate.workload`):

    {"op": "max_pool2d" | "avg_pool2d", "N", "C", "H", "W", "kernel": [kh, kw],
     "stride": [sh, sw], "pad": [top, left, bottom, right], "dilation": [dh, dw],
     "ceil_mode": bool, "count_include_pad": bool}
    {"op": "global_avg_pool2d", "N", "C", "H", "W"}          output (N, C, 1, 1)

ONNX rules: out = floor|ceil((size + pads - dilation*(k-1) - 1) / stride) + 1, and
with ceil_mode a window that would start past the input and its leading pad is
dropped.  The input is padded (-inf for max, 0 for average) up to the last
window; the average divides by the number of window taps inside the input
(count_include_pad=False) or inside the input plus its declared pads
(count_include_pad=True; the ceil-mode extension is never counted).  That
count is the product of a per-row and a per-column count, two small stages.

Schedules follow the NCHW depthwise template (cgen.ops.depthwise): tiles of
tile_y rows (unrolled) x tile_x columns (vectorized along W; at stride 2 along W over
the input stored deinterleaved, as depthwise's), the window
either one unrolled max/sum expression (taps="expr") or a reduction
(taps="reduce"; for the average the window sum is then a stage of its own,
divided in a second vectorized pass), the padded input placed by pad_at.
Global average pooling is the mean reduction of cgen.ops.elemwise_reduce over H and W.
"""
from __future__ import annotations

import numpy as np

from .. import te
from .space import ConfigSpace, Knob, split_choices
from ..te.expr import reduce_identity
from .common import parallel_knobs, check_op, config_dict, pick, pool_geometry, vec_choices
from .elemwise_reduce import ReduceTemplate, reduce_compute, reduce_schedule
from .depthwise import covering_pads, deinterleaved_pad, pair_deinterleaved_copy, window_tiles
from .nn import _pad_nchw, _pads, _pair
from targets import resolve


def pool_reference(x: np.ndarray, wl: dict) -> np.ndarray:
    """numpy ONNX MaxPool / AveragePool (float64 accumulation), per window tap."""
    kh, kw = wl["kernel"]
    sh, sw = wl["stride"]
    dh, dw = wl["dilation"]
    t, l, b, r = wl["pad"]
    n, c, h, w = x.shape
    (oh, ow), _ = pool_geometry("pool_reference", h, w, wl["kernel"], wl["stride"], wl["pad"],
                                wl["dilation"], wl["ceil_mode"])
    mx = wl["op"] == "max_pool2d"
    acc = np.full((n, c, oh, ow), -np.inf if mx else 0.0)
    cnt_h, cnt_w = np.zeros(oh), np.zeros(ow)
    lo_h, hi_h = (-t, h + b) if wl.get("count_include_pad") else (0, h)
    lo_w, hi_w = (-l, w + r) if wl.get("count_include_pad") else (0, w)
    ys, xs = np.arange(oh) * sh - t, np.arange(ow) * sw - l
    for i in range(kh):
        py = ys + i * dh
        cnt_h += (py >= lo_h) & (py < hi_h)
        for j in range(kw):
            px = xs + j * dw
            if i == 0:
                cnt_w += (px >= lo_w) & (px < hi_w)
            vy, vx = (py >= 0) & (py < h), (px >= 0) & (px < w)
            tap = np.full((n, c, oh, ow), -np.inf if mx else 0.0)
            sel = np.ix_(np.flatnonzero(vy), np.flatnonzero(vx))
            tap[:, :, sel[0], sel[1]] = x[:, :, py[vy]][:, :, :, px[vx]]
            acc = np.maximum(acc, tap) if mx else acc + tap
    if not mx:
        acc = acc / (cnt_h[:, None] * cnt_w[None, :])
    return acc.astype(np.float32)


class Pool2dTemplate:
    """ONNX MaxPool (mode "max") or AveragePool (mode "avg") on NCHW."""

    def __init__(self, mode: str):
        if mode not in ("max", "avg"):
            raise ValueError(f"Pool2dTemplate: mode must be 'max' or 'avg', got {mode!r}")
        self.mode = mode
        self.name = f"{mode}_pool2d"

    def workload(self, N, C, H, W, kernel, stride=None, pad=0, dilation=1, ceil_mode=False,
                 count_include_pad=False, dtype="float32") -> dict:
        op = self.name
        for name, v in (("N", N), ("C", C), ("H", H), ("W", W)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
        if dtype != "float32":
            raise ValueError(f"{op}: only float32 is supported, got {dtype}")
        kernel = _pair(op, "kernel", kernel, 1)
        stride = _pair(op, "stride", kernel if stride is None else stride, 1)
        dilation = _pair(op, "dilation", dilation, 1)
        pads = _pads(op, pad)
        if self.mode == "max" and count_include_pad:
            raise ValueError(f"{op}: count_include_pad applies to average pooling only")
        pool_geometry(op, H, W, kernel, stride, pads, dilation, bool(ceil_mode))
        return {"op": op, "N": int(N), "C": int(C), "H": int(H), "W": int(W),
                "kernel": list(kernel), "stride": list(stride), "pad": list(pads),
                "dilation": list(dilation), "ceil_mode": bool(ceil_mode),
                "count_include_pad": bool(count_include_pad), "dtype": dtype}

    def geometry(self, wl: dict):
        return pool_geometry(self.name, wl["H"], wl["W"], wl["kernel"], wl["stride"], wl["pad"],
                             wl["dilation"], wl["ceil_mode"])

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        (OH, OW), full = self.geometry(wl)
        knobs = [Knob("tile_y", split_choices(OH, 8)),
                 Knob("tile_x", vec_choices(OW, resolve(target).lanes(), 64)),
                 Knob("taps", ("expr", "reduce"))]
        if any(full):
            knobs.append(Knob("pad_at", ("band", "plane", "inline", "root")))
        knobs += parallel_knobs(target)
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        lanes = resolve(target).lanes()
        _, (t, l, b, r) = self.geometry(wl)
        plane_bytes = (wl["H"] + t + b) * (wl["W"] + l + r) * 4
        want = {"tile_y": 4, "tile_x": lanes if lanes > 1 else 16, "taps": "expr",
                "pad_at": "plane" if plane_bytes <= 16 * 1024 else "band", "parallel": False}
        return pick(self.space(wl, target), want)

    def compute(self, wl: dict, taps: str, tile: tuple | None = None):
        """te tensors (X, P, Y, S): P the padded input or None, S the window sum of an
        average with taps="reduce" (else None).  With tile (tile_y, tile_x), P also
        covers the tail tiles (cgen.ops.depthwise.covering_pads)."""
        N, C, H, W = (wl[k] for k in ("N", "C", "H", "W"))
        kh, kw = wl["kernel"]
        sh, sw = wl["stride"]
        dh, dw = wl["dilation"]
        (OH, OW), full = self.geometry(wl)
        if tile is not None and any(full):
            full = covering_pads(full, (H, W), (OH, OW), tile, (kh, kw), (sh, sw), (dh, dw))
        X = te.placeholder((N, C, H, W), "float32", name="X")
        mx = self.mode == "max"
        fill = reduce_identity("max", "float32") if mx else 0.0
        if sw == 2 and dw == 1:
            # as depthwise's stride 2: the (padded) input deinterleaved, so the output
            # rows vectorize (a 3x3/2 max pool read its input at stride 2: scalar code)
            P = deinterleaved_pad(X, full, fill, likely=tile is not None)

            def load(n, c, y, x, i, j):
                return P[n, c, y * sh + i * dh, j % 2, x + j // 2]
        else:
            P = _pad_nchw(X, full, fill, "P", likely=tile is not None) if any(full) else None
            src = P if P is not None else X

            def load(n, c, y, x, i, j):
                return src[n, c, y * sh + i * dh, x * sw + j * dw]

        def chain(n, c, y, x):
            acc = None
            for i in range(kh):
                for j in range(kw):
                    v = load(n, c, y, x, i, j)
                    acc = v if acc is None else (te.maximum(acc, v) if mx else acc + v)
            return acc
        ry = te.reduce_axis((0, kh), name="ry")
        rx = te.reduce_axis((0, kw), name="rx")
        comb = te.max if mx else te.sum
        shape = (N, C, OH, OW)
        if mx:
            if taps == "expr":
                return X, P, te.compute(shape, chain, name="Y"), None
            return X, P, te.compute(shape, lambda n, c, y, x: comb(
                load(n, c, y, x, ry, rx), axis=(ry, rx)), name="Y"), None
        t, l, b, r = wl["pad"]
        inc = wl["count_include_pad"]

        def counts(n_out, size, k, s, d, before, after, name):
            lo, hi = (-before, size + after) if inc else (0, size)
            rk = te.reduce_axis((0, k), name=f"{name}_k")
            return te.compute((n_out,), lambda o: te.sum(te.if_then_else(
                te.all(o * s - before + rk * d >= lo, o * s - before + rk * d < hi), 1.0, 0.0),
                axis=rk), name=name)
        ch = counts(OH, H, kh, sh, dh, t, b, "cnt_h")
        cw = counts(OW, W, kw, sw, dw, l, r, "cnt_w")
        if taps == "expr":
            Y = te.compute(shape, lambda n, c, y, x: chain(n, c, y, x) / (ch[y] * cw[x]), name="Y")
            return X, P, Y, None
        S = te.compute(shape, lambda n, c, y, x: comb(load(n, c, y, x, ry, rx), axis=(ry, rx)),
                       name="S")
        Y = te.compute(shape, lambda n, c, y, x: S[n, c, y, x] / (ch[y] * cw[x]), name="Y")
        return X, P, Y, S

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        c = config_dict(config)
        # an unpadded stride-2 window has no pad_at knob but still its deinterleaved
        # copy: per band of tile rows, so it stays in L1 (per plane, a 111x111 input's
        # copy left L1 and ran slower than the strided reads it replaced)
        where = c.get("pad_at", "band")
        cover = (c["tile_y"], c["tile_x"]) if where in ("band", "plane") else None
        X, P, Y, S = self.compute(wl, c["taps"], cover)
        s = te.create_schedule(Y)
        par = c.get("parallel", False) and resolve(target).can_thread
        main = S if S is not None else Y
        st = s[main]
        ch, yo = window_tiles(st, c)
        if P is not None:
            if where == "inline":
                s[P].compute_inline()
            elif where == "plane":
                s[P].compute_at(st, ch)
            elif where == "band":
                s[P].compute_at(st, yo)
            if len(P.shape) == 5 and where != "inline":
                pair_deinterleaved_copy(s[P])
        if par:
            st.parallel(ch)
        if S is not None:
            # the division: a second pass over the stored window sums
            yst = s[Y]
            *_, yx = yst.op.axis
            yo2, yi2 = yst.split(yx, factor=c["tile_x"])
            yst.vectorize(yi2)
            if par:
                yst.parallel(yst.op.axis[1])
        return s, [X, Y]

    def inputs(self, wl: dict, rng) -> list:
        (OH, OW), _ = self.geometry(wl)
        x = rng.standard_normal((wl["N"], wl["C"], wl["H"], wl["W"]), dtype=np.float32)
        if self.mode == "max":
            x -= np.float32(3.0)        # mostly negative: a zero pad would win
        return [x, np.zeros((wl["N"], wl["C"], OH, OW), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        return {"Y": pool_reference(inputs[0], wl)}

    def flops(self, wl: dict) -> int:
        (OH, OW), _ = self.geometry(wl)
        return wl["N"] * wl["C"] * OH * OW * wl["kernel"][0] * wl["kernel"][1]


class GlobalAvgPoolTemplate:
    """ONNX GlobalAveragePool: (N, C, H, W) -> (N, C, 1, 1), the mean over H and W."""
    name = "global_avg_pool2d"

    def workload(self, N, C, H, W, dtype="float32") -> dict:
        for name, v in (("N", N), ("C", C), ("H", H), ("W", W)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{self.name}: {name} must be a positive int, got {v!r}")
        if dtype != "float32":
            raise ValueError(f"{self.name}: only float32 is supported, got {dtype}")
        return {"op": self.name, "N": int(N), "C": int(C), "H": int(H), "W": int(W),
                "dtype": dtype}

    def _reduce_wl(self, wl: dict) -> dict:
        return ReduceTemplate().workload("mean", [wl["N"], wl["C"], wl["H"], wl["W"]], [2, 3],
                                         keepdims=True)

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        return ReduceTemplate().space(self._reduce_wl(wl), target)

    def default(self, wl: dict, target):
        d = ReduceTemplate().default(self._reduce_wl(wl), target)
        return self.space(wl, target).get(d.index)

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        c = config_dict(config)
        X = te.placeholder((wl["N"], wl["C"], wl["H"], wl["W"]), "float32", name="X")
        out, red, partial = reduce_compute(X, (2, 3), True, "mean", c.get("rfactor", 1))
        s = te.create_schedule(out)
        reduce_schedule(s, out, red, partial, dict(c, kept_last=False), target)
        return s, [X, out]

    def inputs(self, wl: dict, rng) -> list:
        return [rng.standard_normal((wl["N"], wl["C"], wl["H"], wl["W"]), dtype=np.float32),
                np.zeros((wl["N"], wl["C"], 1, 1), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        return {"Y": inputs[0].astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(np.float32)}

    def flops(self, wl: dict) -> int:
        return wl["N"] * wl["C"] * wl["H"] * wl["W"]


def pool_templates() -> list:
    return [Pool2dTemplate("max"), Pool2dTemplate("avg"), GlobalAvgPoolTemplate()]


__all__ = ["Pool2dTemplate", "GlobalAvgPoolTemplate", "pool_geometry", "pool_reference"]
