"""erf, tanh and sigmoid as arithmetic only (te_ops): accurate in float32 against libm, and
an exported GELU epilogue stays vectorised (x86-avx2 intrinsics in the emitted kernel)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cgen import te
from cgen.graph.te_ops import erf_rational, sigmoid_rational, tanh_rational

X = np.concatenate([np.linspace(-9, 9, 4001), [-1e-6, 0.0, 1e-6, 30.0, -30.0]]).astype(np.float32)


def _eval(fn) -> np.ndarray:
    import cgen
    A = te.placeholder((X.size,), "float32", name="A")
    B = te.compute((X.size,), lambda i: fn(A[i]), name="B")
    mod = cgen.build(te.create_schedule(B), [A, B], target="generic-c")
    out = np.zeros_like(X)
    mod(X, out)
    return out


@pytest.mark.parametrize("fn,ref,tol", [(erf_rational, math.erf, 4e-7),
                                        (tanh_rational, math.tanh, 4e-7),
                                        (sigmoid_rational, lambda v: 1 / (1 + math.exp(-v)), 3e-7)])
def test_rational_forms_match_libm_in_float32(fn, ref, tol):
    got = _eval(fn)
    want = np.array([ref(float(v)) for v in X])
    assert np.abs(got - want).max() < tol


def test_exported_gelu_epilogue_is_vectorised():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper as h, numpy_helper
    from cgen.graph.model import compile_model
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w")
    c = {k: numpy_helper.from_array(np.array(v, np.float32), k)
         for k, v in (("s2", math.sqrt(2)), ("one", 1.0), ("half", 0.5))}
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Div", ["m", "s2"], ["d"]),
             h.make_node("Erf", ["d"], ["e"]), h.make_node("Add", ["e", "one"], ["a"]),
             h.make_node("Mul", ["m", "a"], ["p"]), h.make_node("Mul", ["p", "half"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [16, 64])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [16, 128])], [w, *c.values()])
    cm = compile_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), "x86-avx2",
                       name="gelu")
    body = cm.c_source.rsplit("int gelu_run(", 1)[0]
    assert "erff(" not in body and "_mm256_div_ps" in body
    x = rng.standard_normal((16, 64)).astype(np.float32)
    m = x @ numpy_helper.to_array(w)
    want = 0.5 * m * (1 + np.vectorize(math.erf)(m / math.sqrt(2)))
    np.testing.assert_allclose(cm.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
