"""The GEMM-family templates (gemm, matmul, batch_matmul, dense): random configs of
random small workloads (primes, tails, transposes, batch broadcasting, every
epilogue step) match numpy; spaces, defaults and workloads behave.

Configs and workloads are drawn from seeded generators (one per test id), so a
failure reproduces.  Host: FUZZ_PER_TEMPLATE random configs per template (a
tenth of them also compiled strictly by clang) and a few default configs; QEMU
(aarch64, armv7): a default and a random config per template.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import cgen
from cgen.ops.space import ConfigSpace
from cgen.ops.batch_matmul import BatchMatmulTemplate
from cgen.ops.dense import DenseTemplate, MatmulTemplate
from cgen.ops.gemm import (EPILOGUE_STEPS, GemmConfig, MatmulSpec, kernel_rows, matmul_reference,
                           micro_kernel, pack_b, packed_matmul)
from cgen.ops.gemm_template import GemmTemplate
from cgen.ops.registry import templates
from tests.util import assert_matches

FUZZ_PER_TEMPLATE = 50
DEFAULTS_PER_TEMPLATE = 6
QEMU_PER_TEMPLATE = 2
SIZES = (1, 2, 3, 5, 7, 8, 13, 16, 17, 31, 33, 40, 67)
TEMPLATES = {"gemm": GemmTemplate, "matmul": MatmulTemplate, "batch_matmul": BatchMatmulTemplate,
             "dense": DenseTemplate}


def _epilogue(rng) -> list:
    steps = [s for s in EPILOGUE_STEPS if rng.random() < 0.3]
    rng.shuffle(steps)
    return steps


def random_workload(name: str, rng) -> dict:
    t = TEMPLATES[name]()
    M, N, K = (int(rng.choice(SIZES)) for _ in range(3))
    clip = sorted(float(x) for x in rng.uniform(-1, 1, 2))
    if name == "gemm":
        return t.workload(M, N, K)
    if name == "matmul":
        return t.workload(M, N, K, trans_a=bool(rng.random() < 0.5), trans_b=bool(rng.random() < 0.5),
                          epilogue=_epilogue(rng), clip=clip)
    if name == "batch_matmul":
        nb = int(rng.integers(1, 3))
        dims = [int(rng.choice((2, 3))) for _ in range(nb)]
        a_b = [d if rng.random() < 0.7 else 1 for d in dims]
        b_b = [d if rng.random() < 0.7 else 1 for d in dims][int(rng.integers(0, nb + 1)):]
        ta, tb = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        a_shape = a_b + ([K, M] if ta else [M, K])
        b_shape = b_b + ([N, K] if tb else [K, N])
        return t.workload(a_shape, b_shape, trans_a=ta, trans_b=tb, epilogue=_epilogue(rng),
                          clip=clip)
    weights = "packed" if rng.random() < 0.6 else "plain"
    if weights == "packed" and rng.random() < 0.5:
        M = int(rng.integers(1, 5))  # the GEMV path
    return t.workload(M, N, K, epilogue=_epilogue(rng), weights=weights, clip=clip)


def check_case(name: str, seed: int, target: str, kbuild=None, default: bool = False):
    rng = np.random.default_rng(seed)
    t = TEMPLATES[name]()
    wl = random_workload(name, rng)
    space = t.space(wl, target)
    cfg = t.default(wl, target) if default else space.get(int(rng.integers(space.size)))
    s, args = t.build(wl, target, cfg)
    build = kbuild or cgen.build
    mod = build(s, args, target=target, name=name)
    inputs = t.inputs(wl, np.random.default_rng(seed))
    mod(*inputs)
    ref = t.reference(wl, inputs)["C"]
    try:
        assert_matches(inputs[-1], ref)
    except AssertionError as e:
        raise AssertionError(f"{name} {json.dumps(wl)} config {cfg.to_dict()}: {e}") from None
    return mod


@pytest.mark.parametrize("seed", range(FUZZ_PER_TEMPLATE))
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_random_configs_match_numpy(name, seed, kbuild):
    check_case(name, 1000 + seed, "host", kbuild if seed % 10 == 0 else None)


@pytest.mark.parametrize("seed", range(DEFAULTS_PER_TEMPLATE))
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_default_configs_match_numpy(name, seed):
    check_case(name, 3000 + seed, "host", default=True)


@pytest.mark.qemu
@pytest.mark.parametrize("seed", range(QEMU_PER_TEMPLATE))
@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_random_configs_under_qemu(target, name, seed):
    check_case(name, 2000 + seed, target, default=seed == 0)


# ---------------------------------------------------------------- spaces and defaults
WORKLOADS = [
    ("gemm", dict(M=256, N=256, K=256)),
    ("gemm", dict(M=5, N=3, K=7)),
    ("matmul", dict(M=67, N=45, K=38, trans_a=True, epilogue=["bias", "relu"])),
    ("batch_matmul", dict(a_shape=(2, 1, 13, 20), b_shape=(3, 20, 33), epilogue=["residual"])),
    ("dense", dict(M=1, N=1000, K=1024, weights="packed")),
    ("dense", dict(M=9, N=70, K=33, weights="plain", epilogue=[])),
]


@pytest.mark.parametrize("target", ["host", "x86-avx2", "aarch64", "armv7"])
@pytest.mark.parametrize("name,kw", WORKLOADS)
def test_space_is_enumerable_and_default_is_in_it(name, kw, target):
    t = templates()[name]
    wl = t.workload(**kw)
    json.dumps(wl)
    sp = t.space(wl, target)
    assert isinstance(sp, ConfigSpace) and sp.size >= 2
    d = t.default(wl, target)
    assert sp.get(d.index) == d
    rng = np.random.default_rng(0)
    for c in sp.sample(rng, 20) + [sp.get(sp.size - 1)]:
        assert sp.from_json(json.loads(json.dumps(c.to_json()))) == c
        assert sp.index_of(c.to_dict()) == c.index
    s, args = t.build(wl, target, d)  # builds without compiling
    assert args[-1].shape == tuple(t.inputs(wl, rng)[-1].shape)


def test_registry_lists_the_templates():
    table = templates()
    for name in TEMPLATES:
        assert table[name].name == name


@pytest.mark.parametrize("target", ["x86-avx512", "x86-avx2", "aarch64", "armv7", "generic-c"])
def test_default_gemm_uses_the_generated_kernel(target):
    t = GemmTemplate()
    wl = t.workload(512, 512, 512)
    d = t.default(wl, target).to_dict()
    if target == "x86-avx512":
        assert d["MR"] == 8 and d["unroll"] == 2 and d["KC"] == 384 and d["prefetch"] == 8
    assert d["MR"] in kernel_rows(target)


@pytest.mark.parametrize("target", ["x86-avx512", "x86-avx2"])
def test_gemv_path_has_its_own_knobs(target):
    t = DenseTemplate()
    wl = t.workload(1, 1000, 1024, weights="packed")
    assert t.gemv(wl, target)
    assert t.space(wl, target).names()[:3] == ("NC", "unroll", "prefetch")
    assert not t.gemv(t.workload(8, 1000, 1024, weights="packed"), target)
    assert not t.gemv(t.workload(1, 1000, 1024, weights="plain"), target)
    # NEON generates only the one-row kernel: one row takes the GEMV path, two rows do not
    assert t.gemv(wl, "aarch64")
    assert not t.gemv(t.workload(2, 1000, 1024, weights="packed"), "aarch64")
    assert not t.gemv(wl, "generic-c")


@pytest.mark.parametrize("target", ["aarch64", "armv7"])
@pytest.mark.parametrize("N,K", [(40, 67), (16, 8)])
def test_one_row_dense_on_neon_streams_the_weights_once(target, N, K):
    """aarch64 / armv7 NEON: a packed one-row dense runs the generated 1 x NR kernel (no
    padded 8-row tile) over every column, tails and the bias included, and matches numpy
    under QEMU."""
    t = DenseTemplate()
    wl = t.workload(1, N, K, weights="packed", b_block=t.panel_columns(target),
                    epilogue=["bias", "relu"])
    assert t.gemv(wl, target)
    s, args = t.build(wl, target, t.default(wl, target))
    mod = cgen.build(s, args, target=target, name="fc1")
    assert "cg_gemm_1x" in mod.c_source
    inputs = t.inputs(wl, np.random.default_rng(3))
    mod(*inputs)
    assert_matches(inputs[-1], t.reference(wl, inputs)["C"])


@pytest.mark.parametrize("bad", [
    lambda: MatmulTemplate().workload(0, 3, 4),
    lambda: MatmulTemplate().workload(2, 3, 4, epilogue=["gelu"]),
    lambda: MatmulTemplate().workload(2, 3, 4, epilogue=["clip"], clip=(1.0, -1.0)),
    lambda: BatchMatmulTemplate().workload((2, 3, 4), (3, 5, 6)),
    lambda: BatchMatmulTemplate().workload((2, 3, 4), (3, 4, 6)),
    lambda: DenseTemplate().workload(1, 3, 4, weights="sparse"),
])
def test_bad_workloads_raise(bad):
    with pytest.raises(ValueError):
        bad()


# ---------------------------------------------------------------- building blocks
def test_pack_b_layout_and_reference():
    rng = np.random.default_rng(0)
    b = rng.random((5, 37), dtype=np.float32)
    p = pack_b(b, 16)
    assert p.shape == (3, 5, 16)
    assert np.array_equal(p[1, 3], b[3, 16:32]) and np.all(p[2, :, 5:] == 0)
    spec = MatmulSpec(4, 37, 5, b_block=16)
    a = rng.random((4, 5), dtype=np.float32)
    np.testing.assert_allclose(matmul_reference(spec, a, p), a @ b, rtol=1e-6)


@pytest.mark.parametrize("target,mr", [
    pytest.param("x86-avx512", 8, marks=pytest.mark.isa("avx512")),
    pytest.param("x86-avx2", 4, marks=pytest.mark.isa("avx2"))])
def test_epilogue_is_fused_into_the_kernel_function(target, mr):
    """One C function holds the micro-kernel calls and the epilogue; the accumulator is a
    block buffer (M x NC), not a second full-size output pass."""
    spec = MatmulSpec(64, 96, 40, trans_b=True, epilogue=("bias", "relu6"))
    cfg = GemmConfig(MR=mr, MC=32, NC=32, KC=16, block="goto")
    s, args = packed_matmul(spec, target, cfg)
    mod = cgen.build(s, args, target=target, name="dense_relu6")
    src = mod.c_source
    body = src[src.index("int dense_relu6("):]
    assert "cg_gemm_" in body
    assert "float Cacc[2048]" in body  # 64 x 32: one column block
    rng = np.random.default_rng(1)
    ins = [rng.standard_normal(a.shape).astype(np.float32) for a in args[:-1]]
    out = np.zeros(args[-1].shape, np.float32)
    mod(*ins, out)
    assert_matches(out, matmul_reference(spec, *ins))


@pytest.mark.parametrize("mr,unroll,prefetch,a_unit", [(1, 4, 8, True), (3, 2, 0, False),
                                                       (8, 2, 4, True), (12, 1, 0, False)])
@pytest.mark.isa("avx512")
def test_generated_kernels_compile_strictly_and_match(mr, unroll, prefetch, a_unit, kbuild):
    # M is no multiple of MR: the kernel that takes the row count (its row tail generated too)
    intr = micro_kernel("x86-avx512", mr, unroll, prefetch, a_unit, rows=True)
    assert intr.body.name in intr.body.source
    spec = MatmulSpec(2 * mr + 1, 70, 19, trans_a=a_unit)
    s, args = packed_matmul(spec, "x86-avx512", GemmConfig(MR=mr, unroll=unroll, prefetch=prefetch,
                                                           pack_a=False, MC=16, NC=64, KC=8))
    mod = kbuild(s, args, target="x86-avx512", name="mk")
    assert intr.body.name in mod.c_source
    rng = np.random.default_rng(2)
    ins = [rng.standard_normal(a.shape).astype(np.float32) for a in args[:-1]]
    out = np.zeros(args[-1].shape, np.float32)
    mod(*ins, out)
    assert_matches(out, matmul_reference(spec, *ins))
