"""The GEMM conv default's register tile where no block and tile leave no tail column.

On x86-avx2 tails run in the masked micro-kernel, so the default no longer takes the
tile with the fewest tail columns when that tile holds too few accumulators to hide the
FMA latency (fewer than half the vector registers): SqueezeNet 1.1's 512->1000 1x1 at
13x13 ran 5x8 tiles (5 accumulators) and its 3x3/2 stem at 111x111 4x8 tiles.  Nor does
it keep a pixel block that is not a multiple of the epilogue's vector split (the fused
producer computed a second, 3-column block after each 333-pixel one).  Where tails run
outside the micro-kernel (NEON), the fewest tail columns still rank first."""
from __future__ import annotations

import pytest

from cgen.ops.conv import Conv2dGemmTemplate
from cgen.ops.conv.gemm import _pixel_tiling
from cgen.ops.conv.tile import column_tails_ok
from cgen.ops.conv.workload import block_lanes, out_size
from targets import resolve
from tests.util import default_matches_reference

ONE = Conv2dGemmTemplate("conv2d_1x1", only_1x1=True)
IM2COL = Conv2dGemmTemplate("conv2d_im2col")

# (template, C, H, F, kernel, stride, pad, rows per weight panel): SqueezeNet 1.1 layers
LAYERS = {
    "classifier 512->1000 at 13x13": (ONE, 512, 13, 1000, 1, 1, 0, 5),
    "fire 256->32 at 13x13": (ONE, 256, 13, 48, 1, 1, 0, 6),
    "stem 3->64 3x3/2 at 224": (IM2COL, 3, 224, 64, 3, 2, 0, 4),
    "fire 64->16 at 55x55": (ONE, 64, 55, 16, 1, 1, 0, 4),
}
# the pixel block each takes on x86-avx2: whole 16-pixel vector pairs, or the image
BLOCK = {"classifier 512->1000 at 13x13": 169, "fire 256->32 at 13x13": 169,
         "stem 3->64 3x3/2 at 224": 1776, "fire 64->16 at 55x55": 880}


def _wl(tm, C, H, F, k, s, p, mr):
    return tm.workload(1, C, H, H, F, k, k, stride=s, pad=p, weights="packed", oc_bn=mr)


def _accumulators(cfg, target):
    return cfg["mr"] * (cfg["nr"] // block_lanes(resolve(target)))


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_x86_avx2_tiles_hide_the_fma_latency(layer):
    tm, *geo = LAYERS[layer]
    wl = _wl(tm, *geo)
    cfg = tm.default(wl, "x86-avx2").to_dict()
    assert _accumulators(cfg, "x86-avx2") >= resolve("x86-avx2").vector_registers // 2, cfg
    assert cfg["nr"] == 16
    assert cfg["nc"] == BLOCK[layer]
    assert cfg["nc"] % 16 == 0 or cfg["nc"] == out_size(wl)[0] * out_size(wl)[1]


def test_x86_avx2_block_divisible_by_the_image_is_kept():
    """MobileNetV2's 14x14 1x1 layers: the whole image (196 pixels) stays the block."""
    wl = _wl(ONE, 96, 14, 576, 1, 1, 0, 6)
    assert ONE.default(wl, "x86-avx2").to_dict()["nc"] == 196


@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_tails_outside_the_micro_kernel_keep_the_fewest_tail_columns(target):
    assert not column_tails_ok(resolve(target))
    tm, *geo = LAYERS["classifier 512->1000 at 13x13"]
    wl = _wl(tm, *geo)
    cfg = tm.default(wl, target).to_dict()
    nrs = tm._nr_choices(resolve(target), cfg["mr"])
    OH, OW = out_size(wl)
    nr, nc = _pixel_tiling(tm.space(wl, target), nrs, OH * OW, cfg["kc"],
                           2 * block_lanes(resolve(target)))
    assert (cfg["nr"], cfg["nc"]) == (nr, nc)
    assert (OH * OW) % nr == min((OH * OW) % n for n in nrs)


@pytest.mark.isa("avx2")
def test_x86_avx2_wide_tile_with_a_masked_tail_matches_numpy():
    wl = _wl(ONE, 64, 13, 40, 1, 1, 0, 5)        # 169 pixels: 10 tiles of 16 and a tail of 9
    cfg = default_matches_reference(ONE, wl, "x86-avx2", "c1x1_wide_tile", 5)
    assert cfg["nr"] == 16 and cfg["micro"] == "masked"
