"""Per-op converters for index ops (GatherElements, GatherND, ScatterND, ScatterElements,
OneHot, EyeLike, Hardmax), the normalisations RMS-, Lp-, MeanVariance- and LRN,
DynamicQuantizeLinear, CumProd, Swish and the trigonometric family (see
onnx_convert_more.py for the first batch)."""
from __future__ import annotations

import numpy as np

from .graph_ir import check_dtype
from .onnx_convert_more import convert_simple
from .onnx_import import _axis, _inp, _np_dtype_name, _refuse
from .ops_index import scatter_map


def convert_gather_elements(imp, n, a):
    r = len(imp.v(n.input[0]).shape)
    imp.emit("gather_elements", n.input[:2], {"axis": _axis(imp, int(a.get("axis", 0)), r)},
             outputs=[n.output[0]])


def convert_gather_nd(imp, n, a):
    imp.emit("gather_nd", n.input[:2], {"batch_dims": int(a.get("batch_dims", 0))},
             outputs=[n.output[0]])


def convert_scatter(elements: bool):
    def conv(imp, n, a):
        if a.get("reduction", "none") != "none":
            _refuse(imp, f"reduction={a['reduction']!r}")
        data, upd = n.input[0], n.input[2]
        ind = imp.const(n.input[1], "indices")
        ds = imp.v(data).shape
        axis = _axis(imp, int(a.get("axis", 0)), len(ds)) if elements else None
        mp = imp.add_const(scatter_map(ds, ind, imp.v(upd).shape, axis), f"{n.output[0]}__map")
        imp.emit("scatter", [data, upd, mp], outputs=[n.output[0]])
    return conv


def convert_one_hot(imp, n, a):
    ind, values = n.input[0], n.input[2]
    depth = int(imp.const(n.input[1], "depth").reshape(-1)[0])
    r = len(imp.v(ind).shape)
    ax = _axis(imp, int(a.get("axis", -1)), r + 1)
    imp.emit("one_hot", [ind, imp.reshape(values, (2,), tag="values")],
             {"axis": ax, "depth": depth}, outputs=[n.output[0]])


def convert_eye_like(imp, n, a):
    v = imp.v(n.input[0])
    dt = v.dtype if "dtype" not in a else check_dtype(_np_dtype_name(a["dtype"]),
                                                      f"{imp.where_node()}: dtype")
    imp.set_const(n.output[0], np.eye(v.shape[0], v.shape[1], int(a.get("k", 0)), dtype=dt))


def convert_hardmax(imp, n, a):
    """1 at the first maximum along the axis, 0 elsewhere (ArgMax's grid, compared)."""
    x = n.input[0]
    s, dt = imp.v(x).shape, imp.v(x).dtype
    ax = _axis(imp, int(a.get("axis", -1 if imp.opset >= 13 else 1)), len(s))
    if imp.opset < 13:              # before 13: over the flattened dims from the axis on
        rows = int(np.prod(s[:ax], dtype=np.int64))
        x, ax = imp.reshape(x, (rows, int(np.prod(s[ax:], dtype=np.int64))), tag="flat"), 1
    xs = imp.v(x).shape
    best = imp.emit("reduce_max", [x], {"axes": (ax,), "keepdims": 1}, tag="max")[0]
    hit = imp.emit("equal", [x, best], tag="hit")[0]
    grid = np.arange(xs[ax], dtype=np.float32).reshape((-1,) + (1,) * (len(xs) - ax - 1))
    idx = imp.add_const(grid, f"{n.output[0]}__grid")
    miss = imp.add_const(np.asarray(xs[ax], np.float32), f"{n.output[0]}__miss")
    first = imp.emit("reduce_min", [imp.emit("where", [hit, idx, miss], tag="cand")[0]],
                     {"axes": (ax,), "keepdims": 1}, tag="first")[0]
    one = imp.add_const(np.ones((), dt), f"{n.output[0]}__one")
    zero = imp.add_const(np.zeros((), dt), f"{n.output[0]}__zero")
    y = imp.emit("where", [imp.emit("equal", [idx, first], tag="at")[0], one, zero],
                 outputs=[n.output[0]] if xs == s else None, tag="onehot")[0]
    if xs != s:
        imp.reshape(y, s, out=n.output[0])


def convert_rms_norm(imp, n, a):
    x, scale = n.input[:2]
    r = len(imp.v(x).shape)
    ax = _axis(imp, int(a.get("axis", -1)), r)
    sq = imp.emit("mul", [x, x], tag="square")[0]
    ms = imp.emit("reduce_mean", [sq], {"axes": tuple(range(ax, r)), "keepdims": 1}, tag="ms")[0]
    e = imp.add_const(np.asarray(float(a.get("epsilon", 1e-5)), np.float32), f"{n.output[0]}__eps")
    rms = imp.emit("sqrt", [imp.emit("add", [ms, e], tag="ms_eps")[0]], tag="rms")[0]
    y = imp.emit("div", [x, rms], tag="normed")[0]
    imp.emit("mul", [y, scale], outputs=[n.output[0]])


