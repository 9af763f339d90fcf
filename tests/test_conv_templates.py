"""conv2d templates (cgen.ops.conv): random configs of random small
workloads against a numpy reference convolution.

Each host fuzz case (N_HOST per template per run, derandomised) draws, from a
generator seeded by (SEED, template, case), a workload (batch 1-2, channels and
groups, kernels 1-5 (3x3 for Winograd), stride, dilation, asymmetric padding, NCHW
or NCHWc layout, OIHW or pre-packed weights) and one config of the template's
space; every config of a space is legal, so each must build (gcc -Wall -Werror;
every 5th also strictly with clang, and as an ASan/UBSan harness under --sanitize)
and match the template's reference (rtol 1e-4, atol 1e-4 * max|ref|; outputs start
as NaN), which is itself checked against an independent float64 window sum here.
Also: spaces (index <-> config <-> JSON, defaults inside), packing helpers, the
dispatcher, the tail kernel variants, Winograd within 1e-4 of direct convolution at
64 channels, portable C, and a few cases per template on aarch64 and armv7 (QEMU).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import cgen
from cgen.ops import conv as C
from cgen.ops.conv import winograd as WG
from cgen.lower.lower import lower
from targets import resolve
from tests.util import assert_matches

SEED = 20240923
N_HOST = 50          # configs per template per run
TEMPLATES = {t.name: t for t in C.conv_templates()}
NAMES = sorted(TEMPLATES)


def ref_conv(x, w, stride, pads, dilation, groups):
    """Direct sum over the window, float64: x NCHW, w (F, C/groups, KH, KW)."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    t, l, b, r = pads
    sh, sw = stride
    dh, dw = dilation
    xp = np.zeros((n, c, h + t + b, wd + l + r))
    xp[:, :, t:t + h, l:l + wd] = x
    oh = (h + t + b - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + l + r - dw * (kw - 1) - 1) // sw + 1
    fg = f // groups
    y = np.zeros((n, f, oh, ow))
    for o in range(f):
        g = o // fg
        for i in range(kh):
            for j in range(kw):
                win = xp[:, g * cg:(g + 1) * cg, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                         j * dw:j * dw + sw * (ow - 1) + 1:sw]
                y[:, o] += np.tensordot(win, w[o, :, i, j].astype(np.float64), axes=([1], [0]))
    return y


