"""cgen.ops under several schedules, each checked against a numpy reference.

The references are written in numpy here (sliding windows, explicit loops),
independently of cgen.ops; shapes mix primes with sizes smaller than the
split factors so tails and degenerate tiles are exercised.  Float outputs
start as NaN so an element the kernel never writes cannot pass.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from cgen import te, ops
from tests.util import assert_matches

pytestmark = pytest.mark.sanitize

SEED = 20240611


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


def rand(rng, shape, dtype="float32"):
    if dtype == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)


def run(kbuild, s, inputs: dict, outputs: list, name: str) -> list:
    """Build s with arguments inputs then outputs, call it, return the output arrays."""
    args = list(inputs) + list(outputs)
    mod = kbuild(s, args, name=name)
    outs = []
    for t in outputs:
        fill = np.nan if t.dtype == "float32" else np.iinfo(t.dtype).max
        outs.append(np.full(t.shape, fill, dtype=t.dtype))
    mod(*inputs.values(), *outs)
    return outs


# ------------------------------------------------------------ schedule helpers
def tile_inner(s, T, factor=4, row_factor=3):
    """Split the two innermost data axes with tails; the inner rows unrolled, columns vectorized.

    Reduction axes go between the tile loops and the inner tile.
    """
    st = s[T]
    *outer, row, col = st.op.axis
    red = st.op.reduce_axis
    ro, ri = st.split(row, factor=row_factor)
    co, ci = st.split(col, factor=factor)
    st.reorder(*outer, ro, co, *red, ri, ci)
    st.unroll(ri)
    st.vectorize(ci)
    return ro, co


def fuse_outer(s, T, factor=5):
    """Fuse the two outermost data axes, split the fused loop with a tail, parallelise it."""
    st = s[T]
    a, b = st.op.axis[:2]
    f = st.fuse(a, b)
    fo, fi = st.split(f, factor=factor)
    st.parallel(fo)
    return fo, fi


# ------------------------------------------------------------ matmul
def _mm_default(s, C):
    pass


def _mm_tiled(s, C):
    tile_inner(s, C, factor=8, row_factor=4)


def _mm_cache_write(s, C):
    CL = s.cache_write(C, "local")
    i, j = s[C].op.axis
    io, ii = s[C].split(i, factor=4)
    jo, ji = s[C].split(j, factor=8)
    s[C].reorder(io, jo, ii, ji)
    s[C].vectorize(ji)
    s[CL].compute_at(s[C], jo)
    ci, cj = s[CL].op.axis
    (ck,) = s[CL].op.reduce_axis
    s[CL].reorder(ck, ci, cj)
    s[CL].vectorize(cj)


def _mm_fused(s, C):
    fuse_outer(s, C, factor=6)
    (k,) = s[C].op.reduce_axis
    ko, ki = s[C].split(k, factor=4)
    s[C].unroll(ki)


def _mm_reduce_outer(s, C):
    """The reduction's outer half outermost: the accumulator is initialised before it."""
    i, j = s[C].op.axis
    (k,) = s[C].op.reduce_axis
    ko, ki = s[C].split(k, factor=3)
    s[C].reorder(ko, i, ki, j)
    s[C].vectorize(j)            # an unsplit axis of any extent


def _mm_nparts_wide(s, C):
    i, j = s[C].op.axis
    (k,) = s[C].op.reduce_axis
    io, ii = s[C].split(i, nparts=3)
    jo, ji = s[C].split(j, factor=16)
    s[C].reorder(io, jo, ii, k, ji)
    s[C].parallel(io)
    s[C].vectorize(ji)


MM_SCHEDULES = {"default": _mm_default, "tiled": _mm_tiled, "cache_write": _mm_cache_write,
                "fused": _mm_fused, "reduce_outer": _mm_reduce_outer,
                "nparts_wide": _mm_nparts_wide}


@pytest.mark.parametrize("sched", MM_SCHEDULES)
@pytest.mark.parametrize("mkn", [(13, 7, 11), (3, 2, 5), (17, 19, 37)],
                         ids=lambda v: "x".join(map(str, v)))
def test_matmul(kbuild, rng, sched, mkn):
    m, k, n = mkn
    A = te.placeholder((m, k), name="A")
    B = te.placeholder((k, n), name="B")
    C = ops.matmul(A, B)
    s = te.create_schedule(C)
    MM_SCHEDULES[sched](s, C)
    a, b = rand(rng, (m, k)), rand(rng, (k, n))
    (c,) = run(kbuild, s, {A: a, B: b}, [C], f"mm_{sched}")
    assert_matches(c, (a.astype(np.float64) @ b).astype(np.float32))


