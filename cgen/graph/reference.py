"""A numpy interpreter of the canonical op set.

It is the oracle of every graph test and the evaluator of constant folding.
Values in a blocked layout are unpacked before an op runs and packed after,
so each op is written once, in the ONNX layout.  Convolutions, matmuls and
reductions accumulate in float64 and round once to float32.

    run(graph, {"x": array}) -> {"y": array}       (inputs checked: ModelError)
    evaluate(node, arrays)   -> list of output arrays
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from .graph_ir import Graph, ModelError, Node
from .layout import pack, unpack
from .loop_op import run_loop
from .ops_extra import EXTRA_OPS
from .resize_geometry import resize_reference
from .shapes import pool_geometry

_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    return _erf(x.astype(np.float64)).astype(np.float64)


def _f(fn: Callable) -> Callable:
    """A float op: computed in float64, returned in the input's dtype."""
    def impl(node, x):
        return fn(node, x.astype(np.float64)).astype(x.dtype)
    return impl


def _hard_sigmoid(n, x):
    return np.clip(n.attr("alpha") * x + n.attr("beta"), 0.0, 1.0)


def _gelu(n, x):
    if n.attr("approximate") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _clip(n, x):
    lo, hi = n.attr("min"), n.attr("max")
    out = x
    if lo is not None:
        out = np.maximum(out, np.asarray(lo).astype(x.dtype))
    if hi is not None:
        out = np.minimum(out, np.asarray(hi).astype(x.dtype))
    return out


def _int_div(a, b):
    """Integer division truncating toward zero (C and ONNX), 0 where b == 0."""
    with np.errstate(all="ignore"):
        bz = np.where(b == 0, 1, b)
        q = np.abs(a.astype(np.int64)) // np.abs(bz.astype(np.int64))
        q = np.where((a < 0) != (bz < 0), -q, q)
        return np.where(b == 0, 0, q).astype(a.dtype)


def _div(n, a, b):
    if np.issubdtype(a.dtype, np.integer):
        return _int_div(a, b)
    return a / b


def _pow(n, a, b):
    if np.issubdtype(a.dtype, np.integer):
        return np.power(a.astype(np.int64), b.astype(np.int64)).astype(a.dtype)
    return np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


# ------------------------------------------------------------------ convolution
def _windows(xp: np.ndarray, k: tuple, s: tuple, d: tuple, out: tuple) -> np.ndarray:
    """View (N, C, OH, OW, KH, KW) of a padded NCHW array: xp[n, c, y*sh + i*dh, x*sw + j*dw]."""
    n, c = xp.shape[:2]
    sn, sc, sh_, sw_ = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, c, out[0], out[1], k[0], k[1]),
        (sn, sc, sh_ * s[0], sw_ * s[1], sh_ * d[0], sw_ * d[1]), writeable=False)


def _pad_hw(x: np.ndarray, pads: tuple, fill, extra=(0, 0)) -> np.ndarray:
    t, l, b, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b + extra[0]), (l, r + extra[1])), constant_values=fill)


