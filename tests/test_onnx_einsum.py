"""Einsum lowered to transposes, reductions and matmuls, checked against numpy.einsum.

The ONNX backend node cases of Einsum are float64 (a dtype cgen does not compile), so
these float32 models cover the same equations and the ones exporters write (attention's
batched products, bilinear forms, outer products, traces, broadcast ellipses)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as h

from cgen.graph import ModelError
from cgen.graph.model import compile_model
from cgen.graph.onnx_frontend import load_onnx

# equation, operand shapes
EQUATIONS = [
    ("ij->ji", [(3, 4)]),                          # transpose
    ("ij->i", [(3, 4)]),                           # row sums
    ("...ii->...i", [(3, 5, 5)]),                  # batch diagonal
    ("i,i", [(5,), (5,)]),                         # inner product (implicit output)
    ("bij, bjk -> bik", [(5, 2, 3), (5, 3, 4)]),   # batched matmul
    ("->", [()]),                                  # scalar
    ("ij,jk->ik", [(4, 6), (6, 3)]),
    ("ij,kj->ik", [(4, 6), (3, 6)]),               # x W^T
    ("bhqd,bhkd->bhqk", [(1, 2, 5, 8), (1, 2, 6, 8)]),   # attention scores
    ("bhqk,bhkd->bqhd", [(1, 2, 5, 6), (1, 2, 6, 8)]),   # attention output, heads moved
    ("i,j->ij", [(4,), (3,)]),                     # outer product
    ("ijk->", [(2, 3, 4)]),                        # total sum
    ("ijk->kji", [(2, 3, 4)]),
    ("bi,bi->b", [(3, 7), (3, 7)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),  # broadcast batch
    ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 2)]),    # three operands
    ("ii", [(4, 4)]),                              # trace
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),     # bilinear
]


def _model(cases):
    rng = np.random.default_rng(0)
    nodes, ins, outs, feeds = [], [], [], {}
    for k, (eq, shapes) in enumerate(cases):
        names = [f"x{k}_{j}" for j in range(len(shapes))]
        arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        want = np.einsum(eq.replace(" ", ""), *arrays)
        feeds.update(zip(names, arrays))
        nodes.append(h.make_node("Einsum", names, [f"y{k}"], equation=eq))
        ins += [h.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)]
        outs.append((h.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, want.shape), want))
    g = h.make_graph(nodes, "einsum", ins, [o for o, _ in outs])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 12)])
    return model, feeds, {o.name: w for o, w in outs}


def test_einsum_equations_match_numpy_on_x86_avx2():
    model, feeds, want = _model(EQUATIONS)
    got = compile_model(model, "x86-avx2").run(feeds)
    for name, w in want.items():
        assert got[name].shape == w.shape, name
        np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_einsum_equations_match_numpy_under_qemu(target):
    from tests.test_onnx_backend_compiled import need_target
    need_target(target)
    model, feeds, want = _model(EQUATIONS)
    got = compile_model(model, target).run(feeds)
    for name, w in want.items():
        np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("eq,shapes,words", [
    ("ij,jk->ik", [(2, 3), (4, 5)], "sizes 3 and 4"),
    ("ij->k", [(2, 3)], "not a set of input labels"),
    ("ijk->i", [(2, 3)], "for an operand of rank 2"),
])
def test_bad_equations_are_refused_in_one_line(eq, shapes, words):
    nodes = [h.make_node("Einsum", [f"x{j}" for j in range(len(shapes))], ["y"], equation=eq)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(f"x{j}", TensorProto.FLOAT, s)
                                  for j, s in enumerate(shapes)],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 12)])
    with pytest.raises(ModelError) as e:
        load_onnx(model)
    assert "\n" not in str(e.value) and "(Einsum)" in str(e.value) and words in str(e.value)