@pytest.mark.parametrize("sched", ["default", "tiled"])
@pytest.mark.parametrize("ta,tb", [(True, False), (False, True), (True, True)])
def test_matmul_transposed(kbuild, rng, sched, ta, tb):
    m, k, n = 9, 5, 7
    A = te.placeholder((k, m) if ta else (m, k), name="A")
    B = te.placeholder((n, k) if tb else (k, n), name="B")
    C = ops.matmul(A, B, transpose_a=ta, transpose_b=tb)
    assert C.shape == (m, n)
    s = te.create_schedule(C)
    MM_SCHEDULES[sched](s, C)
    a, b = rand(rng, A.shape), rand(rng, B.shape)
    (c,) = run(kbuild, s, {A: a, B: b}, [C], "mm_t")
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    assert_matches(c, ref.astype(np.float32))


# ------------------------------------------------------------ int8 GEMM
@pytest.mark.parametrize("sched", ["default", "tiled", "cache_write", "nparts_wide"])
def test_qgemm_int8(kbuild, rng, sched):
    m, k, n = 7, 37, 13
    A = te.placeholder((m, k), "int8", name="A")
    B = te.placeholder((k, n), "int8", name="B")
    C = ops.qgemm_int8(A, B)
    assert C.dtype == "int32"
    s = te.create_schedule(C)
    MM_SCHEDULES[sched](s, C)
    a, b = rand(rng, (m, k), "int8"), rand(rng, (k, n), "int8")
    a[0, :] = -128  # extremes: -128 * -128 does not fit int16
    b[:, 0] = -128
    (c,) = run(kbuild, s, {A: a, B: b}, [C], f"qgemm_{sched}")
    assert_matches(c, a.astype(np.int32) @ b.astype(np.int32))


# ------------------------------------------------------------ convolution references
def _pads4(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[1], padding[0], padding[1])
    return tuple(padding)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_ref(x, w, stride, padding, dilation, depthwise=False):
    """Sum over kernel taps of strided slices of the zero-padded input (float64)."""
    t, l, b, r = _pads4(padding)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, b), (l, r)))
    kh, kw = w.shape[2:]
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for ry in range(kh):
        for rx in range(kw):
            win = xp[:, :, ry * dh: ry * dh + sh * (oh - 1) + 1: sh,
                     rx * dw: rx * dw + sw * (ow - 1) + 1: sw]
            if depthwise:
                out += win * w[:, 0, ry, rx][None, :, None, None]
            else:
                out += np.einsum("nchw,fc->nfhw", win, w[:, :, ry, rx].astype(np.float64))
    return out.astype(np.float32)


# ------------------------------------------------------------ conv2d
def _conv_default(s, Y, pad):
    pass


def _conv_inline_tiled(s, Y, pad):
    if pad is not None:
        s[pad].compute_inline()
    tile_inner(s, Y, factor=4, row_factor=2)


def _conv_pad_at_row(s, Y, pad):
    n, f, y, x = s[Y].op.axis
    xo, xi = s[Y].split(x, factor=4)
    s[Y].reorder(n, f, y, xo, *s[Y].op.reduce_axis, xi)
    if pad is not None:
        s[pad].compute_at(s[Y], y)
        pn, pc, py, px = s[pad].op.axis
        s[pad].vectorize(px)
    s[Y].vectorize(xi)


def _conv_cache_write_fused(s, Y, pad):
    YL = s.cache_write(Y, "local")
    fo, fi = fuse_outer(s, Y, factor=4)
    s[YL].compute_at(s[Y], fi)
    if pad is not None:
        s[pad].compute_at(s[YL], s[YL].op.reduce_axis[0])


def _conv_pad_at_tile(s, Y, pad):
    """The pad computed per 2-column tile (a tail when the width is odd)."""
    n, f, y, x = s[Y].op.axis
    xo, xi = s[Y].split(x, factor=2)
    s[Y].reorder(n, y, xo, f, *s[Y].op.reduce_axis, xi)
    s[Y].unroll(xi)
    if pad is not None:
        s[pad].compute_at(s[Y], xo)


