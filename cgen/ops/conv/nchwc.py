"""conv2d_nchwc: direct convolution on blocked NCHW[x]c (see cgen.ops.conv)."""
from __future__ import annotations

from ... import te
from ..space import ConfigSpace, Knob
from targets import resolve
from ..common import check_op, config_dict, parallel_knobs
from .packing import blocked_input, pack_weights_nchwc, pack_weights_nchwc_np, unpack_weights_nchwc_np
from .tile import tile_intrin, tile_kernel_shape_ok
from .workload import (_variants, block_choices, block_lanes, conv2d_workload, conv_flops, default_block,
                       out_size, random_conv_io, reference_in_layout, register_budget)


def nchwc_default_blocks(wl: dict, target) -> tuple:
    """(ic_bn, oc_bn) a graph would choose for this workload on this target."""
    tgt = resolve(target)
    lanes = block_lanes(tgt)
    cg, fg = wl["C"] // wl["groups"], wl["F"] // wl["groups"]
    return (default_block(cg, lanes, 64 if lanes >= 8 else 16),
            default_block(fg, lanes, oc_block_pref(tgt)))


def oc_block_pref(target) -> int:
    """The preferred output-channel block (register-tile columns): two vectors on x86
    and 16-register NEON, four on 32-register NEON (avx512 32, avx2 16, aarch64 16,
    armv7 8), so the tile keeps several rows of accumulators in registers."""
    tgt = resolve(target)
    lanes = block_lanes(tgt)
    return 4 * lanes if lanes == 4 and tgt.vector_registers >= 32 else 2 * lanes



