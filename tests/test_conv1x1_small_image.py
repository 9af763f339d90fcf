"""1x1 convolutions on small images (at most gemm.SMALL_IMAGE pixels, the 7x7 layers):
the default per ISA row (gemm.SMALL_IMAGE_ORDER) sweeps the whole pixel block under each
weight panel (order "ij") with a depth block of at most 128 channels whose B block stays in L1.  Measured on
x86-avx2 only; other rows keep order "ji" and the 256-channel depth block.  Checked: the
defaults per target, and the x86-avx2 default (three depth blocks, a masked column tail)
against numpy."""
from __future__ import annotations

import numpy as np
import pytest

import cgen
from cgen.ops.conv import Conv2dGemmTemplate, gemm_default_mr
from cgen.ops.conv.gemm import L1_BYTES, SMALL_IMAGE, SMALL_IMAGE_KC
from tests.util import assert_matches

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
    sp = T.space(wl, "x86-avx2")
    cfg = T.default(wl, "x86-avx2")
    assert cfg.to_dict()["order"] == "ij" and 320 % cfg.to_dict()["kc"]
    s, args = T.build(wl, "x86-avx2", sp.get(cfg.index))
    mod = cgen.build(s, args, target="x86-avx2", name="c1x1_small")
    ins = T.inputs(wl, np.random.default_rng(3))
    ref = T.reference(wl, ins)["Y"]
    ins[-1][...] = np.nan
    mod(*ins)
    assert_matches(ins[-1], ref)