CONV_SCHEDULES = {"default": _conv_default, "inline_tiled": _conv_inline_tiled,
                  "pad_at_row": _conv_pad_at_row, "pad_at_tile": _conv_pad_at_tile,
                  "cache_write_fused": _conv_cache_write_fused}

CONV_CASES = [  # (N, C, H, W), (F, KH, KW), stride, padding, dilation
    ((1, 3, 7, 7), (4, 3, 3), 1, 0, 1),
    ((2, 3, 7, 6), (5, 3, 3), 1, 1, 1),
    ((1, 2, 9, 8), (3, 3, 2), 2, (1, 0, 2, 1), 1),
    ((1, 3, 7, 7), (2, 3, 3), 1, 2, 2),
    ((1, 2, 11, 5), (3, 2, 3), (2, 1), (0, 1, 1, 0), (1, 2)),
    ((2, 4, 6, 5), (3, 1, 1), 2, 0, 1),
]


@pytest.mark.parametrize("sched", CONV_SCHEDULES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"s{c[2]}p{c[3]}d{c[4]}".replace(" ", ""))
def test_conv2d_nchw(kbuild, rng, sched, case):
    xs, (f, kh, kw), stride, padding, dilation = case
    X = te.placeholder(xs, name="X")
    W = te.placeholder((f, xs[1], kh, kw), name="W")
    Y, pad = ops.conv2d_nchw(X, W, stride, padding, dilation)
    assert (pad is None) == (padding == 0)
    s = te.create_schedule(Y)
    CONV_SCHEDULES[sched](s, Y, pad)
    x, w = rand(rng, X.shape), rand(rng, W.shape)
    (y,) = run(kbuild, s, {X: x, W: w}, [Y], f"conv_{sched}")
    assert_matches(y, conv2d_ref(x, w, stride, padding, dilation))


DW_CASES = [
    ((1, 4, 7, 7), (3, 3), 1, 1, 1),
    ((2, 3, 8, 9), (3, 2), 2, (0, 1, 2, 0), 1),
    ((1, 5, 9, 7), (3, 3), 1, 0, (2, 1)),
]


@pytest.mark.parametrize("sched", ["default", "inline_tiled", "pad_at_tile", "cache_write_fused"])
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: f"s{c[2]}p{c[3]}d{c[4]}".replace(" ", ""))
def test_depthwise_conv2d_nchw(kbuild, rng, sched, case):
    xs, (kh, kw), stride, padding, dilation = case
    X = te.placeholder(xs, name="X")
    W = te.placeholder((xs[1], 1, kh, kw), name="W")
    Y, pad = ops.depthwise_conv2d_nchw(X, W, stride, padding, dilation)
    s = te.create_schedule(Y)
    CONV_SCHEDULES[sched](s, Y, pad)
    x, w = rand(rng, X.shape), rand(rng, W.shape)
    (y,) = run(kbuild, s, {X: x, W: w}, [Y], f"dw_{sched}")
    assert_matches(y, conv2d_ref(x, w, stride, padding, dilation, depthwise=True))


