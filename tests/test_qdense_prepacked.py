"""A QLinearMatMul's constant int8 weights reach the qdense kernel prepacked (N, K) at
compile time (cgen.graph.routes): the kernel has no run-time transpose of them, and the
model still equals onnxruntime (aarch64 under QEMU, x86-avx2)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper as h  # noqa: E402

from cgen.graph.model import compile_model  # noqa: E402
from tests.test_graph_frontend import make_model, ort_run  # noqa: E402


def qlinear_fc(r, K=40, N=24):
    inits = {"xs": np.array(0.03, np.float32), "xz": np.array(3, np.int8),
             "w": r.integers(-64, 64, (K, N)).astype(np.int8),
             "ws": np.array(0.01, np.float32), "wz": np.array(0, np.int8),
             "ys": np.array(0.4, np.float32), "yz": np.array(-5, np.int8)}
    nodes = [h.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])]
    return make_model(nodes, {"x": (3, K)}, ["y"], inits,
                      dtypes={"x": TensorProto.INT8, "y": TensorProto.INT8})


@pytest.mark.parametrize("target", ["aarch64", "x86-avx2"])
def test_qlinear_matmul_weights_are_prepacked(target):
    r = np.random.default_rng(5)
    model = qlinear_fc(r)
    cm = compile_model(model, target, name="qfc")
    src = cm.c_source
    # the weights' argument is the prepacked (N, K) constant, read in place: no K x N
    # transpose buffer is allocated and filled on every call
    assert "Bt" not in src
    feeds = {"x": r.integers(-128, 128, (3, 40)).astype(np.int8)}
    got = cm.run(feeds)["y"]
    want = ort_run(model, feeds)["y"]
    assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1