def draw_workload(name: str, rng) -> dict:
    """A random small workload for template `name`."""
    T = TEMPLATES[name]
    groups = int(rng.choice([1, 1, 1, 2, 3]))
    cg = int(rng.choice([1, 2, 3, 4, 5, 8, 12, 16]))
    fg = int(rng.choice([1, 2, 4, 6, 8, 16, 20]))
    n = int(rng.choice([1, 1, 2]))
    if name == "conv2d_winograd":
        kh = kw = 3
        stride, dil = (1, 1), (1, 1)
    elif name == "conv2d_1x1":
        kh = kw = 1
        stride = tuple(int(s) for s in rng.integers(1, 3, 2))
        dil = (1, 1)
    else:
        kh, kw = (int(k) for k in rng.choice([1, 2, 3, 5], 2))
        stride = tuple(int(s) for s in rng.integers(1, 4, 2))
        dil = tuple(int(d) for d in rng.choice([1, 1, 2], 2))
    # pads smaller than the (dilated) window, as in real models: every output reads input
    # (an output made of padding alone never reads X; its C then has an unused parameter)
    spans = (dil[0] * (kh - 1), dil[1] * (kw - 1))
    pads = tuple(min(int(p), spans[d % 2]) for d, p in enumerate(rng.integers(0, 3, 4)))
    h = int(rng.integers(max(1, dil[0] * (kh - 1) + 1 - pads[0] - pads[2]), 12))
    w = int(rng.integers(max(1, dil[1] * (kw - 1) + 1 - pads[1] - pads[3]), 12))
    shape = dict(N=n, C=cg * groups, H=h, W=w, F=fg * groups, KH=kh, KW=kw)
    opts = dict(stride=stride, pad=pads, dilation=dil, groups=groups)
    tgt = resolve("host")
    base = C.conv2d_workload("conv2d", **shape, **opts)
    layout = "NCHWc" if name in ("conv2d_nchwc", "conv2d_winograd") and rng.random() < 0.3 else "NCHW"
    packed = rng.random() < 0.4
    if name == "conv2d_nchwc":
        blocks = {}
        if layout == "NCHWc" or packed:
            blocks = dict(ic_bn=int(rng.choice(C.block_choices(cg))),
                          oc_bn=int(rng.choice(C.block_choices(fg))))
        return T.workload(**shape, **opts, layout=layout, weights="packed" if packed else "OIHW",
                          **blocks)
    if name == "conv2d_winograd":
        extra = {}
        if layout == "NCHWc":
            extra["ic_bn"] = int(rng.choice(C.block_choices(cg * groups)))
        if layout == "NCHWc" or packed:
            extra["oc_bn"] = int(rng.choice(C.block_choices(fg)))
        if packed:
            extra["tile"] = int(rng.choice(WG.TILES))
        shape.pop("KH"), shape.pop("KW")
        return T.workload(**shape, pad=pads, groups=groups, layout=layout,
                          weights="packed" if packed else "OIHW", **extra)
    extra = {"oc_bn": C.gemm_default_mr(base, tgt)} if packed else {}
    if packed and rng.random() < 0.5:   # weights by depth block: whole channels dividing it
        extra["k_bn"] = kh * kw * int(rng.choice([d for d in range(1, cg + 1) if cg % d == 0]))
    return T.workload(**shape, **opts, weights="packed" if packed else "OIHW", **extra)


def draw(name: str, case: int):
    rng = np.random.default_rng([SEED, NAMES.index(name), case])
    wl = draw_workload(name, rng)
    sp = TEMPLATES[name].space(wl, "host")
    return wl, sp.get(int(rng.integers(sp.size))), rng


def run_config(name, wl, cfg, rng, target="host", build=None):
    """Build and run one config; (output, reference)."""
    T = TEMPLATES[name]
    s, args = T.build(wl, target, cfg)
    mod = (build or cgen.build)(s, args, target=target, name=name)
    ins = T.inputs(wl, rng)
    (out_name, ref), = T.reference(wl, ins).items()
    assert args[-1].name == out_name
    ins[-1][...] = np.nan
    mod(*ins)
    return ins[-1], ref, mod


@pytest.mark.parametrize("case", range(N_HOST))
@pytest.mark.parametrize("name", NAMES)
def test_fuzz_host(kbuild, name, case):
    wl, cfg, rng = draw(name, case)
    build = kbuild if case % 5 == 0 else None
    T = TEMPLATES[name]
    s, args = T.build(wl, "host", cfg)
    mod = (build or cgen.build)(s, args, target="host", name=name)
    ins = T.inputs(wl, rng)
    x, w = ins[0], ins[1]
    (out_name, ref), = T.reference(wl, ins).items()
    assert args[-1].name == out_name, (args[-1].name, out_name)
    ins[-1][...] = np.nan
    mod(*ins)
    assert_matches(ins[-1], ref)
    # the template's reference (its packing helpers inverted) against the window sum here
    if wl["layout"] == "NCHWc":
        x = C.from_nchwc_np(x)
    if wl["weights"] == "packed":
        w = unpack_weights(name, wl, w)
    direct = ref_conv(x, w, wl["stride"], wl["pad"], wl["dilation"], wl["groups"])
    got = ref if wl["layout"] == "NCHW" else C.from_nchwc_np(ref)
    assert_matches(got.reshape(direct.shape), direct.astype(np.float32))