# ------------------------------------------------------------ pooling
def pool_ref(x, kernel, strides, pads, ceil_mode, mode, count_include_pad=False):
    """ONNX MaxPool / AveragePool, one output position at a time (float64)."""
    kh, kw = kernel
    sh, sw = strides
    t, l, b, r = pads
    n, c, h, w = x.shape

    def out_size(size, k, s, before, after):
        span = size + before + after - k
        o = (math.ceil(span / s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= size + before:  # last window must start inside
            o -= 1
        return o
    oh, ow = out_size(h, kh, sh, t, b), out_size(w, kw, sw, l, r)
    out = np.empty((n, c, oh, ow))
    x64 = x.astype(np.float64)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - t, j * sw - l
            h1, w1 = min(h0 + kh, h + b), min(w0 + kw, w + r)   # clipped to the padded input
            win = x64[:, :, max(h0, 0):min(h1, h), max(w0, 0):min(w1, w)]
            if mode == "max":
                out[:, :, i, j] = win.max(axis=(2, 3))
            else:
                count = (h1 - h0) * (w1 - w0) if count_include_pad else win.shape[2] * win.shape[3]
                out[:, :, i, j] = win.sum(axis=(2, 3)) / count
    return out.astype(np.float32)


def _pool_default(s, Y, *stages):
    pass


def _pool_inline_tiled(s, Y, *stages):
    *mid, pad = stages
    if pad is not None:
        s[pad].compute_inline()
    for t in mid:                       # avg: the window sum sits at the output's rows
        tile_inner(s, t, factor=4, row_factor=2)
    tile_inner(s, Y, factor=4, row_factor=2)


def _pool_compute_at(s, Y, *stages):
    *mid, pad = stages
    n, c, y, x = s[Y].op.axis
    consumer = Y
    for t in mid:
        s[t].compute_at(s[Y], x)
        consumer = t
    if pad is not None:
        cn, cc, cy, cx = s[consumer].op.axis
        s[pad].compute_at(s[consumer], cy)


def _pool_fused(s, Y, *stages):
    *mid, pad = stages
    fo, fi = fuse_outer(s, Y, factor=4)
    for t in mid:
        s[t].compute_at(s[Y], fi)
    if pad is not None:
        s[pad].compute_inline()


POOL_SCHEDULES = {"default": _pool_default, "inline_tiled": _pool_inline_tiled,
                  "compute_at": _pool_compute_at, "fused": _pool_fused}

POOL_CASES = [  # shape, kernel, strides, pads, ceil_mode
    ((1, 3, 7, 7), (3, 3), (2, 2), (0, 0, 0, 0), False),
    ((1, 3, 6, 7), (3, 3), (2, 2), (0, 0, 0, 0), True),    # the last row of windows runs past the input
    ((2, 2, 8, 11), (2, 3), (2, 2), (1, 1, 1, 0), True),
    ((1, 3, 9, 6), (3, 2), (1, 2), (1, 0, 2, 1), False),
    ((1, 2, 7, 5), (3, 3), (3, 3), (2, 1, 2, 2), True),    # a window starting in the bottom pad is dropped
]


def _case_id(c):
    return f"k{c[1][0]}{c[1][1]}s{c[2][0]}{c[2][1]}p{''.join(map(str, c[3]))}{'ceil' if c[4] else ''}"


@pytest.mark.parametrize("sched", POOL_SCHEDULES)
@pytest.mark.parametrize("case", POOL_CASES, ids=_case_id)
def test_max_pool2d(kbuild, rng, sched, case):
    xs, kernel, strides, pads, ceil_mode = case
    X = te.placeholder(xs, name="X")
    Y, pad = ops.max_pool2d(X, kernel, strides, pads, ceil_mode)
    s = te.create_schedule(Y)
    POOL_SCHEDULES[sched](s, Y, pad)
    x = rand(rng, xs) - 3.0            # all negative-ish: a zero pad would win
    (y,) = run(kbuild, s, {X: x}, [Y], f"maxpool_{sched}")
    assert_matches(y, pool_ref(x, kernel, strides, pads, ceil_mode, "max"))


@pytest.mark.parametrize("sched", POOL_SCHEDULES)
@pytest.mark.parametrize("include_pad", [False, True], ids=["excl", "incl"])
@pytest.mark.parametrize("case", POOL_CASES[1:], ids=_case_id)
def test_avg_pool2d(kbuild, rng, sched, include_pad, case):
    xs, kernel, strides, pads, ceil_mode = case
    X = te.placeholder(xs, name="X")
    Y, wsum, pad = ops.avg_pool2d(X, kernel, strides, pads, ceil_mode, include_pad)
    s = te.create_schedule(Y)
    POOL_SCHEDULES[sched](s, Y, wsum, pad)
    x = rand(rng, xs) + 2.0
    (y,) = run(kbuild, s, {X: x}, [Y], f"avgpool_{sched}")
    assert_matches(y, pool_ref(x, kernel, strides, pads, ceil_mode, "avg", include_pad))


def test_max_pool2d_int8(kbuild, rng):
    X = te.placeholder((1, 2, 5, 5), "int8", name="X")
    Y, pad = ops.max_pool2d(X, (2, 2), (2, 2), 0, ceil_mode=True)
    s = te.create_schedule(Y)
    x = rand(rng, X.shape, "int8")
    x[0, 0] = -128
    (y,) = run(kbuild, s, {X: x}, [Y], "maxpool_i8")
    ref = pool_ref(x.astype(np.float32), (2, 2), (2, 2), (0, 0, 0, 0), True, "max")
    assert_matches(y, ref.astype(np.int8))


# ------------------------------------------------------------ softmax
def softmax_ref(x, axis):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _innermost(s, T, axis):
    """Reorder T's data axes so the softmax axis is innermost; return the leaf outside it."""
    axes = list(s[T].op.axis)
    red = axes.pop(axis)
    s[T].reorder(*axes, red)
    return axes[-1]


def _sm_default(s, out, mx, ex, sm, axis):
    pass


def _sm_inline_tiled(s, out, mx, ex, sm, axis):
    s[ex].compute_inline()
    tile_inner(s, out, factor=4, row_factor=2)
    tile_inner(s, mx, factor=4, row_factor=2)


def _sm_compute_at(s, out, mx, ex, sm, axis):
    s[mx].compute_at(s[ex], _innermost(s, ex, axis))
    s[sm].compute_at(s[out], _innermost(s, out, axis))


def _sm_cache_write(s, out, mx, ex, sm, axis):
    sl = s.cache_write(sm, "local")
    a0 = s[sm].op.axis[0]
    s[sl].compute_at(s[sm], a0)
    *_, last = s[out].op.axis
    lo, li = s[out].split(last, factor=4)
    s[out].vectorize(li)


SOFTMAX_SCHEDULES = {"default": _sm_default, "inline_tiled": _sm_inline_tiled,
                     "compute_at": _sm_compute_at, "cache_write": _sm_cache_write}


@pytest.mark.parametrize("sched,axis", [(s, a) for a in (0, 1, 2) for s in SOFTMAX_SCHEDULES]
                         + [("default", -1)])
def test_softmax(kbuild, rng, sched, axis):
    X = te.placeholder((3, 5, 7), name="X")
    out, mx, ex, sm = ops.softmax(X, axis)
    s = te.create_schedule(out)
    SOFTMAX_SCHEDULES[sched](s, out, mx, ex, sm, axis % 3)
    x = rand(rng, X.shape) * 4.0 + 50.0    # large values: the max subtraction matters
    (y,) = run(kbuild, s, {X: x}, [out], f"softmax_{sched}")
    assert_matches(y, softmax_ref(x, axis))


def test_softmax_1d(kbuild, rng):
    X = te.placeholder((11,), name="X")
    out, *_ = ops.softmax(X, 0)
    s = te.create_schedule(out)
    x = rand(rng, X.shape)
    (y,) = run(kbuild, s, {X: x}, [out], "softmax1d")
    assert_matches(y, softmax_ref(x, 0))


# ------------------------------------------------------------ broadcasting
NP_BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
             "maximum": np.maximum, "minimum": np.minimum}


@pytest.mark.parametrize("op,sa,sb", [
    ("+", (3, 5, 7), (7,)),
    ("-", (5, 1), (3, 1, 7)),
    ("*", (1,), (4, 6)),
    ("/", (2, 3, 1, 5), (3, 4, 1)),
    ("maximum", (6, 1, 7), (6, 5, 1)),
    ("minimum", (5,), (5,)),
], ids=lambda v: v if isinstance(v, str) else None)
def test_broadcast_binary(kbuild, rng, op, sa, sb):
    A = te.placeholder(sa, name="A")
    B = te.placeholder(sb, name="B")
    C = ops.broadcast_binary(op, A, B)
    ref_shape = np.broadcast_shapes(sa, sb)
    assert C.shape == ref_shape
    s = te.create_schedule(C)
    if C.ndim >= 2:
        tile_inner(s, C, factor=4, row_factor=2)
    a, b = rand(rng, sa), rand(rng, sb)
    if op == "/":
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)
    (c,) = run(kbuild, s, {A: a, B: b}, [C], "bcast")
    assert_matches(c, NP_BINARY[op](a, b).astype(np.float32))


