"""Dense and batched matmul tensorize to the register-tiled GEMM micro-kernel on every ISA.

For each named target (x86-avx2, x86-avx512, aarch64 and armv7 under QEMU user mode,
generic-c, cortex-m4 and cortex-m55 bare metal under qemu-system-arm): dense layers with M in
{1, 5, 40} and odd and even N, K (a shrunk 40 x 6625 classifier among them), and
batched matmuls with broadcast batch dimensions and a transposed B (attention's
Q.K^T and P.V).  Each case asserts that the micro-kernel was called (the lowered
function carries it: no template error, no scalar fallback) and checks the numbers
against numpy.  Every config of the spaces lowers to a kernel call, too.

The quick tier: lowering only (every target) and x86-avx2 / generic-c runs; the
rest (QEMU, AVX-512, cortex-m4, whole models) is slow.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import cgen
from cgen.graph.model import compile_model, model_target
from cgen.lower.lower import lower
from cgen.ops.batch_matmul import BatchMatmulTemplate
from cgen.ops.dense import DenseTemplate
from targets.runner import runner_for
from targets.target import cannot_run
from tests.util import assert_matches

TARGETS = ("x86-avx2", "x86-avx512", "aarch64", "armv7", "generic-c", "cortex-m4", "cortex-m55")
QUICK_RUN = ("x86-avx2", "generic-c")

# (M, N, K): odd and even; 40 x 203 x 96 is the 40 x 6625 classifier, shrunk
DENSE = ((1, 37, 40), (1, 64, 32), (5, 37, 41), (5, 64, 32), (40, 203, 96), (40, 48, 17))
# (A shape, B shape, trans_b): broadcast batch dims, B transposed (Q.K^T), P.V
BATCHED = (((2, 3, 5, 8), (1, 3, 5, 8), True),
           ((2, 3, 5, 5), (3, 5, 8), False),
           ((4, 40, 16), (1, 16, 33), False),
           ((2, 1, 7, 12), (3, 9, 12), True))


def need_run(target: str):
    """Skip (with the reason) when this machine cannot build or run the target's code."""
    t = model_target(target)
    if shutil.which(t.cc) is None:
        pytest.skip(f"{t.cc} not installed")
    if t.bare_metal:
        if shutil.which("qemu-system-arm") is None:
            pytest.skip("qemu-system-arm not installed")
        return
    if t.runner == "local":
        why = cannot_run(t)
        if why:
            pytest.skip(f"{target}: {why}")
        return
    emulator = (runner_for(t).prefix or ("",))[0]
    if emulator and shutil.which(emulator) is None:
        pytest.skip(f"{emulator} not installed")


def dense_case(M: int, N: int, K: int, target):
    t = DenseTemplate()
    return t, t.workload(M, N, K, epilogue=("bias", "relu"), weights="packed",
                         b_block=t.panel_columns(target))


def batched_case(a_shape, b_shape, trans_b: bool):
    t = BatchMatmulTemplate()
    return t, t.workload(a_shape, b_shape, trans_b=trans_b)


def kernel_names(t, wl, target, config) -> list:
    s, args = t.build(wl, target, config)
    f = lower(s, args, "k", target)
    return [k.name for k in f.kernels]


def assert_tensorized(t, wl, target, config=None):
    config = t.default(wl, target) if config is None else config
    names = kernel_names(t, wl, target, config)
    assert any(n.startswith("cg_gemm_") for n in names), \
        f"{t.name} {wl} on {target.name}: config {config.to_dict()} calls no GEMM micro-kernel"


def run_and_check(t, wl, target):
    s, args = t.build(wl, target, t.default(wl, target))
    mod = cgen.build(s, args, target=target, name=t.name)
    inputs = t.inputs(wl, np.random.default_rng(1))
    mod(*inputs)
    assert_matches(inputs[-1], t.reference(wl, inputs)["C"])


def _cases(target):
    for M, N, K in DENSE:
        yield dense_case(M, N, K, target)
    for a, b, tb in BATCHED:
        yield batched_case(a, b, tb)


# ====================================================================== lowering: every target
@pytest.mark.parametrize("target", TARGETS)
def test_defaults_tensorize(target):
    tgt = model_target(target)
    for t, wl in _cases(tgt):
        assert_tensorized(t, wl, tgt)


@pytest.mark.parametrize("seed,count", [(11, 1), pytest.param(12, 25, marks=pytest.mark.slow)])
@pytest.mark.parametrize("target", TARGETS)
def test_sampled_configs_of_every_space_tensorize(target, seed, count):
    """Every config of the spaces is legal: a seeded sample (the slow case walks more)."""
    tgt = model_target(target)
    rng = np.random.default_rng(seed)
    for t, wl in _cases(tgt):
        sp = t.space(wl, tgt)
        for c in sp.sample(rng, count):
            assert_tensorized(t, wl, tgt, c)


