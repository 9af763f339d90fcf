"""Selects on a float32 comparison are vector code: one compare and one blend from the ISA
row (AVX2 blendv, AVX-512 mask_blend, NEON vbsl, Helium vpsel).  The vectorizer had no
select, so the loops of Elu, Selu, PReLU, Shrink and ThresholdedRelu stayed scalar (and Elu
and Selu called libm's expf; they now use te.exp_poly).  NaN compares false, as in C.  A
select whose condition all lanes share (a concat's row) is C's ?: between two vectors."""
from __future__ import annotations

import re

import numpy as np
import pytest

import cgen
from cgen import te
from tests.util import skip_without_system_qemu

# each target with the compare and blend its select loop must contain
TARGETS = [
    pytest.param("x86-avx2", ("_mm256_cmp_ps", "_mm256_blendv_ps"), marks=pytest.mark.isa("avx2")),
    pytest.param("x86-avx512", ("_mm512_cmp_ps_mask", "_mm512_mask_blend_ps"),
                 marks=pytest.mark.isa("avx512")),
    ("aarch64", ("vc{}q_f32", "vbslq_f32")),
    ("armv7", ("vc{}q_f32", "vbslq_f32")),
    ("cortex-m55", ("vcmpgtq_f32", "vcmpgeq_f32", "vpselq_f32")),
    ("generic-c", ()),
]
OPS = {"<": ("lt", np.less), "<=": ("le", np.less_equal), ">": ("gt", np.greater),
       ">=": ("ge", np.greater_equal)}
N = 1003        # not a multiple of any lane count: the masked or scalar tail too


def _select_module(target: str, op: str):
    """B = A OP C ? A * 0.5 : C - A, with C a per-element second input."""
    A = te.placeholder((N,), "float32", name="A")
    C = te.placeholder((N,), "float32", name="C")
    B = te.compute(A.shape, lambda i: te.if_then_else(
        te.compare(op, A[i], C[i]), A[i] * te.const(0.5, "float32"), C[i] - A[i]), name="B")
    s = te.create_schedule(B)
    _, inner = s[B].split(B.op.axis[0], factor=16)
    s[B].vectorize(inner)
    return cgen.build(s, [A, C, B], target=target)


def _inputs():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(N).astype(np.float32)
    c = rng.standard_normal(N).astype(np.float32)
    c[::7] = a[::7]                     # ties, where < and <= differ
    a[:4] = [np.nan, 1.0, np.inf, -np.inf]
    c[:4] = [0.0, np.nan, np.inf, 0.0]
    return a, c


@pytest.mark.parametrize("target,intrinsics", TARGETS)
def test_select_on_a_float_compare_is_vector_code_and_exact(target, intrinsics):
    skip_without_system_qemu(target)       # cortex-m55: Helium under qemu-system-arm
    a, c = _inputs()
    for op, (suffix, npop) in OPS.items():
        mod = _select_module(target, op)
        kernel = mod.c_source.split("int32_t default_function(")[-1] \
            if "default_function" in mod.c_source else mod.c_source
        for name in intrinsics:
            assert name.format(suffix) in mod.c_source or "{" not in name and any(
                name in _select_module(target, o).c_source for o in OPS), (op, name)
        if target.startswith("x86"):    # masked tails: no scalar store of B left at all
            assert not re.search(r"\bB\[[^\]]*\]\s*=", kernel), op
        out = np.zeros_like(a)
        mod(a, c, out)
        with np.errstate(invalid="ignore"):
            want = np.where(npop(a, c), a * np.float32(0.5), c - a)
        np.testing.assert_array_equal(out, want, err_msg=f"{target} {op}")


def test_vectorizer_leaves_an_integer_compare_select_scalar_x86_avx2():
    """Only float32 comparisons choosing floats have a row entry: an index compare (a
    padding test) keeps the loop scalar rather than guess a lane mask."""
    A = te.placeholder((64,), "float32", name="A")
    B = te.compute(A.shape, lambda i: te.if_then_else(i < 10, A[i], te.const(0.0, "float32")),
                   name="B")
    s = te.create_schedule(B)
    _, inner = s[B].split(B.op.axis[0], factor=16)
    s[B].vectorize(inner)
    mod = cgen.build(s, [A, B], target="x86-avx2")
    assert "_mm256_blendv_ps" not in mod.c_source
    a = np.arange(64, dtype=np.float32)
    out = np.zeros_like(a)
    mod(a, out)
    np.testing.assert_array_equal(out, np.where(np.arange(64) < 10, a, 0))


