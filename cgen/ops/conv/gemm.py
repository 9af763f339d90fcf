"""conv2d_1x1 and conv2d_im2col: convolution as GEMM (see cgen.ops.conv)."""
from __future__ import annotations

import numpy as np

from ... import te
from ..space import ConfigSpace, Knob
from targets import resolve
from ...codegen.isa import isa_for
from ..common import parallel_knobs, check_op, config_dict
from .packing import pack_weights_gemm, pack_weights_gemm_np, unpack_weights_gemm_np
from .tile import column_tails_ok, masked_tiles_ok, tile_intrin, tile_kernel_shape_ok
from .workload import block_lanes, _variants, conv2d_reference, conv2d_workload, random_conv_inputs, conv_flops, out_size


def gemm_default_mr(wl: dict, target) -> int:
    """Rows of the GEMM register tile (output channels per weight panel) for a target."""
    tgt = resolve(target)
    fg = wl["F"] // wl["groups"]
    pref = 8 if tgt.vector_registers >= 32 else 4
    for mr in (pref, 6, 4, 2, 1):
        if fg % mr == 0 and mr <= pref:
            return mr
    return pref



def _pixel_tiling(sp: ConfigSpace, nrs: tuple, P: int, kc: int, vec: int,
                  masked: bool = False, tails_in_kernel: bool = False,
                  narrow: frozenset = frozenset()) -> tuple:
    """(nr, nc) of the default.

    With masked tiles (`masked`: column tails run in the micro-kernel) the widest tile, as
    it loads the fewest values per FMA, then the blocks below (1x1 192->32 at 28x28 on
    x86-avx512: 8x16 tiles, chosen for an exact tiling, ran at 65 GFLOP/s, 8x48 at ~130).
    Otherwise, when some block and tile leave no tail columns (a tile's tail runs outside the
    micro-kernel, and a block that is not a multiple of the epilogue's vector split makes
    the fused producer compute past it: 1x1 192->32 at 28x28 on x86-avx2 ran at a quarter
    speed with nc=196, nr=24): the widest tile, then blocks dividing the pixels, then the
    largest (nc=112 ran 200 us there, nc=224 350 us).  Otherwise blocks dividing the
    pixels, the largest, then the fewest tail columns (with rows of 55 pixels, SqueezeNet,
    one-row blocks ran 2-4x slower than 5-row ones).  The B panel (kc x nc floats) stays
    under 256 KiB, and under 64 KiB unless that leaves fewer than 448 pixels: a shallow
    expansion reads its whole panel once per block of rows (1x1 32->192 at 56x56 on
    x86-avx2: nc=1568 0.75 of onnxruntime, nc=448 1.36; 16->96 at 112x112 1.41 -> 1.5).
    Where tails run in a masked micro-kernel (`tails_in_kernel`, x86-avx2) and no tiling
    is exact, tiles in `narrow` (too few accumulators to hide the FMA latency) rank after
    the others, and a block that is not a multiple of the epilogue's vector split gives
    way to the smallest that is, its panel under 256 KiB.  SqueezeNet on x86-avx2: the 3x3
    stem at 111x111 ran 4x8 tiles (fewest tail columns) in 333-pixel blocks at 1450 us,
    4x16 at 1075, 4x16 in 1776-pixel blocks at 850 (with 333 the fused producer computed
    a second block of 3 columns); the 55x55 and 27x27 1x1 layers ran 3-10 % faster in
    16-row blocks; the 512->1000 1x1 at 13x13 had 5x8 tiles."""
    choices = next(k.choices for k in sp.knobs if k.name == "nc")
    panel_max = 256 * 1024 // (4 * kc)       # pixels of a B panel under 256 KiB
    limit = min(panel_max, max(64 * 1024 // (4 * kc), 448))
    ncs = [n for n in choices if n <= limit] or [min(choices)]

    def tails(t):
        nr, nc = t
        return nc % nr + (P % nc) % nr
    pairs = [(nr, nc) for nr in nrs for nc in ncs]
    if masked:
        whole = [t for t in pairs if t[1] % vec == 0 or t[1] == P] or pairs
        return min(whole, key=lambda t: (-t[0], P % t[1] > 0, -t[1]))
    exact = [t for t in pairs if tails(t) == 0 and (t[1] % vec == 0 or t[1] == P)]
    if exact:
        return min(exact, key=lambda t: (-t[0], P % t[1] > 0, -t[1]))
    best = min(pairs, key=lambda t: (P % t[1] > 0, -t[1], tails_in_kernel and t[0] in narrow,
                                     tails(t), -t[0]))
    if tails_in_kernel and best[1] % vec and best[1] != P:
        whole = [(nr, nc) for nr in nrs for nc in choices
                 if nc <= panel_max and nc % vec == 0]
        if whole:
            return min(whole, key=lambda t: (t[0] in narrow, tails(t), -t[0], t[1]))
    return best


def input_is_b(wl: dict) -> bool:
    """Whether the GEMM's B matrix is the input itself: a 1x1 kernel at stride 1 without
    padding reads X[n, g*Cg + k, p] (H*W = OH*OW pixels, row k at stride H*W), so no
    unfolded copy is needed (knob col="direct")."""
    return ((wl["KH"], wl["KW"]) == (1, 1) and wl["stride"] == [1, 1]
            and not any(wl["pad"]))


# The unfolding of a stride-2 layer per ISA row, measured in-model (a 3 -> 16 / 3 -> 32
# stem at 224, `cgen bench`-style interleaved, best of 8 rounds): on x86-avx2 the planes
# (gcc's strided copy there is a scalar gather) 430 -> 299 us and 559 -> 536 us; on
# x86-avx512 the strided copy stays (gcc vectorizes it with two-source permutes) 168 us
# vs 226, 314 vs 384.  On NEON, counted under QEMU -icount (`cgen profile`), the same
# stems take planes: aarch64 5.16 -> 3.07 and 7.55 -> 5.45 M instructions, armv7
# 9.20 -> 4.28 and 12.57 -> 7.60 M.  Rows not listed are unmeasured and keep the copy
# (Helium's stems default to conv2d_nchw, not this template).
STRIDED_COL = {"avx2": "planes", "neon-aarch64": "planes", "neon-armv7": "planes"}


# Small images (at most SMALL_IMAGE pixels: one pixel block of at most four tile columns,
# the 7x7 layers) per ISA row: the order that keeps each weight panel in L1 and sweeps the
# whole B block under it, and a depth block of at most SMALL_IMAGE_KC channels whose B
# block (kc x P floats) stays within L1_BYTES too.  Measured in-model on x86-avx2
# (MobileNetV2's eight 7x7 1x1 convs, interleaved, best of 3 rounds, against order ji with
# kc 256 or K): 320 -> 1280 909 -> 778 us, 960 -> 320 678 -> 548, 160 -> 960 284 -> 268,
# 0.80-0.93 each; with kc 160 (the whole K, a 31 KB B block) 160 -> 960 kept 0.94-1.01;
# kc alone 0.84-0.89 where K > 256, 1.0 elsewhere; the 14x14 layers unchanged by either
# (0.97-1.04), so they keep the default.  The im2col template shares the rule: ResNet-18's
# 3x3 stride-2 256 -> 512 at 7x7 (kc 72, planes) 2774 -> 2335 us against ji with kc 252.
# Rows not listed are unmeasured and keep it.
SMALL_IMAGE = 64
SMALL_IMAGE_KC = 128
SMALL_IMAGE_ORDER = {"avx2": "ij"}
L1_BYTES = 32 * 1024


def weight_depth_block(tm, wl: dict, target) -> int | None:
    """The depth block to pack a layer's weights by (workload key k_bn), or None.

    The GEMM reads its weights one depth block (kc) of each panel at a time; panels laid
    out whole ([panel][K][mr]) make that a run of short jumps through the weights, which
    the hardware prefetcher follows poorly when the weights are not in cache, as in a
    model, where they are read once per inference.  Packed by depth block
    ([K/kb][panel][kb][mr]) the block's panels are one stream.  Measured on x86-avx2 (Zen 3)
    on MobileNetV2's 320 -> 1280 1x1 at 7x7, weights cold (rotating 23 copies): 750-763 ->
    572-580 us; 547-567 us either way with warm weights.  The block is the default kc where
    it divides the depth in whole channels, else the largest such divisor not above it
    (kept only from half of kc up); None where kc is the whole depth (nothing to gain)."""
    kk = (wl["C"] // wl["groups"]) * wl["KH"] * wl["KW"]
    if wl["weights"] != "packed" or wl.get("k_bn"):
        return wl.get("k_bn")
    kc = tm.default(wl, target)["kc"]
    if kc >= kk:
        return None
    khw = wl["KH"] * wl["KW"]
    kb = max((d for d in range(khw, kc + 1, khw) if kk % d == 0), default=None)
    return kb if kb is not None and 2 * kb >= kc else None


def reads_planes(wl: dict) -> bool:
    """Whether col="planes" applies: stride 2 along both axes, no dilation."""
    return wl["stride"] == [2, 2] and wl["dilation"] == [1, 1] and (wl["KH"], wl["KW"]) != (1, 1)


def conv2d_gemm_compute(wl: dict, mr: int, direct: bool = False, planes: bool = False):
    """te tensors (inputs, col, Ap, Y): Y[n, g, f, p] = sum_k Ap[g, f//mr, k, f%mr] * col[n, g, k, p]
    with p = oy*OW + ox and k = (ci*KH + kh)*KW + kw; Y is (N, G, F/G, OH*OW), NCHW memory.
    With a depth block (wl["k_bn"]), the packed weights are Ap[g, k//kb, f//mr, k%kb, f%mr].
    `direct` (input_is_b): the sum reads X in place and col is None.  `planes`
    (reads_planes): col reads the zero-padded input split into its four (row parity,
    column parity) planes Q, where a stride-2 tap is a stride-1 one: each unfolded row is
    then a contiguous vector copy instead of a strided gather with a bounds test per
    element (a 3-channel stem's unfolding cost three times its GEMM)."""
    N, C, H, W, F, KH, KW, G = (wl[k] for k in ("N", "C", "H", "W", "F", "KH", "KW", "groups"))
    (sh, sw), (dh, dw), (top, left, _, _) = wl["stride"], wl["dilation"], wl["pad"]
    OH, OW = out_size(wl)
    Cg, Fg, P, KK = C // G, F // G, OH * OW, (C // G) * KH * KW
    X = te.placeholder((N, C, H, W), "float32", name="X")
    kb = wl.get("k_bn")
    if wl["weights"] == "packed" and kb:
        Ap = te.placeholder((G, KK // kb, -(-Fg // mr), kb, mr), "float32", name="Ap")
        ins = [X, Ap]
    elif wl["weights"] == "packed":
        Ap = te.placeholder((G, -(-Fg // mr), KK, mr), "float32", name="Ap")
        ins = [X, Ap]
    else:
        Wt = te.placeholder((F, Cg, KH, KW), "float32", name="Wt")
        Ap = pack_weights_gemm(Wt, G, mr)
        ins = [X, Wt]

    def a(g, f, k):
        if kb:
            return Ap[g, k // kb, f // mr, k % kb, f % mr]
        return Ap[g, f // mr, k, f % mr]

    def padded(n, c, y, x, test: bool):
        """X at (y, x), zero outside the image; likely: the fill is cut into zero borders
        and a plain interior copy."""
        if not test:
            return X[n, c, y, x]
        inside = te.likely(te.all(y >= 0, y < H, x >= 0, x < W))
        return te.if_then_else(inside, X[n, c, y, x], 0.0)

    def tap(k):
        return k // (KH * KW), (k // KW) % KH, k % KW
    if planes:
        if not reads_planes(wl):
            raise ValueError(f"{wl['op']}: col='planes' needs stride 2 and no dilation")
        # the planes' last row and column may lie past the image even without padding
        Q = te.compute((N, C, 2, 2, OH + (KH - 1) // 2, OW + (KW - 1) // 2),
                       lambda n, c, a, b, i, j: padded(n, c, 2 * i + a - top, 2 * j + b - left,
                                                       True), name="Q")

        def colval(n, g, k, p):
            ci, kh, kw = tap(k)
            return Q[n, g * Cg + ci, kh % 2, kw % 2, p // OW + kh // 2, p % OW + kw // 2]
    else:
        def colval(n, g, k, p):
            ci, kh, kw = tap(k)
            return padded(n, g * Cg + ci, (p // OW) * sh + kh * dh - top,
                          (p % OW) * sw + kw * dw - left, any(wl["pad"]))
    k = te.reduce_axis((0, KK), name="k")
    if direct:
        if not input_is_b(wl):
            raise ValueError(f"{wl['op']}: col='direct' needs a 1x1 kernel, stride 1, no padding")
        # the column as p - row * OW (not p % OW): the address (row * W + column) is then
        # linear in p by itself, the row terms cancelling, whatever the simplifier knows
        Y = te.compute((N, G, Fg, P), lambda n, g, f, p: te.sum(
            a(g, f, k) * X[n, g * Cg + k, p // OW, p - (p // OW) * OW], axis=k), name="Y")
        return ins, None, Ap, Y
    col = te.compute((N, G, KK, P), colval, name="col")
    Y = te.compute((N, G, Fg, P), lambda n, g, f, p: te.sum(
        a(g, f, k) * col[n, g, k, p], axis=k), name="Y")
    return ins, col, Ap, Y


class Conv2dGemmTemplate:
    """conv2d as GEMM: Y[g] (F/G x P) = W[g] (F/G x Cg*KH*KW) @ col[g] (Cg*KH*KW x P).

    The weights are MR-row panels (pre-packed, or packed at root from OIHW); the
    image is unfolded (im2col) block by block into a KC x NC buffer computed at the
    GEMM's depth-block loop, whose loops are split so no division is left in them;
    the MR x NR register tile is a micro-kernel.  conv2d_1x1 is the same family
    restricted to 1x1 kernels, where the buffer is a plain (strided) copy, and at stride
    1 without padding no copy at all: knob col="direct" reads B from the input in place
    (the copy only paid for itself as a contiguous stream, and layers with few output
    channels shared it among few tile rows)."""

    def __init__(self, name: str = "conv2d_im2col", only_1x1: bool = False):
        self.name = name
        self.only_1x1 = only_1x1

    def workload(self, N, C, H, W, F, KH, KW, stride=1, pad=0, dilation=1, groups=1,
                 layout="NCHW", weights="OIHW", ic_bn=None, oc_bn=None, dtype="float32",
                 k_bn=None) -> dict:
        if self.only_1x1 and (KH, KW) != (1, 1):
            raise ValueError(f"{self.name}: the kernel must be 1x1, got {KH}x{KW}")
        if layout != "NCHW":
            raise ValueError(f"{self.name}: only the NCHW layout, got {layout}")
        if weights == "packed" and oc_bn is None:
            raise ValueError(f"{self.name}: packed weights need oc_bn (rows per weight panel; "
                             "see gemm_default_mr)")
        wl = conv2d_workload(self.name, N, C, H, W, F, KH, KW, stride, pad, dilation, groups,
                             layout, weights, None, oc_bn, dtype)
        if k_bn is not None:      # only when set: workloads without it keep their log keys
            kk = (C // groups) * KH * KW
            whole = isinstance(k_bn, (int, np.integer)) and not isinstance(k_bn, bool)
            if weights != "packed" or not whole or k_bn < 1 or kk % k_bn or k_bn % (KH * KW):
                raise ValueError(f"{self.name}: k_bn (the packed weights' depth block) must be "
                                 f"whole input channels dividing {kk}, with packed weights; "
                                 f"got {k_bn!r}")
            wl["k_bn"] = int(k_bn)
        return wl

    def _nr_choices(self, tgt, mr: int) -> tuple:
        lanes = block_lanes(tgt)
        return tuple(nr for nr in (lanes, 2 * lanes, 3 * lanes, 4 * lanes)
                     if tile_kernel_shape_ok(tgt, mr, nr)) or (lanes,)

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        tgt = resolve(target)
        fg = wl["F"] // wl["groups"]
        OH, OW = out_size(wl)
        P = OH * OW
        cg, khw = wl["C"] // wl["groups"], wl["KH"] * wl["KW"]
        mrs = (wl["oc_bn"],) if wl["oc_bn"] is not None else \
            tuple(m for m in (1, 2, 3, 4, 6, 8, 12, 14) if m <= max(1, fg))
        nrs = sorted({nr for m in mrs for nr in self._nr_choices(tgt, m)})
        # depth blocks: whole input channels (so the unfolded rows split without division)
        kc = tuple(sorted({c * khw for c in (8, 16, 32, 64, 128, 256) if c < cg} | {cg * khw}))
        if wl.get("k_bn"):        # the weights' depth block: a block of k reads one of them
            kc = (wl["k_bn"],)
        # pixel blocks: whole output rows (also any divisor of OH rows: no short last block)
        nc = tuple(sorted({min(P, r * OW) for r in (1, 2, 4, 8, 16, 32)} | {P}
                          | {r * OW for r in range(1, min(OH, 32) + 1) if OH % r == 0}))
        mc = tuple(m for m in (1, 2, 4, 8, 16, 32, 64) if m == 1 or (m // 2) * min(mrs) < fg)
        micro = ("masked", "fixed", "off") if column_tails_ok(tgt) else ("fixed", "off")
        col = ("direct", "copy") if input_is_b(wl) else \
            ("planes", "copy") if reads_planes(wl) else ("copy",)
        knobs = [Knob("mr", mrs), Knob("nr", tuple(nrs)), Knob("mc", mc), Knob("kc", kc),
                 Knob("nc", nc), Knob("order", ("ji", "ij")), Knob("micro", micro),
                 Knob("col", col)]
        knobs += parallel_knobs(tgt)
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        tgt = resolve(target)
        sp = self.space(wl, tgt)
        OH, OW = out_size(wl)
        mr = wl["oc_bn"] or gemm_default_mr(wl, tgt)
        nrs = self._nr_choices(tgt, mr)
        cg, khw = wl["C"] // wl["groups"], wl["KH"] * wl["KW"]
        # the B block (kc x nc floats) about half of L2, the A block (mc*mr x kc) in L1/L2
        kc = min(cg, 256 // khw if khw > 1 else 256) * khw
        # the widest tile where masks are native; AVX2's masked tails are dearer (1x1
        # 192->32 at 28x28 + residual: 4x24 tiles with a 16-column tail per 112-pixel block
        # ran at 0.78 of the AVX2 onnxruntime, exact 4x16 tiles at 0.9)
        lanes = block_lanes(tgt)
        narrow = frozenset(n for n in nrs if mr * (n // lanes) < tgt.vector_registers // 2)
        nr, nc = _pixel_tiling(sp, nrs, OH * OW, kc, 2 * lanes, masked_tiles_ok(tgt),
                               column_tails_ok(tgt), narrow)
        order, isa_name = "ji", getattr(isa_for(tgt), "name", None)
        small = SMALL_IMAGE_ORDER.get(isa_name)
        if small is not None and OH * OW <= SMALL_IMAGE:
            order = small
            kcs = next(k.choices for k in sp.knobs if k.name == "kc")
            kc = max((c for c in kcs if c <= SMALL_IMAGE_KC and c * OH * OW * 4 <= L1_BYTES),
                     default=min(kcs))
        want = {"mr": mr, "nr": nr, "mc": 16, "kc": kc, "nc": nc, "order": order,
                "micro": "masked" if column_tails_ok(tgt) else "fixed", "parallel": False,
                "col": "direct" if input_is_b(wl) else
                STRIDED_COL.get(isa_name, "copy")
                if reads_planes(wl) else "copy"}
        return sp.nearest(want)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list of promising configs around the default (for quick sweeps)."""
        sp = self.space(wl, target)
        d = self.default(wl, target)
        knob = {k.name: k.choices for k in sp.knobs}
        ch = [{"nr": nr} for nr in knob["nr"]] + [{"order": "ij"}, {"mc": 4}, {"mc": 64}]
        ch += [{"kc": kc} for kc in knob["kc"][-3:]] + [{"nc": nc} for nc in knob["nc"][-3:]]
        ch += [{"mr": 6, "nr": 64}, {"mr": 12, "nr": 32}, {"mr": 4, "nr": 64}]
        return _variants(sp, d, ch)

    def build(self, wl: dict, target, config):
        check_op(wl, self.name)
        tgt = resolve(target)
        c = config_dict(config)
        mr, nr = c["mr"], c["nr"]
        ins, col, _, Y = conv2d_gemm_compute(wl, mr, direct=c.get("col") == "direct",
                                             planes=c.get("col") == "planes")
        s = te.create_schedule(Y)
        st = s[Y]
        n, g, f, p = st.op.axis
        (k,) = st.op.reduce_axis
        pc, p1 = st.split(p, factor=c["nc"])
        pr, pj = st.split(p1, factor=nr)
        kc, kk = st.split(k, factor=c["kc"])
        fc, f1 = st.split(f, factor=c["mc"] * mr)
        fr, fi = st.split(f1, factor=mr)
        if c["order"] == "ji":
            st.reorder(n, g, pc, kc, fc, pr, fr, kk, fi, pj)
        else:
            st.reorder(n, g, pc, kc, fc, fr, pr, kk, fi, pj)
        st.vectorize(pj)
        fg = wl["F"] // wl["groups"]
        # (a row or column loop of extent 1 is simplified away: no tile left to tensorize)
        if (c["micro"] != "off" and min(mr, fg) > 1 and min(nr, c["nc"]) > 1
                and tile_kernel_shape_ok(tgt, mr, nr)):
            st.tensorize(kk, tile_intrin(tgt, mr, nr, masked=c["micro"] == "masked",
                                          a_packed=True))
        if col is not None:
            self._schedule_col(s, col, st, kc, wl, planes=c.get("col") == "planes")
        if c.get("parallel") and tgt.can_thread:
            st.parallel(pc)
        return s, ins + [Y]

    @staticmethod
    def _schedule_col(s, col, st, kc, wl, planes: bool = False):
        """The unfolded block at the depth-block loop: k = (ci, kh, kw) and p = (oy, ox)
        split so its loops divide nothing.  The planes (Q) per unfolded block, both column
        parities of a pair in one loop body, so the interior is one loop of paired loads.
        Per block, not at root: a band's planes are its rows plus a halo of KH//2 (1.5x
        the copying for two-row bands), but the workspace shrinks from the whole padded
        input to a block (16 -> 32 at 256x256 on x86-avx2: 4.4 MB -> 279 KB, the 3 -> 16
        stem at 224: 690 -> 104 KB) at the same speed within noise (2.9 vs 3.0 ms, 375 vs
        393 us) and +1.5% instructions on aarch64 (QEMU -icount, 3.07 -> 3.11 M)."""
        _, OW = out_size(wl)
        KH, KW = wl["KH"], wl["KW"]
        cst = s[col]
        _, _, ck, cp = cst.op.axis
        if KH * KW > 1:
            _, ckr = cst.split(ck, factor=KH * KW)
            if KW > 1 and KH > 1:
                cst.split(ckr, factor=KW)
        _, cx = cst.split(cp, factor=OW)
        if wl["stride"][1] == 1 or planes:
            cst.vectorize(cx)
        cst.compute_at(st, kc)
        if planes:
            q = s[next(t for t in col.op.input_tensors if t.name == "Q")]
            _, _, a, b, i, j = q.op.axis
            q.reorder(a, i, j, b)
            q.unroll(a)
            q.unroll(b)
            q.compute_at(cst, cst.op.axis[0])

    def inputs(self, wl: dict, rng) -> list:
        N, C, H, W, F, KH, KW, G = (wl[k] for k in ("N", "C", "H", "W", "F", "KH", "KW", "groups"))
        OH, OW = out_size(wl)
        x, w = random_conv_inputs(wl, rng)
        if wl["weights"] == "packed":
            w = pack_weights_gemm_np(w, G, wl["oc_bn"], wl.get("k_bn"))
        return [x, w, np.zeros((N, G, F // G, OH * OW), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        x, w = inputs[0], inputs[1]
        N, C, F, KH, KW, G = (wl[k] for k in ("N", "C", "F", "KH", "KW", "groups"))
        if wl["weights"] == "packed":
            w = unpack_weights_gemm_np(w, F, C // G, KH, KW)
        y = conv2d_reference(x, w, wl["stride"], wl["pad"], wl["dilation"], G)
        return {"Y": y.reshape(N, G, F // G, -1)}

    def flops(self, wl: dict) -> int:
        return conv_flops(wl)

