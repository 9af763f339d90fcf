"""A 1x1 convolution of a 1x1 image (squeeze-excite, MobileNetV3's head) runs as the dense
template's matrix-vector product, with its epilogue, on every named target."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper as h  # noqa: E402

from cgen.graph.model import compile_model  # noqa: E402
from tests.test_graph_frontend import make_model, ort_run  # noqa: E402


def _squeeze_excite(c=48, s=12):
    r = np.random.default_rng(3)
    inits = {"w1": (r.standard_normal((s, c, 1, 1)) / np.sqrt(c)).astype(np.float32),
             "b1": r.standard_normal(s).astype(np.float32),
             "w2": (r.standard_normal((c, s, 1, 1)) / np.sqrt(s)).astype(np.float32),
             "b2": r.standard_normal(c).astype(np.float32)}
    nodes = [h.make_node("GlobalAveragePool", ["x"], ["g"]),
             h.make_node("Conv", ["g", "w1", "b1"], ["s1"], kernel_shape=[1, 1]),
             h.make_node("Relu", ["s1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2", "b2"], ["s2"], kernel_shape=[1, 1]),
             h.make_node("HardSigmoid", ["s2"], ["hs"], alpha=1 / 6, beta=0.5),
             h.make_node("Mul", ["x", "hs"], ["y"])]
    model = make_model(nodes, {"x": (1, c, 7, 7)}, ["y"], inits)
    return model, {"x": r.standard_normal((1, c, 7, 7)).astype(np.float32)}


@pytest.mark.parametrize("target", [pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")),
                                    "aarch64", "cortex-m4"])
def test_squeeze_excite_convs_are_dense(target):
    model, feeds = _squeeze_excite()
    cm = compile_model(model, target, name="se")
    convs = [k for k in cm.kernels if k.group.nodes[0].op == "conv2d"]
    assert len(convs) == 2 and all(k.template == "dense" for k in convs), \
        [(k.name, k.template) for k in convs]
    assert not any(k.fallback for k in cm.kernels)
    if target == "cortex-m4":
        return      # the cortex-m4 model runs are in tests/test_cortex_m4.py
    got = cm.run(feeds)["y"]
    want = ort_run(model, feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
