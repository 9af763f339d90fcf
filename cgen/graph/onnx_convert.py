"""Per-op converters, ONNX node -> canonical nodes: elementwise, convolution, pooling,
GEMM/MatMul, normalisation, reductions, quantisation.  A converter is
`convert(importer, node, attributes)`; it emits nodes through the importer or refuses
with a one-line ModelError."""
from __future__ import annotations


import numpy as np

from .graph_ir import check_dtype
from .onnx_import import _axis, _inp, _np_dtype_name, _refuse


# ====================================================================== converters
def convert_unary(op: str, **fixed):
    def conv(imp, n, a):
        attrs = {k: (a.get(k, d) if not callable(d) else d(imp, a)) for k, d in fixed.items()}
        imp.emit(op, [n.input[0]], attrs, outputs=[n.output[0]])
    return conv


def convert_binary(op: str):
    def conv(imp, n, a):
        x, y = n.input[0], n.input[1]
        if imp.v(y).dtype != imp.v(x).dtype:
            if op != "pow":
                _refuse(imp, f"operand dtypes differ ({imp.v(x).dtype}, {imp.v(y).dtype})",
                        "unsupported_dtype")
            y = imp.cast(y, imp.v(x).dtype)
        imp.emit(op, [x, y], outputs=[n.output[0]])
    return conv


def convert_variadic(op: str, mean: bool = False):
    def conv(imp, n, a):
        ins = [i for i in n.input if i]
        if len(ins) == 1 and not mean:
            imp.alias[n.output[0]] = imp.resolve(ins[0])
            return
        acc = ins[0]
        for k, x in enumerate(ins[1:]):
            last = k == len(ins) - 2 and not mean
            acc = imp.emit(op, [acc, x], outputs=[n.output[0]] if last else None)[0]
        if mean:
            c = imp.add_const(np.asarray(len(ins), dtype=imp.v(acc).dtype), f"{n.output[0]}__count")
            imp.emit("div", [acc, c], outputs=[n.output[0]])
    return conv


def convert_identity(imp, n, a):
    imp.alias[n.output[0]] = imp.resolve(n.input[0])


def convert_dropout(imp, n, a):
    tm = _inp(n, 2)
    if tm is not None and bool(imp.const(tm, "training_mode").reshape(-1)[0]):
        _refuse(imp, "training_mode is true; cgen compiles inference only")
    if len(n.output) > 1 and n.output[1] and _is_used(imp, n.output[1]):
        _refuse(imp, "the Dropout mask output is used (a bool tensor)", "unsupported_dtype")
    imp.alias[n.output[0]] = imp.resolve(n.input[0])


def _is_used(imp, name: str) -> bool:
    g = imp.proto.graph
    return any(name in m.input for m in g.node) or any(o.name == name for o in g.output)


def convert_reciprocal(imp, n, a):
    x = n.input[0]
    one = imp.add_const(np.ones((), dtype=imp.v(x).dtype), f"{n.output[0]}__one")
    imp.emit("div", [one, x], outputs=[n.output[0]])


def convert_cast(imp, n, a):
    to = check_dtype(_np_dtype_name(a["to"]), f"{imp.where_node()}: target type")
    x = n.input[0]
    if imp.v(x).dtype == to:
        imp.alias[n.output[0]] = imp.resolve(x)
    else:
        imp.emit("cast", [x], {"to": to}, outputs=[n.output[0]])


def convert_cast_like(imp, n, a):
    x, to = n.input[0], imp.v(n.input[1]).dtype
    if imp.v(x).dtype == to:
        imp.alias[n.output[0]] = imp.resolve(x)
    else:
        imp.emit("cast", [x], {"to": to}, outputs=[n.output[0]])


def convert_clip(imp, n, a):
    x = n.input[0]
    dt = imp.v(x).dtype
    lo = hi = None            # opset 6's min/max attributes are inputs after conversion to 11
    if _inp(n, 1):
        lo = imp.const(n.input[1], "min").reshape(-1)[0]
    if _inp(n, 2):
        hi = imp.const(n.input[2], "max").reshape(-1)[0]
    conv = float if dt == "float32" else int
    imp.emit("clip", [x], {"min": None if lo is None else conv(lo),
                           "max": None if hi is None else conv(hi)}, outputs=[n.output[0]])


