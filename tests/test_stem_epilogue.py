"""A detector's convolutions as YOLO exports them: a 3-channel first layer and LeakyReLU
epilogues.  LeakyReLU was a select (x >= 0 ? x : alpha * x), which the vectorizer does
not take, so every conv's epilogue stayed a scalar loop (a 3 -> 16 3x3 conv at 256x256
with LeakyReLU: 3.9 ms, against 1.2 ms with ReLU); it is now max(x, 0) + alpha * min(x,
0).  And a 3-channel stride-1 conv went to the NCHWc template, whose 3-wide input block
and NCHW <-> NCHWc copies around it cost 2.9 ms against the im2col GEMM's 1.2 ms."""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cgen.graph.model import compile_model  # noqa: E402
from tests.util import assert_matches  # noqa: E402


def _conv_model(C, F, size, act="LeakyRelu"):
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array((rng.standard_normal((F, C, 3, 3)) * 0.3).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(F).astype(np.float32), "b")
    attrs = {"alpha": 0.1} if act == "LeakyRelu" else {}
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
         helper.make_node(act, ["c"], ["y"], **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, F, size, size])], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _ort(model, x):
    import onnxruntime as ort
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("target", [pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")),
                                    pytest.param("x86-avx512", marks=pytest.mark.isa("avx512"))])
def test_three_channel_conv_goes_to_the_gemm_and_leaky_relu_is_vector_code(target):
    model = _conv_model(3, 16, 32)
    cm = compile_model(model, target, name="stem")
    convs = [k for k in cm.kernels if k.template.startswith("conv2d")]
    assert [k.template for k in convs] == ["conv2d_im2col"]
    # the first definition: the vector one (a guarded build also has a portable fallback)
    body = cm.c_source.split(f"static int {convs[0].name}(")[1].split("\n}\n")[0]
    vmax = "_mm256_max_ps" if target == "x86-avx2" else "_mm512_max_ps"
    assert vmax in body and not re.search(r"\?\s*\(", body)
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    y = cm.run({"x": x})["y"]
    assert (y < 0).any() and (y > 0).any()
    assert_matches(y, _ort(model, x))


@pytest.mark.isa("avx2")
def test_wide_convs_keep_their_family_x86_avx2():
    """The rule is about the input block: 32 channels keep their template (Winograd)."""
    cm = compile_model(_conv_model(32, 32, 32), "x86-avx2", name="wide")
    assert [k.template for k in cm.kernels if k.template.startswith("conv2d")] == [
        "conv2d_winograd"]


@pytest.mark.qemu
def test_leaky_relu_epilogue_on_aarch64():
    model = _conv_model(3, 8, 12)
    cm = compile_model(model, "aarch64", name="stem")
    x = np.random.default_rng(3).standard_normal((1, 3, 12, 12)).astype(np.float32)
    assert_matches(cm.run({"x": x})["y"], _ort(model, x))
