"""x86-avx2: a vectorized loop whose extent is not a multiple of 8 ends in one masked
vector (vmaskmovps loads, _mm256_maskload_ps: lanes off not read), not a scalar loop; a
loop shorter than 8 is one masked vector, not scalar.  The tail's store writes only its
lanes: at a constant count as plain stores of 4, 2 and 1 lanes (the ISA row's
part_store: vmaskmovps to memory is 42 uops, one per 12 cycles, on Zen 3), at a count
known at run time only as _mm256_maskstore_ps.
Checked: the emitted C, the outputs against numpy for every tail length (extents 1..17,
inputs and output exactly as long as the loop, so a lane past the end would be read or
written outside its buffer), a run-time tail, and an elementwise model through
compile_model against onnxruntime; the tails under ASan/UBSan."""
from __future__ import annotations

import re

import numpy as np
import pytest

import cgen
from cgen import te
from tests.util import assert_matches

TARGET = "x86-avx2"


def _axpy(n: int, sanitize: bool = False, split: int | None = None):
    """C = A * B + A, vectorized whole along its one axis (or its inner part of `split`,
    whose extent is then known at run time only in the last part)."""
    A = te.placeholder((n,), name="A")
    B = te.placeholder((n,), name="B")
    C = te.compute((n,), lambda i: A[i] * B[i] + A[i], name="C")
    s = te.create_schedule(C)
    axis = C.op.axis[0]
    if split:
        axis = s[C].split(axis, factor=split)[1]
    s[C].vectorize(axis)
    return cgen.build(s, [A, B, C], target=TARGET, name="axpy", sanitize=sanitize)


def test_extent_13_ends_in_a_masked_vector_not_a_scalar_loop():
    src = _axpy(13).c_source
    body = src[src.index("int axpy("):]
    assert "_mm256_storeu_ps(&C[0]" in body           # one whole vector
    assert "_mm256_maskload_ps(&A[8]" in body and "_mm256_maskload_ps(&B[8]" in body
    assert "_mm256_set1_epi32((int32_t) 5)" in body   # the mask of the first 5 lanes
    # then the 5-lane tail's store: 4 lanes, then 1 from the high half
    assert "_mm_storeu_ps(&C[8], _mm256_castps256_ps128(" in body
    assert "_mm_store_ss((&C[8]) + 4, " in body and "_mm256_maskstore_ps" not in body
    assert not re.search(r"\bfor\s*\(", body), body   # no scalar tail loop
    assert not re.search(r"\bC\[[^]]*\]\s*=", body), body   # no scalar store


def test_extent_below_8_is_one_masked_vector():
    src = _axpy(7).c_source
    body = src[src.index("int axpy("):]
    assert "_mm256_maskload_ps(&A[0]" in body and "_mm256_storeu_ps" not in body
    for part in ("_mm_storeu_ps(&C[0]", "_mm_storel_epi64(", "_mm_store_ss((&C[0]) + 6"):
        assert part in body, part
    assert not re.search(r"\bfor\s*\(", body), body


@pytest.mark.isa("avx2")
@pytest.mark.parametrize("n", [21, 29])
def test_a_tail_known_at_run_time_only_stays_one_masked_store(n):
    mod = _axpy(n, split=16)
    assert "_mm256_maskstore_ps(&C[" in mod.c_source and "_mm_store_ss" not in mod.c_source
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal((2, n)).astype(np.float32)
    c = np.full(n, np.nan, np.float32)
    mod(a, b, c)
    assert_matches(c, a * b + a)


@pytest.mark.isa("avx2")
@pytest.mark.parametrize("n", range(1, 18))
def test_every_tail_length_matches_numpy(n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    c = np.full(n, np.nan, np.float32)
    _axpy(n)(a, b, c)
    assert_matches(c, a * b + a)


@pytest.mark.sanitize
@pytest.mark.isa("avx2")
@pytest.mark.parametrize("n", [5, 13])
def test_masked_tail_under_asan_and_ubsan(n):
    """The harness executable under ASan/UBSan, arrays exactly n long; the run-time tail
    (split) too."""
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal((2, n)).astype(np.float32)
    for split in (None, 8):
        c = np.full(n, np.nan, np.float32)
        _axpy(n, sanitize=True, split=split)(a, b, c)
        assert_matches(c, a * b + a)


@pytest.mark.isa("avx2")
def test_depthwise_7_wide_tiles_are_masked_and_match_numpy():
    """Depthwise 5x5 on 7x7 images, rows "tile": each 7-wide row is one masked vector,
    stored as parts of 4, 2 and 1 lanes."""
    from cgen.ops.depthwise import DepthwiseNCHWTemplate
    T = DepthwiseNCHWTemplate()
    wl = T.workload(1, 8, 7, 7, 5, 5, 1, 2)
    sp = T.space(wl, TARGET)
    cfg = sp.get(sp.index_of(dict(T.default(wl, TARGET).to_dict(), rows="tile")))
    s, args = T.build(wl, TARGET, cfg)
    mod = cgen.build(s, args, target=TARGET, name="dw")
    assert "_mm_store_ss(" in mod.c_source and "_mm256_maskstore_ps" not in mod.c_source
    inputs = T.inputs(wl, np.random.default_rng(1))
    ref = T.reference(wl, inputs)["Y"]
    arrays = [x.copy() for x in inputs]
    arrays[-1][...] = np.nan
    mod(*arrays)
    assert_matches(arrays[-1], ref)


@pytest.mark.isa("avx2")
def test_elementwise_model_matches_onnxruntime():
    """Add then Relu on 13-wide rows through compile_model on x86-avx2."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    from cgen.graph.model import compile_model
    shape = [3, 5, 13]
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "y"], ["m"]), helper.make_node("Add", ["m", "x"], ["a"]),
         helper.make_node("Relu", ["a"], ["z"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "y")],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, shape)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    cm = compile_model(model, TARGET, name="ew13")
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(shape).astype(np.float32) for n in ("x", "y")}
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_matches(cm.run(feeds)["z"], want)
