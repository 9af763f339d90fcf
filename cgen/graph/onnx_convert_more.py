"""Per-op converters for the wider ONNX op set (issue 12): comparisons and logic, Where,
rounding, trigonometry, the activation family, Mod, Expand, Tile, Range, ArgMax/ArgMin,
the Reduce* variants, DepthToSpace/SpaceToDepth, Trilu, CumSum, Instance- and
GroupNormalization.  Ops with a canonical counterpart in ops_extra.py map onto it; the
others are compositions of canonical ops (the Reduce* variants, ArgMax, the
normalisations, DepthToSpace) or constants folded at import (Range)."""
from __future__ import annotations

import numpy as np

from .onnx_convert import _reduce_axes
from .onnx_import import _axis, _inp, _refuse


def convert_simple(op: str, n_in: int = 1, **defaults):
    """An ONNX op onto one canonical op, its attributes taken with `defaults`."""
    def conv(imp, n, a):
        attrs = {k: type(d)(a.get(k, d)) for k, d in defaults.items()}
        imp.emit(op, list(n.input[:n_in]), attrs, outputs=[n.output[0]])
    return conv


def convert_range(imp, n, a):
    start, limit, delta = (imp.const(n.input[i], w).reshape(()) for i, w in
                           enumerate(("start", "limit", "delta")))
    if delta == 0:
        _refuse(imp, "delta is 0", "shape")
    count = max(int(np.ceil((limit - start) / delta)), 0)
    imp.set_const(n.output[0], (start + np.arange(count) * delta).astype(start.dtype))


def convert_expand(imp, n, a):
    shape = tuple(int(d) for d in imp.const(n.input[1], "shape").reshape(-1))
    imp.emit("expand", [n.input[0]], {"shape": shape}, outputs=[n.output[0]])


def convert_tile(imp, n, a):
    reps = tuple(int(d) for d in imp.const(n.input[1], "repeats").reshape(-1))
    if len(reps) != len(imp.v(n.input[0]).shape):
        _refuse(imp, f"repeats {reps} do not match the rank", "shape")
    imp.emit("tile", [n.input[0]], {"repeats": reps}, outputs=[n.output[0]])


def convert_trilu(imp, n, a):
    k = int(imp.const(n.input[1], "k").reshape(())) if _inp(n, 1) else 0
    v, upper = imp.v(n.input[0]), int(a.get("upper", 1))
    rows, cols = v.shape[-2:]
    lo, hi = -(rows - 1), cols - 1                 # the range of column - row
    if (upper and k > hi) or (not upper and k < lo):
        imp.set_const(n.output[0], np.zeros(v.shape, v.dtype))     # nothing kept
        return
    if (upper and k <= lo) or (not upper and k >= hi):
        imp.alias[n.output[0]] = imp.resolve(n.input[0])           # everything kept
        return
    imp.emit("trilu", [n.input[0]], {"upper": upper, "k": k},
             outputs=[n.output[0]])


def convert_cumsum(imp, n, a):
    r = len(imp.v(n.input[0]).shape)
    ax = _axis(imp, int(imp.const(n.input[1], "axis").reshape(())), r)
    imp.emit("cumsum", [n.input[0]], {"axis": ax, "exclusive": int(a.get("exclusive", 0)),
                                      "reverse": int(a.get("reverse", 0))}, outputs=[n.output[0]])


def convert_mod(imp, n, a):
    fmod = int(a.get("fmod", 0))
    imp.emit("mod", [n.input[0], n.input[1]], {"fmod": fmod}, outputs=[n.output[0]])


def convert_isinf(imp, n, a):
    imp.emit("isinf", [n.input[0]], {"detect_positive": int(a.get("detect_positive", 1)),
                                     "detect_negative": int(a.get("detect_negative", 1))},
             outputs=[n.output[0]])


# ------------------------------------------------------------------ reductions
def convert_reduce_via(pre: str | None, post: str | None, input_from: int = 18,
                       reduce_op: str = "reduce_sum"):
    """ReduceL1 = sum(abs), ReduceL2 = sqrt(sum(x*x)), ReduceSumSquare = sum(x*x),
    ReduceLogSum = log(sum), ReduceProd: `pre` before the reduction, `post` after."""
    def conv(imp, n, a):
        x = n.input[0]
        axes = _reduce_axes(imp, n, a, input_from)
        if pre == "square":
            x = imp.emit("mul", [x, x], tag="square")[0]
        elif pre:
            x = imp.emit(pre, [x], tag=pre)[0]
        out = [n.output[0]] if post is None else None
        if axes is None:
            y = imp.emit("identity", [x], outputs=out)[0]
        else:
            y = imp.emit(reduce_op, [x], {"axes": axes, "keepdims": int(a.get("keepdims", 1))},
                         outputs=out)[0]
        if post:
            imp.emit(post, [y], outputs=[n.output[0]])
    return conv