def convert_gelu(imp, n, a):
    approx = a.get("approximate", "none")
    if approx not in ("none", "tanh"):
        _refuse(imp, f"approximate={approx!r}")
    imp.emit("gelu", [n.input[0]], {"approximate": approx}, outputs=[n.output[0]])


# ------------------------------------------------------------------ conv and pools
def _spatial_pads(imp, a, in_sizes, kernel, strides, dilations, nsp):
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0] * 2 * nsp))
        if len(pads) != 2 * nsp:
            _refuse(imp, f"pads {pads} do not have {2 * nsp} entries", "shape")
        return pads[:nsp], pads[nsp:]
    if auto == "VALID":
        return [0] * nsp, [0] * nsp
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        _refuse(imp, f"auto_pad={auto!r}")
    begin, end = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin, end


def _geometry(imp, a, xshape, kernel):
    nsp = len(xshape) - 2
    if nsp not in (1, 2):
        _refuse(imp, f"{nsp} spatial dimensions; cgen handles 1-D and 2-D")
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    begin, end = _spatial_pads(imp, a, xshape[2:], kernel, strides, dil, nsp)
    if nsp == 1:   # as 2-D with height 1
        return 1, (1, strides[0]), (0, begin[0], 0, end[0]), (1, dil[0])
    return 2, tuple(strides), (begin[0], begin[1], end[0], end[1]), tuple(dil)


def _as_2d(imp, name: str, nsp: int) -> str:
    if nsp == 2:
        return imp.resolve(name)
    s = imp.v(name).shape
    return imp.reshape(name, s[:2] + (1,) + s[2:], tag="as2d")


def _finish_2d(imp, n, op, ins, attrs, nsp):
    if nsp == 2:
        imp.emit(op, ins, attrs, outputs=[n.output[0]])
        return
    y = imp.emit(op, ins, attrs)[0]
    s = imp.v(y).shape
    imp.reshape(y, s[:2] + s[3:], out=n.output[0])


def convert_conv(imp, n, a):
    x, w, b = n.input[0], n.input[1], _inp(n, 2)
    xs, ws = imp.v(x).shape, imp.v(w).shape
    kernel = list(a.get("kernel_shape", ws[2:]))
    if tuple(kernel) != tuple(ws[2:]):
        _refuse(imp, f"kernel_shape {kernel} differs from the weight's {ws[2:]}", "shape")
    nsp, strides, pads, dil = _geometry(imp, a, xs, kernel)
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "groups": a.get("group", 1)}
    ins = [_as_2d(imp, x, nsp), _as_2d(imp, w, nsp)] + ([b] if b else [])
    _finish_2d(imp, n, "conv2d", ins, attrs, nsp)


