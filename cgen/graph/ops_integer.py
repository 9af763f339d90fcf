"""Canonical integer ops (issue 12), each one OpDef read through ops_extra.EXTRA_OPS:

    broadcast     bitwise_and bitwise_or bitwise_xor   (a, b)  any integer dtype
                  bitshift(direction: "LEFT" | "RIGHT") (x, count): a count outside
                  [0, width) shifts every bit out (0, or the sign for a right shift of a
                  negative value); a left shift wraps
    elementwise   bitwise_not (x)
    anchor        matmul_integer (a, b, a_zero, b_zero) -> int32: sum of zero-point-centred
                  products; each zero point broadcasts (numpy) against its operand
                  conv_integer(strides, pads, dilations, groups) (x, w, x_zero, w_zero)
                  -> int32, padding is the input's zero point (0 once centred)

The bit operations are C helpers (te.bitwise); the anchors' te computes are in
te_integer.py (no template: exact int32 sums in portable C)."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .. import te
from .graph_ir import ModelError
from .ops_def import OpDef, _bcast, _err, _nary, _same, _takes, _unary

INTS = ("int8", "uint8", "int16", "int32", "int64")
INT8S = ("int8", "uint8")


def _shift_ref(n, x, y):
    w = x.dtype.itemsize * 8
    out_of_range = (y < 0) | (y >= w)
    k = np.clip(y, 0, w - 1).astype(np.uint64)
    if n.attr("direction") == "LEFT":
        v = (x.astype(np.uint64) << k).astype(x.dtype)
        return np.where(out_of_range, np.zeros((), x.dtype), v)
    v = x >> k.astype(x.dtype)
    return np.where(out_of_range, np.where(x < 0, -1, 0).astype(x.dtype), v)


def _shift_expr(a, x, y):
    return te.bitwise("shl" if a["direction"] == "LEFT" else "shr", x, y)


def _bit(op: str, npfn):
    return OpDef("broadcast", _bcast, _takes(*INTS), lambda n, x, y: npfn(x, y),
                 _nary(lambda a, x, y: te.bitwise(op, x, y)))


# ------------------------------------------------------------------ integer anchors
def _zero_point_dtypes(ins, pairs) -> None:
    for data, zp in pairs:
        if ins[data][1] not in INT8S:
            raise _err(f"takes int8 or uint8, got {ins[data][1]}")
        if ins[zp][1] != ins[data][1]:
            raise _err(f"zero point is {ins[zp][1]}, its operand {ins[data][1]}")


def _matmul_integer_types(a, ins):
    _zero_point_dtypes(ins, ((0, 2), (1, 3)))
    (sa, _), (sb, _) = ins[0], ins[1]
    if len(sa) < 2 or len(sb) < 2 or sa[-1] != sb[-2]:
        raise _err(f"shapes {sa} and {sb} do not match", "shape")
    batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    return [(tuple(batch) + (sa[-2], sb[-1]), "int32")]


def _centred(x, zp):
    return x.astype(np.int64) - zp.astype(np.int64)


def _matmul_integer_ref(n, a, b, za, zb):
    return np.matmul(_centred(a, za), _centred(b, zb)).astype(np.int32)


def _conv_geometry(a, xs, ws):
    """(output height, output width) of a 2-D convolution, or a shape error."""
    g = a["groups"]
    if len(xs) != 4 or len(ws) != 4 or xs[1] != ws[1] * g or ws[0] % g:
        raise _err(f"input {xs} and weight {ws} do not match with groups={g}", "shape")
    t, l, b, r = a["pads"]
    out = []
    for size, k, s, d, lo, hi in ((xs[2], ws[2], a["strides"][0], a["dilations"][0], t, b),
                                  (xs[3], ws[3], a["strides"][1], a["dilations"][1], l, r)):
        span = size + lo + hi - ((k - 1) * d + 1)
        if span < 0:
            raise _err(f"kernel {ws[2:]} larger than the padded input {xs[2:]}", "shape")
        out.append(span // s + 1)
    return tuple(out)


def _conv_integer_types(a, ins):
    _zero_point_dtypes(ins, ((0, 2), (1, 3)))
    (xs, _), (ws, _) = ins[0], ins[1]
    return [((xs[0], ws[0]) + _conv_geometry(a, xs, ws), "int32")]


def _conv_integer_ref(n, x, w, zx, zw):
    a = n.attr_dict
    (sh, sw), (dh, dw), (t, l, b, r), g = a["strides"], a["dilations"], a["pads"], a["groups"]
    oh, ow = _conv_geometry(a, x.shape, w.shape)
    xc, wc = _centred(x, zx), _centred(w, zw)
    xp = np.pad(xc, ((0, 0), (0, 0), (t, b), (l, r)))     # centred: padding is 0
    F, Cg, KH, KW = w.shape
    Fg = F // g
    out = np.zeros((x.shape[0], F, oh, ow), np.int64)
    for ky in range(KH):
        for kx in range(KW):
            patch = xp[:, :, ky * dh:ky * dh + sh * (oh - 1) + 1:sh,
                       kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
            for k in range(g):
                out[:, k * Fg:(k + 1) * Fg] += np.einsum(
                    "ncyx,fc->nfyx", patch[:, k * Cg:(k + 1) * Cg], wc[k * Fg:(k + 1) * Fg, :, ky, kx])
    return out.astype(np.int32)


def _anchor_fn(node, ins, graph, inputs):
    # an anchor starts its group, whose kernel te_anchors builds (te_integer.py)
    raise ModelError(f"node {node.name!r}: {node.op} is an anchor; te_integer computes it",
                     "unsupported_op")


INTEGER_OPS: Mapping[str, OpDef] = {
    "bitwise_and": _bit("bitand", np.bitwise_and),
    "bitwise_or": _bit("bitor", np.bitwise_or),
    "bitwise_xor": _bit("bitxor", np.bitwise_xor),
    "bitwise_not": OpDef("elementwise", _same, _takes(*INTS), lambda n, x: np.invert(x),
                         _unary(lambda x, a: te.bitwise("bitnot", x))),
    "bitshift": OpDef("broadcast", _bcast, _takes(*INTS), _shift_ref, _nary(_shift_expr)),
    "matmul_integer": OpDef("anchor", None, None, _matmul_integer_ref, _anchor_fn,
                            outputs=_matmul_integer_types),
    "conv_integer": OpDef("anchor", None, None, _conv_integer_ref, _anchor_fn,
                          outputs=_conv_integer_types),
}
