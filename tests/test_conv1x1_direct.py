"""1x1 stride-1 convolutions read their GEMM's B matrix straight from the input
(cgen.ops.conv.gemm, knob col="direct").

Without padding or stride, the unfolded block of a 1x1 convolution is the input itself
([C][H*W], row k at stride H*W), so the old copy into a KC x NC buffer ("col") only cost
time -- most in layers with few output channels, where few tile rows share it.  Checked:
which workloads offer the knob, the default per target, the emitted C (no col buffer,
the tile kernel called on the input), outputs against numpy on x86-avx2, x86-avx512,
generic-c, aarch64 and cortex-m4 (QEMU), and a one-layer model through compile_model.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import cgen
from cgen.ops.conv import Conv2dGemmTemplate, gemm_default_mr
from cgen.ops.conv.gemm import input_is_b
from tests.util import assert_matches

T = Conv2dGemmTemplate("conv2d_1x1", only_1x1=True)


def _wl(C, F, H, W, target, **kw):
    base = T.workload(1, C, H, W, F, 1, 1, **kw)
    return T.workload(1, C, H, W, F, 1, 1, weights="packed",
                      oc_bn=gemm_default_mr(base, target), **kw)


def _run(wl, target, col=None):
    """(C source, output) of the target's default config, with col overridden; the
    output checked against the template's numpy reference."""
    sp = T.space(wl, target)
    cfg = T.default(wl, target).to_dict()
    if col is not None:
        cfg["col"] = col
    s, args = T.build(wl, target, sp.get(sp.index_of(cfg)))
    mod = cgen.build(s, args, target=target, name="c1x1")
    rng = np.random.default_rng(11)
    ins = T.inputs(wl, rng)
    ref = T.reference(wl, ins)["Y"]
    ins[-1][...] = np.nan
    mod(*ins)
    assert_matches(ins[-1], ref)
    return mod.c_source


def test_knob_only_where_the_input_is_b():
    """col="direct" is a choice exactly for 1x1, stride 1, no padding; elsewhere only the copy."""
    im2col = Conv2dGemmTemplate("conv2d_im2col")
    cases = [(T.workload(1, 16, 8, 8, 24, 1, 1), True),
             (T.workload(1, 16, 8, 8, 24, 1, 1, stride=2), False),
             (T.workload(1, 16, 8, 8, 24, 1, 1, pad=1), False),
             (T.workload(1, 16, 8, 8, 24, 1, 1, groups=4), True),
             (im2col.workload(1, 16, 8, 8, 24, 3, 3, pad=1), False)]
    for wl, direct in cases:
        assert input_is_b(wl) is direct
        for target in ("x86-avx2", "aarch64", "generic-c"):
            tm = im2col if wl["KH"] == 3 else T
            choices = dict((k.name, k.choices) for k in tm.space(wl, target).knobs)["col"]
            assert choices == (("direct", "copy") if direct else ("copy",))
            assert tm.default(wl, target)["col"] == ("direct" if direct else "copy")


@pytest.mark.isa("avx2")
@pytest.mark.parametrize("C, F, H", [(32, 24, 12), (24, 16, 7), (40, 20, 14)])
def test_direct_emits_no_copy_x86_avx2(C, F, H):
    """x86-avx2: no col buffer; the register tile reads B at &X[...] with row stride H*W;
    with the copy the same workload still has its buffer (the test can tell them apart)."""
    wl = _wl(C, F, H, H, "x86-avx2")
    src = _run(wl, "x86-avx2")
    assert not re.search(r"\bcol\b", src)
    calls = re.findall(r"cg_tile_\w+\(([^;{]*&[^;{]*)\);", src)    # calls pass addresses
    assert calls and all(re.search(rf"&X\[[^\]]*\], {H * H},", c) for c in calls), calls
    assert re.search(r"\bcol\b", _run(wl, "x86-avx2", col="copy"))


@pytest.mark.isa("avx512")
def test_direct_x86_avx512_grouped():
    wl = _wl(32, 48, 9, 9, "x86-avx512", groups=2)
    assert not re.search(r"\bcol\b", _run(wl, "x86-avx512"))


def test_direct_generic_c():
    wl = _wl(12, 10, 5, 6, "generic-c")
    assert not re.search(r"\bcol\b", _run(wl, "generic-c"))


@pytest.mark.qemu
def test_direct_aarch64_qemu():
    """aarch64 under QEMU: the NEON tile reads the input in place, outputs match numpy."""
    wl = _wl(24, 16, 10, 10, "aarch64")
    src = _run(wl, "aarch64")
    assert not re.search(r"\bcol\b", src)
    assert "cg_tile_" in src


@pytest.mark.qemu
def test_direct_cortex_m4_qemu():
    """cortex-m4 (qemu-system-arm, scalar register tiles): the default reads in place too."""
    wl = _wl(8, 6, 5, 5, "cortex-m4")
    assert not re.search(r"\bcol\b", _run(wl, "cortex-m4"))


@pytest.mark.isa("avx2")
def test_model_1x1_residual_x86_avx2():
    """A 1x1 conv + bias + ReLU6 + residual add through compile_model on x86-avx2: its kernel
    copies no input block and matches numpy."""
    onnx = pytest.importorskip("onnx")
    from cgen.graph.model import compile_model
    from tests.util import conv1x1_relu6_model
    rng = np.random.default_rng(5)
    C, F, H = 48, 16, 14
    model, ref = conv1x1_relu6_model(C, F, H, residual=True)
    onnx.checker.check_model(model)
    cm = compile_model(model, "x86-avx2", name="pw")
    conv = [k for k in cm.kernels if k.template == "conv2d_1x1"]
    assert len(conv) == 1 and conv[0].config["col"] == "direct"
    assert not re.search(r"\bcol\b", cm.c_source)
    x = rng.standard_normal((1, C, H, H)).astype(np.float32)
    r = rng.standard_normal((1, F, H, H)).astype(np.float32)
    out = cm.run({"x": x, "r": r})["y"]
    assert_matches(out, ref(x, r))
