"""The core differential tests on every code-generation target.

Each op (matmul, conv2d, depthwise conv2d, max and average pooling, softmax,
an elementwise chain) runs under a plain schedule and a split + reorder +
vectorize schedule on `host`, `generic-c`, `aarch64` and `armv7` (the ARM
ones under QEMU user mode), checked against tests/test_ops.py's numpy
references.  The tensorized schedules (packed_gemm over the target's GEMM
micro-kernel, an int8 GEMM over dot_i8_intrin) run on every target with the
micro-kernel; generic-c has none and must say so.

Float inputs have magnitudes in [0.5, 1.5): armv7 NEON flushes denormals to
zero, so nothing here may produce one.  Shapes are small (QEMU runs cost),
with innermost extents that leave vector tails on every ISA.
"""
from __future__ import annotations

import numpy as np
import pytest

from cgen import te, ops
from cgen.codegen.isa import isa_for
from cgen.ops.gemm import GemmConfig, packed_gemm
from cgen.tensorize import dot_i8_intrin, gemm_intrin, gemm_shape
from targets import resolve
from tests.test_ops import SEED, conv2d_ref, pool_ref, softmax_ref, tile_inner
from tests.util import assert_matches

TARGETS = [
    pytest.param("host", id="host"),
    pytest.param("generic-c", id="generic-c"),
    pytest.param("aarch64", id="aarch64", marks=pytest.mark.qemu),
    pytest.param("armv7", id="armv7", marks=pytest.mark.qemu),
]
SCHEDS = ["plain", "vec"]
INTRINSIC_MARKERS = ("_mm", "vld1q", "vst1q", "immintrin.h", "arm_neon.h")


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


def uniform(rng, shape, lo=0.5, hi=1.5):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def signed(rng, shape):
    """Magnitudes in [0.5, 1.5), random signs."""
    return (uniform(rng, shape) * rng.choice(np.float32([-1, 1]), shape)).astype(np.float32)


def lanes(target) -> int:
    """The vector split factor: the ISA's float32 lanes (4 for portable C)."""
    isa = isa_for(resolve(target))
    return isa.lanes if isa is not None else 4


def run(kbuild, target, s, inputs: dict, outputs: list, name: str):
    """Build s for target (inputs then outputs), call it; (output arrays, module)."""
    mod = kbuild(s, list(inputs) + list(outputs), target=target, name=name)
    outs = [np.full(t.shape, np.nan if t.dtype == "float32" else np.iinfo(t.dtype).max, t.dtype)
            for t in outputs]
    mod(*inputs.values(), *outs)
    return outs, mod


def check_vector_code(mod, target, sched):
    """The vec schedule stores float32 through the ISA's intrinsics; generic-c never uses any."""
    isa = isa_for(resolve(target))
    src = mod.c_source
    if isa is None:
        for marker in INTRINSIC_MARKERS:
            assert marker not in src, f"{marker} in generic C"
    elif sched == "vec":
        stores = {isa.store, isa.mask_store} - {None}
        assert any(f"{st}(" in src for st in stores), f"no {sorted(stores)} in the C for {target}"


# ------------------------------------------------------------ matmul
@pytest.mark.parametrize("sched", SCHEDS)
@pytest.mark.parametrize("target", TARGETS)
def test_matmul(kbuild, rng, target, sched):
    m, k, n = 11, 13, 19
    A = te.placeholder((m, k), name="A")
    B = te.placeholder((k, n), name="B")
    C = ops.matmul(A, B)
    s = te.create_schedule(C)
    if sched == "vec":
        tile_inner(s, C, factor=lanes(target), row_factor=3)
    a, b = uniform(rng, (m, k)), signed(rng, (k, n))
    (c,), mod = run(kbuild, target, s, {A: a, B: b}, [C], f"mm_{sched}")
    check_vector_code(mod, target, sched)
    assert_matches(c, (a.astype(np.float64) @ b).astype(np.float32))


# ------------------------------------------------------------ convolutions
@pytest.mark.parametrize("sched", SCHEDS)
@pytest.mark.parametrize("target", TARGETS)
def test_conv2d(kbuild, rng, target, sched):
    X = te.placeholder((1, 3, 6, 19), name="X")
    W = te.placeholder((4, 3, 3, 3), name="W")
    Y, pad = ops.conv2d_nchw(X, W, stride=1, padding=1)
    s = te.create_schedule(Y)
    if sched == "vec":
        tile_inner(s, Y, factor=lanes(target), row_factor=2)
    x, w = signed(rng, X.shape), uniform(rng, W.shape)
    (y,), mod = run(kbuild, target, s, {X: x, W: w}, [Y], f"conv_{sched}")
    check_vector_code(mod, target, sched)
    assert_matches(y, conv2d_ref(x, w, 1, 1, 1))


