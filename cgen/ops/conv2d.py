"""float32 conv2d templates: blocked NCHW[x]c direct, 1x1 as GEMM, im2col + GEMM
(Winograd is in cgen.ops.winograd), and the family dispatcher.

Workloads (`conv2d_workload`) are plain dicts:

    op        the template's name (conv2d_nchwc, conv2d_1x1, conv2d_im2col, conv2d_winograd)
    N C H W   input batch, channels, height, width
    F KH KW   output channels and kernel size
    stride [sh, sw], pad [top, left, bottom, right], dilation [dh, dw], groups
    layout    "NCHW" (converted to the blocked layout and back inside the kernel) or
              "NCHWc" (X is [N][C/ic_bn][H][W][ic_bn], the output [N][F/oc_bn][OH][OW][oc_bn])
    weights   "OIHW" (packed by a stage inside the kernel) or "packed" (pre-packed,
              below; the blocks that fix the packed layout must then be given)
    ic_bn, oc_bn   channel blocks, or None: then a knob of the template's space
    tile      (conv2d_winograd only) the Winograd output tile m, or None: a knob

Pre-packed weights are what a model provides: its weights are constants, so the
packing (te computes over the OIHW weights: `pack_weights_nchwc`,
`pack_weights_gemm`; numpy twins `*_np` for tests and benches) is folded at compile
time.  A workload with weights="packed" times the convolution alone, as
onnxruntime's NCHWc kernels get their filters packed once at session creation.
The packed layouts:

    nchwc     Wp[F/oc_bn][(C/G)/ic_bn][KH*KW*ic_bn][oc_bn], row (kh*KW + kw)*ic_bn + ic:
              the memory of [OC/oc_bn][IC/ic_bn][KH][KW][ic_bn][oc_bn]
    gemm      Ap[G][ceil((F/G)/oc_bn)][(C/G)*KH*KW][oc_bn], zero rows past F/G
    winograd  U[(m+2)^2][F/oc_bn][C/G][oc_bn]  (cgen.ops.winograd)

Every family's inner loop nest is a register tile acc[i][j] += a[i][k] * b[k][j]
(columns j contiguous), tensorized with `tile_intrin`: an MR x NR outer-product
kernel for the target's vector ISA (AVX-512, AVX2, NEON), rows broadcast from A
with any strides, B optionally prefetched; its variants take the row count (row
tails) and, with AVX-512 masks, the column count (column tails), so no tail falls
back to scalar code.

* conv2d_nchwc: X is padded into NCHW[ic_bn]c (Xp, rows of W*ic_bn floats) and the
  output accumulated in NCHW[oc_bn]c: rows of the tile are ow_tile output pixels
  (A stride sw*ic_bn), columns the oc_bn channels, depth r = kw*ic_bn + ic (dw = 1)
  for each (input block, kh).  With im2col (small images), each output pixel's
  KH*KW*ic_bn window is first copied out (Xr), so tile rows run across output rows
  and the depth is the whole window.  NCHW output: each block of oh_tile rows is
  unpacked right after it is computed.
* conv2d_1x1, conv2d_im2col: Y[g][f][p] = Ap[g][f][k] @ col[g][k][p] with
  p = oy*OW + ox: the unfolded image is computed block by block (KC x NC) at the
  GEMM's depth loop, its loops split so no division is left; Y is written as
  (N, G, F/G, OH*OW), the memory of NCHW.
"""
from __future__ import annotations

import numpy as np

from .. import te
from ..autotune.space import ConfigSpace, Knob, divisors
from ..codegen.isa import isa_for
from ..tensorize import from_compute, KernelSource, TensorizeError
from .nn import _conv_out, _pads, _pair
from targets import resolve

LAYOUTS = ("NCHW", "NCHWc")
WEIGHTS = ("OIHW", "packed")
# vector registers per ISA table (VectorISA.name): the register-tile budget
VREGS = {"avx512": 32, "avx2": 16, "neon-aarch64": 32, "neon-armv7": 16}
MAX_BLOCK = 64          # largest channel block offered as a knob choice


