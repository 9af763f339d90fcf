"""Direct NCHW / NHWC conv2d templates: random configs of each match numpy."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from cgen.autotune.measure import matches
from cgen.ops.conv.direct import direct_conv_templates
from cgen.ops.registry import templates

SHAPES = [  # N, C, H, W, F, KH, KW, stride, pad, dilation
    (1, 3, 9, 11, 13, 3, 3, 1, 1, 1),
    (1, 7, 10, 7, 5, 3, 3, 2, (1, 0, 2, 1), 1),
    (2, 4, 8, 8, 17, 1, 1, 1, 0, 1),
    (1, 5, 12, 9, 8, 3, 2, 1, 2, 2),
    (1, 16, 6, 6, 32, 3, 3, 1, 1, 1),
]
CONFIGS_PER_SHAPE = 10  # 5 shapes x (10 random + the default) >= 50 configs per template per run


def _run(t, wl, cfg, target="host"):
    import cgen
    s, args = t.build(wl, target, cfg)
    mod = cgen.build(s, args, target=target, name=t.name)
    arrays = t.inputs(wl, np.random.default_rng(7))
    arrays[-1][...] = np.nan
    mod(*arrays)
    ref = t.reference(wl, arrays)["Y"]
    assert matches(arrays[-1], ref), (cfg.to_dict(), np.nanmax(np.abs(arrays[-1] - ref)))


@pytest.mark.parametrize("template", direct_conv_templates(), ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=[str(k) for k in range(len(SHAPES))])
def test_random_configs_match_numpy(template, shape):
    N, C, H, W, F, KH, KW, stride, pad, dil = shape
    wl = template.workload(N, C, H, W, F, KH, KW, stride, pad, dil)
    sp = template.space(wl, "host")
    rng = np.random.default_rng(zlib.crc32(repr((template.name, shape)).encode()))  # derandomised
    cfgs = [template.default(wl, "host")] + sp.sample(rng, CONFIGS_PER_SHAPE)
    for cfg in cfgs[:CONFIGS_PER_SHAPE + 1]:
        _run(template, wl, cfg)


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
@pytest.mark.parametrize("template", direct_conv_templates(), ids=lambda t: t.name)
def test_default_under_qemu(template, target):
    wl = template.workload(1, 5, 9, 10, 11, 3, 3, 1, 1, 1)
    _run(template, wl, template.default(wl, target), target)


def test_space_roundtrip_and_registry():
    table = templates()
    for t in direct_conv_templates():
        assert t.name in table
        wl = t.workload(1, 8, 14, 14, 16, 3, 3, 1, 1, 1)
        for target in ("host", "x86-avx2", "aarch64", "armv7", "generic-c"):
            sp = t.space(wl, target)
            d = t.default(wl, target)
            assert sp.get(d.index) == d and sp.from_json(d.to_json()) == d
