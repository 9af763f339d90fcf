"""Neural-network operators as plain te computes (no schedules).

Each function checks its arguments, then returns te tensors.  Operators with
intermediate stages a schedule may want to place (a padding stage, a window
sum, softmax's reductions) return them too, output first:

    matmul, broadcast_binary, qgemm_int8   -> out
    conv2d_nchw, depthwise_conv2d_nchw     -> (out, pad)         pad is None without padding
    max_pool2d                             -> (out, pad)         pad is None when not needed
    avg_pool2d                             -> (out, wsum, pad)
    softmax                                -> (out, max, exp, sum)

Shapes are static Python ints; a bad shape raises ValueError naming the
operator and the offending sizes.
"""
from __future__ import annotations

import numpy as np

from .. import te
from ..te.expr import const, is_float, reduce_identity
from ..te.tensor import Tensor
from .common import broadcast_shape, conv_out, pool_geometry


# ---------------------------------------------------------------- helpers
def _tensor(op: str, name: str, t, ndim: int | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a te tensor, got {type(t).__name__}")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {t.shape}")
    return t


def _pair(op: str, what: str, v, minimum: int) -> tuple:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool)
                              for x in v):
        raise ValueError(f"{op}: {what} must be an int or a pair of ints, got {v}")
    v = tuple(int(x) for x in v)
    if any(x < minimum for x in v):
        raise ValueError(f"{op}: {what} must be >= {minimum}, got {v}")
    return v


def _pads(op: str, padding) -> tuple:
    """int | (h, w) | (top, left, bottom, right)  ->  (top, left, bottom, right)."""
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        padding = (int(padding),) * 4
    padding = tuple(padding)
    if len(padding) == 2:
        padding = (padding[0], padding[1], padding[0], padding[1])
    if len(padding) != 4 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool)
                                    for x in padding):
        raise ValueError(f"{op}: padding must be an int, (h, w) or (top, left, bottom, right), "
                         f"got {padding}")
    padding = tuple(int(x) for x in padding)
    if any(x < 0 for x in padding):
        raise ValueError(f"{op}: padding must be non-negative, got {padding}")
    return padding


def _pad_nchw(X: Tensor, pads: tuple, fill, name: str, likely: bool = False) -> Tensor:
    """X padded by (top, left, bottom, right) on its two last axes with `fill`; likely (for
    a stage computed on its own): its fill is cut into borders and a plain interior copy."""
    n, c, h, w = X.shape
    top, left, bottom, right = pads

    def inside(y, x):
        cond = te.all(y >= top, y < h + top, x >= left, x < w + left)
        return te.likely(cond) if likely else cond
    return te.compute(
        (n, c, h + top + bottom, w + left + right),
        lambda b, ch, y, x: te.if_then_else(inside(y, x), X[b, ch, y - top, x - left], fill),
        name=name)


def _window(op: str, X: Tensor, kh: int, kw: int, stride, padding, dilation, name: str):
    """Strides, dilations and output size of a conv window over X (checked), and X
    padded with zeros (None without padding)."""
    sh, sw = _pair(op, "stride", stride, 1)
    dh, dw = _pair(op, "dilation", dilation, 1)
    pads = _pads(op, padding)
    h, w = X.shape[2:]
    oh = conv_out(op, h, pads[0], pads[2], kh, sh, dh, "height")
    ow = conv_out(op, w, pads[1], pads[3], kw, sw, dw, "width")
    pad = _pad_nchw(X, pads, const(0, X.dtype), f"{name}_pad") if any(pads) else None
    return (sh, sw), (dh, dw), (oh, ow), pad


# ---------------------------------------------------------------- matmul
def matmul(A: Tensor, B: Tensor, transpose_a: bool = False, transpose_b: bool = False,
           name: str = "matmul") -> Tensor:
    """C[i, j] = sum_k op(A)[i, k] * op(B)[k, j], op transposing when asked.

    A is (M, K), or (K, M) with transpose_a; B is (K, N), or (N, K) with transpose_b.
    """
    _tensor("matmul", "A", A, 2)
    _tensor("matmul", "B", B, 2)
    m, ka = (A.shape[1], A.shape[0]) if transpose_a else A.shape
    kb, n = (B.shape[1], B.shape[0]) if transpose_b else B.shape
    if ka != kb:
        raise ValueError(f"matmul: inner dimensions differ: A{'.T' if transpose_a else ''} "
                         f"{A.shape} and B{'.T' if transpose_b else ''} {B.shape}")
    k = te.reduce_axis((0, ka), name="k")

    def a(i, r):
        return A[r, i] if transpose_a else A[i, r]

    def b(r, j):
        return B[j, r] if transpose_b else B[r, j]
    return te.compute((m, n), lambda i, j: te.sum(a(i, k) * b(k, j), axis=k), name=name)