@pytest.mark.parametrize("target,vload", [
    pytest.param("x86-avx2", "_mm256_loadu_ps", marks=pytest.mark.isa("avx2")),
    pytest.param("x86-avx512", "_mm512_loadu_ps", marks=pytest.mark.isa("avx512")),
    ("aarch64", "vld1q_f32"), ("armv7", "vld1q_f32"), ("cortex-m55", "vld1q_f32"),
    ("generic-c", None)])
def test_a_select_all_lanes_share_is_vector_code(target, vload):
    """A row of a concat comes from one input or the other: the condition names only the
    row, so the lanes share it and the row is vector loads under C's ?: (was: any select
    on an index condition left the loop scalar, so ShuffleNetV2's concat + channel
    shuffle kernels were scalar copies)."""
    skip_without_system_qemu(target)
    R0, R1, W = 3, 4, 29
    A = te.placeholder((R0, W), "float32", name="A")
    C = te.placeholder((R1, W), "float32", name="C")
    B = te.compute((R0 + R1, W), lambda r, x: te.if_then_else(
        r < R0, A[r, x], C[r - R0, x] * te.const(2.0, "float32")), name="B")
    s = te.create_schedule(B)
    _, inner = s[B].split(B.op.axis[1], factor=16)
    s[B].vectorize(inner)
    mod = cgen.build(s, [A, C, B], target=target)
    if vload:
        assert re.search(r"\?\s*\(" + vload + r"\(&A\[", mod.c_source), target
    if target.startswith("x86"):        # masked tails: no scalar store of B left at all
        assert not re.search(r"\bB\[[^\]]*\]\s*=", mod.c_source)
    rng = np.random.default_rng(4)
    a = rng.standard_normal((R0, W)).astype(np.float32)
    c = rng.standard_normal((R1, W)).astype(np.float32)
    out = np.zeros((R0 + R1, W), np.float32)
    mod(a, c, out)
    np.testing.assert_array_equal(out, np.concatenate([a, c * np.float32(2.0)]))


ACTS = [("Elu", {"alpha": 0.7}), ("Selu", {}), ("Celu", {"alpha": 1.3}),
        ("ThresholdedRelu", {"alpha": 0.2}), ("Shrink", {"lambd": 0.3, "bias": 0.1})]


@pytest.mark.parametrize("act,attrs", ACTS)
@pytest.mark.parametrize("target,blend", [
    pytest.param("x86-avx2", "_mm256_blendv_ps", marks=pytest.mark.isa("avx2")),
    pytest.param("x86-avx512", "_mm512_mask_blend_ps", marks=pytest.mark.isa("avx512"))])
def test_conv_epilogues_with_a_select_are_vector_code(act, attrs, target, blend):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from cgen.graph.model import compile_model
    from tests.util import assert_matches
    rng = np.random.default_rng(4)
    # a 1x1 conv: a GEMM whose epilogue runs along the pixels of its NCHW output
    w = numpy_helper.from_array((rng.standard_normal((24, 16, 1, 1)) * 0.4).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node(act, ["c"], ["y"], **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 13, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 13, 13])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    cm = compile_model(model, target, name="sel")
    conv = next(k for k in cm.kernels if k.template.startswith("conv2d"))
    # the first definition: the vector one (a guarded build also has a portable fallback)
    body = cm.c_source.split(f"static int {conv.name}(")[1].split("\n}\n")[0]
    assert "expf(" not in body and not re.search(r"\?\s*\(", body), act
    if act != "Celu":       # max / min form, no select
        assert blend in body, act
    x = rng.standard_normal((1, 16, 13, 13)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    y = cm.run({"x": x})["y"]
    assert (y != 0).any()
    assert_matches(y, want)
