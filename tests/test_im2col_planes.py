"""conv2d_im2col col="planes": a stride-2 layer unfolds from its zero-padded input split
into four (row parity, column parity) planes, where each tap is a stride-1 read, so the
unfolded rows are vector copies (the strided copy with a bounds test per element cost a
3-channel stem three times its GEMM on x86-avx2).  The default per ISA row is
gemm.STRIDED_COL: planes on x86-avx2 and NEON (aarch64, armv7), the strided copy
elsewhere (measured slower with planes on x86-avx512; unmeasured rows keep the copy)."""
from __future__ import annotations

import re

import numpy as np
import pytest

import cgen
from cgen.ops.conv.gemm import STRIDED_COL, reads_planes
from cgen.ops.registry import templates

TM = templates()["conv2d_im2col"]
CASES = [  # C, H, W, F, K, pad: a stem, odd sizes, asymmetric padding, a 5x5 window
    (3, 30, 30, 8, 3, (1, 1, 1, 1)),
    (4, 17, 13, 6, 5, (2, 1, 2, 2)),
    (2, 9, 11, 4, 3, (0, 0, 1, 1)),
]


def _wl(C, H, W, F, K, pad):
    return TM.workload(1, C, H, W, F, K, K, groups=1, weights="packed", stride=[2, 2],
                       pad=list(pad), dilation=[1, 1], oc_bn=2)


@pytest.mark.parametrize("target", [
    pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")),
    pytest.param("x86-avx512", marks=pytest.mark.isa("avx512")),
    "aarch64", "armv7", "generic-c"])
def test_planes_match_the_reference(target):
    for case in CASES:
        wl = _wl(*case)
        cfg = TM.space(wl, target).nearest({**TM.default(wl, target).to_dict(), "col": "planes"})
        assert cfg.to_dict()["col"] == "planes"
        s, args = TM.build(wl, target, cfg)
        mod = cgen.build(s, args, target=target)
        ins = TM.inputs(wl, np.random.default_rng(5))
        ins[-1][...] = np.nan
        mod(*ins)
        np.testing.assert_allclose(ins[-1], TM.reference(wl, ins)["Y"], rtol=1e-5, atol=1e-5,
                                   err_msg=f"{target} {case}")


def test_planes_unfold_with_vector_copies_x86_avx2():
    """The unfolded rows are AVX2 loads from Q, with no bounds test: the padding is Q's."""
    wl = _wl(3, 224, 224, 16, 3, (1, 1, 1, 1))
    cfg = TM.default(wl, "x86-avx2")
    assert cfg.to_dict()["col"] == "planes"
    s, args = TM.build(wl, "x86-avx2", cfg)
    src = cgen.build(s, args, target="x86-avx2").c_source
    fills = [ln for ln in src.splitlines() if re.search(r"\bcol\[[^\]]*\]\s*=|storeu_ps\(&col\[", ln)]
    assert fills and all("_mm256_loadu_ps(&Q[" in ln and "?" not in ln for ln in fills), fills


@pytest.mark.parametrize("target", [
    pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")), "aarch64", "armv7", "generic-c"])
def test_planes_are_made_per_unfolded_block(target):
    """Two depth blocks of 8 channels and bands of two output rows (the last one short):
    each block makes only its channels' planes over its rows and a halo, so Q is a
    block's size, not the whole padded input's (4.4 MB for YOLO's 16 -> 32 at 256x256),
    and the result still matches."""
    C, H, W, K = 16, 37, 41, 3
    wl = _wl(C, H, W, 8, K, (1, 1, 1, 1))
    OW = (W + 2 - K) // 2 + 1
    cfg = TM.space(wl, target).nearest(
        {**TM.default(wl, target).to_dict(), "col": "planes", "kc": 8 * K * K, "nc": 2 * OW})
    assert (cfg.to_dict()["kc"], cfg.to_dict()["nc"], cfg.to_dict()["col"]) == \
        (8 * K * K, 2 * OW, "planes")
    s, args = TM.build(wl, target, cfg)
    mod = cgen.build(s, args, target=target)
    (q,) = [int(n) for n in re.findall(r"float Q\[(\d+)\]", mod.c_source)]
    assert q <= 8 * 4 * (2 + K) * (OW + 1) < C * 4 * (H // 2 + 2) * (OW + 1), q
    ins = TM.inputs(wl, np.random.default_rng(7))
    ins[-1][...] = np.nan
    mod(*ins)
    np.testing.assert_allclose(ins[-1], TM.reference(wl, ins)["Y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target,want", [("x86-avx2", "planes"), ("x86-avx512", "copy"),
                                         ("aarch64", "planes"), ("armv7", "planes"),
                                         ("rpi4", "planes"), ("cortex-m4", "copy"),
                                         ("generic-c", "copy")])
def test_default_unfolding_per_isa(target, want):
    wl = _wl(3, 64, 64, 16, 3, (1, 1, 1, 1))
    assert reads_planes(wl)
    assert TM.default(wl, target).to_dict()["col"] == want
    assert set(STRIDED_COL.values()) <= {"planes", "copy"}
    # stride 1, or a dilated window, has no planes
    one = TM.workload(1, 3, 16, 16, 8, 3, 3, weights="packed", stride=[1, 1], pad=[1] * 4,
                      dilation=[1, 1], oc_bn=2)
    dil = TM.workload(1, 3, 16, 16, 8, 3, 3, weights="packed", stride=[2, 2], pad=[2] * 4,
                      dilation=[2, 2], oc_bn=2)
    for w in (one, dil):
        assert not reads_planes(w)
        assert "planes" not in next(k.choices for k in TM.space(w, target).knobs if k.name == "col")


@pytest.mark.isa("avx2")
def test_a_stride_2_stem_model_matches_onnxruntime_x86_avx2():
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from cgen.graph.model import compile_model
    from tests.util import assert_matches
    rng = np.random.default_rng(6)
    w = numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4, strides=[2, 2]),
         helper.make_node("HardSwish", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 45, 45])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 23, 23])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    cm = compile_model(model, "x86-avx2", name="stem")
    conv = next(k for k in cm.kernels if k.template == "conv2d_im2col")
    assert conv.config["col"] == "planes"
    x = rng.standard_normal((1, 3, 45, 45)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_matches(cm.run({"x": x})["y"], want)