def convert_lp_norm(imp, n, a):
    x = n.input[0]
    r, p = len(imp.v(x).shape), int(a.get("p", 2))
    ax = _axis(imp, int(a.get("axis", -1)), r)
    if p not in (1, 2):
        _refuse(imp, f"p={p}; LpNormalization has p 1 or 2")
    t = imp.emit("abs", [x], tag="abs")[0] if p == 1 else imp.emit("mul", [x, x], tag="square")[0]
    norm = imp.emit("reduce_sum", [t], {"axes": (ax,), "keepdims": 1}, tag="norm")[0]
    if p == 2:
        norm = imp.emit("sqrt", [norm], tag="l2")[0]
    one = imp.add_const(np.ones((), np.float32), f"{n.output[0]}__one")
    zero = imp.add_const(np.zeros((), np.float32), f"{n.output[0]}__zero")
    safe = imp.emit("where", [imp.emit("equal", [norm, zero], tag="null")[0], one, norm],
                    tag="safe")[0]             # a zero vector stays zero (0 / 1)
    imp.emit("div", [x, safe], outputs=[n.output[0]])


def convert_dynamic_quantize(imp, n, a):
    """uint8 with scale (max(x, 0) - min(x, 0)) / 255 and the zero point that maps 0 exactly."""
    x = n.input[0]
    r = len(imp.v(x).shape)
    zero = imp.add_const(np.zeros((), np.float32), f"{n.output[0]}__zero")
    every = {"axes": tuple(range(r)), "keepdims": 0}
    lo = imp.emit("min", [imp.emit("reduce_min", [x], every, tag="min")[0], zero], tag="lo")[0]
    hi = imp.emit("max", [imp.emit("reduce_max", [x], every, tag="max")[0], zero], tag="hi")[0]
    q = imp.add_const(np.asarray(255.0, np.float32), f"{n.output[0]}__qmax")
    scale = imp.emit("div", [imp.emit("sub", [hi, lo], tag="range")[0], q],
                     outputs=[n.output[1]] if _inp_out(n, 1) else None, tag="scale")[0]
    zf = imp.emit("round", [imp.emit("div", [imp.emit("neg", [lo], tag="neg")[0], scale],
                                     tag="zf")[0]], tag="zround")[0]
    zf = imp.emit("clip", [zf], {"min": 0.0, "max": 255.0}, tag="zclip")[0]
    zp = imp.emit("cast", [zf], {"to": "uint8"},
                  outputs=[n.output[2]] if _inp_out(n, 2) else None, tag="zp")[0]
    imp.emit("quantize", [x, scale, zp], {"axis": 0}, outputs=[n.output[0]])


def _inp_out(n, i: int) -> bool:
    return i < len(n.output) and bool(n.output[i])


def convert_mvn(imp, n, a):
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9), as the op's ONNX function."""
    x = n.input[0]
    r = len(imp.v(x).shape)
    axes = tuple(sorted(_axis(imp, int(d), r) for d in a.get("axes", [0, 2, 3])))
    red = {"axes": axes, "keepdims": 1}
    mean = imp.emit("reduce_mean", [x], red, tag="mean")[0]
    msq = imp.emit("reduce_mean", [imp.emit("mul", [x, x], tag="square")[0]], red, tag="msq")[0]
    var = imp.emit("sub", [msq, imp.emit("mul", [mean, mean], tag="mean2")[0]], tag="var")[0]
    e = imp.add_const(np.asarray(1e-9, np.float32), f"{n.output[0]}__eps")
    sd = imp.emit("add", [imp.emit("sqrt", [var], tag="std")[0], e], tag="std_eps")[0]
    imp.emit("div", [imp.emit("sub", [x, mean], tag="centered")[0], sd], outputs=[n.output[0]])


def convert_lrn(imp, n, a):
    """x / (bias + alpha / size * window sum of x^2 over channels) ^ beta; the window sum is
    an average pool (padding counted) over (C, rest) times size."""
    x = n.input[0]
    s = imp.v(x).shape
    size = int(a["size"])
    alpha, beta, bias = (float(a.get(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75),
                                                         ("bias", 1.0)))
    sq = imp.emit("mul", [x, x], tag="square")[0]
    rest = int(np.prod(s[2:], dtype=np.int64))
    t = imp.reshape(sq, (s[0], 1, s[1], rest), tag="channels")
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    avg = imp.emit("avg_pool2d", [t], {"kernel": (size, 1), "strides": (1, 1),
                                       "pads": (lo, 0, hi, 0), "dilations": (1, 1),
                                       "ceil_mode": 0, "count_include_pad": 1}, tag="window")[0]
    avg = imp.reshape(avg, s, tag="back")
    k = imp.add_const(np.asarray(alpha, np.float32), f"{n.output[0]}__alpha")
    b = imp.add_const(np.asarray(bias, np.float32), f"{n.output[0]}__bias")
    p = imp.add_const(np.asarray(beta, np.float32), f"{n.output[0]}__beta")
    d = imp.emit("add", [imp.emit("mul", [avg, k], tag="scaled")[0], b], tag="base")[0]
    imp.emit("div", [x, imp.emit("pow", [d, p], tag="denominator")[0]], outputs=[n.output[0]])


