"""te computes of the integer anchors of ops_integer.py (MatMulInteger, ConvInteger):
exact int32 sums of zero-point-centred products, read by te_anchors.ANCHOR_COMPUTES."""
from __future__ import annotations

from .. import te
from ..te.expr import const
from .graph_ir import Node, Value
from .te_ops import _bcast


def _centred(inputs, data: Value, zp: Value, T):
    """idx -> int32(data[idx]) - int32(zero point broadcast to data's shape)."""
    z = inputs.loader(zp)

    def at(idx):
        zi = (0,) * len(zp.shape) if zp.size == 1 else _bcast(idx, zp.shape, data.shape)
        return te.cast("int32", T[idx]) - te.cast("int32", z(zi))
    return at


def te_matmul_integer(inputs, n: Node, out: Value):
    a, b, za, zb = n.inputs
    A, B = inputs.value(a), inputs.value(b)
    ca, cb = _centred(inputs, a, za, A), _centred(inputs, b, zb, B)
    oshape, nb = out.shape, len(out.shape) - 2
    k = te.reduce_axis((0, A.shape[-1]), name="k")

    def body(*i):
        ia = _bcast(i[:nb], A.shape[:-2], oshape[:-2]) + (i[-2], k)
        ib = _bcast(i[:nb], B.shape[:-2], oshape[:-2]) + (k, i[-1])
        return te.sum(ca(ia) * cb(ib), axis=k)
    return te.compute(oshape, body, name="matmul_integer")


def te_conv_integer(inputs, n: Node, out: Value):
    x, w, zx, zw = n.inputs
    X, Wt = inputs.value(x), inputs.value(w)
    cx, cw = _centred(inputs, x, zx, X), _centred(inputs, w, zw, Wt)
    N, C, H, W = X.shape
    F, Cg, KH, KW = Wt.shape
    G = n.attr("groups")
    (sh, sw), (dh, dw), (t, l, b, r) = n.attr("strides"), n.attr("dilations"), n.attr("pads")
    Fg = F // G
    src = te.compute((N, C, H + t + b, W + l + r), lambda i, c, y, x_: te.if_then_else(
        te.all(y >= t, y < H + t, x_ >= l, x_ < W + l),
        cx((i, c, y - t, x_ - l)), const(0, "int32")), name="conv_integer_pad")
    rc = te.reduce_axis((0, Cg), name="rc")
    ry = te.reduce_axis((0, KH), name="ry")
    rx = te.reduce_axis((0, KW), name="rx")

    def body(i, f, y, x_):
        c = rc if G == 1 else (f // Fg) * Cg + rc
        return te.sum(src[i, c, y * sh + ry * dh, x_ * sw + rx * dw] * cw((f, rc, ry, rx)),
                      axis=(rc, ry, rx))
    return te.compute(out.shape, body, name="conv_integer")


INTEGER_ANCHOR_COMPUTES = {
    "matmul_integer": lambda inputs, n, out: (te_matmul_integer(inputs, n, out), ()),
    "conv_integer": lambda inputs, n, out: (te_conv_integer(inputs, n, out), ()),
}