@pytest.mark.parametrize("sched", SCHEDS)
@pytest.mark.parametrize("target", TARGETS)
def test_depthwise_conv2d(kbuild, rng, target, sched):
    padding = (1, 0, 1, 2)
    X = te.placeholder((1, 4, 7, 19), name="X")
    W = te.placeholder((4, 1, 3, 3), name="W")
    Y, pad = ops.depthwise_conv2d_nchw(X, W, stride=1, padding=padding)
    s = te.create_schedule(Y)
    if sched == "vec":
        tile_inner(s, Y, factor=lanes(target), row_factor=3)
    x, w = signed(rng, X.shape), uniform(rng, W.shape)
    (y,), mod = run(kbuild, target, s, {X: x, W: w}, [Y], f"dw_{sched}")
    check_vector_code(mod, target, sched)
    assert_matches(y, conv2d_ref(x, w, 1, padding, 1, depthwise=True))


# ------------------------------------------------------------ pooling
POOL = dict(kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), ceil_mode=False)


@pytest.mark.parametrize("sched", SCHEDS)
@pytest.mark.parametrize("target", TARGETS)
def test_max_pool2d(kbuild, rng, target, sched):
    X = te.placeholder((1, 3, 8, 19), name="X")
    Y, pad = ops.max_pool2d(X, POOL["kernel"], POOL["strides"], POOL["pads"], POOL["ceil_mode"])
    s = te.create_schedule(Y)
    if sched == "vec":
        tile_inner(s, Y, factor=lanes(target), row_factor=3)
    x = -uniform(rng, X.shape)                 # all negative: a zero pad would win
    (y,), mod = run(kbuild, target, s, {X: x}, [Y], f"maxpool_{sched}")
    check_vector_code(mod, target, sched)
    assert_matches(y, pool_ref(x, POOL["kernel"], POOL["strides"], POOL["pads"],
                               POOL["ceil_mode"], "max"))


@pytest.mark.parametrize("sched", SCHEDS)
@pytest.mark.parametrize("target", TARGETS)
def test_avg_pool2d(kbuild, rng, target, sched):
    X = te.placeholder((1, 3, 8, 19), name="X")
    Y, wsum, pad = ops.avg_pool2d(X, POOL["kernel"], POOL["strides"], POOL["pads"],
                                  POOL["ceil_mode"], count_include_pad=False)
    s = te.create_schedule(Y)
    if sched == "vec":
        tile_inner(s, wsum, factor=lanes(target), row_factor=3)
        tile_inner(s, Y, factor=lanes(target), row_factor=3)
    x = uniform(rng, X.shape)
    (y,), mod = run(kbuild, target, s, {X: x}, [Y], f"avgpool_{sched}")
    check_vector_code(mod, target, sched)
    assert_matches(y, pool_ref(x, POOL["kernel"], POOL["strides"], POOL["pads"],
                               POOL["ceil_mode"], "avg"))


# ------------------------------------------------------------ softmax
@pytest.mark.parametrize("sched", SCHEDS)
@pytest.mark.parametrize("target", TARGETS)
def test_softmax(kbuild, rng, target, sched):
    X = te.placeholder((2, 5, 19), name="X")
    out, mx, ex, sm = ops.softmax(X, axis=1)
    s = te.create_schedule(out)
    if sched == "vec":
        for t in (mx, ex, sm, out):            # exp stays scalar; max, sum and / vectorize
            tile_inner(s, t, factor=lanes(target), row_factor=2)
    x = signed(rng, X.shape) * np.float32(4.0)
    (y,), mod = run(kbuild, target, s, {X: x}, [out], f"softmax_{sched}")
    check_vector_code(mod, target, sched)
    assert_matches(y, softmax_ref(x, 1))