def convert_reduce_log_sum_exp(imp, n, a):
    """log(sum(exp(x - max))) + max, the max kept per reduced slice (no overflow)."""
    x = n.input[0]
    axes = _reduce_axes(imp, n, a, 18)
    if axes is None:
        axes = ()
    keep = int(a.get("keepdims", 1))
    if not axes:
        imp.emit("identity", [x], outputs=[n.output[0]])
        return
    m = imp.emit("reduce_max", [x], {"axes": axes, "keepdims": 1}, tag="max")[0]
    e = imp.emit("exp", [imp.emit("sub", [x, m], tag="shift")[0]], tag="exp")[0]
    s = imp.emit("reduce_sum", [e], {"axes": axes, "keepdims": 1}, tag="sum")[0]
    y = imp.emit("add", [imp.emit("log", [s], tag="log")[0], m],
                 outputs=[n.output[0]] if keep else None, tag="lse")[0]
    if not keep:
        imp.reshape(y, [d for i, d in enumerate(imp.v(x).shape) if i not in axes],
                    out=n.output[0])


def convert_arg(kind: str):
    """ArgMax/ArgMin: the first (or last) index where x equals its max (min) on the axis:
    reduce, compare, and reduce the index grid where equal.  The grid is float32 (exact
    below 2**24) so both reductions run on the float reduce template."""
    def conv(imp, n, a):
        x = n.input[0]
        s = imp.v(x).shape
        ax = _axis(imp, int(a.get("axis", 0)), len(s))
        if s[ax] >= 1 << 24:
            _refuse(imp, f"axis of {s[ax]} elements; cgen handles fewer than 2**24", "shape")
        keep, last = int(a.get("keepdims", 1)), int(a.get("select_last_index", 0))
        best = imp.emit(f"reduce_{kind}", [x], {"axes": (ax,), "keepdims": 1}, tag=kind)[0]
        hit = imp.emit("equal", [x, best], tag="hit")[0]
        grid = np.arange(s[ax], dtype=np.float32).reshape((-1,) + (1,) * (len(s) - ax - 1))
        idx = imp.add_const(grid, f"{n.output[0]}__grid")
        miss = imp.add_const(np.asarray(-1 if last else s[ax], np.float32), f"{n.output[0]}__miss")
        cand = imp.emit("where", [hit, idx, miss], tag="candidates")[0]
        r = imp.emit("reduce_max" if last else "reduce_min", [cand],
                     {"axes": (ax,), "keepdims": keep}, tag="index")[0]
        imp.emit("cast", [r], {"to": "int64"}, outputs=[n.output[0]])
    return conv


