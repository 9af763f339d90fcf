"""1x1 convolutions on small images (at most gemm.SMALL_IMAGE pixels, the 7x7 layers):
the default per ISA row (gemm.SMALL_IMAGE_ORDER) sweeps the whole pixel block under each
weight panel (order "ij") with a depth block of at most 128 channels whose B block stays in L1.  Measured on
x86-avx2 only; other rows keep order "ji" and the 256-channel depth block.  Checked: the
defaults per target, and the x86-avx2 default (three depth blocks, a masked column tail)
against numpy.  The packed weights of a layer whose depth is blocked are laid out by
depth block (gemm.weight_depth_block, workload key k_bn): checked per target, against
numpy, and in a compiled model against its reference on x86-avx2 and aarch64 (QEMU)."""
from __future__ import annotations

import numpy as np
import pytest

import cgen
from cgen.ops.conv import Conv2dGemmTemplate, gemm_default_mr
from cgen.ops.conv.gemm import L1_BYTES, SMALL_IMAGE, SMALL_IMAGE_KC, weight_depth_block
from cgen.ops.conv.packing import pack_weights_gemm_np, unpack_weights_gemm_np
from tests.util import assert_matches, conv1x1_relu6_model, default_matches_reference

T = Conv2dGemmTemplate("conv2d_1x1", only_1x1=True)


def _wl(C, F, H, target):
    base = T.workload(1, C, H, H, F, 1, 1)
    return T.workload(1, C, H, H, F, 1, 1, weights="packed", oc_bn=gemm_default_mr(base, target))


def _kcs(wl, target):
    return next(k.choices for k in T.space(wl, target).knobs if k.name == "kc")


@pytest.mark.parametrize("C, F", [(320, 1280), (960, 160), (160, 960)])
def test_small_image_default_x86_avx2(C, F):
    wl = _wl(C, F, 7, "x86-avx2")
    cfg = T.default(wl, "x86-avx2").to_dict()
    assert cfg["order"] == "ij"
    assert cfg["kc"] * 49 * 4 <= L1_BYTES
    assert cfg["kc"] == max(k for k in _kcs(wl, "x86-avx2")
                            if k <= SMALL_IMAGE_KC and k * 49 * 4 <= L1_BYTES) == 128
    # 14x14 is past the rule: the depth block and order of larger images
    big = _wl(C, F, 14, "x86-avx2")
    assert 14 * 14 > SMALL_IMAGE
    assert T.default(big, "x86-avx2").to_dict()["order"] == "ji"


@pytest.mark.parametrize("target", ["x86-avx512", "aarch64", "armv7", "rpi4", "generic-c"])
def test_small_image_default_unmeasured_rows(target):
    wl = _wl(320, 1280, 7, target)
    cfg = T.default(wl, target).to_dict()
    assert cfg["order"] == "ji" and cfg["kc"] == 256


@pytest.mark.isa("avx2")
def test_small_image_default_matches_x86_avx2():
    wl = _wl(320, 40, 7, "x86-avx2")
    cfg = default_matches_reference(T, wl, "x86-avx2", "c1x1_small", 3)
    assert cfg["order"] == "ij" and 320 % cfg["kc"]


@pytest.mark.parametrize("target, C, H, want", [
    ("x86-avx2", 320, 7, 80),       # kc 128 does not divide 320: its largest divisor below
    ("x86-avx2", 960, 7, 120),
    ("x86-avx2", 576, 14, 192),     # kc 256
    ("aarch64", 320, 7, 160),       # kc 256 there
    ("x86-avx2", 96, 56, None),     # kc is the whole depth: nothing to block
    ("x86-avx2", 160, 14, None)])
def test_weight_depth_block_per_target(target, C, H, want):
    wl = _wl(C, 64, H, target)
    kb = weight_depth_block(T, wl, target)
    assert kb == want
    if kb is not None:
        blocked = T.workload(1, C, H, H, 64, 1, 1, weights="packed", oc_bn=wl["oc_bn"], k_bn=kb)
        assert _kcs(blocked, target) == (kb,)
        assert T.default(blocked, target)["kc"] == kb


def test_depth_blocked_packing_roundtrips_and_is_block_major():
    w = np.random.default_rng(1).standard_normal((22, 6, 3, 2)).astype(np.float32)
    a = pack_weights_gemm_np(w, 2, 5, kb=12)      # 11 rows per group in 3 panels of 5, 36 deep
    assert a.shape == (2, 3, 3, 12, 5)
    # depth block 1 of panel 2 of group 1: its row k of 12 is depth 12 + k of filter 11 + 10
    assert a[1, 1, 2, 4, 0] == w[11 + 10].reshape(-1)[12 + 4]
    assert not a[1, :, 2, :, 1:].any()            # rows past a group's 11 are zero
    np.testing.assert_array_equal(unpack_weights_gemm_np(a, 22, 6, 3, 2), w)
    with pytest.raises(ValueError, match="does not divide"):
        pack_weights_gemm_np(w, 2, 5, kb=10)
    with pytest.raises(ValueError, match="k_bn"):
        T.workload(1, 320, 7, 7, 40, 1, 1, weights="packed", oc_bn=4, k_bn=96)
    with pytest.raises(ValueError, match="k_bn"):
        T.workload(1, 320, 7, 7, 40, 1, 1, k_bn=80)


@pytest.mark.isa("avx2")
@pytest.mark.parametrize("F", [40, 38])       # 38: the last panel has two zero rows
def test_depth_blocked_weights_match_x86_avx2(F):
    wl = T.workload(1, 320, 7, 7, F, 1, 1, weights="packed", oc_bn=4, k_bn=80)
    s, args = T.build(wl, "x86-avx2", T.default(wl, "x86-avx2"))
    mod = cgen.build(s, args, target="x86-avx2", name="c1x1_kb")
    assert "cg_tile_" in mod.c_source
    ins = T.inputs(wl, np.random.default_rng(4))
    assert ins[1].ndim == 5
    ref = T.reference(wl, ins)["Y"]
    ins[-1][...] = np.nan
    mod(*ins)
    assert_matches(ins[-1], ref)


@pytest.mark.parametrize("target", [pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")),
                                    pytest.param("aarch64", marks=pytest.mark.qemu)])
def test_model_packs_blocked_weights_and_matches(target):
    pytest.importorskip("onnx")
    from cgen.graph.model import compile_model
    model, ref = conv1x1_relu6_model(320, 24, 7)
    cm = compile_model(model, target, name="kb")
    (k,) = [k for k in cm.kernels if k.template == "conv2d_1x1"]
    assert k.workload["k_bn"] and k.config["kc"] == k.workload["k_bn"] < 320
    x = np.random.default_rng(2).standard_normal((1, 320, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(cm.run({"x": x})["y"], ref(x), rtol=1e-4, atol=1e-4)
