"""ConvTranspose with kernel == stride (U-Net's up-convolution): a 1x1 convolution through
the GEMM templates plus a pixel shuffle, checked against onnxruntime; other geometries
keep the direct form."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper as h, numpy_helper  # noqa: E402

from cgen.graph.model import compile_model  # noqa: E402


def _model(C, F, H, W, k, s, pads=(0, 0, 0, 0), bias=True):
    rng = np.random.default_rng(k * 10 + s)
    inits = [numpy_helper.from_array(rng.standard_normal((C, F, k, k)).astype(np.float32), "W")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(F).astype(np.float32), "B"))
    oh, ow = (H - 1) * s + k - pads[0] - pads[2], (W - 1) * s + k - pads[1] - pads[3]
    g = h.make_graph([h.make_node("ConvTranspose", ["X", "W"] + (["B"] if bias else []), ["Y"],
                                  strides=[s, s], kernel_shape=[k, k], pads=list(pads))], "g",
                     [h.make_tensor_value_info("X", TensorProto.FLOAT, [1, C, H, W])],
                     [h.make_tensor_value_info("Y", TensorProto.FLOAT, [1, F, oh, ow])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    x = rng.standard_normal((1, C, H, W)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"X": x})[0]
    return m, x, want


@pytest.mark.parametrize("target", ["x86-avx2", "x86-avx512", "generic-c"])
@pytest.mark.parametrize("k,bias", [(2, True), (2, False), (3, True)])
def test_kernel_equal_to_stride_is_a_gemm_and_a_shuffle(target, k, bias):
    m, x, want = _model(16, 8, 7, 9, k, k, bias=bias)
    cm = compile_model(m, target, name="up")
    templates = [kk.template for kk in cm.kernels if not kk.is_alias]
    assert templates[0] in ("conv2d_1x1", "conv2d_im2col") and "conv2d_transpose" not in \
        " ".join(kk.describe() for kk in cm.kernels)
    np.testing.assert_allclose(cm.run({"X": x})["Y"], want, rtol=1e-4, atol=1e-4)


@pytest.mark.qemu
def test_kernel_equal_to_stride_on_aarch64():
    m, x, want = _model(16, 8, 6, 6, 2, 2)
    cm = compile_model(m, "aarch64", name="up")
    np.testing.assert_allclose(cm.run({"X": x})["Y"], want, rtol=1e-4, atol=1e-4)


def test_overlapping_kernels_keep_the_direct_form():
    m, x, want = _model(8, 4, 5, 5, 3, 2, pads=(1, 1, 1, 1))
    cm = compile_model(m, "x86-avx2", name="up")
    assert any("conv2d_transpose" in kk.describe() for kk in cm.kernels)
    np.testing.assert_allclose(cm.run({"X": x})["Y"], want, rtol=1e-4, atol=1e-4)
