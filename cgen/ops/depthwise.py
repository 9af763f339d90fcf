"""Depthwise conv2d templates (float32, any kernel, stride, dilation and padding).

Workloads (`depthwise_workload`) are plain dicts:

    op          "depthwise_conv2d" (NCHW) or "depthwise_conv2d_nchwc" (blocked)
    N C H W     input batch, channels, height, width
    KH KW       kernel size
    stride [sh, sw], pad [top, left, bottom, right], dilation [dh, dw]
    multiplier  output channels per input channel (NCHW only; NCHWc takes 1)
    layout      "NCHW", or "NCHWc" with block bn (which must divide C)
    bn          the channel block of the NCHWc layout, else None

Arrays: NCHW takes X (N, C, H, W), W (C*multiplier, 1, KH, KW) as in ONNX, and
writes Y (N, C*multiplier, OH, OW).  NCHWc takes X (N, C/bn, H, W, bn) and
weights pre-packed as W (C/bn, KH, KW, bn), and writes Y (N, C/bn, OH, OW, bn)
(`to_nchwc_np`, `pack_weights_np` convert).

Both compute the zero-padded input P as a stage (placed by the `pad_at` knob:
inlined, per channel plane, per band of rows, per tile, or whole at root; when
placed inside the loops it also covers the tail tiles, see `covering_pads`; its
in-image condition is te.likely, so the lowering cuts the fill into zero borders
and an interior plain copy or deinterleave that the C compiler vectorizes) and
the output either as one unrolled expression over the KH*KW taps
(taps="expr": each output vector is a chain of multiply-adds held in a
register) or as a reduction over the taps (taps="reduce": the accumulator
lives in the output tile, which gcc keeps in registers when it can).

* depthwise_conv2d (NCHW): output rows are split into tiles of tile_y rows
  (unrolled) by tile_x columns (vectorized along W).  For stride 1 the tap
  loads are contiguous vectors; larger strides leave a plain loop that gcc
  vectorizes with shuffles.
* depthwise_conv2d (NCHW), rows="flat" (stride 1 or 2): the window runs along the
  padded plane's flattened rows (`depthwise_flat_compute`; stride 2 over the input's
  four parity planes), so one vector spans several short output rows (7x7, 14x14
  images) instead of idling lanes past each row's end, and a copy keeps the valid
  columns; the default for narrow rows where they use more vector lanes than tiled rows
  (`_flat_pays`, measured per ISA).
* depthwise_conv2d_nchwc: the vector runs over the bn channels of a block, so
  every tap load is a contiguous vector whatever the stride; a tile of
  tile_y x tile_x output pixels (unrolled) is held in registers.
"""
from __future__ import annotations

import numpy as np

from .. import te
from .space import ConfigSpace, Knob, split_choices
from .common import parallel_knobs, check_op, config_dict, conv_out, conv_out_hw as out_size, from_nchwc_np, pick, to_nchwc_np, vec_choices
from .nn import _pads, _pair
from ..codegen.isa import isa_for
from targets import resolve

NCHW_OP = "depthwise_conv2d"
NCHWC_OP = "depthwise_conv2d_nchwc"