def conv2d_ref(x: np.ndarray, w: np.ndarray, strides, pads, dilations, groups) -> np.ndarray:
    """Grouped 2-D convolution in float64: (N, C, H, W) * (F, C/g, KH, KW) -> (N, F, OH, OW)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    g = groups
    xp = _pad_hw(x, pads, 0.0)
    oh = (xp.shape[2] - ((kh - 1) * dilations[0] + 1)) // strides[0] + 1
    ow = (xp.shape[3] - ((kw - 1) * dilations[1] + 1)) // strides[1] + 1
    win = _windows(xp, (kh, kw), strides, dilations, (oh, ow))
    win = win.reshape(n, g, cg, oh, ow, kh, kw)
    wg = w.reshape(g, f // g, cg, kh, kw)
    out = np.einsum("ngcyxij,gfcij->ngfyx", win, wg, optimize=True)
    return out.reshape(n, f, oh, ow)


def conv2d_transpose_ref(x, w, strides, pads, dilations, groups, output_padding):
    """(N, C, H, W) transposed-conv (C, F/g, KH, KW) -> (N, F, OH, OW), in float64."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, c, h, wd = x.shape
    _, fg, kh, kw = w.shape
    g = groups
    sh, sw = strides
    dh, dw = dilations
    t, l, b, r = pads
    oh = sh * (h - 1) + output_padding[0] + (kh - 1) * dh + 1 - t - b
    ow = sw * (wd - 1) + output_padding[1] + (kw - 1) * dw + 1 - l - r
    fh = max(sh * (h - 1) + (kh - 1) * dh + 1, t + oh)
    fw = max(sw * (wd - 1) + (kw - 1) * dw + 1, l + ow)
    full = np.zeros((n, g, fg, fh, fw))
    xg = x.reshape(n, g, c // g, h, wd)
    wg = w.reshape(g, c // g, fg, kh, kw)
    for i in range(kh):
        for j in range(kw):
            contrib = np.einsum("ngcyx,gcf->ngfyx", xg, wg[:, :, :, i, j], optimize=True)
            full[:, :, :, i * dh: i * dh + (h - 1) * sh + 1: sh,
                 j * dw: j * dw + (wd - 1) * sw + 1: sw] += contrib
    return full.reshape(n, g * fg, fh, fw)[:, :, t: t + oh, l: l + ow]


def _conv2d(n, x, w, b=None):
    out = conv2d_ref(x, w, n.attr("strides"), n.attr("pads"), n.attr("dilations"), n.attr("groups"))
    if b is not None:
        out = out + b.astype(np.float64).reshape(1, -1, 1, 1)
    return out.astype(x.dtype)


def _conv2d_transpose(n, x, w, b=None):
    out = conv2d_transpose_ref(x, w, n.attr("strides"), n.attr("pads"), n.attr("dilations"),
                               n.attr("groups"), n.attr("output_padding"))
    if b is not None:
        out = out + b.astype(np.float64).reshape(1, -1, 1, 1)
    return out.astype(x.dtype)


def _matmul(n, a, b):
    if np.issubdtype(a.dtype, np.integer):
        return np.matmul(a.astype(np.int64), b.astype(np.int64)).astype(a.dtype)
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


# ------------------------------------------------------------------ pooling
def _pool(n, x, kind):
    kh, kw = n.attr("kernel")
    s, d, pads = n.attr("strides"), n.attr("dilations"), n.attr("pads")
    ceil = bool(n.attr("ceil_mode"))
    h, w = x.shape[2:]
    oh, eh = pool_geometry(h, kh, s[0], d[0], pads[0], pads[2], ceil)
    ow, ew = pool_geometry(w, kw, s[1], d[1], pads[1], pads[3], ceil)
    if kind == "max":
        lowest = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
        xp = _pad_hw(x, pads, lowest, (eh, ew))
        return _windows(xp, (kh, kw), s, d, (oh, ow)).max(axis=(4, 5)).astype(x.dtype)
    xp = _pad_hw(x.astype(np.float64), pads, 0.0, (eh, ew))
    total = _windows(xp, (kh, kw), s, d, (oh, ow)).sum(axis=(4, 5))
    t, l, b, r = pads
    if n.attr("count_include_pad"):
        mask = np.zeros((1, 1) + xp.shape[2:])
        mask[:, :, : t + h + b, : l + w + r] = 1.0
    else:
        mask = _pad_hw(np.ones((1, 1, h, w)), pads, 0.0, (eh, ew))
    count = _windows(mask, (kh, kw), s, d, (oh, ow)).sum(axis=(4, 5))
    return (total / count).astype(x.dtype)


# ------------------------------------------------------------------ reductions and norms
def _identity(fn, dtype):
    """The identity of max (the dtype's lowest value) or min (its highest)."""
    if np.issubdtype(dtype, np.floating):
        return -np.inf if fn is np.max else np.inf
    info = np.iinfo(dtype)
    return info.min if fn is np.max else info.max


def _reduce(fn):
    def impl(n, x):
        axes, keep = tuple(n.attr("axes")), bool(n.attr("keepdims"))
        if fn in (np.max, np.min):      # an empty set gives the identity (ONNX: -inf / +inf)
            return fn(x, axis=axes, keepdims=keep, initial=_identity(fn, x.dtype))
        if np.issubdtype(x.dtype, np.integer):
            acc = fn(x.astype(np.int64), axis=axes, keepdims=keep)
            return (np.trunc(acc) if fn is np.mean else acc).astype(x.dtype)
        return fn(x.astype(np.float64), axis=axes, keepdims=keep).astype(x.dtype)
    return impl


def _softmax(n, x, log=False):
    ax = n.attr("axis")
    x64 = x.astype(np.float64)
    m = np.max(x64, axis=ax, keepdims=True)
    e = np.exp(x64 - m)
    ssum = e.sum(axis=ax, keepdims=True)
    return ((x64 - m - np.log(ssum)) if log else e / ssum).astype(x.dtype)


def _layer_norm(n, x, scale, bias=None):
    axes = tuple(range(n.attr("axis"), x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + n.attr("epsilon")) * scale.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64)
    return y.astype(x.dtype)


def _batch_norm(n, x, scale, bias, mean, var):
    shp = (1, -1) + (1,) * (x.ndim - 2)
    x64 = x.astype(np.float64)
    inv = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + n.attr("epsilon"))
    y = (x64 - mean.astype(np.float64).reshape(shp)) * inv.reshape(shp) + bias.astype(
        np.float64).reshape(shp)
    return y.astype(x.dtype)


# ------------------------------------------------------------------ data movement
def _slice(n, x):
    idx = [np.arange(s, e, st) for s, e, st in zip(n.attr("starts"), n.attr("ends"),
                                                    n.attr("steps"))]
    return x[np.ix_(*idx)] if x.ndim else x


def _pad(n, x):
    pads = n.attr("pads")
    r = x.ndim
    mode = n.attr("mode")
    begin, end = pads[:r], pads[r:]
    # negative pads crop
    sl = tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(zip(begin, end)))
    x = x[sl]
    width = tuple((max(0, b), max(0, e)) for b, e in zip(begin, end))
    if mode == "constant":
        return np.pad(x, width, mode="constant",
                      constant_values=np.asarray(n.attr("value")).astype(x.dtype))
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


