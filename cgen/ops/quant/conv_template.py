"""QLinearConv-style templates: grouped conv2d and depthwise conv2d."""
from __future__ import annotations

import numpy as np

from ... import te
from ..common import parallel_knobs
from ..space import ConfigSpace, Knob, split_choices
from ...tensorize.int8_microkernel import tile_mrs, tile_shape
from targets import resolve
from .compute import conv_geometry, pack_weights, qconv2d
from .dispatch import TILE_INTRINS, default_algo, target_algos, check_common, config_dict, tensorize
from .reference import np_qconv2d_acc, qvalues, random_bias, requant_inputs, requantize_reference, zero_points


class QConv2dTemplate:
    """QLinearConv-style conv2d, NCHW, any groups/stride/padding/dilation.

    Knobs, by algo (a knob an algo does not use is ignored):
      algo      direct | packed | packed_dot (int8 dot kernel) | packed_tile (u8 x s8
                register-tile kernel) | packed_tile_s8 (s8 x s8 tile, the activations
                shifted into int8 by the packing); the kernels where the target has them
      col_at    packed*: "tile": output-row tiles (tile_x columns x tile_f channels; grouped:
                every channel), the im2col rows gathered per tile; "root": im2col of every
                pixel once (pixels flat, padded to micro_x), the products by tile_f-channel
                blocks (their weights stay in cache over all pixels)
      tile_x    direct, packed* "tile": output columns per tile
      tile_f    output channels per tile / block
      micro_x   packed*: pixels per register block (packed_tile: the kernel's MR, the largest
                offered <= micro_x)
      micro_f   packed, packed_dot: channels per register block (packed_tile: the kernel's NR)
      order     direct: 0 channel-first / 1 window-first reduction; packed*: 0 channel blocks
                outside pixel blocks, 1 the reverse
      unroll    0 none; 1 the register block (direct: the tile's channel loop); 2 also the
                window loop (direct) / the pixel block (packed, packed_dot)
      tile_k    packed*: reduction block (0: all of K at once), outermost in a tile / block
      parallel  OpenMP over channel tiles (direct, packed* "root") or output rows ("tile")"""
    name = "qconv2d"

    def workload(self, N: int, C: int, H: int, W: int, F: int, KH: int, KW: int, stride=1,
                 pads=0, dilation=1, groups: int = 1, x_dtype="uint8", w_dtype="int8",
                 y_dtype=None, rounding="onnx", per_channel=False, w_layout="OIHW") -> dict:
        from ..nn import _pads, _pair
        op = self.name
        y_dtype = y_dtype or x_dtype
        check_common(op, rounding, {"x_dtype": x_dtype, "w_dtype": w_dtype, "y_dtype": y_dtype})
        if groups < 1 or C % groups or F % groups:
            raise ValueError(f"{op}: groups {groups} must divide C={C} and F={F}")
        wl = {"op": op, "N": int(N), "C": int(C), "H": int(H), "W": int(W), "F": int(F),
              "KH": int(KH), "KW": int(KW), "stride": list(_pair(op, "stride", stride, 1)),
              "pads": list(_pads(op, pads)), "dilation": list(_pair(op, "dilation", dilation, 1)),
              "groups": int(groups), "x_dtype": x_dtype, "w_dtype": w_dtype, "y_dtype": y_dtype,
              "rounding": rounding, "per_channel": bool(per_channel), "w_layout": w_layout}
        if w_layout not in ("OIHW", "packed"):
            raise ValueError(f"{op}: w_layout must be 'OIHW' or 'packed', got {w_layout!r}")
        g = conv_geometry(wl)
        if g["OH"] < 1 or g["OW"] < 1:
            raise ValueError(f"{op}: the window is larger than the padded input: {wl}")
        return wl

    def space(self, wl: dict, target) -> ConfigSpace:
        tgt = resolve(target)
        g = conv_geometry(wl)
        knobs = [Knob("algo", target_algos(tgt)),
                 Knob("tile_x", split_choices(g["OW"], 64)),
                 Knob("tile_f", split_choices(g["F"], 64)),
                 Knob("micro_x", (1, 2, 4)),
                 Knob("micro_f", (1, 2, 4)),
                 Knob("order", (0, 1)),
                 Knob("unroll", (0, 1, 2)),
                 Knob("col_at", ("tile", "root")),
                 Knob("tile_k", (0,) + tuple(k for k in (256, 512, 1024) if k < g["K"]))]
        return ConfigSpace(tuple(knobs + parallel_knobs(tgt)))

    def build(self, wl: dict, target, config):
        tgt = resolve(target)
        c = config_dict(config)
        algo = c["algo"]
        if algo == "direct":
            op = qconv2d(wl, algo)
            s = te.create_schedule(op.out)
            self._direct(s, op, c, s[op.out].op.axis)
            return s, op.args
        mr, nr = tile_shape(tgt, c["micro_x"]) if algo in TILE_INTRINS else (c["micro_x"], c["micro_f"])
        flat = c["col_at"] == "root"
        op = qconv2d(wl, algo, flat_pixels=mr if flat else None)
        s = te.create_schedule(op.out)
        (self._packed_flat if flat else self._packed)(s, op, c, wl, tgt, mr, nr)
        return s, op.args

    @staticmethod
    def _direct(s, op, c, axes):
        n, f, y, x = axes
        Y, acc = op.out, op.stages["acc"]
        fo, fi = s[Y].split(f, c["tile_f"])
        xo, xi = s[Y].split(x, c["tile_x"])
        # channel tiles outermost (not fused with the batch: a fused loop's // and % would
        # hide the tile's extent from bound inference)
        s[Y].reorder(fo, n, y, xo, fi, xi)
        if c.get("parallel"):
            s[Y].parallel(fo)
        s[acc].compute_at(s[Y], xo)
        an, af, ay, ax = s[acc].op.axis
        rc, ry, rx = s[acc].op.reduce_axis
        red = (rc, ry, rx) if c["order"] == 0 else (ry, rx, rc)
        s[acc].reorder(an, ay, *red, af, ax)
        if c["unroll"] >= 1:
            s[acc].unroll(af)
        if c["unroll"] >= 2:
            s[acc].unroll(rx)

    @staticmethod
    def _register_block(s, dot, algo, c, tgt, head, outer_f, pix, mr, nr, f_extent, K):
        """Inside a dot tile: (nr channels x mr pixels) register blocks, the kernel call.

        f_extent: channels of the tile (the loop split by nr).  The tile kernel needs all of
        its loops (a loop of extent 1 is simplified away): with fewer channels than nr, or
        K = 1, the block stays plain loops."""
        (rk,) = s[dot].op.reduce_axis
        fo2, fi2 = s[dot].split(outer_f, nr)
        po2, pi2 = s[dot].split(pix, mr)
        outer = (fo2, po2) if c["order"] == 0 else (po2, fo2)
        # K blocks outermost (tile_k, 0: one block): a block of the operands stays in L1
        # over the register blocks; the reduction loop outside the register tile also puts
        # the tile's zeroing there, so the tile's (pixel, channel, k) nest is perfect
        tk = c.get("tile_k", 0)
        rko, rk = s[dot].split(rk, tk) if tk and tk < K else s[dot].split(rk, nparts=1)
        if algo in TILE_INTRINS:
            s[dot].reorder(*head, rko, *outer, pi2, fi2, rk)
            if f_extent >= nr and K > 1:
                tensorize(s, dot, pi2, algo, tgt, mr)
        else:
            s[dot].reorder(*head, rko, *outer, pi2, fi2, rk)
            tensorize(s, dot, rk, algo, tgt)
            if c["unroll"] >= 1:
                s[dot].unroll(fi2)
            if c["unroll"] >= 2:
                s[dot].unroll(pi2)

    def _packed(self, s, op, c, wl, tgt, mr, nr):
        """Output-row tiles: im2col rows gathered per (row, tile_x columns, tile_f channels)
        tile, the dot tile right before its requantisation."""
        g = conv_geometry(wl)
        Y, dot, Xcol = op.out, op.stages["dot"], op.stages["Xcol"]
        n, f, y, x = s[Y].op.axis
        xo, xi = s[Y].split(x, c["tile_x"])
        if g["G"] == 1:
            fo, fi = s[Y].split(f, c["tile_f"])
            s[Y].reorder(n, y, xo, fo, fi, xi)
            s[dot].compute_at(s[Y], fo)
            an, af, ay, ax = s[dot].op.axis
            head = (an, ay)
        else:   # grouped: a tile holds every channel
            s[Y].reorder(n, y, xo, f, xi)
            s[dot].compute_at(s[Y], xo)
            an, ag, af, ay, ax = s[dot].op.axis
            head = (an, ay, ag)
        if c.get("parallel"):
            s[Y].parallel(y)
        f_ext = min(c["tile_f"], g["F"]) if g["G"] == 1 else g["Fg"]
        self._register_block(s, dot, c["algo"], c, tgt, head, af, ax, mr, nr, f_ext, g["K"])
        s[Xcol].compute_at(s[dot], ay)
        self._pack_loops(s, op, wl, (Xcol.op.axis[-1],))

    def _packed_flat(self, s, op, c, wl, tgt, mr, nr):
        """im2col of every pixel at root (flat, padded to the register tile), then the dot
        by channel tiles of tile_f (their weights stay in cache over all pixels), then the
        requantisation."""
        g = conv_geometry(wl)
        Y, dot, Xcol = op.out, op.stages["dot"], op.stages["Xcol"]
        if g["G"] == 1:
            an, af, ap = s[dot].op.axis
            fo, fi = s[dot].split(af, c["tile_f"])
            head = (an, fo)
        else:
            an, ag, af, ap = s[dot].op.axis
            fo, fi = s[dot].split(af, c["tile_f"])
            head = (an, ag, fo)
        if c.get("parallel"):
            s[dot].parallel(fo)
            s[Y].parallel(s[Y].op.axis[1])
        self._register_block(s, dot, c["algo"], c, tgt, head, fi, ap, mr, nr,
                             min(c["tile_f"], g["Fg"]), g["K"])
        # the gather: pixels split into rows and columns, so p // OW and p % OW simplify
        s[Xcol].split(s[Xcol].op.axis[2], g["OW"])
        self._pack_loops(s, op, wl, (Xcol.op.axis[-1],))

    @staticmethod
    def _pack_loops(s, op, wl, xcol_k):
        g = conv_geometry(wl)
        # the packing loops: k split into (ry, rx, c) so the gathers index without division
        Xcol = op.stages["Xcol"]
        todo = [(Xcol, xcol_k[0])]
        if "Wq" in op.stages and wl.get("w_layout", "OIHW") != "packed":
            todo.append((op.stages["Wq"], op.stages["Wq"].op.axis[-1]))
        for stage, k in todo:
            ko, kc = s[stage].split(k, g["Cg"])
            s[stage].split(ko, g["KW"])
        xq = op.stages["Xq"]
        s[xq].split(s[xq].op.axis[-1], g["Cg"])

    def default(self, wl: dict, target):
        tgt = resolve(target)
        g = conv_geometry(wl)
        sp = self.space(wl, tgt)
        algo = default_algo(tgt, g["K"])
        OW = g["OW"]
        mrs = tile_mrs(tgt) or (1, 2, 4)
        tk = 0
        if algo == "direct":
            tx, mx, tf, col_at = min(OW, 32), 1, 8, "tile"
        else:
            # row tiles (a whole row when it fits) holding every channel, while the widest
            # register tile divides the row and the weights fit in about 256 KB; otherwise
            # im2col at root (pixels flat, padded to the register tile) by channel tiles,
            # and with a long reduction, K blocks of 512 (32 channels' block: 16 KB)
            tx = OW if OW <= 64 else max(d for d in split_choices(OW, 64) if OW % d == 0)
            tk = 512 if g["K"] > 1024 else 0
            tf = 32 if tk else max(4, min(g["F"], 64, (1 << 18) // max(g["K"], 1)))
            row_ok = tx % max(mrs) == 0 and tf >= g["F"] and not tk
            col_at = "tile" if row_ok else "root"
            mx = max(mrs)
        want = {"algo": algo, "tile_x": tx, "tile_f": tf, "micro_x": mx, "micro_f": 4,
                "order": 1 if algo == "direct" else 0, "unroll": 1, "col_at": col_at,
                "tile_k": tk, "parallel": False}
        return sp.nearest(want, larger_on_tie=True)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list for a quick sweep: the default, then variations of its blocking."""
        tgt = resolve(target)
        sp = self.space(wl, tgt)
        d = self.default(wl, tgt)
        g = conv_geometry(wl)
        out = [d]
        base = d.to_dict()
        for change in ({"col_at": "root"}, {"col_at": "tile"}, {"col_at": "root", "tile_f": 16},
                       {"col_at": "root", "tile_f": 32}, {"col_at": "tile", "micro_x": 2},
                       {"order": 1}, {"algo": "packed_dot"}, {"algo": "packed"},
                       {"tile_f": g["F"], "col_at": "tile"}, {"col_at": "root", "tile_k": 512},
                       {"col_at": "root", "tile_k": 256, "tile_f": 64}):
            want = {**base, **change}
            c = sp.nearest(want, larger_on_tie=True)
            if c.index not in {o.index for o in out}:
                out.append(c)
        return out

    def inputs(self, wl: dict, rng) -> list:
        g = conv_geometry(wl)
        P = g["F"] if wl["per_channel"] else 1
        x = qvalues(rng, wl["x_dtype"], (g["N"], g["C"], g["H"], g["W"]))
        w = qvalues(rng, wl["w_dtype"], (g["F"], g["Cg"], g["KH"], g["KW"]))
        bias = random_bias(rng, g["F"], g["K"])
        xz, wz = zero_points(rng, P, wl["x_dtype"], wl["w_dtype"])
        acc = np_qconv2d_acc(x, w, bias, int(xz[0]), wz, wl["stride"], wl["pads"], wl["dilation"],
                             wl["groups"])
        rq = requant_inputs(rng, wl["rounding"], acc, P, wl["y_dtype"])
        y = np.zeros((g["N"], g["F"], g["OH"], g["OW"]), wl["y_dtype"])
        if wl.get("w_layout", "OIHW") == "packed":
            w = pack_weights(w)
        return [x, w, bias, xz, wz, *rq, y]

    def reference(self, wl: dict, inputs) -> dict:
        x, w, bias, xz, wz = inputs[:5]
        if wl.get("w_layout", "OIHW") == "packed":
            g = conv_geometry(wl)
            w = w.reshape(g["F"], g["KH"], g["KW"], g["Cg"]).transpose(0, 3, 1, 2)
        acc = np_qconv2d_acc(x, w, bias, int(xz[0]), wz, wl["stride"], wl["pads"], wl["dilation"],
                             wl["groups"])
        return {"Y": requantize_reference(wl["rounding"], acc, inputs[3:-1], wl["y_dtype"], 1)}

    def flops(self, wl: dict) -> int:
        g = conv_geometry(wl)
        return 2 * g["N"] * g["F"] * g["OH"] * g["OW"] * g["K"]


class QDepthwiseConv2dTemplate(QConv2dTemplate):
    """Depthwise QLinearConv (groups = C, channel multiplier m: F = C*m), NCHW, direct.

    Per output channel: the zero-point-free input plane (Xw, int16, padded with 0) is made
    at root or per channel ("pad_at"), the accumulator plane is computed in tile_y x tile_x
    tiles with the window loops outside the tile (unroll: 0 none, 1 rx, 2 ry and rx), then
    requantised; parallel over channels."""
    name = "qdepthwise_conv2d"

    def workload(self, N: int, C: int, H: int, W: int, KH: int, KW: int, stride=1, pads=0,
                 dilation=1, multiplier: int = 1, x_dtype="uint8", w_dtype="int8", y_dtype=None,
                 rounding="onnx", per_channel=False, w_layout="OIHW") -> dict:
        wl = super().workload(N, C, H, W, C * multiplier, KH, KW, stride, pads, dilation, C,
                              x_dtype, w_dtype, y_dtype, rounding, per_channel, w_layout)
        wl["op"] = self.name
        return wl

    def space(self, wl: dict, target) -> ConfigSpace:
        tgt = resolve(target)
        g = conv_geometry(wl)
        knobs = [Knob("tile_y", split_choices(g["OH"], 16)),
                 Knob("tile_x", split_choices(g["OW"], 64)),
                 Knob("unroll", (0, 1, 2)),
                 Knob("pad_at", ("root", "channel"))]
        return ConfigSpace(tuple(knobs + parallel_knobs(tgt)))

    def build(self, wl: dict, target, config):
        c = config_dict(config)
        op = qconv2d(wl, "direct")
        s = te.create_schedule(op.out)
        Y, acc, Xw = op.out, op.stages["acc"], op.stages["Xw"]
        n, f, y, x = s[Y].op.axis
        s[Y].reorder(f, n, y, x)
        if c.get("parallel"):
            s[Y].parallel(f)
        s[acc].compute_at(s[Y], n)
        an, af, ay, ax = s[acc].op.axis
        rc, ry, rx = s[acc].op.reduce_axis
        yo, yi = s[acc].split(ay, c["tile_y"])
        xo, xi = s[acc].split(ax, c["tile_x"])
        s[acc].reorder(an, af, yo, xo, rc, ry, rx, yi, xi)
        if c["unroll"] >= 1:
            s[acc].unroll(rx)
        if c["unroll"] >= 2:
            s[acc].unroll(ry)
        if c["pad_at"] == "channel":
            s[Xw].compute_at(s[acc], af)
        return s, op.args

    def default(self, wl: dict, target):
        g = conv_geometry(wl)
        sp = self.space(wl, target)
        return sp.nearest({"tile_y": 8, "tile_x": min(g["OW"], 64), "unroll": 2,
                          "pad_at": "channel", "parallel": False}, larger_on_tie=True)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list for a quick sweep: the default, then variations of its tiles."""
        sp = self.space(wl, target)
        d = self.default(wl, target)
        out = [d]
        for change in ({"pad_at": "root"}, {"tile_y": 4}, {"tile_y": 16}, {"tile_x": 32},
                       {"unroll": 1}, {"unroll": 0}):
            c = sp.nearest({**d.to_dict(), **change}, larger_on_tie=True)
            if c.index not in {o.index for o in out}:
                out.append(c)
        return out