# ---------------------------------------------------------------- workloads
def depthwise_workload(op: str, N: int, C: int, H: int, W: int, KH: int, KW: int, stride=1,
                       pad=0, dilation=1, multiplier: int = 1, layout: str = "NCHW",
                       bn: int | None = None, dtype: str = "float32") -> dict:
    """The canonical depthwise workload dict (checked; see the module docstring)."""
    if op not in (NCHW_OP, NCHWC_OP):
        raise ValueError(f"depthwise_workload: op must be {NCHW_OP!r} or {NCHWC_OP!r}, got {op!r}")
    sh, sw = _pair(op, "stride", stride, 1)
    dh, dw = _pair(op, "dilation", dilation, 1)
    pads = _pads(op, pad)
    for name, v in (("N", N), ("C", C), ("H", H), ("W", W), ("KH", KH), ("KW", KW),
                    ("multiplier", multiplier)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    if dtype != "float32":
        raise ValueError(f"{op}: only float32 is supported, got {dtype}")
    if op == NCHW_OP and (layout != "NCHW" or bn is not None):
        raise ValueError(f"{op}: layout must be NCHW without bn, got {layout!r}, bn={bn!r}")
    if op == NCHWC_OP:
        if layout != "NCHWc" or not isinstance(bn, (int, np.integer)) or bn < 1 or C % bn:
            raise ValueError(f"{op}: layout must be 'NCHWc' with a block bn dividing C={C}, "
                             f"got {layout!r}, bn={bn!r}")
        if multiplier != 1:
            raise ValueError(f"{op}: the blocked layout takes multiplier 1, got {multiplier}")
    conv_out(op, H, pads[0], pads[2], KH, sh, dh, "height")
    conv_out(op, W, pads[1], pads[3], KW, sw, dw, "width")
    return {"op": op, "N": int(N), "C": int(C), "H": int(H), "W": int(W), "KH": int(KH),
            "KW": int(KW), "stride": [sh, sw], "pad": list(pads), "dilation": [dh, dw],
            "multiplier": int(multiplier), "layout": layout,
            "bn": None if bn is None else int(bn), "dtype": dtype}


def depthwise_flops(wl: dict) -> int:
    oh, ow = out_size(wl)
    return 2 * wl["N"] * wl["C"] * wl["multiplier"] * oh * ow * wl["KH"] * wl["KW"]


# ---------------------------------------------------------------- numpy
def depthwise_reference(x: np.ndarray, w: np.ndarray, stride, pad, dilation) -> np.ndarray:
    """NCHW depthwise conv (w: (C*M, 1, KH, KW)), float64 accumulation, float32 result."""
    sh, sw = stride
    dh, dw = dilation
    t, l, b, r = pad
    n, c, h, wd = x.shape
    cm, _, kh, kw = w.shape
    m = cm // c
    xp = np.zeros((n, c, h + t + b, wd + l + r), np.float64)
    xp[:, :, t:t + h, l:l + wd] = x
    xp = np.repeat(xp, m, axis=1)          # output channel o reads input channel o // m
    oh = (h + t + b - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + l + r - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, cm, oh, ow), np.float64)
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
            y += win * w[:, 0, i, j].astype(np.float64)[None, :, None, None]
    return y.astype(np.float32)


