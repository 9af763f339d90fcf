"""Depthwise conv along flattened padded rows (cgen.ops.depthwise, rows="flat").

A 7x7 image's output row is 7 wide: a 16-lane AVX-512 vector idles more than half its
lanes and NEON's 4-lane rows end in scalar steps, so the MobileNet family's last depthwise
layers and DS-CNN's 25x5 layers ran at a fraction of the FMA rate.
Flat rows run the window over the padded plane's flattened rows (one vector spans several
output rows) and copy the valid columns out.  Checked: the index rule that keeps those
loads contiguous, the emitted C (whole vectors, no scalar tail, no zero fill), the
default per ISA, outputs against numpy on x86-avx2, x86-avx512, generic-c and under QEMU
on aarch64 and armv7, and a model through compile_model against onnxruntime.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import cgen
from cgen.lower.simplify import simplify_expr
from cgen.ops.depthwise import DepthwiseNCHWTemplate
from cgen.te.expr import INDEX, Binary, Const, Var
from tests.util import assert_matches

T = DepthwiseNCHWTemplate()


def _wl(C, H, W, K, pad=None, dilation=1, multiplier=1, stride=1):
    return T.workload(1, C, H, W, K, K, stride, K // 2 * dilation if pad is None else pad,
                      dilation, multiplier)


def _config(wl, target, rows):
    sp = T.space(wl, target)
    return sp.get(sp.index_of(dict(T.default(wl, target).to_dict(), rows=rows)))


def _run(wl, target, rows):
    rng = np.random.default_rng(3)
    inputs = T.inputs(wl, rng)
    ref = T.reference(wl, inputs)["Y"]
    s, args = T.build(wl, target, _config(wl, target, rows))
    mod = cgen.build(s, args, target=target, name="dw")
    arrays = [a.copy() for a in inputs]
    arrays[-1][...] = np.nan
    mod(*arrays)
    assert_matches(arrays[-1], ref)
    return mod.c_source


def test_row_and_column_of_a_flat_index_fold_back():
    """(q // Wp) * Wp + q % Wp is q: the padded plane read at flat position p + offset
    addresses P[p + offset], a contiguous vector load (was two divisions per element)."""
    p, c = Var("p"), Var("c")

    def b(op, x, y):
        return Binary(op, x, y, INDEX)
    q = b("+", p, Const(19, INDEX))
    flat = b("+", b("*", c, Const(81, INDEX)),
             b("+", b("*", b("//", q, Const(9, INDEX)), Const(9, INDEX)), b("%", q, Const(9, INDEX))))
    got = simplify_expr(flat, {p: (0, 63), c: (0, 31)})
    want = simplify_expr(b("+", b("+", b("*", c, Const(81, INDEX)), p), Const(19, INDEX)))
    assert got == want
    # a quotient with another multiplier is not a row/column pair: left alone
    odd = b("+", b("*", b("//", q, Const(9, INDEX)), Const(8, INDEX)), b("%", q, Const(9, INDEX)))
    assert "op='//'" in repr(simplify_expr(odd, {p: (0, 63)}))


@pytest.mark.isa("avx2")
def test_flat_rows_emit_whole_vectors_x86_avx2():
    """x86-avx2, 7x7 with a 5x5 window (EfficientNet-Lite0's last stage) in flat rows: F
    is whole 8-lane vectors, no scalar tail loop, no division in an index, no zero fill
    of F."""
    src = _run(_wl(16, 7, 7, 5), "x86-avx2", "flat")
    assert "_mm256_fmadd_ps" in src
    assert "cg_floordiv" not in src and "cg_min" not in src
    assert re.search(r"float F\[\d+\];", src)      # written whole: no "= {0}"


@pytest.mark.isa("avx2")
@pytest.mark.parametrize("size,stride", [(14, 1), (28, 2)])
def test_flat_rows_store_row_tails_as_parts_x86_avx2(size, stride):
    """The copy of each output row (14 wide: 8 + 6 lanes) has its column blocks unrolled,
    so the 6-lane tail is a constant count stored as parts (4 + 2 lanes), not a
    vmaskmovps store at a count known at run time (12 cycles each on Zen 3)."""
    src = _run(_wl(8, size, size, 3, stride=stride), "x86-avx2", "flat")
    assert "_mm256_maskstore_ps" not in src
    assert "_mm_storel_epi64(" in src


@pytest.mark.parametrize("target,shape,rows", [
    ("x86-avx2", (32, 7, 7, 3), "tile"), ("x86-avx2", (32, 7, 7, 5), "tile"),
    ("x86-avx512", (32, 7, 7, 3), "flat"), ("x86-avx2", (64, 25, 5, 3), "flat"),
    ("x86-avx2", (32, 14, 14, 3), "flat"), ("x86-avx2", (32, 28, 28, 3), "tile"),
    ("x86-avx512", (32, 28, 28, 3), "flat"), ("x86-avx512", (32, 56, 56, 3), "tile"),
    ("aarch64", (32, 7, 7, 3), "flat"),
    ("aarch64", (32, 14, 14, 3), "flat"), ("aarch64", (32, 28, 28, 3), "tile"),
    ("cortex-m4", (32, 7, 7, 3), "tile"),
    ("x86-avx2", (32, 14, 14, 3, None, 1, 1, 2), "flat"),
    ("x86-avx2", (32, 56, 56, 3, None, 1, 1, 2), "flat"),
    ("x86-avx2", (32, 112, 112, 3, None, 1, 1, 2), "tile"),
    ("x86-avx512", (32, 112, 112, 3, None, 1, 1, 2), "tile"),
    ("aarch64", (32, 28, 28, 5, None, 1, 1, 2), "flat"),
    ("aarch64", (32, 56, 56, 3, None, 1, 1, 2), "tile")])
def test_default_rows_per_isa(target, shape, rows):
    """The measured rule: below FLAT_BELOW's width (stride 1: max(16, 2 * lanes), stride
    2: min(4 * lanes, 32)) where flat rows use at least as many lanes as tiled rows (on
    x86-avx2 with masked tails a 7-wide row uses 7 of 8 lanes: tiled); never on a scalar
    ISA, never with stride 3 or unequal strides."""
    assert T.default(_wl(*shape), target)["rows"] == rows
    for stride in ((3, 3), (1, 2)):
        other = T.workload(1, 32, 14, 14, 3, 3, stride, 1)
        assert {k.name: k.choices for k in T.space(other, target).knobs}["rows"] == ("tile",)


X86 = [pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")),
       pytest.param("x86-avx512", marks=pytest.mark.isa("avx512")), "generic-c"]
CASES = [(8, 7, 7, 3, None, 1, 1, 1), (8, 7, 7, 5, None, 1, 1, 1), (4, 25, 5, 3, None, 1, 1, 1),
         (4, 9, 6, 3, [2, 0, 1, 1], 1, 1, 1), (4, 10, 11, 3, None, 2, 1, 1),
         (3, 7, 7, 3, None, 1, 2, 1), (8, 14, 14, 3, None, 1, 1, 2), (4, 13, 11, 5, None, 1, 1, 2),
         (4, 12, 9, 3, [0, 1, 1, 0], 1, 2, 2), (4, 15, 14, 3, None, 2, 1, 2)]


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "c{}h{}w{}k{}p{}d{}m{}s{}".format(*c))
def test_flat_rows_match_reference(target, case):
    """Stride 1 and 2, odd sizes, 5x5 windows, asymmetric and zero pads, dilation 2,
    multiplier 2."""
    _run(_wl(*case), target, "flat")


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_flat_rows_match_reference_qemu(target):
    for case in CASES[:4] + CASES[6:8]:
        _run(_wl(*case), target, "flat")


@pytest.mark.parametrize("target,size,k", [
    pytest.param("x86-avx512", 7, 5, marks=pytest.mark.isa("avx512")),
    pytest.param("x86-avx2", 14, 3, marks=pytest.mark.isa("avx2"))])
def test_model_depthwise_takes_flat_rows_and_matches_onnxruntime(target, size, k):
    """Through compile_model: a depthwise + ReLU6 on 7x7 images (5x5 window, x86-avx512)
    or 14x14 (3x3, x86-avx2) is one kernel with rows "flat", and its output matches
    onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    from cgen.graph.model import compile_model
    rng = np.random.default_rng(0)
    w = rng.standard_normal((24, 1, k, k)).astype(np.float32)
    shape = [1, 24, size, size]
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], group=24, pads=[k // 2] * 4),
         helper.make_node("Clip", ["c", "lo", "hi"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(0), "lo"),
         numpy_helper.from_array(np.float32(6), "hi")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    cm = compile_model(model, target, name="dwflat")
    convs = [k for k in cm.kernels if k.template == "depthwise_conv2d"]
    assert len(convs) == 1 and convs[0].config["rows"] == "flat"
    x = rng.standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert_matches(cm.run({"x": x})["y"], want)