def qgemm_int8(A: Tensor, B: Tensor, name: str = "qgemm") -> Tensor:
    """int8 (M, K) x int8 (K, N) -> int32 (M, N); operands widen to int32 before multiplying."""
    _tensor("qgemm_int8", "A", A, 2)
    _tensor("qgemm_int8", "B", B, 2)
    if A.dtype != "int8" or B.dtype != "int8":
        raise TypeError(f"qgemm_int8 takes int8 operands, got {A.dtype} and {B.dtype}")
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"qgemm_int8: inner dimensions differ: A {A.shape}, B {B.shape}")
    k = te.reduce_axis((0, A.shape[1]), name="k")
    return te.compute((A.shape[0], B.shape[1]),
                      lambda i, j: te.sum(A[i, k].astype("int32") * B[k, j].astype("int32"), axis=k),
                      name=name)


# ---------------------------------------------------------------- convolutions
def conv2d_nchw(X: Tensor, W: Tensor, stride=1, padding=0, dilation=1, name: str = "conv2d"):
    """Y[n, f, y, x] = sum_{c, ry, rx} Xpad[n, c, y*sh + ry*dh, x*sw + rx*dw] * W[f, c, ry, rx].

    X is (N, C, H, W), W is (F, C, KH, KW); padding is an int, (h, w) or
    (top, left, bottom, right).  Returns (Y, pad); pad is None when padding is 0.
    """
    op = "conv2d_nchw"
    _tensor(op, "X", X, 4)
    _tensor(op, "W", W, 4)
    n, c, h, w = X.shape
    f, wc, kh, kw = W.shape
    if wc != c:
        raise ValueError(f"{op}: X has {c} channels but W {W.shape} expects {wc}")
    (sh, sw), (dh, dw), (oh, ow), pad = _window(op, X, kh, kw, stride, padding, dilation, name)
    src = pad if pad is not None else X
    rc = te.reduce_axis((0, c), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    out = te.compute(
        (n, f, oh, ow),
        lambda b, o, y, x: te.sum(src[b, rc, y * sh + ry * dh, x * sw + rx * dw] * W[o, rc, ry, rx],
                                  axis=(rc, ry, rx)),
        name=name)
    return out, pad


def depthwise_conv2d_nchw(X: Tensor, W: Tensor, stride=1, padding=0, dilation=1,
                          name: str = "dwconv2d"):
    """Y[n, c, y, x] = sum_{ry, rx} Xpad[n, c, y*sh + ry*dh, x*sw + rx*dw] * W[c, 0, ry, rx].

    X is (N, C, H, W), W is (C, 1, KH, KW) (channel multiplier 1).
    Returns (Y, pad); pad is None when padding is 0.
    """
    op = "depthwise_conv2d_nchw"
    _tensor(op, "X", X, 4)
    _tensor(op, "W", W, 4)
    n, c, h, w = X.shape
    wc, mult, kh, kw = W.shape
    if wc != c or mult != 1:
        raise ValueError(f"{op}: W must be (C, 1, KH, KW) with C = {c}, got {W.shape}")
    (sh, sw), (dh, dw), (oh, ow), pad = _window(op, X, kh, kw, stride, padding, dilation, name)
    src = pad if pad is not None else X
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    out = te.compute(
        (n, c, oh, ow),
        lambda b, ch, y, x: te.sum(src[b, ch, y * sh + ry * dh, x * sw + rx * dw] * W[ch, 0, ry, rx],
                                   axis=(ry, rx)),
        name=name)
    return out, pad


# ---------------------------------------------------------------- pooling
def _pool_geometry(op: str, X: Tensor, kernel, strides, pads, ceil_mode):
    """Kernel, strides, pads, the pads covering every window and the output size
    (common.pool_geometry: the ONNX rule)."""
    _tensor(op, "X", X, 4)
    kh, kw = _pair(op, "kernel", kernel, 1)
    sh, sw = _pair(op, "strides", (kh, kw) if strides is None else strides, 1)
    pads = _pads(op, pads)
    outs, full = pool_geometry(op, X.shape[2], X.shape[3], (kh, kw), (sh, sw), pads, (1, 1),
                               ceil_mode)
    return (kh, kw), (sh, sw), pads, full, outs


def max_pool2d(X: Tensor, kernel, strides=None, pads=0, ceil_mode: bool = False,
               name: str = "maxpool"):
    """ONNX MaxPool on NCHW: the max over each window; padding never wins.

    strides default to the kernel; pads as in conv2d_nchw.  Returns (Y, pad):
    pad holds X surrounded by the dtype's lowest value (-inf for float32) and
    is None when no window leaves the input.
    """
    op = "max_pool2d"
    (kh, kw), (sh, sw), _, full, (oh, ow) = _pool_geometry(op, X, kernel, strides, pads, ceil_mode)
    pad = _pad_nchw(X, full, reduce_identity("max", X.dtype), f"{name}_pad") if any(full) else None
    src = pad if pad is not None else X
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    out = te.compute((X.shape[0], X.shape[1], oh, ow),
                     lambda b, c, y, x: te.max(src[b, c, y * sh + ry, x * sw + rx], axis=(ry, rx)),
                     name=name)
    return out, pad


def avg_pool2d(X: Tensor, kernel, strides=None, pads=0, ceil_mode: bool = False,
               count_include_pad: bool = False, name: str = "avgpool"):
    """ONNX AveragePool on NCHW (float32).

    The window sum runs over X padded with zeros; the divisor is computed per
    output position: the window clipped to the input, or with
    count_include_pad the window clipped to the input plus its declared pads
    (the ceil-mode extension past the pads is never counted).
    Returns (Y, wsum, pad); pad is None when no window leaves the input.
    """
    op = "avg_pool2d"
    if not is_float(X.dtype):
        raise TypeError(f"{op} takes float32 input, got {X.dtype}")
    (kh, kw), (sh, sw), pads, full, (oh, ow) = _pool_geometry(op, X, kernel, strides, pads,
                                                              ceil_mode)
    h, w = X.shape[2:]
    pad = _pad_nchw(X, full, const(0, X.dtype), f"{name}_pad") if any(full) else None
    src = pad if pad is not None else X
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    wsum = te.compute((X.shape[0], X.shape[1], oh, ow),
                      lambda b, c, y, x: te.sum(src[b, c, y * sh + ry, x * sw + rx], axis=(ry, rx)),
                      name=f"{name}_sum")
    top, left, bottom, right = pads
    # window [start, start + k) in input coordinates, clipped to [0, size) or [-before, size + after)
    lo_h, hi_h = (-top, h + bottom) if count_include_pad else (0, h)
    lo_w, hi_w = (-left, w + right) if count_include_pad else (0, w)

    def count(y, x):
        y0 = y * sh - top
        x0 = x * sw - left
        ch = te.minimum(y0 + kh, hi_h) - te.maximum(y0, lo_h)
        cw = te.minimum(x0 + kw, hi_w) - te.maximum(x0, lo_w)
        return (ch * cw).astype(X.dtype)
    out = te.compute(wsum.shape, lambda b, c, y, x: wsum[b, c, y, x] / count(y, x), name=name)
    return out, wsum, pad


# ---------------------------------------------------------------- softmax
def softmax(X: Tensor, axis: int = -1, name: str = "softmax", lanes: int = 1):
    """exp(X - max) / sum(exp(X - max)) along `axis`, in four stages.

    The max and the sum keep the reduced axis with extent 1.  With lanes > 1, an
    innermost axis that is a whole number (>= 2) of `lanes` is reduced in two steps: a
    stage of `lanes` partial results (element w takes w, w + lanes, ...: a vector
    accumulator when its lane axis is vectorized) and their reduction; the partial
    stages are the final stages' only inputs (`op.input_tensors`).
    Returns (Y, max, exp, sum).
    """
    op = "softmax"
    _tensor(op, "X", X)
    if not is_float(X.dtype):
        raise TypeError(f"{op} takes float32 input, got {X.dtype}")
    nd = X.ndim
    if not -nd <= axis < nd:
        raise ValueError(f"{op}: axis {axis} is out of range for shape {X.shape}")
    axis %= nd
    red_shape = tuple(1 if d == axis else n for d, n in enumerate(X.shape))
    N = X.shape[axis]
    split = lanes > 1 and axis == nd - 1 and N % lanes == 0 and N >= 2 * lanes

    def at(idx, v):
        return tuple(v if d == axis else i for d, i in enumerate(idx))

    def reduce(combiner, T, stage):
        if not split:
            k = te.reduce_axis((0, N), name="k")
            return te.compute(red_shape, lambda *i: combiner(T[at(i, k)], axis=k), name=stage)
        k = te.reduce_axis((0, N // lanes), name="k")
        part = te.compute(red_shape[:-1] + (lanes,), lambda *i: combiner(
            T[i[:-1] + (k * lanes + i[-1],)], axis=k), name=f"{stage}_part")
        # the lanes pairwise (a tree: log2(lanes) dependent steps, not a chain of lanes)
        pair = te.maximum if combiner is te.max else (lambda a, b: a + b)

        def tree(xs):
            return xs[0] if len(xs) == 1 else pair(tree(xs[:len(xs) // 2]),
                                                   tree(xs[len(xs) // 2:]))
        return te.compute(red_shape, lambda *i: tree([part[i[:-1] + (q,)]
                                                      for q in range(lanes)]), name=stage)
    mx = reduce(te.max, X, f"{name}_max")
    # exp_poly: arithmetic and bit casts only, so the exp loop vectorizes (libm's expf is a
    # scalar call); exp(-inf) is 0 there too
    ex = te.compute(X.shape, lambda *i: te.exp_poly(X[i] - mx[at(i, 0)]), name=f"{name}_exp")
    sm = reduce(te.sum, ex, f"{name}_sum")
    # one division per row: the row's loop multiplies by the loop-invariant reciprocal
    # (a vector divide per element took a third of the kernel's time on AVX-512)
    out = te.compute(X.shape, lambda *i: ex[i] * (const(1.0, "float32") / sm[at(i, 0)]),
                     name=name)
    return out, mx, ex, sm


# ---------------------------------------------------------------- broadcasting
BINARY_OPS = {
    "+": lambda a, b: a + b, "add": lambda a, b: a + b,
    "-": lambda a, b: a - b, "sub": lambda a, b: a - b,
    "*": lambda a, b: a * b, "mul": lambda a, b: a * b,
    "/": lambda a, b: a / b, "div": lambda a, b: a / b,
    "maximum": te.maximum, "minimum": te.minimum,
}


def _broadcast_load(t: Tensor, out_shape: tuple, idx: tuple):
    off = len(out_shape) - t.ndim
    return t[tuple(0 if n == 1 and out_shape[off + d] != 1 else idx[off + d]
                   for d, n in enumerate(t.shape))]


def broadcast_binary(op: str, A: Tensor, B: Tensor, name: str | None = None) -> Tensor:
    """Elementwise A op B with numpy broadcasting (ranks aligned on the right).

    op is one of + - * / (or add sub mul div), maximum, minimum; the dtypes
    must agree (cast first), and '/' needs float32.
    """
    if op not in BINARY_OPS:
        raise ValueError(f"broadcast_binary: unknown op {op!r}; one of {sorted(BINARY_OPS)}")
    _tensor("broadcast_binary", "A", A)
    _tensor("broadcast_binary", "B", B)
    try:
        shape = broadcast_shape(A.shape, B.shape)
    except ValueError as e:
        raise ValueError(f"broadcast_binary {op!r}: {e}") from None
    fn = BINARY_OPS[op]
    name = name or "bcast_" + {"+": "add", "-": "sub", "*": "mul", "/": "div"}.get(op, op)
    return te.compute(shape, lambda *i: fn(_broadcast_load(A, shape, i), _broadcast_load(B, shape, i)),
                      name=name)


__all__ = ["matmul", "qgemm_int8", "conv2d_nchw", "depthwise_conv2d_nchw", "max_pool2d",
           "avg_pool2d", "softmax", "broadcast_binary", "broadcast_shape"]