def pack_weights_np(w: np.ndarray, bn: int) -> np.ndarray:
    """(C, 1, KH, KW) -> (C/bn, KH, KW, bn)."""
    c, _, kh, kw = w.shape
    return np.ascontiguousarray(w.reshape(c // bn, bn, kh, kw).transpose(0, 2, 3, 1))


def unpack_weights_np(wp: np.ndarray) -> np.ndarray:
    cb, kh, kw, bn = wp.shape
    return np.ascontiguousarray(wp.transpose(0, 3, 1, 2).reshape(cb * bn, 1, kh, kw))


# ---------------------------------------------------------------- computes
def _taps_sum(load, KH: int, KW: int):
    """sum over taps (i, j) of load(i, j), as one expression (a chain of multiply-adds)."""
    acc = None
    for i in range(KH):
        for j in range(KW):
            t = load(i, j)
            acc = t if acc is None else acc + t
    return acc


def covering_pads(pads, size: tuple, out: tuple, tile: tuple, kernel: tuple, stride: tuple,
                  dilation: tuple) -> tuple:
    """pads (top, left, bottom, right) with bottom/right grown so the padded input holds
    every element a whole tile reads, the tail tiles' guarded-off rows and columns
    included.  A padded stage computed at a tile loop then covers a constant region
    (no clipping against the end of the tensor): simpler loops, and no clipped buffer
    that gcc -Wmaybe-uninitialized (an error under -Werror) cannot prove written."""
    t, l, b, r = pads
    grown = []
    for n, o, tl, k, s, d, before, after in zip(size, out, tile, kernel, stride, dilation,
                                               (t, l), (b, r)):
        need = (-(-o // tl) * tl - 1) * s + (k - 1) * d + 1
        grown.append(max(after, need - n - before))
    return (t, l, grown[0], grown[1])


def _inside(conds: list, likely: bool):
    """The padded input's in-image condition; likely (a P computed as its own stage): the
    lowering cuts its loops into zero borders and an interior plain copy, which the C
    compiler vectorizes, instead of a select and a conditional load per element."""
    cond = te.all(*conds)
    return te.likely(cond) if likely else cond


def deinterleaved_pad(X, pads, fill, likely: bool):
    """P (N, C, H+t+b, 2, ceil((W+l+r)/2)) of an NCHW input for a window at stride 2
    along W: the padded input stored deinterleaved (even columns, then odd), so input
    column 2x + j of a window is P[..., j % 2, x + j // 2] and consecutive outputs read
    consecutive elements; the output rows vectorize, and the copy is one pass over the
    input against one strided pass per window tap.  `fill` outside the image."""
    N, C, H, W = X.shape
    t, l, b, r = pads
    Wh = -(-(W + l + r) // 2)
    return te.compute((N, C, H + t + b, 2, Wh), lambda n, c, y, ph, xh: te.if_then_else(
        _inside([y >= t, y < H + t, 2 * xh + ph >= l, 2 * xh + ph < W + l], likely),
        X[n, c, y - t, 2 * xh + ph - l], fill), name="P")


def pair_deinterleaved_copy(stage) -> None:
    """Both parities of a column pair in one loop body of a deinterleaved_pad stage, so
    its interior is one loop of paired loads with constant bounds, vectorized where the
    ISA row loads every other element (load_even), else left to gcc (ld2 on NEON)."""
    pn, pc, py, pph, pxh = stage.op.axis
    stage.reorder(pn, pc, py, pxh, pph)
    stage.unroll(pph)
    stage.vectorize(pxh)


def depthwise_nchw_compute(wl: dict, taps: str = "expr", tile: tuple | None = None,
                           likely: bool = True):
    """te tensors (X, W, P, Y) of the NCHW workload; P is None without padding.
    With tile (tile_y, tile_x), P also covers the tail tiles (`covering_pads`).
    likely: P's in-image condition is marked (`_inside`); off when P is inlined."""
    N, C, H, W, KH, KW, M = (wl[k] for k in ("N", "C", "H", "W", "KH", "KW", "multiplier"))
    (sh, sw), (dh, dw), pads = wl["stride"], wl["dilation"], tuple(wl["pad"])
    OH, OW = out_size(wl)
    if tile is not None and any(pads):
        pads = covering_pads(pads, (H, W), (OH, OW), tile, (KH, KW), (sh, sw), (dh, dw))
    X = te.placeholder((N, C, H, W), "float32", name="X")
    Wt = te.placeholder((C * M, 1, KH, KW), "float32", name="W")

    def ch(o):
        return o if M == 1 else o // M
    if sw == 2 and dw == 1:
        P = deinterleaved_pad(X, pads, 0.0, likely)
        return X, Wt, P, _deinterleaved_taps(P, Wt, (N, C * M, OH, OW), (KH, KW), sh, dh, ch, taps)
    P = None
    if any(pads):
        t, l, b, r = pads
        P = te.compute((N, C, H + t + b, W + l + r), lambda n, c, y, x: te.if_then_else(
            _inside([y >= t, y < H + t, x >= l, x < W + l], likely),
            X[n, c, y - t, x - l], 0.0), name="P")
    src = P if P is not None else X
    if taps == "expr":
        Y = te.compute((N, C * M, OH, OW), lambda n, o, y, x: _taps_sum(
            lambda i, j: src[n, ch(o), y * sh + i * dh, x * sw + j * dw] * Wt[o, 0, i, j], KH, KW),
            name="Y")
    else:
        ry = te.reduce_axis((0, KH), name="ry")
        rx = te.reduce_axis((0, KW), name="rx")
        Y = te.compute((N, C * M, OH, OW), lambda n, o, y, x: te.sum(
            src[n, ch(o), y * sh + ry * dh, x * sw + rx * dw] * Wt[o, 0, ry, rx], axis=(ry, rx)),
            name="Y")
    return X, Wt, P, Y


# the strides with a flat-rows form (stride 2 reads its input split into the four (row
# parity, column parity) planes, where the window is a stride-1 one again), and for each
# the output width below which flat rows may be the default, given the vector
# lanes: on wider planes the bigger P and F buffers and the copy cost more than idle
# lanes (x86-avx512 56x56 3x3: tiled 211 us, flat 344 us).
FLAT_BELOW = {1: lambda lanes: max(16, 2 * lanes), 2: lambda lanes: min(4 * lanes, 32)}


def _flat_pitch(wl: dict) -> int:
    """Columns of one row of the (parity) plane the flat rows run along."""
    s = wl["stride"][1]
    return -(-(wl["W"] + wl["pad"][1] + wl["pad"][3]) // s)


def flat_length(wl: dict, vec: int) -> int:
    """Elements of a flat-rows output plane: OH rows of the plane's pitch, in whole
    vectors of `vec`."""
    OH, _ = out_size(wl)
    return -(-OH * _flat_pitch(wl) // vec) * vec


def depthwise_flat_compute(wl: dict, vec: int, likely: bool = True):
    """te tensors (X, W, P, F, Y) of an NCHW workload with stride 1 or 2 (the same along
    H and W) computed along flattened padded rows.  P holds the zero-padded input as
    s x s planes (row parity, column parity) of Ws = ceil(Wp / s) columns, so tap (i, j)
    of output (y, x) reads plane ((i*dh) % s, (j*dw) % s) at row y + (i*dh) // s,
    column x + (j*dw) // s: a stride-1 window.  F at p is the window at flat position
    p = y * Ws + x (x >= OW is junk read across a row end), so one vector runs over
    several short output rows; Y copies the OW valid columns of each row.  P gets extra
    bottom rows so every vector of F reads inside it."""
    N, C, H, W, KH, KW, M = (wl[k] for k in ("N", "C", "H", "W", "KH", "KW", "multiplier"))
    (dh, dw), (t, l, b, r), (sh, sw) = wl["dilation"], wl["pad"], wl["stride"]
    if sh != sw or sh not in FLAT_BELOW:
        raise ValueError(f"flat rows need the same stride along H and W, one of "
                         f"{sorted(FLAT_BELOW)}, got {(sh, sw)}")
    st = sh
    OH, OW = out_size(wl)
    Ws, L = _flat_pitch(wl), flat_length(wl, vec)
    reach = (L - 1) + ((KH - 1) * dh // st) * Ws + (KW - 1) * dw // st + 1
    Hs = max(-(-(H + t + b) // st), -(-reach // Ws))
    X = te.placeholder((N, C, H, W), "float32", name="X")
    Wt = te.placeholder((C * M, 1, KH, KW), "float32", name="W")

    def fill(n, c, ry, rx, y, x):
        yy, xx = y * st + ry, x * st + rx
        return te.if_then_else(_inside([yy >= t, yy < H + t, xx >= l, xx < W + l], likely),
                               X[n, c, yy - t, xx - l], 0.0)
    P = te.compute((N, C, st, st, Hs, Ws), fill, name="P")

    def tap(n, o, p, i, j):
        q = p + (i * dh // st) * Ws + j * dw // st
        return (P[n, o if M == 1 else o // M, i * dh % st, j * dw % st, q // Ws, q % Ws]
                * Wt[o, 0, i, j])
    # F in whole vectors (p = v * vec + l): the span of F that Y reads, rounded out to
    # whole vectors, is what a stage computed at Y's channel loop covers, so F has no
    # scalar tail (flat, the span would end inside the last vector)
    F = te.compute((N, C * M, L // vec, vec), lambda n, o, v, k: _taps_sum(
        lambda i, j: tap(n, o, v * vec + k, i, j), KH, KW), name="F")
    Y = te.compute((N, C * M, OH, OW), lambda n, o, y, x: F[
        n, o, (y * Ws + x) // vec, (y * Ws + x) % vec], name="Y")
    return X, Wt, P, F, Y


def _deinterleaved_taps(P, Wt, shape, kernel, sh, dh, ch, taps):
    """Y of a stride-2 (along W) depthwise window over the deinterleaved input P: the input
    column 2x + j is P[..., j % 2, x + j // 2]."""
    KH, KW = kernel
    if taps == "expr":
        return te.compute(shape, lambda n, o, y, x: _taps_sum(
            lambda i, j: P[n, ch(o), y * sh + i * dh, j % 2, x + j // 2] * Wt[o, 0, i, j], KH, KW),
            name="Y")
    # reduce taps: the column parity and offset as two reduction axes (j = 2 * rq + rp)
    ry = te.reduce_axis((0, KH), name="ry")
    rx = te.reduce_axis((0, KW), name="rx")
    return te.compute(shape, lambda n, o, y, x: te.sum(
        P[n, ch(o), y * sh + ry * dh, rx % 2, x + rx // 2] * Wt[o, 0, ry, rx], axis=(ry, rx)),
        name="Y")


def window_tiles(st, c: dict) -> tuple:
    """Tile an (n, channel, y, x) window stage: tile_y x tile_x output tiles, the window
    taps (taps "reduce") just outside each tile, tile rows unrolled, columns vectorized.
    Returns (channel axis, tile-row axis)."""
    n, ch, y, x = st.op.axis
    yo, yi = st.split(y, factor=c["tile_y"])
    xo, xi = st.split(x, factor=c["tile_x"])
    if c["taps"] == "reduce":
        ry, rx = st.op.reduce_axis
        st.reorder(n, ch, yo, xo, ry, rx, yi, xi)
        st.unroll(ry)
        st.unroll(rx)
    else:
        st.reorder(n, ch, yo, xo, yi, xi)
    st.unroll(yi)
    st.vectorize(xi)
    return ch, yo


def depthwise_nchwc_compute(wl: dict, taps: str = "expr", tile: tuple | None = None,
                            likely: bool = True):
    """te tensors (X, W, P, Y) of the NCHWc workload; P is None without padding.
    With tile (tile_y, tile_x), P also covers the tail tiles (`covering_pads`)."""
    N, C, H, W, KH, KW, bn = (wl[k] for k in ("N", "C", "H", "W", "KH", "KW", "bn"))
    (sh, sw), (dh, dw), (t, l, b, r) = wl["stride"], wl["dilation"], wl["pad"]
    OH, OW = out_size(wl)
    if tile is not None and any((t, l, b, r)):
        t, l, b, r = covering_pads((t, l, b, r), (H, W), (OH, OW), tile, (KH, KW), (sh, sw),
                                   (dh, dw))
    Cb = C // bn
    X = te.placeholder((N, Cb, H, W, bn), "float32", name="X")
    Wt = te.placeholder((Cb, KH, KW, bn), "float32", name="W")
    P = None
    if t or l or b or r:
        P = te.compute((N, Cb, H + t + b, W + l + r, bn), lambda n, c, y, x, i: te.if_then_else(
            _inside([y >= t, y < H + t, x >= l, x < W + l], likely), X[n, c, y - t, x - l, i],
            0.0), name="P")
    src = P if P is not None else X
    if taps == "expr":
        Y = te.compute((N, Cb, OH, OW, bn), lambda n, c, y, x, i: _taps_sum(
            lambda p, q: src[n, c, y * sh + p * dh, x * sw + q * dw, i] * Wt[c, p, q, i], KH, KW),
            name="Y")
    else:
        ry = te.reduce_axis((0, KH), name="ry")
        rx = te.reduce_axis((0, KW), name="rx")
        Y = te.compute((N, Cb, OH, OW, bn), lambda n, c, y, x, i: te.sum(
            src[n, c, y * sh + ry * dh, x * sw + rx * dw, i] * Wt[c, ry, rx, i], axis=(ry, rx)),
            name="Y")
    return X, Wt, P, Y




def _row_lane_use(width: int, lanes: int, masked: bool) -> float:
    """Share of vector work doing output along a row `width` wide: with masked tails the
    last vector idles its spare lanes; without, the tail's elements are scalar steps
    costing about a vector step each."""
    if masked:
        return width / (-(-width // lanes) * lanes)
    return (width / lanes) / (width // lanes + width % lanes)


def _flat_pays(wl: dict, target) -> bool:
    """Flat rows by default below FLAT_BELOW where their lane use is at least the tiled
    rows'.  Measured (tiled against flat, 3x3 unless said; x86 us on a loaded 2-core
    machine, aarch64 QEMU -icount ticks): x86-avx2 (masked tails) 7x7 5x5 99-127 vs
    153-164 and 7x7 58-69 vs 74-80 (lane use 0.88 against 0.61 and 0.77: tiled), 14x14
    124-142 vs 94-125, 25x5 12 vs 9-10, stride 2 14->7 69-116 vs 67-71; x86-avx512 7x7
    49 vs 39, 28x28 52 vs 43; aarch64 (scalar tails) 7x7 3754 vs 3038, 14x14 12905 vs
    9824, 28x28 23085 vs 32349 (lane use 1.0 against 0.93: tiled), stride 2 14->7 5506
    vs 4880, 28->14 5x5 18271 vs 14034."""
    sh, sw = wl["stride"]
    tgt = resolve(target)
    lanes = tgt.lanes()
    if sh != sw or sh not in FLAT_BELOW or lanes < 2:
        return False
    OH, OW = out_size(wl)
    if OW >= FLAT_BELOW[sh](lanes):
        return False
    isa = isa_for(tgt)
    flat = OH * OW / flat_length(wl, lanes)
    return flat >= _row_lane_use(OW, lanes, bool(isa and isa.masked))


# ---------------------------------------------------------------- templates
def _unique(space: ConfigSpace, wants: list) -> list:
    """The configs nearest to each wanted knob dict, first occurrence kept."""
    out, seen = [], set()
    for w in wants:
        cfg = pick(space, dict(w, parallel=False))
        if cfg.index not in seen:
            seen.add(cfg.index)
            out.append(cfg)
    return out


class _DepthwiseBase:
    name = ""

    def workload(self, N, C, H, W, KH, KW, stride=1, pad=0, dilation=1, multiplier=1,
                 layout=None, bn=None, dtype="float32") -> dict:
        layout = layout or ("NCHWc" if self.name == NCHWC_OP else "NCHW")
        return depthwise_workload(self.name, N, C, H, W, KH, KW, stride, pad, dilation,
                                  multiplier, layout, bn, dtype)

    def flops(self, wl: dict) -> int:
        return depthwise_flops(wl)

    def _space(self, wl: dict, target, tiles: list, tile: bool) -> ConfigSpace:
        """The tile knobs given, then the taps, padding and threading knobs both layouts share."""
        knobs = tiles + [Knob("taps", ("expr", "reduce"))]
        if any(wl["pad"]):
            knobs.append(Knob("pad_at", self._pad_choices(tile=tile)))
        return ConfigSpace(tuple(knobs + parallel_knobs(target)))

    @staticmethod
    def _pad_choices(tile: bool) -> tuple:
        return (("band", "plane", "tile", "inline", "root") if tile
                else ("band", "plane", "inline", "root"))

    def _start(self, wl: dict, config, compute):
        """(knob values, the compute's tensors, a schedule of its output)."""
        check_op(wl, self.name)
        c = config_dict(config)
        tensors = compute(wl, c["taps"], self._cover(c), likely=c.get("pad_at") != "inline")
        return c, tensors, te.create_schedule(tensors[-1])

    @staticmethod
    def _cover(c: dict):
        """The tile the padded input must cover when it is computed inside the loops."""
        if c.get("pad_at", "band") in ("band", "plane", "tile"):
            return (c["tile_y"], c["tile_x"])
        return None

    @staticmethod
    def _place_pad(s, P, Y, where: str, plane, band, tile=None):
        if P is None:
            return
        if where == "inline":
            s[P].compute_inline()
        elif where == "plane":
            s[P].compute_at(s[Y], plane)
        elif where == "band":
            s[P].compute_at(s[Y], band)
        elif where == "tile":
            s[P].compute_at(s[Y], tile)
        # "root": the whole padded tensor, computed first


class DepthwiseNCHWTemplate(_DepthwiseBase):
    """NCHW in and out; tiles of tile_y rows x tile_x columns, vectorized along W."""
    name = NCHW_OP

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        OH, OW = out_size(wl)
        space = self._space(wl, target, [Knob("tile_y", split_choices(OH, 8)),
                                         Knob("tile_x", vec_choices(OW, resolve(target).lanes(), 64))],
                            tile=False)
        # last, so the indices of the tiled configs (tuning logs, TopHub) stay the same
        sh, sw = wl["stride"]
        rows = ("tile", "flat") if sh == sw and sh in FLAT_BELOW else ("tile",)
        return ConfigSpace(space.knobs + (Knob("rows", rows),))

    def default(self, wl: dict, target):
        lanes = resolve(target).lanes()
        (t, l, b, r) = wl["pad"]
        plane_bytes = (wl["H"] + t + b) * (wl["W"] + l + r) * 4
        want = {"tile_y": 8, "tile_x": lanes if lanes > 1 else 16, "taps": "expr",
                "pad_at": "plane" if plane_bytes <= 16 * 1024 else "band", "parallel": False,
                "rows": "flat" if _flat_pays(wl, target) else "tile"}
        return pick(self.space(wl, target), want)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list of promising configs for a quick sweep (the default not included)."""
        lanes = resolve(target).lanes()
        vx = lanes if lanes > 1 else 16
        wants = [{"tile_y": ty, "tile_x": tx, "taps": "expr", "pad_at": pa, "rows": "tile"}
                 for pa in ("band", "plane") for ty in (2, 4, 8) for tx in (vx, 2 * vx)]
        return _unique(self.space(wl, target), wants + [{"pad_at": "plane", "rows": "flat"}])

    def build(self, wl: dict, target, config):
        if config_dict(config).get("rows") == "flat":
            return self._build_flat(wl, target, config_dict(config))
        c, (X, Wt, P, Y), s = self._start(wl, config, depthwise_nchw_compute)
        st = s[Y]
        o, yo = window_tiles(st, c)
        self._place_pad(s, P, Y, c.get("pad_at", "band"), plane=o, band=yo)
        if P is not None and len(P.shape) == 5 and c.get("pad_at") != "inline":
            pair_deinterleaved_copy(s[P])
        if c.get("parallel", False) and resolve(target).can_thread:
            st.parallel(o)
        return s, [X, Wt, Y]

    def _build_flat(self, wl: dict, target, c: dict):
        """Per output channel: the padded plane, then the flat-rows window in vectors,
        then the copy of the valid columns (where the epilogue goes)."""
        check_op(wl, self.name)
        tgt = resolve(target)
        vec = tgt.lanes() if tgt.lanes() > 1 else 4
        X, Wt, P, F, Y = depthwise_flat_compute(wl, vec, likely=c.get("pad_at") != "inline")
        s = te.create_schedule(Y)
        n, o, y, x = s[Y].op.axis
        _, fo, _, k = s[F].op.axis
        # no unrolling: the vectors' multiply-add chains are independent iterations,
        # which an out-of-order core overlaps anyway
        s[F].vectorize(k)
        s[P].compute_at(s[F], fo)
        s[F].compute_at(s[Y], o)
        # the row parity unrolled (constant bounds for each plane's border/interior cut);
        # both column parities of a pair in one loop body, so the interior is one loop of
        # paired loads (load_even, or gcc's ld2), not two strided ones
        _, _, ry, rx, py, px = s[P].op.axis
        s[P].reorder(ry, py, px, rx)
        s[P].unroll(ry)
        s[P].unroll(rx)
        s[P].vectorize(px)
        # the column blocks unrolled (an output row is at most a few vectors wide): the
        # last block's tail is then a constant count, stored as parts, not as a masked
        # store at a count known at run time only (AVX2's vmaskmovps: 12 cycles on Zen 3)
        xo, xi = s[Y].split(x, factor=vec)
        s[Y].vectorize(xi)
        s[Y].unroll(xo)
        if c.get("parallel", False) and tgt.can_thread:
            s[Y].parallel(o)
        return s, [X, Wt, Y]

    def inputs(self, wl: dict, rng) -> list:
        N, C, H, W, KH, KW, M = (wl[k] for k in ("N", "C", "H", "W", "KH", "KW", "multiplier"))
        OH, OW = out_size(wl)
        return [rng.standard_normal((N, C, H, W), dtype=np.float32),
                rng.standard_normal((C * M, 1, KH, KW), dtype=np.float32),
                np.zeros((N, C * M, OH, OW), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        return {"Y": depthwise_reference(inputs[0], inputs[1], wl["stride"], wl["pad"],
                                         wl["dilation"])}


class DepthwiseNCHWcTemplate(_DepthwiseBase):
    """Blocked NCHW[bn]c; tiles of tile_y x tile_x output pixels, vectorized over the block."""
    name = NCHWC_OP

    def space(self, wl: dict, target) -> ConfigSpace:
        check_op(wl, self.name)
        OH, OW = out_size(wl)
        return self._space(wl, target, [Knob("tile_y", split_choices(OH, 4)),
                                        Knob("tile_x", split_choices(OW, 8))], tile=True)

    def default(self, wl: dict, target):
        (t, l, b, r) = wl["pad"]
        plane_bytes = (wl["H"] + t + b) * (wl["W"] + l + r) * wl["bn"] * 4
        # accumulators: 16 (half the register file) on 32-register ISAs, else 8
        ty, tx = (4, 4) if resolve(target).vector_registers >= 32 else (2, 4)
        want = {"tile_y": ty, "tile_x": tx, "taps": "expr",
                "pad_at": "plane" if plane_bytes <= 32 * 1024 else "tile", "parallel": False}
        return pick(self.space(wl, target), want)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list of promising configs for a quick sweep (the default not included)."""
        wants = [{"tile_y": ty, "tile_x": tx, "taps": "expr", "pad_at": pa}
                 for pa in ("tile", "plane", "band")
                 for ty, tx in ((2, 4), (1, 4), (2, 2), (4, 4), (1, 8))]
        return _unique(self.space(wl, target), wants)

    def build(self, wl: dict, target, config):
        c, (X, Wt, P, Y), s = self._start(wl, config, depthwise_nchwc_compute)
        st = s[Y]
        n, cb, y, x, i = st.op.axis
        yo, yi = st.split(y, factor=c["tile_y"])
        xo, xi = st.split(x, factor=c["tile_x"])
        if c["taps"] == "reduce":
            ry, rx = st.op.reduce_axis
            st.reorder(n, cb, yo, xo, ry, rx, yi, xi, i)
            st.unroll(ry)
            st.unroll(rx)
        else:
            st.reorder(n, cb, yo, xo, yi, xi, i)
        st.unroll(yi)
        st.unroll(xi)
        st.vectorize(i)
        self._place_pad(s, P, Y, c.get("pad_at", "band"), plane=cb, band=yo, tile=xo)
        if P is not None and wl["bn"] == 2 and c.get("pad_at") != "inline":
            # GCC 12.2 -O3 miscompiles the loop-vectorized pad copy when its innermost
            # loop has 2 iterations under the (y, x) condition (masked loads); with the
            # block loop outside the row loop it is correct.
            pn, pc, py, px, pi = s[P].op.axis
            s[P].reorder(pn, pc, py, pi, px)
        if c.get("parallel", False) and resolve(target).can_thread:
            st.parallel(cb)
        return s, [X, Wt, Y]

    def inputs(self, wl: dict, rng) -> list:
        N, C, H, W, KH, KW, bn = (wl[k] for k in ("N", "C", "H", "W", "KH", "KW", "bn"))
        OH, OW = out_size(wl)
        return [rng.standard_normal((N, C // bn, H, W, bn), dtype=np.float32),
                rng.standard_normal((C // bn, KH, KW, bn), dtype=np.float32),
                np.zeros((N, C // bn, OH, OW, bn), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        y = depthwise_reference(from_nchwc_np(inputs[0]), unpack_weights_np(inputs[1]),
                                wl["stride"], wl["pad"], wl["dilation"])
        return {"Y": to_nchwc_np(y, wl["bn"])}


def depthwise_templates() -> list:
    return [DepthwiseNCHWTemplate(), DepthwiseNCHWcTemplate()]


__all__ = ["DepthwiseNCHWTemplate", "DepthwiseNCHWcTemplate", "depthwise_workload",
           "depthwise_reference", "depthwise_flops", "out_size", "to_nchwc_np", "from_nchwc_np",
           "pack_weights_np", "unpack_weights_np", "depthwise_nchw_compute",
           "depthwise_nchwc_compute"]
