"""Winograd F(m x m, 3 x 3) conv2d (stride 1, dilation 1), float32, m = 2 or 4.

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A          (Lavin & Gray, 2015)

per output tile of m x m pixels, d the (m+2) x (m+2) input patch, g the 3 x 3
filter.  The stages are te computes:

    Xp   the padded input in NCHW[ic_bn]c (rows of W*ic_bn), padded up to whole tiles
    D    B^T d, per tile, row of the transform, patch column and channel
    V    (B^T d) B, as V[e][t][c]: e = the alpha*alpha transform points, t the tiles
    M    the batched GEMM  M[e][t][f] = sum_c V[e][t][c] * U[e][c][f]  (register-tile
         micro-kernel: rows = tiles, columns = oc_bn output channels)
    O    A^T M, per tile, output row, transform column and channel
    Yc   O A, the output in NCHW[oc_bn]c;  Y the NCHW output (layout "NCHW")

The transforms are written out with their constant coefficients (zero terms
dropped, +-1 without a multiply); the schedule unrolls the transform axes so
each unrolled copy is a short sum, vectorized over channels.

U = G g G^T is the transformed filter: pre-packed (weights="packed", numpy
`winograd_weights_np`, folded at compile time in a model) as
U[e][F/oc_bn][C/groups][oc_bn], or computed by a stage from OIHW weights.
The workload's "tile" (m) and oc_bn fix that layout when it is pre-packed.
"""
from __future__ import annotations

from fractions import Fraction as Fr

import numpy as np

from ... import te
from ..space import ConfigSpace, Knob
from targets import resolve
from .nchwc import oc_block_pref
from ..common import check_op, config_dict, parallel_knobs
from .packing import blocked_input
from .tile import tile_intrin, tile_kernel_shape_ok
from .workload import (_variants, block_choices, block_lanes, conv2d_workload, conv_flops, default_block,
                       out_size, random_conv_io, reference_in_layout, register_budget)

# B^T, G, A^T of F(2x2, 3x3) and F(4x4, 3x3) (interpolation points 0, +-1, +-2, inf)
_MATS = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [Fr(1, 2), Fr(1, 2), Fr(1, 2)], [Fr(1, 2), Fr(-1, 2), Fr(1, 2)], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[Fr(1, 4), 0, 0], [Fr(-1, 6), Fr(-1, 6), Fr(-1, 6)], [Fr(-1, 6), Fr(1, 6), Fr(-1, 6)],
         [Fr(1, 24), Fr(1, 12), Fr(1, 6)], [Fr(1, 24), Fr(-1, 12), Fr(1, 6)], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}
TILES = (2, 4)
L2_BYTES = 2 * 1024 * 1024   # the default config's cache model (one core's L2)


def matrices(m: int) -> tuple:
    """(B^T, G, A^T) as float64 arrays."""
    bt, g, at = _MATS[m]
    return (np.array(bt, np.float64), np.array([[float(x) for x in r] for r in g], np.float64),
            np.array(at, np.float64))