# ---------------------------------------------------------------- workloads
def conv2d_workload(op: str, N: int, C: int, H: int, W: int, F: int, KH: int, KW: int,
                    stride=1, pad=0, dilation=1, groups: int = 1, layout: str = "NCHW",
                    weights: str = "OIHW", ic_bn: int | None = None, oc_bn: int | None = None,
                    dtype: str = "float32") -> dict:
    """The canonical conv2d workload dict (checked; see the module docstring)."""
    sh, sw = _pair(op, "stride", stride, 1)
    dh, dw = _pair(op, "dilation", dilation, 1)
    pads = _pads(op, pad)
    for name, v in (("N", N), ("C", C), ("H", H), ("W", W), ("F", F), ("KH", KH), ("KW", KW),
                    ("groups", groups)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    if C % groups or F % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide C ({C}) and F ({F})")
    if layout not in LAYOUTS:
        raise ValueError(f"{op}: layout must be one of {LAYOUTS}, got {layout!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"{op}: weights must be one of {WEIGHTS}, got {weights!r}")
    if dtype != "float32":
        raise ValueError(f"{op}: only float32 is supported, got {dtype}")
    _conv_out(op, H, pads[0], pads[2], KH, sh, dh, "height")
    _conv_out(op, W, pads[1], pads[3], KW, sw, dw, "width")
    return {"op": op, "N": int(N), "C": int(C), "H": int(H), "W": int(W), "F": int(F),
            "KH": int(KH), "KW": int(KW), "stride": [sh, sw], "pad": list(pads),
            "dilation": [dh, dw], "groups": int(groups), "layout": layout, "weights": weights,
            "ic_bn": None if ic_bn is None else int(ic_bn),
            "oc_bn": None if oc_bn is None else int(oc_bn), "dtype": dtype}


def out_size(wl: dict) -> tuple:
    (sh, sw), (dh, dw), (t, l, b, r) = wl["stride"], wl["dilation"], wl["pad"]
    return ((wl["H"] + t + b - dh * (wl["KH"] - 1) - 1) // sh + 1,
            (wl["W"] + l + r - dw * (wl["KW"] - 1) - 1) // sw + 1)


def conv_flops(wl: dict) -> int:
    oh, ow = out_size(wl)
    return 2 * wl["N"] * wl["F"] * oh * ow * (wl["C"] // wl["groups"]) * wl["KH"] * wl["KW"]


def conv2d_reference(x: np.ndarray, w: np.ndarray, stride, pad, dilation, groups: int) -> np.ndarray:
    """numpy conv2d (NCHW, OIHW), float64 accumulation, float32 result."""
    sh, sw = stride
    dh, dw = dilation
    t, l, b, r = pad
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    xp = np.zeros((n, c, h + t + b, wd + l + r), np.float64)
    xp[:, :, t:t + h, l:l + wd] = x
    oh = (h + t + b - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + l + r - dw * (kw - 1) - 1) // sw + 1
    fg = f // groups
    y = np.zeros((n, f, oh, ow), np.float64)
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * fg:(g + 1) * fg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                win = xs[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
                y[:, g * fg:(g + 1) * fg] += np.einsum("nchw,fc->nfhw", win, ws[:, :, i, j])
    return y.astype(np.float32)


def _check(wl: dict, op: str):
    if wl.get("op") != op:
        raise ValueError(f"{op}: workload is for {wl.get('op')!r}")


# ---------------------------------------------------------------- register-tile kernels
def tile_kernel_shape_ok(target, MR: int, NR: int) -> bool:
    """Whether an MR x NR register tile kernel exists and fits the register file."""
    isa = isa_for(target)
    if isa is None or isa.name not in VREGS or NR % isa.lanes:
        return False
    nv = NR // isa.lanes
    return 1 <= MR and 1 <= nv <= 4 and MR * nv + nv + 1 <= VREGS[isa.name]


def _tile_body(isa, MR: int, nv: int, prefetch: int, masked: bool) -> list:
    """Statements of an MR x (nv vectors) tile update; with `masked`, the last vector's
    loads and stores use the mask `m` (C99 intrinsics from the ISA table)."""
    W, vt = isa.lanes, isa.vtype

    def fma(acc, a, b):
        args = {"acc": acc, "a": a, "b": b}
        return f"{isa.fma}({', '.join(args[x] for x in isa.fma_order)})"

    def load(ptr, v):
        return f"{isa.mask_load}(m, {ptr})" if masked and v == nv - 1 else f"{isa.load}({ptr})"

    def store(ptr, v, x):
        return (f"{isa.mask_store}({ptr}, m, {x});" if masked and v == nv - 1
                else f"{isa.store}({ptr}, {x});")
    L = ["  int64_t k;"]
    for r in range(MR):
        L.append(f"  const float *a{r} = A + {r} * a_si;")
    for r in range(MR):
        for v in range(nv):
            L.append(f"  {vt} c{r}_{v} = {load(f'C + {r} * c_si + {v * W}', v)};")
    L.append("  for (k = 0; k < K; ++k) {")
    if prefetch:
        L.append(f"    __builtin_prefetch(B + {prefetch} * b_sk);")
    for v in range(nv):
        L.append(f"    {vt} b{v} = {load(f'B + {v * W}', v)};")
    for r in range(MR):
        L.append(f"    {vt} a{r}v = {isa.set1}(a{r}[0]);")
        for v in range(nv):
            L.append(f"    c{r}_{v} = {fma(f'c{r}_{v}', f'a{r}v', f'b{v}')};")
    for r in range(MR):
        L.append(f"    a{r} += a_sk;")
    L.append("    B += b_sk;")
    L.append("  }")
    for r in range(MR):
        for v in range(nv):
            L.append("  " + store(f"C + {r} * c_si + {v * W}", v, f"c{r}_{v}"))
    return L


_TILE_ARGS = ("const float *restrict A, int64_t a_si, int64_t a_sk, const float *restrict B, "
              "int64_t b_sk, float *restrict C, int64_t c_si")


def _tile_kernel_source(name: str, isa, MR: int, NR: int, prefetch: int = 0,
                        masked: bool = False, rows: bool = False) -> str:
    """C[i][j] += sum_k A[i*a_si + k*a_sk] * B[k*b_sk + j] on an MR x NR tile held in
    registers; rows of A are broadcast from memory (any strides).  With `prefetch`,
    the row of B that many steps of k ahead is prefetched (weights streaming in).

    A `rows` kernel takes the number of rows M <= MR first and a `masked` one the
    number of columns N <= NR: each runs the variant with just enough rows and vectors
    (the last vector masked), nothing when M or N <= 0; so tails need no scalar code."""
    nv, W = NR // isa.lanes, isa.lanes
    if not masked and not rows:
        return "\n".join([f"static inline void {name}(int64_t K, {_TILE_ARGS}) {{"]
                         + _tile_body(isa, MR, nv, prefetch, False) + ["}"])
    out = []
    row_counts = range(1, MR + 1) if rows else (MR,)
    vec_counts = range(1, nv + 1) if masked else (nv,)
    mparam = f", {isa.mask_type} m" if masked else ""
    for r in row_counts:
        for v in vec_counts:
            out.append(f"static inline void {name}_r{r}v{v}(int64_t K, {_TILE_ARGS}{mparam}) {{")
            out += _tile_body(isa, r, v, prefetch, masked) + ["}"]
    head = ("int64_t M, " if rows else "") + ("int64_t N, " if masked else "")
    out.append(f"static inline void {name}({head}int64_t K, {_TILE_ARGS}) {{")

    def calls(v, mask, ind):
        args = "K, A, a_si, a_sk, B, b_sk, C, c_si" + (f", {mask}" if masked else "")
        if not rows:
            return [f"{ind}{name}_r{MR}v{v}({args});"]
        L = [f"{ind}switch (M) {{"]
        for r in row_counts:
            L.append(f"{ind}case {r}: {name}_r{r}v{v}({args}); break;")
        L.append(f"{ind}default: break;")
        L.append(f"{ind}}}")
        return L
    if not masked:
        out += calls(nv, None, "  ")
    else:
        for v in range(nv, 0, -1):
            rest = f"N - {(v - 1) * W}"
            mask = f"({isa.mask_type}) (({rest}) >= {W} ? 0xFFFFu : ((1u << (unsigned) ({rest})) - 1u))"
            out.append(f"  {'if' if v == nv else 'else if'} (N > {(v - 1) * W}) {{")
            out += calls(v, mask, "    ")
            out.append("  }")
    out.append("}")
    return "\n".join(out)


def tile_intrin(target, MR: int, NR: int, prefetch: int = 0, masked: bool = False,
                rows: bool = False):
    """The MR x NR register-tile GEMM intrinsic, A with arbitrary strides (conv rows);
    `prefetch` > 0 prefetches B that many steps of k ahead.  `masked` (ISAs with
    masks) takes any number of columns up to NR, `rows` any number of rows up to MR,
    so tails need no scalar code."""
    tgt = resolve(target)
    if not tile_kernel_shape_ok(tgt, MR, NR):
        raise TensorizeError(f"no {MR}x{NR} register tile kernel for target {tgt.name}")
    isa = isa_for(tgt)
    if masked and not (isa.masked and isa.lanes == 16):
        raise TensorizeError(f"no masked tile kernel on {isa.name}")
    name = (f"cg_tile_{MR}x{NR}{'m' if masked else ''}{'r' if rows else ''}"
            f"{f'_pf{prefetch}' if prefetch else ''}_{isa.name.replace('-', '_')}")
    A = te.placeholder((MR, 1), "float32", name="A")
    B = te.placeholder((1, NR), "float32", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((MR, NR), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    fixed = {}
    if not rows:
        fixed["i"] = MR
    if not masked:
        fixed["j"] = NR
    return from_compute(name, C, fixed, {("b", "j"), ("c", "j")}, KernelSource(
        name, _tile_kernel_source(name, isa, MR, NR, prefetch, masked, rows)))


def masked_tiles_ok(target) -> bool:
    isa = isa_for(target)
    return isa is not None and isa.masked and isa.lanes == 16


# ---------------------------------------------------------------- knob helpers
def _variants(space: ConfigSpace, base, changes) -> list:
    """Configs of `space` that differ from `base` by each dict of `changes` (values a knob
    does not offer are skipped; duplicates dropped), in order."""
    out, seen = [], {base.index}
    knobs = {k.name: k.choices for k in space.knobs}
    for ch in changes:
        vals = base.to_dict()
        if any(k not in knobs or v not in knobs[k] for k, v in ch.items()):
            continue
        vals.update(ch)
        cfg = space.get(space.index_of(vals))
        if cfg.index not in seen:
            seen.add(cfg.index)
            out.append(cfg)
    return out


def _threads_ok(tgt) -> bool:
    return bool(tgt.threads) and not tgt.bare_metal


def block_choices(n: int, limit: int = MAX_BLOCK) -> tuple:
    return tuple(d for d in divisors(n) if d <= limit)


def default_block(n: int, lanes: int, prefer: int) -> int:
    """A channel block: `prefer` if it divides n, else the largest divisor of n that is
    a multiple of the vector width (up to prefer), else the largest divisor <= prefer."""
    if n % prefer == 0:
        return prefer
    vec = [d for d in divisors(n) if d <= prefer and d % lanes == 0]
    if vec:
        return max(vec)
    return max(d for d in divisors(n) if d <= prefer)


# ================================================================ NCHWc
def nchwc_default_blocks(wl: dict, target) -> tuple:
    """(ic_bn, oc_bn) a graph would choose for this workload on this target."""
    tgt = resolve(target)
    isa = isa_for(tgt)
    lanes = isa.lanes if isa is not None else 4
    cg, fg = wl["C"] // wl["groups"], wl["F"] // wl["groups"]
    return (default_block(cg, lanes, 64 if lanes >= 8 else 16),
            default_block(fg, lanes, oc_block_pref(tgt)))


def oc_block_pref(target) -> int:
    """The preferred output-channel block (register-tile columns): two vectors on x86
    and 16-register NEON, four on 32-register NEON (avx512 32, avx2 16, aarch64 16,
    armv7 8), so the tile keeps several rows of accumulators in registers."""
    isa = isa_for(resolve(target))
    lanes = isa.lanes if isa is not None else 4
    return 4 * lanes if lanes == 4 and VREGS.get(getattr(isa, "name", ""), 16) >= 32 else 2 * lanes


def pack_weights_nchwc(Wt, ic_bn: int, oc_bn: int, name: str = "Wp"):
    """te: OIHW weights (F, C/groups, KH, KW) -> [F/oc_bn][Cg/ic_bn][KH*KW*ic_bn][oc_bn]
    (row q = (kh*KW + kw)*ic_bn + ic)."""
    f, cg, kh, kw = Wt.shape
    if f % oc_bn or cg % ic_bn:
        raise ValueError(f"pack_weights_nchwc: blocks ({ic_bn}, {oc_bn}) must divide ({cg}, {f})")
    return te.compute((f // oc_bn, cg // ic_bn, kh * kw * ic_bn, oc_bn),
                      lambda ob, ib, q, o: Wt[ob * oc_bn + o, ib * ic_bn + q % ic_bn,
                                              q // (kw * ic_bn), (q // ic_bn) % kw],
                      name=name)


def pack_weights_nchwc_np(w: np.ndarray, ic_bn: int, oc_bn: int) -> np.ndarray:
    f, cg, kh, kw = w.shape
    p = w.reshape(f // oc_bn, oc_bn, cg // ic_bn, ic_bn, kh, kw).transpose(0, 2, 4, 5, 3, 1)
    return np.ascontiguousarray(p.reshape(f // oc_bn, cg // ic_bn, kh * kw * ic_bn, oc_bn))


def unpack_weights_nchwc_np(wp: np.ndarray, kh: int, kw: int) -> np.ndarray:
    ocb, icb, q, oc_bn = wp.shape
    ic_bn = q // (kh * kw)
    w = wp.reshape(ocb, icb, kh, kw, ic_bn, oc_bn).transpose(0, 5, 1, 4, 2, 3)
    return np.ascontiguousarray(w.reshape(ocb * oc_bn, icb * ic_bn, kh, kw))


def to_nchwc_np(x: np.ndarray, bn: int) -> np.ndarray:
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // bn, bn, h, w).transpose(0, 1, 3, 4, 2))


def from_nchwc_np(y: np.ndarray) -> np.ndarray:
    n, cb, h, w, bn = y.shape
    return np.ascontiguousarray(y.transpose(0, 1, 4, 2, 3).reshape(n, cb * bn, h, w))


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
    if wl["layout"] == "NCHWc":
        X = te.placeholder((N, ICB, H, W, ic_bn), "float32", name="X")

        def xval(n, cb, y, q):
            return X[n, cb, y - top, q // ic_bn - left, q % ic_bn]
    else:
        X = te.placeholder((N, C, H, W), "float32", name="X")

        def xval(n, cb, y, q):
            return X[n, cb * ic_bn + q % ic_bn, y - top, q // ic_bn - left]
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
        _check(wl, self.name)
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
        if _threads_ok(tgt):
            knobs.append(Knob("parallel", (False, True)))
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        tgt = resolve(target)
        sp = self.space(wl, tgt)
        ic_bn, oc_bn = nchwc_default_blocks(wl, tgt)
        ic_bn, oc_bn = wl["ic_bn"] or ic_bn, wl["oc_bn"] or oc_bn
        OH, OW = out_size(wl)
        isa = isa_for(tgt)
        lanes = isa.lanes if isa is not None else 4
        regs = VREGS.get(isa.name, 16) if isa is not None else 16
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
        _check(wl, self.name)
        tgt = resolve(target)
        c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        ic_bn, oc_bn, tile, rows = c["ic_bn"], c["oc_bn"], c["ow_tile"], c["oh_tile"]
        im2col = bool(c.get("im2col", False))
        OH, OW = out_size(wl)
        ins, S, out = conv2d_nchwc_compute(wl, ic_bn, oc_bn, im2col)
        s = te.create_schedule(out)
        par = bool(c.get("parallel", False)) and _threads_ok(tgt)
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
        N, C, H, W, F, KH, KW, G = (wl[k] for k in ("N", "C", "H", "W", "F", "KH", "KW", "groups"))
        OH, OW = out_size(wl)
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        w = rng.standard_normal((F, C // G, KH, KW), dtype=np.float32)
        if wl["layout"] == "NCHWc":
            x = to_nchwc_np(x, wl["ic_bn"])
            y = np.zeros((N, F // wl["oc_bn"], OH, OW, wl["oc_bn"]), np.float32)
        else:
            y = np.zeros((N, F, OH, OW), np.float32)
        if wl["weights"] == "packed":
            w = pack_weights_nchwc_np(w, wl["ic_bn"], wl["oc_bn"])
        return [x, w, y]

    def reference(self, wl: dict, inputs) -> dict:
        x, w = inputs[0], inputs[1]
        if wl["layout"] == "NCHWc":
            x = from_nchwc_np(x)
        if wl["weights"] == "packed":
            w = unpack_weights_nchwc_np(w, wl["KH"], wl["KW"])
        y = conv2d_reference(x, w, wl["stride"], wl["pad"], wl["dilation"], wl["groups"])
        if wl["layout"] == "NCHWc":
            return {"Yc": to_nchwc_np(y, wl["oc_bn"])}
        return {"Y": y}

    def flops(self, wl: dict) -> int:
        return conv_flops(wl)


# ================================================================ GEMM family
def gemm_default_mr(wl: dict, target) -> int:
    """Rows of the GEMM register tile (output channels per weight panel) for a target."""
    tgt = resolve(target)
    isa = isa_for(tgt)
    fg = wl["F"] // wl["groups"]
    pref = 8 if isa is not None and VREGS.get(isa.name, 16) >= 32 else 4
    for mr in (pref, 6, 4, 2, 1):
        if fg % mr == 0 and mr <= pref:
            return mr
    return pref


def pack_weights_gemm(Wt, groups: int, mr: int, name: str = "Ap"):
    """te: OIHW weights (F, C/groups, KH, KW) -> [G][ceil(Fg/mr)][Cg*KH*KW][mr] panels,
    zero rows past Fg (numpy twin: pack_weights_gemm_np)."""
    f, cg, kh, kw = Wt.shape
    fg = f // groups
    kk = cg * kh * kw
    return te.compute(
        (groups, -(-fg // mr), kk, mr),
        lambda g, ob, k, o: te.if_then_else(
            ob * mr + o < fg,
            Wt[te.minimum(g * fg + ob * mr + o, f - 1), k // (kh * kw), (k // kw) % kh, k % kw], 0.0),
        name=name)


def pack_weights_gemm_np(w: np.ndarray, groups: int, mr: int) -> np.ndarray:
    f, cg, kh, kw = w.shape
    fg = f // groups
    nb = -(-fg // mr)
    a = np.zeros((groups, nb * mr, cg * kh * kw), np.float32)
    a[:, :fg] = w.reshape(groups, fg, cg * kh * kw)
    return np.ascontiguousarray(a.reshape(groups, nb, mr, cg * kh * kw).transpose(0, 1, 3, 2))


def unpack_weights_gemm_np(ap: np.ndarray, f: int, cg: int, kh: int, kw: int) -> np.ndarray:
    g, nb, kk, mr = ap.shape
    a = ap.transpose(0, 1, 3, 2).reshape(g, nb * mr, kk)[:, :f // g]
    return np.ascontiguousarray(a.reshape(f, cg, kh, kw))


def conv2d_gemm_compute(wl: dict, mr: int):
    """te tensors (inputs, col, Ap, Y): Y[n, g, f, p] = sum_k Ap[g, f//mr, k, f%mr] * col[n, g, k, p]
    with p = oy*OW + ox and k = (ci*KH + kh)*KW + kw; Y is (N, G, F/G, OH*OW), NCHW memory."""
    N, C, H, W, F, KH, KW, G = (wl[k] for k in ("N", "C", "H", "W", "F", "KH", "KW", "groups"))
    (sh, sw), (dh, dw), (top, left, _, _) = wl["stride"], wl["dilation"], wl["pad"]
    OH, OW = out_size(wl)
    Cg, Fg, P, KK = C // G, F // G, OH * OW, (C // G) * KH * KW
    X = te.placeholder((N, C, H, W), "float32", name="X")
    if wl["weights"] == "packed":
        Ap = te.placeholder((G, -(-Fg // mr), KK, mr), "float32", name="Ap")
        ins = [X, Ap]
    else:
        Wt = te.placeholder((F, Cg, KH, KW), "float32", name="Wt")
        Ap = pack_weights_gemm(Wt, G, mr)
        ins = [X, Wt]

    def colval(n, g, k, p):
        ci, kh, kw = k // (KH * KW), (k // KW) % KH, k % KW
        y = (p // OW) * sh + kh * dh - top
        x = (p % OW) * sw + kw * dw - left
        if not any(wl["pad"]):
            return X[n, g * Cg + ci, y, x]
        inside = te.all(y >= 0, y < H, x >= 0, x < W)
        return te.if_then_else(inside, X[n, g * Cg + ci, y, x], 0.0)
    col = te.compute((N, G, KK, P), colval, name="col")
    k = te.reduce_axis((0, KK), name="k")
    Y = te.compute((N, G, Fg, P), lambda n, g, f, p: te.sum(
        Ap[g, f // mr, k, f % mr] * col[n, g, k, p], axis=k), name="Y")
    return ins, col, Ap, Y


class Conv2dGemmTemplate:
    """conv2d as GEMM: Y[g] (F/G x P) = W[g] (F/G x Cg*KH*KW) @ col[g] (Cg*KH*KW x P).

    The weights are MR-row panels (pre-packed, or packed at root from OIHW); the
    image is unfolded (im2col) block by block into a KC x NC buffer computed at the
    GEMM's depth-block loop, whose loops are split so no division is left in them;
    the MR x NR register tile is a micro-kernel.  conv2d_1x1 is the same family
    restricted to 1x1 kernels, where the buffer is a plain (strided) copy."""

    def __init__(self, name: str = "conv2d_im2col", only_1x1: bool = False):
        self.name = name
        self.only_1x1 = only_1x1

    def workload(self, N, C, H, W, F, KH, KW, stride=1, pad=0, dilation=1, groups=1,
                 layout="NCHW", weights="OIHW", ic_bn=None, oc_bn=None, dtype="float32") -> dict:
        if self.only_1x1 and (KH, KW) != (1, 1):
            raise ValueError(f"{self.name}: the kernel must be 1x1, got {KH}x{KW}")
        if layout != "NCHW":
            raise ValueError(f"{self.name}: only the NCHW layout, got {layout}")
        if weights == "packed" and oc_bn is None:
            raise ValueError(f"{self.name}: packed weights need oc_bn (rows per weight panel; "
                             "see gemm_default_mr)")
        return conv2d_workload(self.name, N, C, H, W, F, KH, KW, stride, pad, dilation, groups,
                               layout, weights, None, oc_bn, dtype)

    def _nr_choices(self, tgt, mr: int) -> tuple:
        isa = isa_for(tgt)
        lanes = isa.lanes if isa is not None else 4
        return tuple(nr for nr in (lanes, 2 * lanes, 3 * lanes, 4 * lanes)
                     if tile_kernel_shape_ok(tgt, mr, nr)) or (lanes,)

    def space(self, wl: dict, target) -> ConfigSpace:
        _check(wl, self.name)
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
        # pixel blocks: whole output rows
        nc = tuple(sorted({min(P, r * OW) for r in (1, 2, 4, 8, 16, 32)} | {P}))
        mc = tuple(m for m in (1, 2, 4, 8, 16, 32, 64) if m == 1 or (m // 2) * min(mrs) < fg)
        micro = ("masked", "fixed", "off") if masked_tiles_ok(tgt) else ("fixed", "off")
        knobs = [Knob("mr", mrs), Knob("nr", tuple(nrs)), Knob("mc", mc), Knob("kc", kc),
                 Knob("nc", nc), Knob("order", ("ji", "ij")), Knob("micro", micro)]
        if _threads_ok(tgt):
            knobs.append(Knob("parallel", (False, True)))
        return ConfigSpace(tuple(knobs))

    def default(self, wl: dict, target):
        tgt = resolve(target)
        sp = self.space(wl, tgt)
        OH, OW = out_size(wl)
        mr = wl["oc_bn"] or gemm_default_mr(wl, tgt)
        nrs = self._nr_choices(tgt, mr)
        nr = max(nrs)
        cg, khw = wl["C"] // wl["groups"], wl["KH"] * wl["KW"]
        # the B block (kc x nc floats) about half of L2, the A block (mc*mr x kc) in L1/L2
        kc = min(cg, 256 // khw if khw > 1 else 256) * khw
        nc = OW * max(1, min(OH, (256 * 1024) // (4 * kc * OW)))
        want = {"mr": mr, "nr": nr, "mc": 16, "kc": kc, "nc": nc, "order": "ji",
                "micro": "masked" if masked_tiles_ok(tgt) else "fixed", "parallel": False}
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
        _check(wl, self.name)
        tgt = resolve(target)
        c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        mr, nr = c["mr"], c["nr"]
        _, OW = out_size(wl)
        KH, KW = wl["KH"], wl["KW"]
        ins, col, _, Y = conv2d_gemm_compute(wl, mr)
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
            st.tensorize(kk, tile_intrin(tgt, mr, nr, masked=c["micro"] == "masked"))
        # the unfolded block: k = (ci, kh, kw) and p = (oy, ox) split so its loops divide nothing
        cst = s[col]
        _, _, ck, cp = cst.op.axis
        if KH * KW > 1:
            _, ckr = cst.split(ck, factor=KH * KW)
            if KW > 1 and KH > 1:
                cst.split(ckr, factor=KW)
        _, cx = cst.split(cp, factor=OW)
        if wl["stride"][1] == 1:
            cst.vectorize(cx)
        cst.compute_at(st, kc)
        if c.get("parallel") and _threads_ok(tgt):
            st.parallel(pc)
        return s, ins + [Y]

    def inputs(self, wl: dict, rng) -> list:
        N, C, H, W, F, KH, KW, G = (wl[k] for k in ("N", "C", "H", "W", "F", "KH", "KW", "groups"))
        OH, OW = out_size(wl)
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        w = rng.standard_normal((F, C // G, KH, KW), dtype=np.float32)
        if wl["weights"] == "packed":
            w = pack_weights_gemm_np(w, G, wl["oc_bn"])
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


# ================================================================ dispatch
def winograd_wins(wl: dict) -> bool:
    """The default family rule for 3x3 stride-1 convolutions: Winograd F(4x4, 3x3) when
    there are enough tiles for its GEMM (at least 16, i.e. about 14x14 outputs) and
    channels to amortise its transforms; direct NCHWc otherwise (512x7x7: the
    transformed weights, 4x the direct ones, would stream from memory for 4 tiles)."""
    oh, ow = out_size(wl)
    return ((wl["KH"], wl["KW"]) == (3, 3) and wl["stride"] == [1, 1]
            and wl["dilation"] == [1, 1] and wl["C"] // wl["groups"] >= 16
            and wl["F"] // wl["groups"] >= 16 and (-(-oh // 4)) * (-(-ow // 4)) >= 16)


def conv2d_template_for(workload: dict, target="host") -> tuple:
    """(template, workload for it): the family for a conv2d workload.

    `workload` is any conv2d workload dict (op "conv2d" or a template's name) with
    at least N C H W F KH KW; stride/pad/dilation/groups/layout/weights/ic_bn/oc_bn
    default as in conv2d_workload.  1x1 kernels on NCHW go to conv2d_1x1 (GEMM),
    3x3 stride-1 convolutions where `winograd_wins` to conv2d_winograd, everything
    else to conv2d_nchwc.  Blocks (and the Winograd tile) left open are filled with
    the family's defaults for the target when the layout or the pre-packed weights
    need them.
    """
    wl = dict(workload)
    tgt = resolve(target)
    keys = ("N", "C", "H", "W", "F", "KH", "KW")
    shape = [wl[k] for k in keys]
    opts = {k: wl[k] for k in ("stride", "pad", "dilation", "groups", "layout", "weights",
                               "ic_bn", "oc_bn") if k in wl and wl[k] is not None}
    if wl.get("tile") is not None:
        opts["tile"] = wl["tile"]
    base = conv2d_workload("conv2d", *shape, **{k: v for k, v in opts.items()
                                                 if k not in ("ic_bn", "oc_bn", "tile")})
    prepacked = base["weights"] == "packed"
    if base["layout"] == "NCHW" and (base["KH"], base["KW"]) == (1, 1):
        tmpl = Conv2dGemmTemplate("conv2d_1x1", only_1x1=True)
        opts.pop("ic_bn", None)
        opts.pop("tile", None)
        if prepacked:
            opts.setdefault("oc_bn", gemm_default_mr(base, tgt))
        return tmpl, tmpl.workload(*shape, **opts)
    if winograd_wins(base):
        from .winograd import Conv2dWinogradTemplate, winograd_default_blocks
        tmpl = Conv2dWinogradTemplate()
        m, ib, ob = winograd_default_blocks(base, tgt)
        if base["layout"] == "NCHWc":
            opts.setdefault("ic_bn", ib)
        if base["layout"] == "NCHWc" or prepacked:
            opts.setdefault("oc_bn", ob)
        if prepacked:
            opts.setdefault("tile", m)
        return tmpl, tmpl.workload(*shape[:5], **opts)
    tmpl = Conv2dNCHWcTemplate()
    opts.pop("tile", None)
    if base["layout"] == "NCHWc" or prepacked:
        ib, ob = nchwc_default_blocks(base, tgt)
        opts.setdefault("ic_bn", ib)
        opts.setdefault("oc_bn", ob)
    return tmpl, tmpl.workload(*shape, **opts)


def conv_templates() -> list:
    """The float32 conv2d templates (for cgen.ops.registry)."""
    from .winograd import Conv2dWinogradTemplate
    return [Conv2dNCHWcTemplate(), Conv2dGemmTemplate("conv2d_1x1", only_1x1=True),
            Conv2dGemmTemplate("conv2d_im2col"), Conv2dWinogradTemplate()]