def unpack_weights(name, wl, w):
    if name == "conv2d_nchwc":
        return C.unpack_weights_nchwc_np(w, wl["KH"], wl["KW"])
    if name == "conv2d_winograd":
        return WG.winograd_weights_unpack_np(w, wl["tile"])
    return C.unpack_weights_gemm_np(w, wl["F"], wl["C"] // wl["groups"], wl["KH"], wl["KW"])


# ------------------------------------------------------------ spaces
@pytest.mark.parametrize("name", NAMES)
def test_space_roundtrip_and_default(name):
    rng = np.random.default_rng(SEED)
    for case in range(3):
        wl, _, _ = draw(name, case)
        T = TEMPLATES[name]
        sp = T.space(wl, "host")
        assert sp.size == int(np.prod([len(k.choices) for k in sp.knobs])) > 1
        for i in rng.integers(0, sp.size, 5):
            cfg = sp.get(int(i))
            assert sp.index_of(cfg.to_dict()) == cfg.index
            assert sp.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
        d = T.default(wl, "host")
        assert sp.get(d.index) == d
        json.dumps(wl)
        assert T.flops(wl) == C.conv_flops(wl) > 0


def test_pinned_blocks_are_single_choices():
    T = TEMPLATES["conv2d_nchwc"]
    wl = T.workload(1, 64, 8, 8, 32, 3, 3, pad=1, weights="packed", ic_bn=16, oc_bn=32)
    knobs = {k.name: k.choices for k in T.space(wl, "host").knobs}
    assert knobs["ic_bn"] == (16,) and knobs["oc_bn"] == (32,)
    open_wl = T.workload(1, 64, 8, 8, 32, 3, 3, pad=1)
    knobs = {k.name: k.choices for k in T.space(open_wl, "host").knobs}
    assert 16 in knobs["ic_bn"] and 64 in knobs["ic_bn"] and 32 in knobs["oc_bn"]


def test_workload_validation():
    T = TEMPLATES["conv2d_nchwc"]
    with pytest.raises(ValueError, match="groups"):
        T.workload(1, 6, 8, 8, 4, 3, 3, groups=4)
    with pytest.raises(ValueError, match="ic_bn"):
        T.workload(1, 8, 8, 8, 8, 3, 3, layout="NCHWc")
    with pytest.raises(ValueError, match="must divide"):
        T.workload(1, 8, 8, 8, 8, 3, 3, weights="packed", ic_bn=3, oc_bn=8)
    with pytest.raises(ValueError, match="window"):
        T.workload(1, 8, 2, 2, 8, 3, 3)
    with pytest.raises(ValueError, match="3x3"):
        TEMPLATES["conv2d_winograd"].workload(1, 8, 8, 8, 8, 3, 3, stride=2)
    with pytest.raises(ValueError, match="1x1"):
        TEMPLATES["conv2d_1x1"].workload(1, 8, 8, 8, 8, 3, 3)
    with pytest.raises(ValueError, match="NCHW"):
        TEMPLATES["conv2d_im2col"].workload(1, 8, 8, 8, 8, 3, 3, layout="NCHWc")


# ------------------------------------------------------------ packing helpers
def test_packing_roundtrips():
    rng = np.random.default_rng(SEED)
    w = rng.standard_normal((24, 6, 3, 2)).astype(np.float32)
    p = C.pack_weights_nchwc_np(w, 3, 8)
    assert p.shape == (3, 2, 3 * 2 * 3, 8)
    # row q = (kh*KW + kw)*ic_bn + ic of block (ob, ib) holds w[ob*8 + o, ib*3 + ic, kh, kw]
    assert p[1, 1, (2 * 2 + 1) * 3 + 2, 5] == w[13, 5, 2, 1]
    np.testing.assert_array_equal(C.unpack_weights_nchwc_np(p, 3, 2), w)
    a = C.pack_weights_gemm_np(w, 2, 5)
    assert a.shape == (2, 3, 6 * 3 * 2, 5)       # groups 2: 12 rows each, in 3 panels of 5
    np.testing.assert_array_equal(C.unpack_weights_gemm_np(a, 24, 6, 3, 2), w)
    b = C.pack_weights_gemm_np(w, 2, 5, kb=12)     # the same panels by depth block of 12
    assert b.shape == (2, 3, 3, 12, 5)
    np.testing.assert_array_equal(b.transpose(0, 2, 1, 3, 4).reshape(a.shape), a)
    np.testing.assert_array_equal(C.unpack_weights_gemm_np(b, 24, 6, 3, 2), w)
    x = rng.standard_normal((2, 12, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(C.from_nchwc_np(C.to_nchwc_np(x, 4)), x)
    g = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    for m in WG.TILES:
        u = WG.winograd_weights_np(g, m, 8)
        assert u.shape == ((m + 2) ** 2, 2, 8, 8)
        np.testing.assert_allclose(WG.winograd_weights_unpack_np(u, m), g, rtol=1e-4, atol=1e-5)


def test_pack_weights_te_stage_matches_numpy():
    """The in-kernel packing stages (weights="OIHW") equal the numpy pre-packing."""
    from cgen import te
    rng = np.random.default_rng(SEED)
    w = rng.standard_normal((16, 4, 3, 3)).astype(np.float32)
    Wt = te.placeholder(w.shape, "float32", name="Wt")
    for stage, ref in ((C.pack_weights_nchwc(Wt, 2, 8), C.pack_weights_nchwc_np(w, 2, 8)),
                       (C.pack_weights_gemm(Wt, 2, 3), C.pack_weights_gemm_np(w, 2, 3))):
        mod = cgen.build(te.create_schedule(stage), [Wt, stage], name="pack")
        out = np.full(stage.shape, np.nan, np.float32)
        mod(w, out)
        np.testing.assert_array_equal(out, ref)


# ------------------------------------------------------------ Winograd accuracy
@pytest.mark.parametrize("target", [pytest.param("x86-avx512", marks=pytest.mark.isa("avx512")),
                                    pytest.param("x86-avx2", marks=pytest.mark.isa("avx2"))])
@pytest.mark.parametrize("m", WG.TILES)
def test_winograd_within_1e4_of_direct(m, target):
    """F(m x m, 3 x 3) against direct convolution on a realistic channel count: the
    largest error is below 1e-4 of the largest output (the acceptance bound)."""
    T = TEMPLATES["conv2d_winograd"]
    wl = T.workload(1, 64, 14, 14, 32, pad=1, weights="packed", tile=m, oc_bn=16)
    rng = np.random.default_rng(SEED)
    out, ref, mod = run_config("conv2d_winograd", wl, T.default(wl, target), rng, target)
    rel = float(np.max(np.abs(out.astype(np.float64) - ref)) / np.max(np.abs(ref)))
    assert rel < 1e-4, rel
    assert "cg_tile_" in mod.c_source


# ------------------------------------------------------------ dispatch and defaults
def layer(C_, H, F, K, s, p, weights="packed"):
    return {"op": "conv2d", "N": 1, "C": C_, "H": H, "W": H, "F": F, "KH": K, "KW": K,
            "stride": [s, s], "pad": [p] * 4, "weights": weights}


@pytest.mark.parametrize("target", ["x86-avx512", "x86-avx2"])
@pytest.mark.parametrize("wl, family", [
    (layer(64, 56, 64, 3, 1, 1), "conv2d_winograd"),
    (layer(256, 14, 256, 3, 1, 1), "conv2d_winograd"),
    (layer(512, 7, 512, 3, 1, 1), "conv2d_nchwc"),
    (layer(64, 56, 128, 3, 2, 1), "conv2d_nchwc"),
    (layer(64, 56, 128, 1, 2, 0), "conv2d_1x1"),
    (layer(3, 224, 64, 7, 2, 3), "conv2d_nchwc"),
    (layer(64, 56, 64, 3, 1, 1, weights="OIHW"), "conv2d_winograd"),
])
def test_dispatch(wl, family, target):
    tmpl, w2 = C.conv2d_template_for(wl, target)
    assert tmpl.name == family == w2["op"]
    sp = tmpl.space(w2, target)
    d = tmpl.default(w2, target)
    assert sp.get(d.index) == d
    if wl["weights"] == "packed":
        assert w2["oc_bn"] is not None
    s, args = tmpl.build(w2, target, d)
    func = lower(s, args, "k", resolve(target))
    # the default of every family on this target runs its register-tile micro-kernel
    assert any(k.name.startswith("cg_tile_") for k in func.kernels)


def test_dispatch_nchwc_layout_goes_blocked():
    tmpl, wl = C.conv2d_template_for({**layer(32, 9, 32, 1, 1, 0), "layout": "NCHWc"}, "x86-avx2")
    assert tmpl.name == "conv2d_nchwc" and wl["ic_bn"] and wl["oc_bn"]


@pytest.mark.parametrize("target, NR", [
    pytest.param("x86-avx512", 32, marks=pytest.mark.isa("avx512")),
    pytest.param("x86-avx2", 16, marks=pytest.mark.isa("avx2"))])
def test_tile_kernels_with_row_and_column_tails(target, NR):
    """The row-count and masked column-count kernel variants, against numpy."""
    from cgen import te
    tgt = resolve(target)
    M, N, K = 11, 37, 9
    rng = np.random.default_rng(SEED)
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    Cc = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = te.create_schedule(Cc)
    i, j = s[Cc].op.axis
    io, ii = s[Cc].split(i, factor=4)
    jo, ji = s[Cc].split(j, factor=NR)
    s[Cc].reorder(io, jo, k, ii, ji)
    masked = C.masked_tiles_ok(tgt)
    s[Cc].tensorize(k, C.tile_intrin(tgt, 4, NR, prefetch=4, masked=masked, rows=True))
    mod = cgen.build(s, [A, B, Cc], target=tgt, name="tails")
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    c = np.full((M, N), np.nan, np.float32)
    mod(a, b, c)
    assert_matches(c, a @ b)
    assert "switch (M)" in mod.c_source
    if masked:
        assert "_mm512_mask_storeu_ps" in mod.c_source


# ------------------------------------------------------------ ARM under QEMU
QEMU_CASES = [(name, case) for name in NAMES for case in (0, 1)]


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
@pytest.mark.parametrize("name, case", QEMU_CASES)
def test_fuzz_qemu(kbuild, target, name, case):
    tgt = resolve(target)
    rng = np.random.default_rng([SEED, 99, NAMES.index(name), case])
    wl = draw_workload(name, rng)
    T = TEMPLATES[name]
    # the target's default (micro-kernel on NEON) first, then a random config
    cfg = T.default(wl, tgt) if case == 0 else \
        T.space(wl, tgt).get(int(rng.integers(T.space(wl, tgt).size)))
    out, ref, _ = run_config(name, wl, cfg, rng, target=target, build=kbuild)
    assert_matches(out, ref)


@pytest.mark.parametrize("name", NAMES)
def test_generic_c(kbuild, name):
    """Portable C (no vector ISA, no micro-kernel): the same templates, scalar."""
    rng = np.random.default_rng([SEED, 7, NAMES.index(name)])
    wl = draw_workload(name, rng)
    T = TEMPLATES[name]
    sp = T.space(wl, "generic-c")
    for cfg in (T.default(wl, "generic-c"), sp.get(int(rng.integers(sp.size)))):
        out, ref, mod = run_config(name, wl, cfg, rng, target="generic-c", build=kbuild)
        assert_matches(out, ref)
        assert "cg_tile_" not in mod.c_source