def winograd_weights_np(w: np.ndarray, m: int, oc_bn: int, groups: int = 1) -> np.ndarray:
    """OIHW 3x3 weights (F, C/groups, 3, 3) -> U[(m+2)^2][F/oc_bn][C/groups][oc_bn]."""
    f, cg, kh, kw = w.shape
    if (kh, kw) != (3, 3):
        raise ValueError(f"winograd weights must be 3x3, got {kh}x{kw}")
    _, G, _ = matrices(m)
    u = np.einsum("ar,fcrs,bs->abcf", G, w.astype(np.float64), G)   # (a, a, cg, f)
    a = m + 2
    u = u.reshape(a * a, cg, f // oc_bn, oc_bn).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(u.astype(np.float32))


def winograd_weights_unpack_np(u: np.ndarray, m: int) -> np.ndarray:
    """The least-squares OIHW weights whose transform is u (for references of random u):
    exact for u made by winograd_weights_np."""
    _, fb, cg, ob = u.shape
    a = m + 2
    _, G, _ = matrices(m)
    uu = u.astype(np.float64).transpose(0, 2, 1, 3).reshape(a, a, cg, fb * ob)
    gp = np.linalg.pinv(G)
    return np.einsum("ra,abcf,sb->fcrs", gp, uu, gp).astype(np.float32)


def _combo(coefs, loads):
    """sum_k coefs[k] * loads[k] over the nonzero coefficients, +-1 without a multiply."""
    out = None
    for c, x in zip(coefs, loads):
        c = float(c)
        if c == 0:
            continue
        if out is None:
            out = x if c == 1 else (-x if c == -1 else x * c)
        elif c == 1:
            out = out + x
        elif c == -1:
            out = out - x
        else:
            out = out + x * c
    return out if out is not None else te.const(0.0, "float32")


def _rows(mat, idx, make):
    """select(idx == 0, row 0 combination, select(idx == 1, ...)) over the matrix rows."""
    n = len(mat)
    out = make(mat[n - 1])
    for r in range(n - 2, -1, -1):
        out = te.if_then_else(te.equal(idx, r), make(mat[r]), out)
    return out


def winograd_compute(wl: dict, m: int, ic_bn: int, oc_bn: int):
    """te tensors (inputs, stages dict, output)."""
    N, C, H, W, F, G = (wl[k] for k in ("N", "C", "H", "W", "F", "groups"))
    top, left = wl["pad"][0], wl["pad"][1]
    OH, OW = out_size(wl)
    Cg, Fg = C // G, F // G
    a = m + 2
    E = a * a
    TH, TW = -(-OH // m), -(-OW // m)
    T = TH * TW
    ICB, FB, FBg = C // ic_bn, F // oc_bn, Fg // oc_bn
    Hp, Wp = TH * m + 2, TW * m + 2
    bt, gm, at = _MATS[m]
    X, xval = blocked_input(wl, ic_bn)

    def xp(n, cb, y, q):
        inside = te.all(y >= top, y < H + top, q >= left * ic_bn, q < (W + left) * ic_bn)
        return te.if_then_else(inside, xval(n, cb, y, q), 0.0)
    Xp = te.compute((N, ICB, Hp, Wp * ic_bn), xp, name="Xp")
    # D[n, t, e1, r2, c] = sum_r1 B^T[e1][r1] d[r1][r2]
    D = te.compute((N, T, a, a, C), lambda n, t, e1, r2, c: _rows(bt, e1, lambda row: _combo(
        row, [Xp[n, c // ic_bn, (t // TW) * m + r1, ((t % TW) * m + r2) * ic_bn + c % ic_bn]
              for r1 in range(a)])), name="D")
    # V[n, e, t, c] = sum_r2 D[.., e // a, r2, c] B[r2][e % a]   (B = (B^T)^T)
    V = te.compute((N, E, T, C), lambda n, e, t, c: _rows(
        bt, e % a, lambda row: _combo(row, [D[n, t, e // a, r2, c] for r2 in range(a)])), name="V")
    if wl["weights"] == "packed":
        U = te.placeholder((E, FB, Cg, oc_bn), "float32", name="U")
        ins = [X, U]
    else:
        Wt = te.placeholder((F, Cg, 3, 3), "float32", name="Wt")
        # U[e, fb, c, o] = sum_{r, s} G[e1][r] g[r][s] G[e2][s]
        U = te.compute((E, FB, Cg, oc_bn), lambda e, fb, c, o: _rows(
            gm, e // a, lambda grow: _rows(gm, e % a, lambda gcol: _combo(
                [gr * gc for gr in grow for gc in gcol],
                [Wt[fb * oc_bn + o, c, r, s] for r in range(3) for s in range(3)]))), name="U")
        ins = [X, Wt]
    k = te.reduce_axis((0, Cg), name="k")

    def vload(n, e, t, fb):
        return V[n, e, t, k] if G == 1 else V[n, e, t, (fb // FBg) * Cg + k]
    Mt = te.compute((N, E, T, FB, oc_bn), lambda n, e, t, fb, o: te.sum(
        vload(n, e, t, fb) * U[e, fb, k, o], axis=k), name="M")
    # O[n, t, i, e2, fb, o] = sum_e1 A^T[i][e1] M[e1 * a + e2]
    O = te.compute((N, T, m, a, FB, oc_bn), lambda n, t, i, e2, fb, o: _rows(
        at, i, lambda row: _combo(row, [Mt[n, e1 * a + e2, t, fb, o] for e1 in range(a)])),
        name="O")
    # Yc[n, fb, y, x, o] = sum_e2 O[.., y % m, e2, ..] A[e2][x % m]
    Yc = te.compute((N, FB, OH, OW, oc_bn), lambda n, fb, y, x, o: _rows(
        at, x % m, lambda row: _combo(row, [O[n, (y // m) * TW + x // m, y % m, e2, fb, o]
                                            for e2 in range(a)])), name="Yc")
    stages = {"Xp": Xp, "D": D, "V": V, "U": U, "M": Mt, "O": O, "Yc": Yc}
    if wl["layout"] == "NCHWc":
        return ins, stages, Yc
    Y = te.compute((N, F, OH, OW), lambda n, c, y, x: Yc[n, c // oc_bn, y, x, c % oc_bn], name="Y")
    stages["Y"] = Y
    return ins, stages, Y


def _divisor_le(n: int, k: int) -> int:
    return max(d for d in range(1, min(n, k) + 1) if n % d == 0)


def winograd_default_blocks(wl: dict, target) -> tuple:
    """(tile m, ic_bn, oc_bn) a graph would choose on this target."""
    tgt = resolve(target)
    lanes = block_lanes(tgt)
    fg = wl["F"] // wl["groups"]
    oh, ow = out_size(wl)
    u4, u2 = (36 * wl["C"] // wl["groups"] * wl["F"] * 4, 16 * wl["C"] // wl["groups"] * wl["F"] * 4)
    # F(4x4) needs a few tiles; F(2x2) (2.25x fewer multiplies, not 4x) when only its
    # smaller transformed weights stay in L2 across the blocks of tiles
    m = 4 if min(oh, ow) >= 8 and not (u4 > L2_BYTES // 2 and u2 <= 0.6 * L2_BYTES) else 2
    return (m, default_block(wl["C"], lanes, 64 if lanes >= 8 else 16),
            default_block(fg, lanes, oc_block_pref(tgt)))


class Conv2dWinogradTemplate:
    """Winograd F(m x m, 3 x 3), stride 1: transforms as te computes, batched GEMM micro-kernel."""
    name = "conv2d_winograd"

    def workload(self, N, C, H, W, F, KH=3, KW=3, stride=1, pad=1, dilation=1, groups=1,
                 layout="NCHW", weights="OIHW", ic_bn=None, oc_bn=None, tile=None,
                 dtype="float32") -> dict:
        wl = conv2d_workload(self.name, N, C, H, W, F, KH, KW, stride, pad, dilation, groups,
                             layout, weights, ic_bn, oc_bn, dtype)
        if (KH, KW) != (3, 3) or wl["stride"] != [1, 1] or wl["dilation"] != [1, 1]:
            raise ValueError(f"{self.name}: needs a 3x3 kernel, stride 1, dilation 1")
        if tile is not None and tile not in TILES:
            raise ValueError(f"{self.name}: tile must be one of {TILES}, got {tile}")
        if weights == "packed" and (oc_bn is None or tile is None):
            raise ValueError(f"{self.name}: packed weights need tile and oc_bn "
                             "(see winograd_default_blocks)")
        if layout == "NCHWc" and (ic_bn is None or oc_bn is None):
            raise ValueError(f"{self.name}: layout NCHWc needs ic_bn and oc_bn")
        if ic_bn is not None and C % ic_bn:
            raise ValueError(f"{self.name}: ic_bn {ic_bn} must divide C = {C}")
        if oc_bn is not None and (F // groups) % oc_bn:
            raise ValueError(f"{self.name}: oc_bn {oc_bn} must divide F/groups = {F // groups}")
        wl["tile"] = None if tile is None else int(tile)
        return wl

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        tgt = resolve(target)
        fg = wl["F"] // wl["groups"]
        _, OW = out_size(wl)
        tiles = (wl["tile"],) if wl["tile"] is not None else TILES
        ic = (wl["ic_bn"],) if wl["ic_bn"] is not None else block_choices(wl["C"])
        oc = (wl["oc_bn"],) if wl["oc_bn"] is not None else block_choices(fg)
        tw_max = -(-OW // min(tiles))
        knobs = [Knob("tile", tiles), Knob("ic_bn", ic), Knob("oc_bn", oc),
                 # a block: bx tiles along a tile row, or by whole tile rows when bx covers one
                 Knob("bx", tuple(sorted({b for b in (1, 2, 4, 7, 8, 14, 16) if b < tw_max}
                                         | {tw_max}))),
                 Knob("by", (1, 2, 4, 7, 8)),
                 Knob("mr", (1, 2, 3, 4, 6, 7, 8, 10, 12, 14)), Knob("micro", (True, False)),
                 Knob("prefetch", (0, 8, 16)), Knob("order", ("e_f_t", "e_t_f"))]
        knobs += parallel_knobs(tgt)
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        tgt = resolve(target)
        sp = self.space(wl, tgt)
        m, ic_bn, oc_bn = winograd_default_blocks(wl, tgt)
        m, oc_bn = wl["tile"] or m, wl["oc_bn"] or oc_bn
        OH, OW = out_size(wl)
        TW = -(-OW // m)
        lanes, regs = block_lanes(tgt), register_budget(tgt)
        nv = max(1, oc_bn // lanes)
        fit = max(1, min(14, (regs - nv - 1) // nv))
        TH = -(-OH // m)
        cg, F = wl["C"] // wl["groups"], wl["F"]
        u_bytes = (m + 2) ** 2 * cg * F * 4
        tile_bytes = (m + 2) ** 2 * (wl["C"] + F) * 4     # V and M of one tile
        knob = {k.name: k.choices for k in sp.knobs}
        blocks = {}
        for bxc in knob["bx"]:
            for byc in knob["by"]:
                bx = _divisor_le(TW, bxc)
                by = _divisor_le(TH, byc) if bx == TW else 1
                blocks.setdefault(bx * by, (bxc, byc))
        if u_bytes > L2_BYTES // 2:
            # the transformed weights stream from beyond L2: the largest block whose V and
            # M stay in L2 reads them the fewest times
            fits = [tb for tb in blocks if tb * tile_bytes <= 0.6 * L2_BYTES] or [min(blocks)]
            tb = max(fits)
        else:
            # about one register tile of rows per block
            tb = min(blocks, key=lambda t: (abs(t - fit), -t))
        pf = 8      # every block streams all of U (from L2 at best): prefetch it
        bxc, byc = blocks[tb]
        # rows per register tile: the block's tiles in the fewest register tiles, evenly
        # (7 tiles with room for 6 rows: 4 + 3, not 6 + 1 nor seven rows of 1)
        mr = -(-tb // -(-tb // fit))
        want = {"tile": m, "ic_bn": wl["ic_bn"] or ic_bn, "oc_bn": oc_bn, "bx": bxc, "by": byc,
                "mr": mr, "micro": True, "prefetch": pf, "order": "e_f_t", "parallel": False}
        return sp.nearest(want)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list of promising configs around the default (for quick sweeps)."""
        sp = self.space(wl, target)
        d = self.default(wl, target)
        dv = d.to_dict()
        return _variants(sp, d, [
            {"prefetch": 8 - dv["prefetch"]}, {"bx": 7, "by": 1, "mr": 7}, {"bx": 14, "by": 1, "mr": 14},
            {"bx": 4, "by": 4, "mr": 8}, {"bx": 4, "by": 2, "mr": 8}, {"by": 8}, {"mr": 14},
            {"mr": 12}, {"tile": 2}, {"order": "e_t_f"}, {"ic_bn": 32}])

    def build(self, wl: dict, target, config):
        """Per block of output tiles (bx tiles of a tile row, or by whole tile rows): the
        input transform (D per tile, V for the block), the GEMM for the block (M), the
        output transform (O for the block, Yc), then the NCHW unpack of the block.
        Only the padded NCHWc input is a whole-image buffer."""
        check_op(wl, self.name)
        tgt = resolve(target)
        c = config_dict(config)
        m, ic_bn, oc_bn, mr = c["tile"], c["ic_bn"], c["oc_bn"], c["mr"]
        a = m + 2
        OH, OW = out_size(wl)
        TH, TW = -(-OH // m), -(-OW // m)
        # blocks never run past the tile grid (so their regions are constant): bx divides
        # TW, by divides TH; and the register tile's rows divide the block
        bx = _divisor_le(TW, c["bx"])
        by = _divisor_le(TH, c["by"]) if bx == TW else 1
        # a register tile never has more rows than the block has tiles; when mr does not
        # divide the block, the tile's row-count variant takes the rest
        mr = min(mr, bx * by)
        ins, S, out = winograd_compute(wl, m, ic_bn, oc_bn)
        s = te.create_schedule(out)
        par = bool(c.get("parallel", False)) and tgt.can_thread
        # input: padded NCHWc, rows read contiguously
        xst = s[S["Xp"]]
        xn, xcb, xy, xq = xst.op.axis
        xw, xc = xst.split(xq, factor=ic_bn)
        xst.reorder(xn, xcb, xy, xc, xw)
        if "U" in S and S["U"] not in ins:
            ust = s[S["U"]]
            ue, ufb, uc, uo = ust.op.axis
            ue1, ue2 = ust.split(ue, factor=a)
            ust.reorder(ue1, ue2, ufb, uc, uo)
            ust.unroll(ue1)
            ust.unroll(ue2)
        # block loops: on Y (NCHW) with Yc computed per block, or on Yc itself (NCHWc)
        yst = s[S["Yc"]]
        if "Y" in S:
            ost_ = s[S["Y"]]
            un, uc, uy, ux = ost_.op.axis
            uyb, uyl = ost_.split(uy, factor=m * by)
            uxb, uxl = ost_.split(ux, factor=m * bx)
            ucb, uci = ost_.split(uc, factor=oc_bn)
            ost_.reorder(un, uyb, uxb, ucb, uyl, uci, uxl)
            yst.compute_at(ost_, uxb)
            if par:
                ost_.parallel(uyb)
            yn, yfb, yy, yx, yo = yst.op.axis
            yt, yi = yst.split(yy, factor=m)
            xt, yj = yst.split(yx, factor=m)
            yst.reorder(yn, yfb, yt, xt, yi, yj, yo)
            at = yn
        else:
            yn, yfb, yy, yx, yo = yst.op.axis
            yyb, yyl = yst.split(yy, factor=m * by)
            yxb, yxl = yst.split(yx, factor=m * bx)
            yt, yi = yst.split(yyl, factor=m)
            xt, yj = yst.split(yxl, factor=m)
            yst.reorder(yn, yyb, yxb, yfb, yt, xt, yi, yj, yo)
            if par:
                yst.parallel(yyb)
            at = yxb
        yst.unroll(yj)
        yst.vectorize(yo)
        # O for the block, at the block loop
        ost = s[S["O"]]
        on, ot, oi, oe2, ofb, oo = ost.op.axis
        ost.reorder(on, ot, ofb, oi, oe2, oo)
        ost.unroll(oi)
        ost.vectorize(oo)
        ost.compute_at(yst, at)
        # the block's GEMM: rows = tiles (mr per register tile), columns = oc_bn channels
        mst = s[S["M"]]
        mn, me, mt, mfb, mo = mst.op.axis
        (mk,) = mst.op.reduce_axis
        mto, mti = mst.split(mt, factor=mr)
        if c["order"] == "e_f_t":
            mst.reorder(mn, me, mfb, mto, mk, mti, mo)
        else:
            mst.reorder(mn, me, mto, mfb, mk, mti, mo)
        mst.vectorize(mo)
        if c["micro"] and mr > 1 and tile_kernel_shape_ok(tgt, mr, oc_bn):
            mst.tensorize(mk, tile_intrin(tgt, mr, oc_bn, c.get("prefetch", 0),
                                          rows=(bx * by) % mr != 0))
        mst.compute_at(ost, on)
        # V for the block; D per tile
        vst = s[S["V"]]
        vn, ve, vt, vc = vst.op.axis
        ve1, ve2 = vst.split(ve, factor=a)
        vst.reorder(vn, vt, ve1, ve2, vc)
        vst.unroll(ve2)
        vst.vectorize(vc)
        vst.compute_at(mst, mn)
        dst = s[S["D"]]
        dn, dt, de1, dr2, dc = dst.op.axis
        dcb, dci = dst.split(dc, factor=ic_bn)
        dst.reorder(dn, dt, dcb, de1, dr2, dci)
        dst.unroll(de1)
        dst.vectorize(dci)
        dst.compute_at(vst, vt)
        return s, ins + [out]

    def inputs(self, wl: dict, rng) -> list:
        x, w, y = random_conv_io(wl, rng)
        if wl["weights"] == "packed":
            w = winograd_weights_np(w, wl["tile"], wl["oc_bn"], wl["groups"])
        return [x, w, y]

    def reference(self, wl: dict, inputs) -> dict:
        w = inputs[1]
        if wl["weights"] == "packed":
            w = winograd_weights_unpack_np(w, wl["tile"])
        return reference_in_layout(wl, inputs[0], w)

    def flops(self, wl: dict) -> int:
        """Direct-convolution FLOPs (the figure every conv template is compared by)."""
        return conv_flops(wl)