# ------------------------------------------------------------ elementwise
@pytest.mark.parametrize("sched", SCHEDS)
@pytest.mark.parametrize("target", TARGETS)
def test_elementwise(kbuild, rng, target, sched):
    """relu(A * B + c) with broadcasting, through broadcast_binary."""
    shapes = ((3, 5, 19), (5, 19), (5, 1))
    A, B, c = (te.placeholder(sh, name=nm) for sh, nm in zip(shapes, "ABc"))
    ab = ops.broadcast_binary("*", A, B, name="ab")
    abc = ops.broadcast_binary("+", ab, c, name="abc")
    out = te.compute(abc.shape, lambda *i: te.maximum(abc[i], 0.0), name="relu")
    s = te.create_schedule(out)
    if sched == "vec":
        s[ab].compute_inline()
        s[abc].compute_inline()
        tile_inner(s, out, factor=lanes(target), row_factor=2)
    a, b, cc = (signed(rng, sh) for sh in shapes)
    (y,), mod = run(kbuild, target, s, {A: a, B: b, c: cc}, [out], f"relu_{sched}")
    check_vector_code(mod, target, sched)
    assert_matches(y, np.maximum(a.astype(np.float64) * b + cc, 0.0).astype(np.float32))


# ------------------------------------------------------------ tensorized float32 GEMM
@pytest.mark.parametrize("M,N,K,cfg", [
    (67, 45, 38, GemmConfig(MC=32, NC=32, KC=16)),   # tails in every blocking dimension
    (5, 3, 7, GemmConfig(MC=8, NC=8, KC=4)),         # smaller than one micro-tile: never called
], ids=["tails", "below_tile"])
@pytest.mark.parametrize("target", TARGETS)
def test_packed_gemm(kbuild, rng, target, M, N, K, cfg):
    # targets without SIMD (generic-c) get the plain-C register tile of the same generator
    s, (A, B, C) = packed_gemm(M, N, K, target, cfg)
    a, b = uniform(rng, (M, K)), signed(rng, (K, N))
    (c,), mod = run(kbuild, target, s, {A: a, B: b}, [C], "gemm")
    kernel = gemm_intrin(resolve(target)).body.name
    MR, NR = gemm_shape(resolve(target))
    # the kernel is defined exactly when called (clang rejects an unused static function)
    assert (kernel in mod.c_source) == (M >= MR and N >= NR)
    assert_matches(c, (a.astype(np.float64) @ b).astype(np.float32))


# ------------------------------------------------------------ tensorized int8 GEMM
def _qgemm_bt(M, N, K):
    """C[i, j] = sum_k int32(A[i, k]) * int32(B[j, k]): B stored transposed, k contiguous."""
    A = te.placeholder((M, K), "int8", name="A")
    B = te.placeholder((N, K), "int8", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k].astype("int32") * B[j, k].astype("int32"),
                                               axis=k), name="C")
    return A, B, C


@pytest.mark.parametrize("sched,K", [
    ("plain", 53), ("dot", 53), ("dot_tiled", 53),  # K = 3 * 16 + 5: vector chunks and a scalar tail
    ("dot", 1),                                    # a one-step reduction: called or simplified away
], ids=["plain", "dot", "dot_tiled", "dot_K1"])
@pytest.mark.parametrize("target", TARGETS)
def test_int8_gemm_dot(kbuild, rng, target, sched, K):
    M, N = 5, 7
    A, B, C = _qgemm_bt(M, N, K)
    s = te.create_schedule(C)
    intr = None
    if sched != "plain":
        # every target has an int8 dot micro-kernel (generic-c: the portable C way)
        intr = dot_i8_intrin(resolve(target))
        i, j = s[C].op.axis
        (k,) = s[C].op.reduce_axis
        if sched == "dot_tiled":
            io, ii = s[C].split(i, factor=2)
            jo, ji = s[C].split(j, factor=3)
            s[C].reorder(jo, io, ji, ii, k)
        s[C].tensorize(k, intr)
    info = np.iinfo(np.int8)
    a = rng.integers(info.min, info.max + 1, (M, K), dtype=np.int8)
    b = rng.integers(info.min, info.max + 1, (N, K), dtype=np.int8)
    a[0, :] = -128                             # -128 * -128 does not fit int16
    b[0, :] = -128
    (c,), mod = run(kbuild, target, s, {A: a, B: b}, [C], f"qgemm_{sched}")
    if intr is not None:
        calls = mod.c_source.count(intr.body.name + "(")
        # the definition is emitted exactly when the body calls it (clang's -Wunused-function)
        assert calls != 1, "a kernel definition without a call"
        if K > 1:
            assert calls >= 2
    np.testing.assert_array_equal(c, a.astype(np.int32) @ b.astype(np.int32).T)
