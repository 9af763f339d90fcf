"""te.exp_poly (exp as 2^n * p(r), no libm call): accurate to about 1 ulp through the
compiled C on every ISA row that vectorizes it (AVX2, AVX-512, NEON aarch64 and armv7,
Helium) and in portable C, and softmax's exp loop
is vector code (the libm expf it replaced kept that loop scalar)."""
from __future__ import annotations

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.ops.common import config_dict
from cgen.ops.softmax_template import SoftmaxTemplate
from tests.util import skip_without_system_qemu

# each target with the intrinsics its exp loop must contain (bit casts and the shift of 2^n)
TARGETS = [
    pytest.param("x86-avx2", ("_mm256_castps_si256", "_mm256_slli_epi32", "_mm256_castsi256_ps"),
                 marks=pytest.mark.isa("avx2")),
    pytest.param("x86-avx512", ("_mm512_castps_si512", "_mm512_slli_epi32", "_mm512_castsi512_ps"),
                 marks=pytest.mark.isa("avx512")),
    ("aarch64", ("vreinterpretq_s32_f32", "vshlq_n_s32", "vreinterpretq_f32_s32")),
    ("armv7", ("vreinterpretq_s32_f32", "vshlq_n_s32", "vreinterpretq_f32_s32")),
    ("cortex-m55", ("vreinterpretq_s32_f32", "vshlq_n_s32", "vreinterpretq_f32_s32")),
    ("generic-c", ("cg_as_int32(", "cg_shl_i32(", "cg_as_float32(")),
]
# a dense sweep of the finite range, plus the clamped ends
X = np.linspace(-87.0, 88.0, 40_003).astype(np.float32)
EDGES = np.array([-np.inf, -1e30, -104.0, -88.5, 0.0, 88.0], np.float32)


def _exp_module(target: str):
    A = te.placeholder((X.size + EDGES.size,), "float32", name="A")
    B = te.compute(A.shape, lambda i: te.exp_poly(A[i]), name="B")
    s = te.create_schedule(B)
    _, inner = s[B].split(B.op.axis[0], factor=16)
    s[B].vectorize(inner)
    return cgen.build(s, [A, B], target=target)


@pytest.mark.parametrize("target,intrinsics", TARGETS)
def test_exp_poly_matches_numpy_to_an_ulp(target, intrinsics):
    skip_without_system_qemu(target)       # cortex-m55: Helium under qemu-system-arm
    mod = _exp_module(target)
    assert "expf(" not in mod.c_source
    for name in intrinsics:
        assert name in mod.c_source, name
    x = np.concatenate([X, EDGES])
    out = np.zeros_like(x)
    mod(x, out)
    want = np.exp(X.astype(np.float64))
    rel = np.abs(out[:X.size] - want) / want
    assert rel.max() < 2e-7, (target, float(rel.max()), float(X[rel.argmax()]))
    # exp(-inf) and anything below the float32 normal range is 0; exp(88) is finite
    np.testing.assert_array_equal(out[X.size:X.size + 4], 0.0)
    assert out[-2] == 1.0
    assert np.isclose(out[-1], np.exp(np.float64(88.0)), rtol=2e-7)


def test_reinterpret_is_float32_int32_only():
    """te.reinterpret is checked at the API: only float32 <-> int32."""
    x = te.placeholder((4,), "float32", name="x")
    assert te.reinterpret("int32", x[0]).dtype == "int32"
    with pytest.raises(TypeError):
        te.reinterpret("int64", x[0])
    with pytest.raises(TypeError):
        te.reinterpret("float32", x[0])


def test_softmax_exp_loop_is_vector_code_on_avx2():
    """x86-avx2: no libm expf anywhere, the stores of the exp stage are AVX2 vectors built
    with the exp bit casts (the old expf kept this loop scalar), and the reductions along
    the row are vector accumulators."""
    tm = SoftmaxTemplate()
    wl = tm.workload([2, 16, 64], -1)
    cfg = dict(config_dict(tm.default(wl, "x86-avx2")), exp="root")
    s, args = tm.build(wl, "x86-avx2", cfg)
    mod = cgen.build(s, args, target="x86-avx2")
    src = mod.c_source
    assert "expf(" not in src
    stores = [ln for ln in src.splitlines() if "_mm256_storeu_ps(&Y_exp" in ln]
    assert stores and all("_mm256_slli_epi32" in ln and "_mm256_castsi256_ps" in ln
                          for ln in stores)
    # the row's sum and max accumulate in one vector each (lane partials)
    assert "_mm256_storeu_ps(&Y_sum_part" in src and "_mm256_storeu_ps(&Y_max_part" in src
    ins = tm.inputs(wl, np.random.default_rng(1))
    ins[0][0, 0, :3] = -np.inf          # exp(-inf - max) = 0, as onnxruntime
    mod(*ins)
    np.testing.assert_allclose(ins[1], tm.reference(wl, ins)["Y"], rtol=1e-5, atol=1e-6)


def test_onnx_exp_is_vectorised_on_avx2():
    """x86-avx2: an ONNX Exp (with the Mul it fuses with) is one AVX2 loop, no libm call."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper as h, numpy_helper
    from cgen.graph.model import compile_model
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    g = h.make_graph([h.make_node("Exp", ["x"], ["e"]), h.make_node("Mul", ["e", "two"], ["y"])],
                     "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [8, 100])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [8, 100])], [two])
    cm = compile_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), "x86-avx2",
                       name="ex")
    body = cm.c_source.rsplit("int ex_run(", 1)[0]
    assert "expf(" not in body and "_mm256_slli_epi32" in body
    x = np.random.default_rng(3).uniform(-80, 80, (8, 100)).astype(np.float32)
    np.testing.assert_allclose(cm.run({"x": x})["y"], 2 * np.exp(x.astype(np.float64)),
                               rtol=3e-7)
