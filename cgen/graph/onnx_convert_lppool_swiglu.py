"""Converters of LpPool and SwiGLU (issue 12), compositions of canonical ops.

LpPool: (sum over the window of |x|^p)^(1/p) = (avg_pool(|x|^p), padding counted, times
the window size)^(1/p); padding contributes |0|^p = 0 as ONNX pads.  SwiGLU(A, B) =
swish_alpha(A) * B."""
from __future__ import annotations

import numpy as np

from .onnx_convert import convert_pool
from .onnx_import import _onnx, _refuse


def _power(imp, x: str, p: float, tag: str) -> str:
    if p == 1.0:
        return x
    if p == 2.0:
        return imp.emit("mul", [x, x], tag=tag)[0]
    if p == 0.5:
        return imp.emit("sqrt", [x], tag=tag)[0]
    k = imp.add_const(np.asarray(p, np.float32), f"{tag}__p")
    return imp.emit("pow", [x, k], tag=tag)[0]


def convert_lp_pool(imp, n, a):
    p = float(a.get("p", 2))
    if p <= 0:
        _refuse(imp, f"p={a.get('p')}; cgen takes p > 0")
    if imp.v(n.input[0]).dtype != "float32":
        _refuse(imp, f"input is {imp.v(n.input[0]).dtype}; cgen pools float32",
                "unsupported_dtype")
    x = _power(imp, imp.emit("abs", [n.input[0]], tag="abs")[0], p, "pow")
    pooled = imp.fresh(f"{n.output[0]}__sum")
    attrs = {k: v for k, v in a.items() if k != "p"}
    avg = _onnx().helper.make_node("AveragePool", [x], [pooled], name=n.name,
                                   count_include_pad=1, **attrs)
    convert_pool("avg")(imp, avg, {**attrs, "count_include_pad": 1})
    area = int(np.prod(a["kernel_shape"]))
    k = imp.add_const(np.asarray(area, np.float32), f"{n.output[0]}__area")
    s = imp.emit("mul", [pooled, k], tag="sum")[0]
    y = _power(imp, s, 1.0 / p, "root")
    imp.alias[n.output[0]] = imp.resolve(y)


def convert_swiglu(imp, n, a):
    if imp.v(n.input[0]).shape != imp.v(n.input[1]).shape:
        _refuse(imp, "A and B differ in shape (SwiGLU does not broadcast)", "shape")
    g = imp.emit("swish", [n.input[0]], {"alpha": float(a.get("alpha", 1.0))}, tag="swish")[0]
    imp.emit("mul", [g, n.input[1]], outputs=[n.output[0]])


LPPOOL_SWIGLU_CONVERTERS = {"LpPool": convert_lp_pool, "SwiGLU": convert_swiglu}
