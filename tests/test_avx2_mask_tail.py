"""x86-avx2: a vectorized loop whose extent is not a multiple of 8 ends in one masked
vector (vmaskmovps: _mm256_maskload_ps / _mm256_maskstore_ps, lanes off neither read
nor written), not a scalar loop; a loop shorter than 8 is one masked vector, not scalar.
Checked: the emitted C, the outputs against numpy for every tail length (extents 1..17,
inputs and output exactly as long as the loop, so a lane past the end would be read or
written outside its buffer), and an elementwise model through compile_model against
onnxruntime; the masked tail under ASan/UBSan."""
from __future__ import annotations

import re

import numpy as np
import pytest

import cgen
from cgen import te
from tests.util import assert_matches

TARGET = "x86-avx2"


def _axpy(n: int, sanitize: bool = False):
    """C = A * B + A, vectorized whole along its one axis."""
    A = te.placeholder((n,), name="A")
    B = te.placeholder((n,), name="B")
    C = te.compute((n,), lambda i: A[i] * B[i] + A[i], name="C")
    s = te.create_schedule(C)
    s[C].vectorize(C.op.axis[0])
    return cgen.build(s, [A, B, C], target=TARGET, name="axpy", sanitize=sanitize)


def test_extent_13_ends_in_a_masked_vector_not_a_scalar_loop():
    src = _axpy(13).c_source
    body = src[src.index("int axpy("):]
    assert "_mm256_storeu_ps(&C[0]" in body           # one whole vector
    assert "_mm256_maskstore_ps(&C[8]" in body        # then the 5-lane tail, masked
    assert "_mm256_maskload_ps(&A[8]" in body and "_mm256_maskload_ps(&B[8]" in body
    assert "_mm256_set1_epi32((int32_t) 5)" in body   # the mask of the first 5 lanes
    assert not re.search(r"\bfor\s*\(", body), body   # no scalar tail loop
    assert not re.search(r"\bC\[[^]]*\]\s*=", body), body   # no scalar store


def test_extent_below_8_is_one_masked_vector():
    src = _axpy(7).c_source
    body = src[src.index("int axpy("):]
    assert "_mm256_maskstore_ps(&C[0]" in body and "_mm256_storeu_ps" not in body
    assert not re.search(r"\bfor\s*\(", body), body


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
    """The harness executable under ASan/UBSan, arrays exactly n long."""
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal((2, n)).astype(np.float32)
    c = np.full(n, np.nan, np.float32)
    _axpy(n, sanitize=True)(a, b, c)
    assert_matches(c, a * b + a)


@pytest.mark.isa("avx2")
def test_depthwise_7_wide_tiles_are_masked_and_match_numpy():
    """Depthwise 5x5 on 7x7 images, rows "tile": each 7-wide row is one masked vector."""
    from cgen.ops.depthwise import DepthwiseNCHWTemplate
    T = DepthwiseNCHWTemplate()
    wl = T.workload(1, 8, 7, 7, 5, 5, 1, 2)
    sp = T.space(wl, TARGET)
    cfg = sp.get(sp.index_of(dict(T.default(wl, TARGET).to_dict(), rows="tile")))
    s, args = T.build(wl, TARGET, cfg)
    mod = cgen.build(s, args, target=TARGET, name="dw")
    assert "_mm256_maskstore_ps" in mod.c_source
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