def convert_topk(imp, n, a):
    x = n.input[0]
    s = imp.v(x).shape
    ax = _axis(imp, int(a.get("axis", -1)), len(s))
    k = int(imp.const(n.input[1], "K").reshape(-1)[0]) if imp.opset >= 10 else int(a["k"])
    if not 0 < k <= s[ax]:
        _refuse(imp, f"K={k} for an axis of {s[ax]}", "shape")
    if not a.get("sorted", 1):
        _refuse(imp, "sorted=0")
    imp.emit("topk", [x], {"axis": ax, "k": k, "largest": int(a.get("largest", 1))},
             outputs=[o or imp.fresh(f"{n.name}__unused") for o in n.output[:2]])


# cosine-sum windows: w[i] = sum_k c_k cos(2 pi k i / N), N = size (periodic) or size - 1
_WINDOWS = {"HannWindow": (0.5, -0.5), "HammingWindow": (25 / 46, -21 / 46),
            "BlackmanWindow": (0.42, -0.5, 0.08)}


def convert_window(op: str):
    def conv(imp, n, a):
        size = int(imp.const(n.input[0], "size").reshape(()))
        dt = check_dtype(_np_dtype_name(a.get("output_datatype", 1)), f"{imp.where_node()}: "
                         "output_datatype")
        N = size if a.get("periodic", 1) else size - 1
        i = np.arange(size, dtype=np.float64)
        w = sum(c * np.cos(2 * np.pi * k * i / N) for k, c in enumerate(_WINDOWS[op]))
        imp.set_const(n.output[0], w.astype(np.float32).astype(dt))
    return conv


def convert_center_crop_pad(imp, n, a):
    """A centred slice where the target is smaller, a centred zero pad where larger (the
    odd element goes to the end in both)."""
    x = n.input[0]
    s = imp.v(x).shape
    r = len(s)
    want = [int(d) for d in imp.const(n.input[1], "shape").reshape(-1)]
    axes = [_axis(imp, int(d), r) for d in a.get("axes", range(r))]
    if len(axes) != len(want):
        _refuse(imp, f"shape {want} does not match axes {axes}", "shape")
    starts, ends, begin, end = [0] * r, list(s), [0] * r, [0] * r
    for ax, w in zip(axes, want):
        if w < s[ax]:
            starts[ax] = (s[ax] - w) // 2
            ends[ax] = starts[ax] + w
        else:
            begin[ax] = (w - s[ax]) // 2
            end[ax] = w - s[ax] - begin[ax]
    y = imp.emit("slice", [x], {"starts": tuple(starts), "ends": tuple(ends),
                                "steps": (1,) * r}, tag="crop")[0]
    imp.emit("pad", [y], {"pads": tuple(begin + end), "mode": "constant", "value": 0},
             outputs=[n.output[0]])


def convert_cumprod(imp, n, a):
    r = len(imp.v(n.input[0]).shape)
    ax = _axis(imp, int(imp.const(n.input[1], "axis").reshape(())), r)
    imp.emit("cumprod", [n.input[0]], {"axis": ax, "exclusive": int(a.get("exclusive", 0)),
                                       "reverse": int(a.get("reverse", 0))}, outputs=[n.output[0]])


INDEX_CONVERTERS = {
    "GatherElements": convert_gather_elements, "GatherND": convert_gather_nd,
    "ScatterND": convert_scatter(False), "ScatterElements": convert_scatter(True),
    "Scatter": convert_scatter(True),      # opset < 11: upgraded to ScatterElements on load
    **{op: convert_window(op) for op in _WINDOWS},
    "TopK": convert_topk, "CenterCropPad": convert_center_crop_pad, "MeanVarianceNormalization": convert_mvn, "LRN": convert_lrn,
    "OneHot": convert_one_hot, "EyeLike": convert_eye_like, "Hardmax": convert_hardmax,
    "RMSNormalization": convert_rms_norm, "LpNormalization": convert_lp_norm,
    "DynamicQuantizeLinear": convert_dynamic_quantize, "CumProd": convert_cumprod,
    "Swish": convert_simple("swish", alpha=1.0),
    **{op: convert_simple(op.lower()) for op in ("Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh",
                                                 "Asinh", "Acosh", "Atanh")},
}