def _relu_chain(shape_a, shape_b, shape_c):
    """relu(A * B + c) through broadcast_binary, three stages."""
    A = te.placeholder(shape_a, name="A")
    B = te.placeholder(shape_b, name="B")
    c = te.placeholder(shape_c, name="c")
    ab = ops.broadcast_binary("*", A, B, name="ab")
    abc = ops.broadcast_binary("+", ab, c, name="abc")
    out = te.compute(abc.shape, lambda *i: te.maximum(abc[i], 0.0), name="relu")
    return (A, B, c), (ab, abc), out


def _chain_default(s, mids, out):
    pass


def _chain_inline_tiled(s, mids, out):
    for t in mids:
        s[t].compute_inline()
    tile_inner(s, out, factor=8, row_factor=3)


def _chain_compute_at(s, mids, out):
    ab, abc = mids
    *outer, row, col = s[out].op.axis
    co, ci = s[out].split(col, factor=4)
    s[out].vectorize(ci)
    s[abc].compute_at(s[out], co)
    s[ab].compute_at(s[abc], s[abc].op.axis[-2])


def _chain_fused(s, mids, out):
    ab, abc = mids
    s[ab].compute_inline()
    fo, fi = fuse_outer(s, out, factor=4)
    s[abc].compute_at(s[out], fi)


