"""Scalar float min / max in an x86 kernel's ISA version are maxss / minss (the ISA row's
scalar_minmax), not the portable `a > b ? a : b` helpers: gcc 12 turns a clamp's max
against a constant into a jump (it threads the min past it), and values on both sides
of the bound mispredict it (an NCHWc -> NCHW Clip(0, 6) epilogue over random data, 32
channels at 128x128 on x86-avx512: 5.5 ms with the jumps, 3.0 without).  maxss is C's
a > b ? a : b exactly, so the result is the portable build's, NaN and signed zeros
included."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cgen.codegen.isa import AVX2, AVX512, NEON_AARCH64  # noqa: E402
from cgen.graph.model import compile_model  # noqa: E402


def _conv_clip():
    """A 3x3 conv on 16 channels at 6x6 (direct NCHWc: too few tiles for Winograd), whose
    NCHWc -> NCHW epilogue clamps in scalar code."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array((rng.standard_normal((16, 16, 3, 3)) * 0.3).astype(np.float32), "w")
    lo = numpy_helper.from_array(np.array(0.0, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(0.5, np.float32), "hi")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
         helper.make_node("Clip", ["c", "lo", "hi"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 6, 6])], [w, lo, hi])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _fast_section(src: str, macro: str, kernel: str) -> str:
    start = src.index(f"#if defined({macro})\nstatic int {kernel}(")
    return src[start:src.index("#else", start)]


@pytest.mark.parametrize("target,macro", [
    pytest.param("x86-avx2", "__AVX2__", marks=pytest.mark.isa("avx2")),
    pytest.param("x86-avx512", "__AVX512F__", marks=pytest.mark.isa("avx512"))])
def test_an_x86_kernels_scalar_clamp_is_maxss_and_matches_the_portable_build(target, macro):
    model = _conv_clip()
    cm = compile_model(model, target, name="cc")
    (k,) = [k for k in cm.kernels if k.template == "conv2d_nchwc"]
    fast = _fast_section(cm.c_source, macro, k.name)
    assert "_mm_max_ss(" in fast and "_mm_min_ss(" in fast, fast[-600:]
    assert "cg_max_f32(" not in fast and "cg_min_f32(" not in fast
    x = np.random.default_rng(4).standard_normal((1, 16, 6, 6)).astype(np.float32)
    # NaN and infinities reach the clamp; a > b ? a : b gives the bound for NaN
    x[0, 0, 0, 0], x[0, 3, 5, 5], x[0, 7, 2, 3] = np.nan, np.inf, -np.inf
    got = cm.run({"x": x})["y"]
    want = compile_model(model, "generic-c", name="cc").run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)    # sums in another order
    assert np.isfinite(got).all() and got.min() >= 0 and got.max() <= 0.5


def test_only_x86_rows_have_scalar_minmax():
    """NEON's fmax / fmaxnm differ from a > b ? a : b on NaN: no row entry there."""
    assert set(AVX2.scalar_minmax) == set(AVX512.scalar_minmax) == {"min", "max"}
    assert not NEON_AARCH64.scalar_minmax
