"""LSTM and GRU lower to a loop over time (cgen.graph.loop_op / loop_lower), not an
unrolled graph: the body's kernels are built once and NAME_run runs them in one
`for (t = 0; t < T; ++t)` loop per direction.  Checked on x86-avx2 and on aarch64 under
QEMU (and bare-metal cortex-m4, slow), with T >= 16, bidirectional, initial states given and not: the outputs match
onnxruntime, the number of kernel functions is the same for T = 8 and T = 32, and the
loop over time is in NAME_run."""
from __future__ import annotations

import re

import numpy as np
import pytest

from cgen.graph.loop_lower import LoopKernel
from cgen.graph.model import compile_model
from cgen.graph.onnx_frontend import load_onnx
from cgen.graph.reference import run as run_graph
from tests.test_onnx_rnn import rnn_model

CASES = [("GRU", False, {}), ("GRU", True, {"linear_before_reset": 1}), ("LSTM", False, {}),
         ("LSTM", True, {})]


def _run_body(cm) -> str:
    src = cm.c_source
    return src[src.index(f"int {cm.name}_run("):]


def kernel_functions(cm) -> set:
    """The kernel functions NAME_run calls (a loop's body kernels once each)."""
    return set(re.findall(r"rc \|= (\w+)\(", _run_body(cm)))


@pytest.mark.parametrize("target", [pytest.param("x86-avx2", marks=pytest.mark.isa("x86-avx2")),
                                    pytest.param("aarch64", marks=pytest.mark.qemu),
                                    pytest.param("cortex-m4", marks=[pytest.mark.qemu,
                                                                     pytest.mark.slow])])
@pytest.mark.parametrize("op,states,attrs", CASES)
def test_bidirectional_recurrence_is_one_loop_over_time(target, op, states, attrs):
    from tests.test_models import need_target
    need_target(target)
    ort = pytest.importorskip("onnxruntime")
    model, xs = rnn_model(op, "bidirectional", states, seq=24, hidden=8, **attrs)
    x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cm = compile_model(model, target)
    got = cm.run({"x": x})
    for name, want in zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)
    run = _run_body(cm)
    # one loop per direction, the reverse one walking its sequences from the end
    assert run.count("for (t = 0; t < 24; ++t)") == 2, run
    assert "(23 - t)" in run
    loops = [k for k in cm.kernels if isinstance(k, LoopKernel)]
    assert len(loops) == 2 and all(k.spec.trips == 24 for k in loops)
    assert not cm.report.fallbacks


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_kernel_count_does_not_grow_with_the_sequence_on_x86_avx2(op):
    counts = {}
    for seq in (8, 32):
        model, _ = rnn_model(op, "bidirectional", True, seq=seq, hidden=8)
        cm = compile_model(model, "x86-avx2")
        counts[seq] = (len(cm.kernels), kernel_functions(cm))
        assert f"for (t = 0; t < {seq}; ++t)" in _run_body(cm)
    assert counts[8][0] == counts[32][0]
    assert len(counts[8][1]) == len(counts[32][1]) <= 24, counts


def test_graph_reference_runs_the_loop_like_onnxruntime():
    """The reference interpreter steps the loop's body (cgen.graph.loop_op.run_loop)."""
    ort = pytest.importorskip("onnxruntime")
    model, xs = rnn_model("LSTM", "bidirectional", True, seq=16, hidden=8)
    x = np.random.default_rng(3).standard_normal(xs).astype(np.float32)
    graph = load_onnx(model)
    assert graph.ops().count("loop") == 2 and "matmul" in graph.ops()
    got = run_graph(graph, {"x": x})
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, want in zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_profile_reports_the_loop_as_one_kernel_on_x86_avx2():
    """A profiling build times the whole loop (its T steps) under the loop kernel's name."""
    pytest.importorskip("cffi")
    model, xs = rnn_model("GRU", "forward", True, seq=16, hidden=8)
    cm = compile_model(model, "x86-avx2")
    x = np.random.default_rng(0).standard_normal(xs).astype(np.float32)
    times = dict(cm.profile({"x": x}, number=3))
    loop = next(k for k in cm.kernels if isinstance(k, LoopKernel))
    assert times[loop.name] > 0
    assert not any(n.startswith(loop.name + "_") for n in times)


def test_the_loop_body_dense_kernels_are_tuning_tasks_on_x86_avx2():
    """`cgen tune MODEL` tunes the recurrent matmul built once inside the loop."""
    from cgen.autotune.model_tasks import extract_tasks
    model, _ = rnn_model("LSTM", "forward", False, seq=16, hidden=8)
    names = [n for t in extract_tasks(model, "x86-avx2") for n in t.kernels]
    assert any("_loop_" in n and n.endswith("_matmul") for n in names), names