CHAIN_SCHEDULES = {"default": _chain_default, "inline_tiled": _chain_inline_tiled,
                   "compute_at": _chain_compute_at, "fused": _chain_fused}


@pytest.mark.parametrize("sched", CHAIN_SCHEDULES)
@pytest.mark.parametrize("shapes", [
    ((3, 5, 13), (5, 13), (5, 1)),       # c broadcast along the last axis
    ((2, 1, 7), (3, 1), (2, 3, 7)),      # A and B broadcast against each other
], ids=["c_col", "ab_outer"])
def test_relu_chain(kbuild, rng, sched, shapes):
    (A, B, c), mids, out = _relu_chain(*shapes)
    s = te.create_schedule(out)
    CHAIN_SCHEDULES[sched](s, mids, out)
    a, b, cc = (rand(rng, sh) for sh in shapes)
    (y,) = run(kbuild, s, {A: a, B: b, c: cc}, [out], f"chain_{sched}")
    ref = np.maximum(a.astype(np.float64) * b + cc, 0.0).astype(np.float32)
    assert_matches(y, ref)


# ------------------------------------------------------------ argument checking
def test_bad_shapes_raise():
    A = te.placeholder((3, 4), name="A")
    B = te.placeholder((5, 6), name="B")
    with pytest.raises(ValueError, match="inner dimensions"):
        ops.matmul(A, B)
    with pytest.raises(ValueError, match="inner dimensions"):
        ops.matmul(A, B, transpose_b=True)
    with pytest.raises(ValueError, match="2 dimensions"):
        ops.matmul(te.placeholder((3,), name="v"), B)
    X = te.placeholder((1, 3, 7, 7), name="X")
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d_nchw(X, te.placeholder((4, 2, 3, 3), name="W"))
    with pytest.raises(ValueError, match="larger than the padded input"):
        ops.conv2d_nchw(X, te.placeholder((4, 3, 9, 3), name="W"))
    with pytest.raises(ValueError, match="stride"):
        ops.conv2d_nchw(X, te.placeholder((4, 3, 3, 3), name="W"), stride=0)
    with pytest.raises(ValueError, match="padding"):
        ops.conv2d_nchw(X, te.placeholder((4, 3, 3, 3), name="W"), padding=(1, 2, 3))
    with pytest.raises(ValueError, match=r"\(C, 1, KH, KW\)"):
        ops.depthwise_conv2d_nchw(X, te.placeholder((3, 2, 3, 3), name="W"))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ops.max_pool2d(X, 2, pads=2)
    with pytest.raises(ValueError, match="out of range"):
        ops.softmax(X, axis=4)
    with pytest.raises(ValueError, match="do not broadcast"):
        ops.broadcast_binary("+", A, te.placeholder((3,), name="c"))
    with pytest.raises(ValueError, match="unknown op"):
        ops.broadcast_binary("**", A, A)
    with pytest.raises(ValueError, match="inner dimensions"):
        ops.qgemm_int8(te.placeholder((3, 4), "int8", name="a"), te.placeholder((5, 2), "int8", name="b"))


def test_bad_dtypes_raise():
    with pytest.raises(TypeError, match="int8"):
        ops.qgemm_int8(te.placeholder((3, 4), name="a"), te.placeholder((4, 2), "int8", name="b"))
    with pytest.raises(TypeError, match="float32"):
        ops.avg_pool2d(te.placeholder((1, 1, 4, 4), "int32", name="X"), 2)
    with pytest.raises(TypeError, match="different dtypes"):
        ops.broadcast_binary("+", te.placeholder((3,), name="a"), te.placeholder((3,), "int32", name="b"))
    with pytest.raises(TypeError, match="integers"):
        ops.broadcast_binary("/", te.placeholder((3,), "int32", name="a"),
                             te.placeholder((3,), "int32", name="b"))
