"""Converters of the integer ONNX ops (issue 12): MatMulInteger and ConvInteger onto the
exact int32 anchors of ops_integer.py, BitShift and the Bitwise ops onto its broadcast
ops.  Zero points left out are 0; a per-row (A) or per-output-channel (W) zero point is
reshaped so it broadcasts (numpy rules) against its operand."""
from __future__ import annotations

import numpy as np

from .onnx_convert import _as_2d, _finish_2d, _geometry, _matmul_like
from .onnx_convert_more import convert_simple
from .onnx_import import _inp, _refuse


def _zero_point(imp, n, i: int, data: str, trailing: int) -> str:
    """Input i (a zero point of `data`), 0 when left out; a vector of k > 1 values gets
    `trailing` unit axes so it lines up with its axis of `data`."""
    name = _inp(n, i)
    if name is None:
        return imp.add_const(np.zeros((), imp.v(data).dtype), f"{n.output[0]}__zero{i}")
    s = imp.v(name).shape
    if len(s) > 1:
        _refuse(imp, f"zero point {name!r} of shape {s}; cgen takes a scalar or a vector",
                "shape")
    if s and s[0] > 1 and trailing:
        return imp.reshape(name, s + (1,) * trailing, tag=f"zero{i}")
    return imp.resolve(name)


def convert_matmul_integer(imp, n, a):
    A, B = n.input[0], n.input[1]
    za = _zero_point(imp, n, 2, A, 1 if len(imp.v(A).shape) > 1 else 0)    # per row of A
    zb = _zero_point(imp, n, 3, B, 0)                                       # per column of B
    _matmul_like(imp, n, "matmul_integer", A, B, [], [za, zb])


def convert_conv_integer(imp, n, a):
    x, w = n.input[0], n.input[1]
    xs, ws = imp.v(x).shape, imp.v(w).shape
    kernel = list(a.get("kernel_shape", ws[2:]))
    if tuple(kernel) != tuple(ws[2:]):
        _refuse(imp, f"kernel_shape {kernel} differs from the weight's {ws[2:]}", "shape")
    nsp, strides, pads, dil = _geometry(imp, a, xs, kernel)
    zx = _zero_point(imp, n, 2, x, 0)
    if imp.v(zx).size != 1:
        _refuse(imp, "x_zero_point is not a scalar (ONNX allows one per tensor)", "shape")
    zw = _zero_point(imp, n, 3, w, 3)                          # per output channel
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "groups": a.get("group", 1)}
    _finish_2d(imp, n, "conv_integer", [_as_2d(imp, x, nsp), _as_2d(imp, w, nsp), zx, zw],
               attrs, nsp)


def convert_bitshift(imp, n, a):
    direction = a.get("direction")
    if direction not in ("LEFT", "RIGHT"):
        _refuse(imp, f"direction={direction!r}; ONNX defines LEFT and RIGHT")
    imp.emit("bitshift", [n.input[0], n.input[1]], {"direction": direction},
             outputs=[n.output[0]])


INTEGER_CONVERTERS = {
    "MatMulInteger": convert_matmul_integer, "ConvInteger": convert_conv_integer,
    "BitShift": convert_bitshift,
    "BitwiseAnd": convert_simple("bitwise_and", 2), "BitwiseOr": convert_simple("bitwise_or", 2),
    "BitwiseXor": convert_simple("bitwise_xor", 2), "BitwiseNot": convert_simple("bitwise_not"),
}