# ------------------------------------------------------------------ data movement
def convert_depth_to_space(imp, n, a):
    x = n.input[0]
    b, (N, C, H, W) = int(a["blocksize"]), imp.v(x).shape
    if a.get("mode", "DCR") == "DCR":
        t = imp.reshape(x, (N, b, b, C // (b * b), H, W), tag="split")
        perm = (0, 3, 4, 1, 5, 2)
    else:
        t = imp.reshape(x, (N, C // (b * b), b, b, H, W), tag="split")
        perm = (0, 1, 4, 2, 5, 3)
    t = imp.emit("transpose", [t], {"perm": perm})[0]
    imp.reshape(t, (N, C // (b * b), H * b, W * b), out=n.output[0])


def convert_space_to_depth(imp, n, a):
    x = n.input[0]
    b, (N, C, H, W) = int(a["blocksize"]), imp.v(x).shape
    t = imp.reshape(x, (N, C, H // b, b, W // b, b), tag="split")
    perm = (0, 3, 5, 1, 2, 4) if a.get("mode", "DCR") == "DCR" else (0, 1, 3, 5, 2, 4)
    t = imp.emit("transpose", [t], {"perm": perm})[0]
    imp.reshape(t, (N, C * b * b, H // b, W // b), out=n.output[0])


# ------------------------------------------------------------------ normalisation
def _normalise(imp, x, axes, eps, tag):
    """(x - mean) / sqrt(var + eps) over `axes` (kept as size 1)."""
    mean = imp.emit("reduce_mean", [x], {"axes": axes, "keepdims": 1}, tag=f"{tag}mean")[0]
    d = imp.emit("sub", [x, mean], tag=f"{tag}centered")[0]
    var = imp.emit("reduce_mean", [imp.emit("mul", [d, d], tag=f"{tag}square")[0]],
                   {"axes": axes, "keepdims": 1}, tag=f"{tag}var")[0]
    e = imp.add_const(np.asarray(eps, np.float32), f"{x}__eps")
    sd = imp.emit("sqrt", [imp.emit("add", [var, e], tag=f"{tag}var_eps")[0]], tag=f"{tag}std")[0]
    return imp.emit("div", [d, sd], tag=f"{tag}normed")[0]


def _affine(imp, y, scale, bias, shape, out):
    s = imp.reshape(scale, shape, tag="scale")
    b = imp.reshape(bias, shape, tag="bias")
    y = imp.emit("mul", [y, s], tag="scaled")[0]
    return imp.emit("add", [y, b], outputs=out, tag="shifted")[0]


def convert_instance_norm(imp, n, a):
    x, scale, bias = n.input[:3]
    s = imp.v(x).shape
    y = _normalise(imp, x, tuple(range(2, len(s))), float(a.get("epsilon", 1e-5)), "")
    _affine(imp, y, scale, bias, (s[1],) + (1,) * (len(s) - 2), [n.output[0]])


def convert_group_norm(imp, n, a):
    x, scale, bias = n.input[:3]
    s = imp.v(x).shape
    G, C = int(a["num_groups"]), s[1]
    if C % G:
        _refuse(imp, f"{C} channels do not divide into {G} groups", "shape")
    grouped = imp.reshape(x, (s[0], G, int(np.prod(s[1:])) // G), tag="groups")
    y = _normalise(imp, grouped, (2,), float(a.get("epsilon", 1e-5)), "")
    if imp.v(scale).size == C:            # opset 21: per channel
        y = imp.reshape(y, s, tag="ungroup")
        _affine(imp, y, scale, bias, (C,) + (1,) * (len(s) - 2), [n.output[0]])
    else:                                 # opset 18: per group
        y = _affine(imp, y, scale, bias, (G, 1), None)
        imp.reshape(y, s, out=n.output[0])


# ------------------------------------------------------------------ the table
MORE_CONVERTERS = {
    "Where": convert_simple("where", 3),
    "Less": convert_simple("less", 2), "Greater": convert_simple("greater", 2),
    "Equal": convert_simple("equal", 2), "LessOrEqual": convert_simple("less_equal", 2),
    "GreaterOrEqual": convert_simple("greater_equal", 2),
    "Not": convert_simple("not"), "And": convert_simple("and", 2),
    "Or": convert_simple("or", 2), "Xor": convert_simple("xor", 2),
    "IsNaN": convert_simple("isnan"), "IsInf": convert_isinf,
    "Floor": convert_simple("floor"), "Ceil": convert_simple("ceil"),
    "Round": convert_simple("round"), "Sign": convert_simple("sign"),
    "Sin": convert_simple("sin"), "Cos": convert_simple("cos"),
    "PRelu": convert_simple("prelu", 2),
    "Elu": convert_simple("elu", alpha=1.0),
    "Selu": convert_simple("selu", alpha=1.67326319217681884765625,
                           gamma=1.05070102214813232421875),
    "Softplus": convert_simple("softplus"), "Softsign": convert_simple("softsign"),
    "Mish": convert_simple("mish"), "ThresholdedRelu": convert_simple("thresholded_relu", alpha=1.0),
    "Celu": convert_simple("celu", alpha=1.0), "Shrink": convert_simple("shrink", bias=0.0, lambd=0.5),
    "Mod": convert_mod, "Expand": convert_expand, "Tile": convert_tile, "Range": convert_range,
    "ArgMax": convert_arg("max"), "ArgMin": convert_arg("min"),
    "ReduceL1": convert_reduce_via("abs", None), "ReduceL2": convert_reduce_via("square", "sqrt"),
    "ReduceSumSquare": convert_reduce_via("square", None),
    "ReduceLogSum": convert_reduce_via(None, "log"),
    "ReduceProd": convert_reduce_via(None, None, reduce_op="reduce_prod"),
    "ReduceLogSumExp": convert_reduce_log_sum_exp,
    "DepthToSpace": convert_depth_to_space, "SpaceToDepth": convert_space_to_depth,
    "Trilu": convert_trilu, "CumSum": convert_cumsum,
    "InstanceNormalization": convert_instance_norm, "GroupNormalization": convert_group_norm,
}