def _split(n, x):
    cuts = np.cumsum(n.attr("sizes"))[:-1]
    return tuple(np.split(x, cuts, axis=n.attr("axis")))


def _gather(n, data, idx):
    ax = n.attr("axis")
    idx = np.where(idx < 0, idx + data.shape[ax], idx)
    return np.take(data, idx, axis=ax)


# ------------------------------------------------------------------ quantisation
def _saturate(y: np.ndarray, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(y, info.min, info.max).astype(dtype)


def _axis_shape(ndim: int, axis: int, p: np.ndarray) -> np.ndarray:
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    shp = [1] * ndim
    shp[axis] = -1
    return p.reshape(shp)


def _quantize(n, x, scale, zp):
    ax = n.attr("axis") % max(x.ndim, 1)
    s = _axis_shape(x.ndim, ax, scale).astype(np.float32)
    z = _axis_shape(x.ndim, ax, zp).astype(np.float64)
    y = np.rint(x.astype(np.float32) / s).astype(np.float64) + z
    return _saturate(y, zp.dtype)


def _dequantize(n, x, scale, zp):
    ax = n.attr("axis") % max(x.ndim, 1)
    s = _axis_shape(x.ndim, ax, scale).astype(np.float32)
    z = _axis_shape(x.ndim, ax, zp).astype(np.int64)
    return ((x.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def _requantize(acc: np.ndarray, multiplier: np.ndarray, yzp: np.ndarray) -> np.ndarray:
    y = np.rint(acc.astype(np.float32) * multiplier.astype(np.float32)).astype(np.float64)
    return _saturate(y + yzp.astype(np.float64), yzp.dtype)


def _qlinear_conv2d(n, x, xs, xz, w, ws, wz, ys, yz, b=None):
    f = w.shape[0]
    xi = x.astype(np.int64) - xz.astype(np.int64)
    wi = w.astype(np.int64) - (wz.astype(np.int64).reshape(-1, 1, 1, 1) if wz.size > 1 else
                               wz.astype(np.int64))
    acc = np.rint(conv2d_ref(xi, wi, n.attr("strides"), n.attr("pads"), n.attr("dilations"),
                             n.attr("groups"))).astype(np.int64)
    if b is not None:
        acc = acc + b.astype(np.int64).reshape(1, -1, 1, 1)
    mult = (xs.astype(np.float32) * ws.astype(np.float32).reshape(-1) / ys.astype(np.float32))
    mult = mult.reshape(1, f, 1, 1) if mult.size > 1 else mult.reshape(())
    return _requantize(acc, mult, yz)


def _qlinear_matmul(n, a, as_, az, b, bs, bz, ys, yz):
    ai = a.astype(np.int64) - az.astype(np.int64).reshape(_qshape(az, a, row=True))
    bi = b.astype(np.int64) - bz.astype(np.int64).reshape(_qshape(bz, b, row=False))
    acc = np.matmul(ai, bi)
    mult = (as_.astype(np.float32).reshape(_qshape(as_, a, row=True)) *
            bs.astype(np.float32).reshape(_qshape(bs, b, row=False)) / ys.astype(np.float32))
    return _requantize(acc, mult, yz)


def _qshape(p: np.ndarray, t: np.ndarray, row: bool) -> tuple:
    """Shape that broadcasts a QLinearMatMul parameter: per-row of A (M, 1), per-column of B (1, N)."""
    if p.size == 1:
        return ()
    return p.shape + (1,) if row else p.shape[:-1] + (1, p.shape[-1])


# ------------------------------------------------------------------ the table
IMPLS: dict = {
    "identity": lambda n, x: x,
    "layout_transform": lambda n, x: x,          # logical identity; layouts are handled around it
    "cast": lambda n, x: x.astype(n.attr("to")),
    "neg": lambda n, x: np.negative(x),
    "abs": lambda n, x: np.abs(x),
    "relu": lambda n, x: np.maximum(x, np.zeros((), x.dtype)),
    "leaky_relu": _f(lambda n, x: np.where(x < 0, n.attr("alpha") * x, x)),
    "clip": _clip,
    "sigmoid": _f(lambda n, x: 1.0 / (1.0 + np.exp(-x))),
    "tanh": _f(lambda n, x: np.tanh(x)),
    "hard_sigmoid": _f(_hard_sigmoid),
    "hard_swish": _f(lambda n, x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)),
    "erf": _f(lambda n, x: erf(x)),
    "gelu": _f(_gelu),
    "exp": _f(lambda n, x: np.exp(x)),
    "log": _f(lambda n, x: np.log(x)),
    "sqrt": _f(lambda n, x: np.sqrt(x)),
    "add": lambda n, a, b: a + b,
    "sub": lambda n, a, b: a - b,
    "mul": lambda n, a, b: a * b,
    "div": _div,
    "pow": _pow,
    "max": lambda n, a, b: np.maximum(a, b),
    "min": lambda n, a, b: np.minimum(a, b),
    "conv2d": _conv2d,
    "conv2d_transpose": _conv2d_transpose,
    "matmul": _matmul,
    "max_pool2d": lambda n, x: _pool(n, x, "max"),
    "avg_pool2d": lambda n, x: _pool(n, x, "avg"),
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min),
    "softmax": lambda n, x: _softmax(n, x),
    "log_softmax": lambda n, x: _softmax(n, x, log=True),
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "reshape": lambda n, x: x.reshape(n.attr("shape")),
    "transpose": lambda n, x: np.transpose(x, n.attr("perm")),
    "concat": lambda n, *xs: np.concatenate(xs, axis=n.attr("axis")),
    "split": _split,
    "slice": _slice,
    "pad": _pad,
    "gather": _gather,
    "resize": lambda n, x: resize_reference(n.attr_dict, x),
    "quantize": _quantize,
    "dequantize": _dequantize,
    "qlinear_conv2d": _qlinear_conv2d,
    "qlinear_matmul": _qlinear_matmul,
    **{op: d.ref for op, d in EXTRA_OPS.items()},
    "loop": lambda n, *xs: run_loop(n, xs, run),
}


def evaluate(node: Node, arrays) -> list:
    """Run one node on physical arrays (in the layouts of its input Values)."""
    impl = IMPLS.get(node.op)
    if impl is None:
        raise ModelError(f"the reference interpreter has no op {node.op!r} (node {node.name!r})",
                         "unsupported_op")
    args = [unpack(np.asarray(a), v.layout) for a, v in zip(arrays, node.inputs)]
    with np.errstate(all="ignore"):
        res = impl(node, *args)
    res = list(res) if isinstance(res, (tuple, list)) else [res]
    out = []
    for a, v in zip(res, node.outputs):
        a = pack(np.asarray(a), v.layout)
        if str(a.dtype) != v.dtype:
            a = a.astype(v.dtype)
        if tuple(a.shape) != tuple(v.shape):
            raise ModelError(f"reference: node {node.name!r} ({node.op}) produced shape "
                             f"{a.shape} for {v.name!r}, declared {v.shape}", "shape")
        out.append(a)
    return out


def run(graph: Graph, feeds: Mapping, keep_all: bool = False) -> dict:
    """Interpret the graph: output name -> array (or every value with keep_all)."""
    env = dict(graph.constants)
    env.update(graph.check_inputs(feeds))
    last_use: dict = {}
    if not keep_all:
        for i, n in enumerate(graph.nodes):
            for v in n.inputs:
                last_use[v.name] = i
    outs = {v.name for v in graph.outputs}
    for i, n in enumerate(graph.nodes):
        for v, a in zip(n.outputs, evaluate(n, [env[v.name] for v in n.inputs])):
            env[v.name] = a
        if not keep_all:
            for v in n.inputs:
                if last_use.get(v.name) == i and v.name not in outs and v.name not in graph.constants:
                    env.pop(v.name, None)
    if keep_all:
        return env
    return {v.name: env[v.name] for v in graph.outputs}