def convert_conv_transpose(imp, n, a):
    x, w, b = n.input[0], n.input[1], _inp(n, 2)
    xs, ws = imp.v(x).shape, imp.v(w).shape
    nsp = len(xs) - 2
    if nsp not in (1, 2):
        _refuse(imp, f"{nsp} spatial dimensions; cgen handles 1-D and 2-D")
    kernel = list(a.get("kernel_shape", ws[2:]))
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    opad = list(a.get("output_padding", [0] * nsp))
    auto = a.get("auto_pad", "NOTSET")
    out_shape = a.get("output_shape")
    if out_shape is not None and len(out_shape) == len(xs):
        out_shape = out_shape[2:]
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        if out_shape is None:
            out_shape = [xs[2 + i] * strides[i] for i in range(nsp)]
        begin, end = [], []
        for i in range(nsp):
            total = strides[i] * (xs[2 + i] - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1 - out_shape[i]
            total = max(0, total)       # a bigger output_shape grows the trailing output padding
            if auto == "SAME_UPPER":
                begin.append(total // 2)
                end.append(total - total // 2)
            else:
                begin.append(total - total // 2)
                end.append(total // 2)
            natural = strides[i] * (xs[2 + i] - 1) + (kernel[i] - 1) * dil[i] + 1
            opad[i] = out_shape[i] - (natural - total)
    elif auto in ("NOTSET", "", "VALID"):
        pads = list(a.get("pads", [0] * 2 * nsp)) if auto != "VALID" else [0] * 2 * nsp
        begin, end = pads[:nsp], pads[nsp:]
    else:
        _refuse(imp, f"auto_pad={auto!r}")
    if nsp == 1:
        attrs = {"strides": (1, strides[0]), "pads": (0, begin[0], 0, end[0]),
                 "dilations": (1, dil[0]), "output_padding": (0, opad[0])}
    else:
        attrs = {"strides": tuple(strides), "pads": (begin[0], begin[1], end[0], end[1]),
                 "dilations": tuple(dil), "output_padding": tuple(opad)}
    attrs["groups"] = a.get("group", 1)
    if _transpose_as_pixel_shuffle(imp, n, x, w, b, attrs, nsp):
        return
    ins = [_as_2d(imp, x, nsp), _as_2d(imp, w, nsp)] + ([b] if b else [])
    _finish_2d(imp, n, "conv2d_transpose", ins, attrs, nsp)


def _transpose_as_pixel_shuffle(imp, n, x, w, b, attrs, nsp) -> bool:
    """A 2-D ConvTranspose whose kernel equals its stride (no padding, no overlap: U-Net's
    2x2 stride-2 up-convolution) is a 1x1 convolution to F*KH*KW channels, which the GEMM
    templates run, then a pixel shuffle (DepthToSpace, CRD order).  The direct form has no
    template: the U-Net's two up-convolutions took 88% of its time as plain loops."""
    if nsp != 2:
        return False
    C, F, KH, KW = imp.v(w).shape
    if attrs["groups"] != 1 or not imp.is_const(w) or (b and not imp.is_const(b)) \
            or tuple(attrs["strides"]) != (KH, KW) or any(attrs["pads"]) \
            or any(attrs["output_padding"]) or tuple(attrs["dilations"]) != (1, 1):
        return False
    N, _, H, W = imp.v(x).shape
    wt = imp.const(w, "weight")
    w1 = imp.add_const(np.ascontiguousarray(wt.transpose(1, 2, 3, 0).reshape(F * KH * KW, C, 1, 1)),
                       f"{n.output[0]}__w1x1")
    ins = [x, w1]
    if b:
        ins.append(imp.add_const(np.repeat(imp.const(b, "bias"), KH * KW), f"{n.output[0]}__b1x1"))
    cols = imp.emit("conv2d", ins, {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1),
                                     "groups": 1})[0]
    t = imp.reshape(cols, (N, F, KH, KW, H, W), tag="split")
    t = imp.emit("transpose", [t], {"perm": (0, 1, 4, 2, 5, 3)})[0]
    imp.reshape(t, (N, F, H * KH, W * KW), out=n.output[0])
    return True


def convert_pool(kind: str):
    def conv(imp, n, a):
        if kind == "max" and len(n.output) > 1 and n.output[1] and _is_used(imp, n.output[1]):
            _refuse(imp, "the Indices output of MaxPool is used")
        x = n.input[0]
        xs = imp.v(x).shape
        kernel = list(a["kernel_shape"])
        nsp, strides, pads, dil = _geometry(imp, a, xs, kernel)
        k2 = (1, kernel[0]) if nsp == 1 else tuple(kernel)
        attrs = {"kernel": k2, "strides": strides, "pads": pads, "dilations": dil,
                 "ceil_mode": int(a.get("ceil_mode", 0))}
        if kind == "avg":
            attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
        _finish_2d(imp, n, f"{kind}_pool2d", [_as_2d(imp, x, nsp)], attrs, nsp)
    return conv


def convert_global_pool(op: str):
    def conv(imp, n, a):
        r = len(imp.v(n.input[0]).shape)
        imp.emit(op, [n.input[0]], {"axes": tuple(range(2, r)), "keepdims": 1}, outputs=[n.output[0]])
    return conv


# ------------------------------------------------------------------ dense
def convert_gemm(imp, n, a):
    A, B, C = n.input[0], n.input[1], _inp(n, 2)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    if a.get("transA", 0):
        A = imp.emit("transpose", [A], {"perm": (1, 0)}, tag="transA")[0]
    if a.get("transB", 0):
        B = imp.emit("transpose", [B], {"perm": (1, 0)}, tag="transB")[0]
    last = C is None or beta == 0.0
    y = imp.emit("matmul", [A, B], outputs=[n.output[0]] if last and alpha == 1.0 else None)[0]
    if alpha != 1.0:
        k = imp.add_const(np.asarray(alpha, dtype=imp.v(y).dtype), f"{n.output[0]}__alpha")
        y = imp.emit("mul", [y, k], outputs=[n.output[0]] if last else None, tag="alpha")[0]
    if not last:
        if beta != 1.0:
            k = imp.add_const(np.asarray(beta, dtype=imp.v(C).dtype), f"{n.output[0]}__beta")
            C = imp.emit("mul", [C, k], tag="beta")[0]
        imp.emit("add", [y, C], outputs=[n.output[0]])


def _matmul_like(imp, n, op, a_name, b_name, extra_before, extra_after):
    sa, sb = imp.v(a_name).shape, imp.v(b_name).shape
    if len(sa) == 0 or len(sb) == 0:
        _refuse(imp, "matmul of a scalar", "shape")
    A = imp.reshape(a_name, (1,) + sa, tag="a2d") if len(sa) == 1 else imp.resolve(a_name)
    B = imp.reshape(b_name, sb + (1,), tag="b2d") if len(sb) == 1 else imp.resolve(b_name)
    ins = [A] + extra_before + [B] + extra_after
    if len(sa) > 1 and len(sb) > 1:
        imp.emit(op, ins, outputs=[n.output[0]])
        return
    y = imp.emit(op, ins)[0]
    s = imp.v(y).shape
    final = s[:-2] + ((s[-2],) if len(sa) > 1 else ()) + ((s[-1],) if len(sb) > 1 else ())
    imp.reshape(y, final, out=n.output[0])


def convert_matmul(imp, n, a):
    _matmul_like(imp, n, "matmul", n.input[0], n.input[1], [], [])


# ------------------------------------------------------------------ normalisation
def convert_softmax(op: str):
    def conv(imp, n, a):
        x = n.input[0]
        s = imp.v(x).shape
        r = len(s)
        if imp.opset >= 13:
            imp.emit(op, [x], {"axis": _axis(imp, a.get("axis", -1), r)}, outputs=[n.output[0]])
            return
        ax = _axis(imp, a.get("axis", 1), r)
        if ax == r - 1:
            imp.emit(op, [x], {"axis": ax}, outputs=[n.output[0]])
            return
        rows, cols = int(np.prod(s[:ax], dtype=np.int64)), int(np.prod(s[ax:], dtype=np.int64))
        flat = imp.reshape(x, (rows, cols), tag="flat2d")
        y = imp.emit(op, [flat], {"axis": 1})[0]
        imp.reshape(y, s, out=n.output[0])
    return conv


def convert_batchnorm(imp, n, a):
    if a.get("training_mode", 0):
        _refuse(imp, "training_mode=1; cgen compiles inference only")
    if any(o and _is_used(imp, o) for o in n.output[1:]):
        _refuse(imp, "running mean/variance outputs are used (training mode)")
    if len(imp.v(n.input[0]).shape) < 2:
        _refuse(imp, "input of rank < 2", "shape")
    imp.emit("batch_norm", list(n.input[:5]), {"epsilon": float(a.get("epsilon", 1e-5))},
             outputs=[n.output[0]])


def convert_layernorm(imp, n, a):
    x, scale, bias = n.input[0], n.input[1], _inp(n, 2)
    r = len(imp.v(x).shape)
    ax = _axis(imp, a.get("axis", -1), r)
    eps = float(a.get("epsilon", 1e-5))
    imp.emit("layer_norm", [x, scale] + ([bias] if bias else []), {"axis": ax, "epsilon": eps},
             outputs=[n.output[0]])
    extra = [o if i < len(n.output) else "" for i, o in enumerate(n.output)][1:]
    if any(extra):
        axes = tuple(range(ax, r))
        mean = imp.emit("reduce_mean", [x], {"axes": axes, "keepdims": 1},
                        outputs=[extra[0]] if extra[0] else None, tag="mean")[0]
        if len(extra) > 1 and extra[1]:
            d = imp.emit("sub", [x, mean], tag="centered")[0]
            sq = imp.emit("mul", [d, d], tag="square")[0]
            var = imp.emit("reduce_mean", [sq], {"axes": axes, "keepdims": 1}, tag="var")[0]
            e = imp.add_const(np.asarray(eps, np.float32), f"{n.output[0]}__eps")
            ve = imp.emit("add", [var, e], tag="var_eps")[0]
            sd = imp.emit("sqrt", [ve], tag="std")[0]
            one = imp.add_const(np.ones((), np.float32), f"{n.output[0]}__one")
            imp.emit("div", [one, sd], outputs=[extra[1]])


def _reduce_axes(imp, n, a, input_from: int):
    """Axes of a Reduce*: the attribute before opset `input_from`, the optional input after."""
    r = len(imp.v(n.input[0]).shape)
    axes = None
    if imp.opset >= input_from:
        if _inp(n, 1):
            axes = [int(x) for x in imp.const(n.input[1], "axes").reshape(-1)]
    else:
        axes = a.get("axes")
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return None
        return tuple(range(r))
    return tuple(sorted({_axis(imp, int(x), r) for x in axes}))


def convert_reduce(op: str, input_from: int):
    def conv(imp, n, a):
        axes = _reduce_axes(imp, n, a, input_from)
        if axes is None:
            imp.alias[n.output[0]] = imp.resolve(n.input[0])
            return
        imp.emit(op, [n.input[0]], {"axes": axes, "keepdims": int(a.get("keepdims", 1))},
                 outputs=[n.output[0]])
    return conv


# ------------------------------------------------------------------ shapes


def _qparams(imp, scale: str, zp: str | None, zdtype: str, what: str):
    sd = imp.v(scale).dtype
    if sd != "float32":
        _refuse(imp, f"{what} scale is {sd}; cgen supports float32 scales", "unsupported_dtype")
    if zp is None:
        zp = imp.add_const(np.zeros(imp.v(scale).shape, dtype=zdtype), f"{scale}__zero_point")
    if imp.v(zp).dtype not in ("int8", "uint8", "int16", "int32"):
        _refuse(imp, f"{what} zero point is {imp.v(zp).dtype}", "unsupported_dtype")
    return zp


def convert_quantize(imp, n, a):
    if a.get("block_size", 0):
        _refuse(imp, "blocked quantisation (block_size)")
    x, scale, zp = n.input[0], n.input[1], _inp(n, 2)
    out_dt = "uint8"
    if a.get("output_dtype"):
        out_dt = check_dtype(_np_dtype_name(a["output_dtype"]), f"{imp.where_node()}: output_dtype")
    zp = _qparams(imp, scale, zp, out_dt, "y")
    r = len(imp.v(x).shape)
    ax = _axis(imp, a.get("axis", 1), r) if imp.v(scale).size > 1 else 0
    imp.emit("quantize", [x, scale, zp], {"axis": ax}, outputs=[n.output[0]])


def convert_dequantize(imp, n, a):
    if a.get("block_size", 0):
        _refuse(imp, "blocked quantisation (block_size)")
    x, scale, zp = n.input[0], n.input[1], _inp(n, 2)
    zp = _qparams(imp, scale, zp, imp.v(x).dtype, "x")
    if imp.v(zp).dtype != imp.v(x).dtype:
        _refuse(imp, "zero point and input dtypes differ", "unsupported_dtype")
    r = len(imp.v(x).shape)
    ax = _axis(imp, a.get("axis", 1), r) if imp.v(scale).size > 1 else 0
    imp.emit("dequantize", [x, scale, zp], {"axis": ax}, outputs=[n.output[0]])


def convert_qlinear_conv(imp, n, a):
    x, xs, xz, w, ws, wz, ys, yz = n.input[:8]
    b = _inp(n, 8)
    sx, sw = imp.v(x).shape, imp.v(w).shape
    kernel = list(a.get("kernel_shape", sw[2:]))
    nsp, strides, pads, dil = _geometry(imp, a, sx, kernel)
    for p in (xs, ws, ys):
        if imp.v(p).dtype != "float32":
            _refuse(imp, f"scale {p!r} is {imp.v(p).dtype}", "unsupported_dtype")
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "groups": a.get("group", 1)}
    ins = [_as_2d(imp, x, nsp), xs, xz, _as_2d(imp, w, nsp), ws, wz, ys, yz] + ([b] if b else [])
    _finish_2d(imp, n, "qlinear_conv2d", ins, attrs, nsp)


def convert_qlinear_matmul(imp, n, a):
    a_, as_, az, b, bs, bz, ys, yz = n.input[:8]
    _matmul_like(imp, n, "qlinear_matmul", a_, b, [as_, az], [bs, bz, ys, yz])


# ------------------------------------------------------------------ the table
