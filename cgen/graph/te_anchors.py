"""The anchor ops (convolutions, matmul, int8 QLinear ops, pooling, reductions) as plain
te computes, and the route that builds a whole group from them: the kernel of a group
without a template, and the fallback when its template cannot build it (reported)."""
from __future__ import annotations

import math

import numpy as np

from .. import te
from ..te.expr import const
from .graph_ir import Graph, ModelError, Node, Value
from .fuse import Group
from .kernels import Route
from .te_integer import INTEGER_ANCHOR_COMPUTES
from .te_ops import Inputs, _bcast, _clip, build_fns, regroup
from .te_schedule import simple_schedule


def _bias_node(conv: Node) -> Node:
    """add(conv output, bias as (F, 1, 1)) -- the conv bias as an epilogue node."""
    y, b = conv.outputs[0], conv.inputs[2]
    bias = Value(b.name, (b.shape[0], 1, 1), b.dtype)
    return Node("add", (y, bias), (y,), (), f"{conv.name}/bias")


# ---------------------------------------------------------------- built-in computes
def _te_conv(X, Wt, n: Node, out: Value):
    N, C, H, W = X.shape
    F, Cg, KH, KW = Wt.shape
    G = n.attr("groups")
    (sh, sw), (dh, dw), (t, l, b, r) = n.attr("strides"), n.attr("dilations"), n.attr("pads")
    Fg = F // G
    src = X
    if any((t, l, b, r)):
        src = te.compute((N, C, H + t + b, W + l + r), lambda i, c, y, x: te.if_then_else(
            te.all(y >= t, y < H + t, x >= l, x < W + l), X[i, c, y - t, x - l], 0.0), name="pad")
    rc = te.reduce_axis((0, Cg), name="rc")
    ry = te.reduce_axis((0, KH), name="ry")
    rx = te.reduce_axis((0, KW), name="rx")

    def ch(f):
        return rc if G == 1 else (f // Fg) * Cg + rc
    return te.compute(out.shape, lambda i, f, y, x: te.sum(
        src[i, ch(f), y * sh + ry * dh, x * sw + rx * dw] * Wt[f, rc, ry, rx], axis=(rc, ry, rx)),
        name="conv")


def _te_conv_transpose(X, Wt, n: Node, out: Value):
    """Y[n, f, y, x] = sum over the group's input channels c and taps (ky, kx) with
    y + top = iy*sh + ky*dh (and the same for x) of X[n, c, iy, ix] * W[c, f % Fg, ky, kx]."""
    N, C, H, W = X.shape
    _, Fg, KH, KW = Wt.shape
    G = n.attr("groups")
    Cg = C // G
    (sh, sw), (dh, dw), (t, l, _, _) = n.attr("strides"), n.attr("dilations"), n.attr("pads")
    rc = te.reduce_axis((0, Cg), name="rc")
    ry = te.reduce_axis((0, KH), name="ry")
    rx = te.reduce_axis((0, KW), name="rx")

    def body(i, f, y, x):
        c = rc if G == 1 else (f // Fg) * Cg + rc
        ny, nx = y + t - ry * dh, x + l - rx * dw
        conds = [ny >= 0, nx >= 0, ny < H * sh, nx < W * sw]
        if sh > 1:
            conds.append(te.equal(ny % sh, 0))
        if sw > 1:
            conds.append(te.equal(nx % sw, 0))
        iy = ny // sh if sh > 1 else ny
        ix = nx // sw if sw > 1 else nx
        v = te.if_then_else(te.all(*conds), X[i, c, iy, ix], 0.0)
        return te.sum(v * Wt[c, f % Fg if G > 1 else f, ry, rx], axis=(rc, ry, rx))
    return te.compute(out.shape, body, name="conv_transpose")


def _te_matmul(A, B, out: Value):
    K = A.shape[-1]
    oshape = out.shape
    k = te.reduce_axis((0, K), name="k")
    nb = len(oshape) - 2

    def fn(*i):
        bi = i[:nb]
        ia = _bcast(bi, A.shape[:-2], oshape[:-2]) + (i[-2], k)
        ib = _bcast(bi, B.shape[:-2], oshape[:-2]) + (k, i[-1])
        return te.sum(A[ia] * B[ib], axis=k)
    return te.compute(oshape, fn, name="matmul")


def _qparam(inputs, v: Value, idx: tuple, aligned: tuple):
    """A quantisation parameter at the element whose index into `aligned` (the shape the
    parameter broadcasts against, numpy rules) is idx: a literal when it is a one-element
    constant, else a load (it may be a graph input)."""
    load = inputs.loader(v)
    return load((0,) * len(v.shape) if v.size == 1 else _bcast(idx, v.shape, aligned))


def _requantize(acc, mult, zp, dtype: str):
    """ONNX requantisation, as the reference interpreter: rint(float32(acc) * mult) + zp,
    saturated to the output dtype."""
    info = np.iinfo(dtype)
    y = te.round_half_even(te.cast("float32", acc) * mult) + te.cast("float32", zp)
    return te.cast(dtype, _clip(y, float(info.min), float(info.max)))


def _centered(x):
    return te.cast("int32", x)


def _te_qconv(inputs, n: Node, out: Value):
    """qlinear_conv2d over its unpacked operands: int32 sums of zero-point-centred products
    (padding is the input's zero point, so 0 once centred), then requantisation.  The
    template route needs constant weights and parameters; this one takes any."""
    x, xs, xz, w, ws, wz, ys, yz = n.inputs[:8]
    X, Wt = inputs.value(x), inputs.value(w)
    N, C, H, W = X.shape
    F, Cg, KH, KW = Wt.shape
    G = n.attr("groups")
    (sh, sw), (dh, dw), (t, l, b, r) = n.attr("strides"), n.attr("dilations"), n.attr("pads")
    Fg = F // G
    zx = _centered(_qparam(inputs, xz, (), ()))
    src = te.compute((N, C, H + t + b, W + l + r), lambda i, c, y, x_: te.if_then_else(
        te.all(y >= t, y < H + t, x_ >= l, x_ < W + l),
        _centered(X[i, c, y - t, x_ - l]) - zx, const(0, "int32")), name="qpad")
    rc = te.reduce_axis((0, Cg), name="rc")
    ry = te.reduce_axis((0, KH), name="ry")
    rx = te.reduce_axis((0, KW), name="rx")

    def body(i, f, y, x_):
        c = rc if G == 1 else (f // Fg) * Cg + rc
        wv = _centered(Wt[f, rc, ry, rx]) - _centered(_qparam(inputs, wz, (f,), (F,)))
        return te.sum(src[i, c, y * sh + ry * dh, x_ * sw + rx * dw] * wv, axis=(rc, ry, rx))
    acc = te.compute(out.shape, body, name="qconv_acc")
    bias = inputs.value(n.inputs[8]) if len(n.inputs) > 8 else None

    def requant(i, f, y, x_):
        a = acc[i, f, y, x_] + bias[f] if bias is not None else acc[i, f, y, x_]
        mult = (_qparam(inputs, xs, (), ()) * _qparam(inputs, ws, (f,), (F,))
                / _qparam(inputs, ys, (), ()))
        return _requantize(a, mult, _qparam(inputs, yz, (), ()), out.dtype)
    return te.compute(out.shape, requant, name="qconv")


def _te_qmatmul(inputs, n: Node, out: Value):
    """qlinear_matmul over its operands (numpy broadcasting of the batch dimensions; A's
    parameters per row, B's per column, as the reference)."""
    a, as_, az, b, bs, bz, ys, yz = n.inputs
    A, B = inputs.value(a), inputs.value(b)
    K, oshape = A.shape[-1], out.shape
    nb = len(oshape) - 2
    arow, bcol = A.shape[:-1], B.shape[:-2] + B.shape[-1:]     # A, B without K
    k = te.reduce_axis((0, K), name="k")

    def rows(i):
        return _bcast(i[:nb], A.shape[:-2], oshape[:-2]) + (i[-2],)

    def cols(i):
        return _bcast(i[:nb], B.shape[:-2], oshape[:-2]) + (i[-1],)

    def body(*i):
        ia, ib = rows(i), cols(i)
        va = _centered(A[ia + (k,)]) - _centered(_qparam(inputs, az, ia, arow))
        vb = _centered(B[ib[:-1] + (k, ib[-1])]) - _centered(_qparam(inputs, bz, ib, bcol))
        return te.sum(va * vb, axis=k)
    acc = te.compute(oshape, body, name="qmatmul_acc")

    def requant(*i):
        mult = (_qparam(inputs, as_, rows(i), arow) * _qparam(inputs, bs, cols(i), bcol)
                / _qparam(inputs, ys, (), ()))
        return _requantize(acc[i], mult, _qparam(inputs, yz, (), ()), out.dtype)
    return te.compute(oshape, requant, name="qmatmul")


def _te_pool(X, n: Node):
    from ..ops import nn
    if any(d != 1 for d in n.attr("dilations")):
        raise ModelError(f"node {n.name!r}: dilated pooling is not supported", "unsupported_attr")
    kw = dict(kernel=n.attr("kernel"), strides=n.attr("strides"), pads=n.attr("pads"),
              ceil_mode=bool(n.attr("ceil_mode")))
    if n.op == "max_pool2d":
        return nn.max_pool2d(X, **kw)[0]
    return nn.avg_pool2d(X, count_include_pad=bool(n.attr("count_include_pad")), **kw)[0]


def _te_reduce(X, n: Node, out: Value):
    shape = X.shape
    r = len(shape)
    if n.op in ("softmax", "log_softmax"):
        from ..ops import nn
        ax = n.attr("axis")
        y, mx, ex, sm = nn.softmax(X, ax, name="softmax")
        if n.op == "softmax":
            return y

        def at0(i):
            return tuple(0 if d == ax else v for d, v in enumerate(i))
        return te.compute(shape, lambda *i: X[i] - mx[at0(i)] - te.log(sm[at0(i)]),
                          name="log_softmax")
    if n.op == "layer_norm":
        ax = n.attr("axis")
        eps = n.attr("epsilon")
        axes = tuple(range(ax, r))
        cnt = float(math.prod(shape[ax:]))
        kshape = shape[:ax] + (1,) * (r - ax)

        def rv():
            return [te.reduce_axis((0, shape[d]), name=f"r{d}") for d in axes]
        r1 = rv()
        s1 = te.compute(kshape, lambda *i: te.sum(X[i[:ax] + tuple(r1)], axis=tuple(r1)),
                        name="ln_sum")
        mean = te.compute(kshape, lambda *i: s1[i] / cnt, name="ln_mean")
        r2 = rv()

        def sq(i):
            d = X[i[:ax] + tuple(r2)] - mean[i]
            return te.sum(d * d, axis=tuple(r2))
        s2 = te.compute(kshape, lambda *i: sq(i), name="ln_var")
        zero = (0,) * (r - ax)
        return s1, mean, s2, te.compute(shape, lambda *i: (X[i] - mean[i[:ax] + zero]) / te.sqrt(
            s2[i[:ax] + zero] / cnt + eps), name="ln")
    fn = {"reduce_sum": te.sum, "reduce_mean": te.sum, "reduce_max": te.max,
          "reduce_min": te.min}[n.op]
    axes = tuple(n.attr("axes"))
    keep = bool(n.attr("keepdims"))
    rv = {d: te.reduce_axis((0, shape[d]), name=f"r{d}") for d in axes}
    kept = [d for d in range(r) if d not in axes]

    def body(*o):
        ko = {d: o[d] for d in kept} if keep else {d: o[k] for k, d in enumerate(kept)}
        return fn(X[tuple(ko[d] if d in ko else rv[d] for d in range(r))], axis=tuple(rv.values()))
    oshape = out.shape or (1,)
    red = te.compute(oshape, body, name="reduce")
    if n.op != "reduce_mean":
        return red
    cnt = float(math.prod(shape[d] for d in axes))
    return te.compute(oshape, lambda *i: red[i] / cnt, name="mean")


def _bias_epilogue(conv: Node) -> tuple:
    """A convolution's bias as the first epilogue node (none without a bias)."""
    return (_bias_node(conv),) if len(conv.inputs) > 2 else ()


def _reduction_compute(inputs, n: Node, out: Value):
    A = _te_reduce(inputs.value(n.inputs[0]), n, out)
    if isinstance(A, tuple):
        *_, A = A
    return A, (_layer_norm_affine(n) if n.op == "layer_norm" else ())


def _value_compute(fn, extra=lambda n: ()):
    """(inputs, node, output) -> (fn over the node's first two inputs, epilogue nodes)."""
    return lambda inputs, n, out: (fn(inputs.value(n.inputs[0]), inputs.value(n.inputs[1]),
                                      n, out), extra(n))


# anchor op -> (inputs, node, output Value) -> (te tensor of the anchor's output, nodes
# to run before the group's epilogue); any other op of a reduction group: _te_reduce
ANCHOR_COMPUTES = {
    "conv2d": _value_compute(_te_conv, _bias_epilogue),
    "conv2d_transpose": _value_compute(_te_conv_transpose, _bias_epilogue),
    "matmul": _value_compute(lambda a, b, n, out: _te_matmul(a, b, out)),
    "max_pool2d": lambda inputs, n, out: (_te_pool(inputs.value(n.inputs[0]), n), ()),
    "avg_pool2d": lambda inputs, n, out: (_te_pool(inputs.value(n.inputs[0]), n), ()),
    "qlinear_conv2d": lambda inputs, n, out: (_te_qconv(inputs, n, out), ()),
    "qlinear_matmul": lambda inputs, n, out: (_te_qmatmul(inputs, n, out), ()),
    **INTEGER_ANCHOR_COMPUTES,
}


def _te_route(group: Group, graph: Graph, target) -> Route:
    """The group as built-in computes over its unpacked inputs."""
    def build(tgt, cfg):
        inputs = Inputs(graph)
        known = {}
        first = group.nodes[0]
        rest = group.nodes
        if group.kind in ("anchor", "reduction"):
            a_out = first.outputs[0]
            rest = group.nodes[1:]
            compute = ANCHOR_COMPUTES.get(first.op) or (
                _reduction_compute if group.kind == "reduction" else None)
            if compute is None:
                raise ModelError(f"node {first.name!r}: op {first.op} is not supported by the C "
                                 "backend", "unsupported_op")
            A, before = compute(inputs, first, a_out)
            rest = tuple(before) + tuple(rest)
            known[a_out.name] = (lambda T, shape: lambda idx: T[regroup(idx, shape, T.shape)])(
                A, a_out.shape)
        env = build_fns(rest, graph, inputs, known)
        outs = [te.compute(v.shape or (1,), (lambda f, v: lambda *i: f(
            regroup(i, v.shape or (1,), v.shape)))(env[v.name], v), name=f"out{k}")
            for k, v in enumerate(group.outputs)]
        s = te.create_schedule(outs)
        simple_schedule(s, tgt)
        route.args, route.consts = list(inputs.args), dict(inputs.consts)   # for _realize
        return s, inputs.tensors + outs
    route = Route(None, None, [], build)
    return route


def _layer_norm_affine(n: Node) -> tuple:
    """mul by scale (and add bias) after the normalisation, as epilogue nodes."""
    y = n.outputs[0]
    out = (Node("mul", (y, n.inputs[1]), (y,), (), f"{n.name}/scale"),)
    if len(n.inputs) > 2:
        out += (Node("add", (y, n.inputs[2]), (y,), (), f"{n.name}/bias"),)
    return out