def test_dense_panels_follow_the_micro_tile():
    """Weights are packed in panels of the kernel's NR columns, and the whole 8 x 128 x 256
    space on aarch64 (panels of 8, NC up to 256) is legal (it used to fail for NC >= 64)."""
    t = DenseTemplate()
    assert [t.panel_columns(x) for x in TARGETS] == [16, 32, 8, 8, 4, 4, 8]
    tgt = model_target("aarch64")
    wl = t.workload(8, 256, 128, weights="packed", b_block=32)   # 4 tiles per panel
    sp = t.space(wl, tgt)
    wide = [c for c in sp if c["NC"] >= 64 and not c["parallel"] and c["order"] == "ji"]
    assert len({c["NC"] for c in wide}) == 3
    for c in wide:
        assert_tensorized(t, wl, tgt, c)
    with pytest.raises(ValueError, match="multiple of 32"):
        t.space(t.workload(8, 256, 128, weights="packed", b_block=16), "x86-avx512")


# ====================================================================== numbers
@pytest.mark.parametrize("target", QUICK_RUN)
def test_dense_and_batched_match_numpy(target):
    need_run(target)
    tgt = model_target(target)
    for t, wl in _cases(tgt):
        run_and_check(t, wl, tgt)


@pytest.mark.slow
@pytest.mark.parametrize("target", ("x86-avx512", "aarch64", "armv7"))
def test_dense_and_batched_match_numpy_slow(target):
    need_run(target)
    tgt = model_target(target)
    for t, wl in _cases(tgt):
        run_and_check(t, wl, tgt)


# ====================================================================== models
def matmul_model(M: int):
    """A classifier head (Gemm transB=1 + bias + relu, MatMul by a constant) on M rows, and
    attention: softmax(Q.K^T) . V with V broadcast over the batch, K^T by a Transpose."""
    from onnx import TensorProto, helper as h, numpy_helper
    rng = np.random.default_rng(M)
    K1, N1, N2, H, S, D = 41, 37, 64, 3, 5, 8
    w1 = rng.uniform(-1, 1, (N1, K1)).astype(np.float32)
    b1 = rng.uniform(-1, 1, N1).astype(np.float32)
    w2 = rng.uniform(-1, 1, (N1, N2)).astype(np.float32)
    nodes = [h.make_node("Gemm", ["x", "w1", "b1"], ["g"], transB=1),
             h.make_node("Relu", ["g"], ["r"]),
             h.make_node("MatMul", ["r", "w2"], ["y"]),
             h.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             h.make_node("MatMul", ["q", "kt"], ["s"]),
             h.make_node("Softmax", ["s"], ["p"], axis=-1),
             h.make_node("MatMul", ["p", "v"], ["o"])]
    f = TensorProto.FLOAT
    graph = h.make_graph(
        nodes, f"matmuls{M}",
        [h.make_tensor_value_info("x", f, [M, K1]), h.make_tensor_value_info("q", f, [2, H, S, D]),
         h.make_tensor_value_info("k", f, [2, H, S, D]), h.make_tensor_value_info("v", f, [1, H, S, D])],
        [h.make_tensor_value_info("y", f, [M, N2]), h.make_tensor_value_info("o", f, [2, H, S, D])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=8)
    feeds = {"x": rng.uniform(-1, 1, (M, K1)).astype(np.float32)}
    for name, shape in (("q", (2, H, S, D)), ("k", (2, H, S, D)), ("v", (1, H, S, D))):
        feeds[name] = rng.uniform(-1, 1, shape).astype(np.float32)
    x, q, k, v = (feeds[n].astype(np.float64) for n in "xqkv")
    y = np.maximum(x @ w1.T + b1, 0) @ w2
    s = q @ np.swapaxes(k, -1, -2)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = {"y": y.astype(np.float32), "o": (p @ v).astype(np.float32)}
    return model, feeds, want


def check_model(M: int, target: str, run: bool = True):
    pytest.importorskip("onnx")
    model, feeds, want = matmul_model(M)
    cm = compile_model(model, target, name=f"matmuls{M}", strict=True)
    mm = [k for k in cm.kernels if not k.is_alias and k.group.nodes[0].op == "matmul"]
    assert len(mm) == 4, [k.describe() for k in cm.kernels]
    for k in mm:
        assert k.template in ("dense", "batch_matmul"), (k.describe(), k.template, k.note)
        assert any(x.name.startswith("cg_gemm_") for x in k.func.kernels), \
            f"{k.name} ({k.template}) on {target} calls no GEMM micro-kernel"
    if run:
        need_run(target)
        got = cm.run(feeds, timeout=300)
        for name, a in want.items():
            assert_matches(got[name], a)


def test_models_compile_strict_with_kernels_on_every_target():
    for target in TARGETS:
        check_model(5, target, run=False)


@pytest.mark.slow
@pytest.mark.parametrize("M", (1, 40))
def test_models_compile_strict_with_kernels_on_every_target_slow(M):
    for target in TARGETS:
        check_model(M, target, run=False)


@pytest.mark.parametrize("target", QUICK_RUN)
def test_model_runs(target):
    check_model(5, target)


@pytest.mark.slow
@pytest.mark.parametrize("M", (1, 40))
@pytest.mark.parametrize("target", TARGETS)
def test_model_runs_slow(target, M):
    check_model(M, target)