def conv2d_nchwc_compute(wl: dict, ic_bn: int, oc_bn: int, im2col: bool = False):
    """te tensors: (inputs, stages, output).

    stages: Xp (padded NCHW[ic_bn]c, rows of W*ic_bn), Wp (the packed weights, a
    placeholder or a packing stage), acc (the NCHW[oc_bn]c accumulation, named Yc)
    and, with im2col, Xr (per output pixel its KH*KW*ic_bn window, so the
    accumulation, named Yf, is over flattened pixels [N][F/oc_bn][OH*OW][oc_bn]) and
    Yo, its copy as the NCHWc output named Yc (layout NCHWc); Y is the NCHW output.
    The output is named Y (NCHW) or Yc (NCHWc) in every variant.
    """
    N, C, H, W, F, KH, KW, G = (wl[k] for k in ("N", "C", "H", "W", "F", "KH", "KW", "groups"))
    (sh, sw), (dh, dw), (top, left, bottom, right) = wl["stride"], wl["dilation"], wl["pad"]
    OH, OW = out_size(wl)
    Cg, Fg = C // G, F // G
    if Cg % ic_bn or Fg % oc_bn:
        raise ValueError(f"conv2d_nchwc: blocks ({ic_bn}, {oc_bn}) must divide the channels "
                         f"per group ({Cg}, {Fg})")
    ICB, OCB, ICBg, OCBg = C // ic_bn, F // oc_bn, Cg // ic_bn, Fg // oc_bn
    Hp, Wp_ = H + top + bottom, W + left + right
    KQ = KH * KW * ic_bn
    X, xval = blocked_input(wl, ic_bn)
    if any((top, left, bottom, right)):
        def xp(n, cb, y, q):
            inside = te.all(y >= top, y < H + top, q >= left * ic_bn, q < (W + left) * ic_bn)
            return te.if_then_else(inside, xval(n, cb, y, q), 0.0)
    else:
        xp = xval
    Xp = te.compute((N, ICB, Hp, Wp_ * ic_bn), xp, name="Xp")
    if wl["weights"] == "packed":
        Wp = te.placeholder((OCB, ICBg, KQ, oc_bn), "float32", name="Wp")
        ins = [X, Wp]
    else:
        Wt = te.placeholder((F, Cg, KH, KW), "float32", name="Wt")
        Wp = pack_weights_nchwc(Wt, ic_bn, oc_bn)
        ins = [X, Wt]
    icb = te.reduce_axis((0, ICBg), name="icb")

    def gblock(ob):
        return icb if G == 1 else (ob // OCBg) * ICBg + icb
    stages = {"Xp": Xp, "Wp": Wp}
    if im2col:
        Xr = te.compute((N, ICB, OH * OW, KQ), lambda n, cb, p, q: Xp[
            n, cb, (p // OW) * sh + (q // (KW * ic_bn)) * dh,
            ((p % OW) * sw + ((q // ic_bn) % KW) * dw) * ic_bn + q % ic_bn], name="Xr")
        q = te.reduce_axis((0, KQ), name="q")
        Yc = te.compute((N, OCB, OH * OW, oc_bn), lambda n, ob, p, o: te.sum(
            Xr[n, gblock(ob), p, q] * Wp[ob, icb, q, o], axis=(icb, q)), name="Yf")
        stages["Xr"] = Xr

        def yc(n, ob, y, x, o):
            return Yc[n, ob, y * OW + x, o]
    else:
        kh = te.reduce_axis((0, KH), name="kh")
        if dw == 1:
            r = te.reduce_axis((0, KW * ic_bn), name="r")
            Yc = te.compute((N, OCB, OH, OW, oc_bn), lambda n, ob, y, x, o: te.sum(
                Xp[n, gblock(ob), y * sh + kh * dh, x * (sw * ic_bn) + r]
                * Wp[ob, icb, kh * (KW * ic_bn) + r, o], axis=(icb, kh, r)), name="Yc")
        else:
            kw = te.reduce_axis((0, KW), name="kw")
            ci = te.reduce_axis((0, ic_bn), name="ci")
            Yc = te.compute((N, OCB, OH, OW, oc_bn), lambda n, ob, y, x, o: te.sum(
                Xp[n, gblock(ob), y * sh + kh * dh, (x * sw + kw * dw) * ic_bn + ci]
                * Wp[ob, icb, (kh * KW + kw) * ic_bn + ci, o], axis=(icb, kh, kw, ci)), name="Yc")

        def yc(n, ob, y, x, o):
            return Yc[n, ob, y, x, o]
    stages["acc"] = Yc
    if wl["layout"] == "NCHWc":
        if not im2col:
            return ins, stages, Yc
        Yo = te.compute((N, OCB, OH, OW, oc_bn), yc, name="Yc")
        stages["Yo"] = Yo
        return ins, stages, Yo
    Y = te.compute((N, F, OH, OW), lambda n, c, y, x: yc(n, c // oc_bn, y, x, c % oc_bn), name="Y")
    stages["Y"] = Y
    return ins, stages, Y


def _row_tile_intrin(tgt, tile: int, oc_bn: int, extent: int, prefetch: int):
    """The register-tile intrinsic for rows split by `tile` out of `extent`: fixed rows
    when the tile divides the extent, else the variant taking the row count."""
    return tile_intrin(tgt, tile, oc_bn, prefetch, rows=extent % tile != 0)


class Conv2dNCHWcTemplate:
    """Blocked NCHW[x]c direct convolution (see the module docstring)."""
    name = "conv2d_nchwc"

    def workload(self, N, C, H, W, F, KH, KW, stride=1, pad=0, dilation=1, groups=1,
                 layout="NCHW", weights="OIHW", ic_bn=None, oc_bn=None, dtype="float32") -> dict:
        wl = conv2d_workload(self.name, N, C, H, W, F, KH, KW, stride, pad, dilation, groups,
                             layout, weights, ic_bn, oc_bn, dtype)
        cg, fg = C // groups, F // groups
        if (layout == "NCHWc" or weights == "packed") and (ic_bn is None or oc_bn is None):
            raise ValueError(f"{self.name}: layout NCHWc and packed weights need ic_bn and oc_bn "
                             "(see nchwc_default_blocks)")
        if ic_bn is not None and cg % ic_bn:
            raise ValueError(f"{self.name}: ic_bn {ic_bn} must divide C/groups = {cg}")
        if oc_bn is not None and fg % oc_bn:
            raise ValueError(f"{self.name}: oc_bn {oc_bn} must divide F/groups = {fg}")
        return wl

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        tgt = resolve(target)
        cg, fg = wl["C"] // wl["groups"], wl["F"] // wl["groups"]
        OH, OW = out_size(wl)
        ic = (wl["ic_bn"],) if wl["ic_bn"] is not None else block_choices(cg)
        oc = (wl["oc_bn"],) if wl["oc_bn"] is not None else block_choices(fg)
        # register-tile rows: pixels of an output row (direct) or of the flattened
        # output (im2col); a tile wider than a row is clipped to it in the direct variant
        ow = tuple(sorted({t for t in (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 28)
                           if t <= OH * OW} | ({OW} if OW <= 28 else set())))
        oh = tuple(sorted({t for t in (1, 2, 4, 7, 8, 14, 16, 28) if t <= OH} | {OH}))
        knobs = [Knob("ic_bn", ic), Knob("oc_bn", oc), Knob("ow_tile", ow), Knob("oh_tile", oh),
                 Knob("im2col", (False, True)), Knob("micro", (True, False)),
                 Knob("prefetch", (0, 8, 16)), Knob("order", ("oc_y", "y_oc")),
                 Knob("unroll_kw", (False, True))]
        knobs += parallel_knobs(tgt)
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        tgt = resolve(target)
        sp = self.space(wl, tgt)
        ic_bn, oc_bn = nchwc_default_blocks(wl, tgt)
        ic_bn, oc_bn = wl["ic_bn"] or ic_bn, wl["oc_bn"] or oc_bn
        OH, OW = out_size(wl)
        lanes, regs = block_lanes(tgt), register_budget(tgt)
        nv = max(1, oc_bn // lanes)
        fit = max(1, min(14, (regs - nv - 1) // nv))
        # small images: im2col rows of the register tile run across output rows, so
        # the tile is full even when OW is small (7x7: 12 or 14 pixels, not 7)
        im2col = OW < fit and OH * OW >= fit
        if im2col:
            tile = fit
            rows = OH
        else:
            # the widest row tile that fits the registers, preferring one that divides OW
            divs = [t for t in range(fit, 0, -1) if OW % t == 0 and t >= (fit + 1) // 2]
            tile = divs[0] if divs else fit
            # rows per block: the block's output (NCHWc) and one weight slice stay in L1
            rows = max(1, min(OH, (16 * 1024) // (OW * oc_bn * 4)))
        want = {"ic_bn": ic_bn, "oc_bn": oc_bn, "ow_tile": tile, "oh_tile": rows,
                "im2col": im2col, "micro": True, "prefetch": 8, "order": "oc_y",
                "unroll_kw": False, "parallel": False}
        return sp.nearest(want)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list of promising configs around the default (for quick sweeps)."""
        sp = self.space(wl, target)
        d = self.default(wl, target)
        dv = d.to_dict()
        OH, _ = out_size(wl)
        t = dv["ow_tile"]
        return _variants(sp, d, [
            {"prefetch": 0}, {"prefetch": 16}, {"im2col": not dv["im2col"]},
            {"oh_tile": 1}, {"oh_tile": OH}, {"ow_tile": max(2, t // 2)}, {"ow_tile": 12},
            {"order": "y_oc"}, {"ic_bn": 32}, {"oc_bn": 16}, {"ow_tile": 7, "im2col": False}])

    def build(self, wl: dict, target, config):
        """Loops: n, ob, yb (blocks of oh_tile output rows) [order oc_y; y_oc swaps ob and
        yb], the reduction over input blocks and kernel rows (icb, kh[, kw]), the block's
        rows and register tiles (yi, xo), then the tile: depth (tensorized), xi, o.
        With im2col: n, ob, yb, icb, the block's pixel tiles, then the tile (depth
        KH*KW*ic_bn)."""
        check_op(wl, self.name)
        tgt = resolve(target)
        c = config_dict(config)
        ic_bn, oc_bn, tile, rows = c["ic_bn"], c["oc_bn"], c["ow_tile"], c["oh_tile"]
        im2col = bool(c.get("im2col", False))
        OH, OW = out_size(wl)
        ins, S, out = conv2d_nchwc_compute(wl, ic_bn, oc_bn, im2col)
        s = te.create_schedule(out)
        par = bool(c.get("parallel", False)) and tgt.can_thread
        oc_first = c["order"] == "oc_y"
        # (a row loop of extent 1 is simplified away: no tile left to tensorize)
        rows_extent = min(tile, rows * OW, OH * OW) if im2col else min(tile, OW)
        micro = c["micro"] and rows_extent > 1 and tile_kernel_shape_ok(tgt, tile, oc_bn)
        st = s[S["acc"]]
        if im2col:
            n, ob, p, o = st.op.axis
            icb, q = st.op.reduce_axis
            pb, pl = st.split(p, factor=rows * OW)
            po, pi = st.split(pl, factor=tile)
            outer = [n, ob, pb] if oc_first else [n, pb, ob]
            st.reorder(*outer, icb, po, q, pi, o)
            st.vectorize(o)
            if micro:
                st.tensorize(q, _row_tile_intrin(tgt, tile, oc_bn, min(rows * OW, OH * OW),
                                                 c.get("prefetch", 0)))
        else:
            n, ob, y, x, o = st.op.axis
            red = st.op.reduce_axis
            pb, yi = st.split(y, factor=rows)
            xo, xi = st.split(x, factor=tile)
            if len(red) == 3:
                icb, kh, kloop = red
                rs = [icb, kh]
            else:
                icb, kh, kw, kloop = red
                rs = [icb, kh, kw]
            outer = [n, ob, pb] if oc_first else [n, pb, ob]
            st.reorder(*outer, *rs, yi, xo, kloop, xi, o)
            st.vectorize(o)
            if micro:
                st.tensorize(kloop, _row_tile_intrin(tgt, tile, oc_bn, OW, c.get("prefetch", 0)))
            if c["unroll_kw"] and len(red) == 4:
                st.unroll(rs[2])
        # the padded input: a whole tensor at root, its rows read contiguously
        xst = s[S["Xp"]]
        xn, xcb, xy, xq = xst.op.axis
        xw, xc = xst.split(xq, factor=ic_bn)
        xst.reorder(xn, xcb, xy, xc, xw)
        if par:
            xst.parallel(xcb)
        # where the accumulation of a block of rows lives: inside the output stage's
        # block loop (NCHW unpack, NCHWc copy), or the output itself
        consumer = S.get("Y", S.get("Yo"))
        if consumer is not None:
            cst = s[consumer]
            if "Y" in S:
                un, uc, uy, ux = cst.op.axis
                ucb, uci = cst.split(uc, factor=oc_bn)
            else:
                un, ucb, uy, ux, uci = cst.op.axis
            uyb, uyi = cst.split(uy, factor=rows)
            if oc_first:
                order = [un, ucb, uyb, uyi]
                at = uyb
            else:
                order = [un, uyb, ucb, uyi]
                at = uyb        # the block of rows for every channel block at once
            cst.reorder(*order, *((uci, ux) if "Y" in S else (ux, uci)))
            if "Yo" in S:
                cst.vectorize(uci)
            st.compute_at(cst, at)
            if par:
                cst.parallel(order[1])
        elif par:
            st.parallel(outer[1])
        if im2col:
            # the unfolded windows: per block of rows when the block covers every channel
            # block (order y_oc), else once at root (reused by every channel block)
            rst = s[S["Xr"]]
            rn, rcb, rp, rq = rst.op.axis
            rpy, rpx = rst.split(rp, factor=OW)
            rkh, rq1 = rst.split(rq, factor=wl["KW"] * ic_bn)
            rkw, rci = rst.split(rq1, factor=ic_bn)
            rst.reorder(rn, rcb, rpy, rpx, rkh, rkw, rci)
            rst.vectorize(rci)
            if not oc_first:
                rst.compute_at(st, st.op.axis[0])
        return s, ins + [out]

    def inputs(self, wl: dict, rng) -> list:
        x, w, y = random_conv_io(wl, rng)
        if wl["weights"] == "packed":
            w = pack_weights_nchwc_np(w, wl["ic_bn"], wl["oc_bn"])
        return [x, w, y]

    def reference(self, wl: dict, inputs) -> dict:
        w = inputs[1]
        if wl["weights"] == "packed":
            w = unpack_weights_nchwc_np(w, wl["KH"], wl["KW"])
        return reference_in_layout(wl, inputs[0], w)

    def flops(self, wl: dict) -> int:
        return conv_flops(wl)

