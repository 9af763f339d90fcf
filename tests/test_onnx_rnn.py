"""LSTM, GRU and RNN beyond the ONNX backend node cases (those run compiled in
test_onnx_backend_compiled.py): constant weights as exporters write them (the input
projection and recurrent matmuls then go to the dense template), initial states, every
direction, GRU's linear_before_reset, batch-first layout, checked against onnxruntime;
and the one-line refusals of what cgen does not handle."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from cgen.graph import ModelError
from cgen.graph.model import compile_model
from cgen.graph.onnx_frontend import load_onnx

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
T, B, I, H = 5, 2, 3, 4


def rnn_model(op, direction="forward", states=False, bias=True, layout=0, seq=T, hidden=H,
              seed=0, **attrs):
    """One recurrent node, weights and initial states as initializers; outputs Y, Y_h
    (and Y_c for LSTM)."""
    rng = np.random.default_rng(seed)
    D, G = (2 if direction == "bidirectional" else 1), GATES[op]
    inits = [nh.from_array((rng.standard_normal((D, G * hidden, I)) * 0.5).astype(np.float32), "W"),
             nh.from_array((rng.standard_normal((D, G * hidden, hidden)) * 0.5).astype(np.float32),
                           "R")]
    ins = ["x", "W", "R"]
    if bias or states:
        ins.append("B" if bias else "")
        if bias:
            inits.append(nh.from_array(rng.standard_normal((D, 2 * G * hidden)).astype(np.float32),
                                       "B"))
    state_shape = (B, D, hidden) if layout else (D, B, hidden)
    if states:
        ins += ["", "h0"] + (["c0"] if op == "LSTM" else [])
        inits.append(nh.from_array(rng.standard_normal(state_shape).astype(np.float32), "h0"))
        if op == "LSTM":
            inits.append(nh.from_array(rng.standard_normal(state_shape).astype(np.float32), "c0"))
    outs = ["y", "y_h"] + (["y_c"] if op == "LSTM" else [])
    node = h.make_node(op, ins, outs, hidden_size=hidden, direction=direction, layout=layout,
                       **attrs)
    x_shape = (B, seq, I) if layout else (seq, B, I)
    y_shape = (B, seq, D, hidden) if layout else (seq, D, B, hidden)
    g = h.make_graph([node], "rnn", [h.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)] +
                     [h.make_tensor_value_info(o, TensorProto.FLOAT, state_shape) for o in outs[1:]],
                     inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 14)]), x_shape


def check_against_onnxruntime(model, x_shape, target="x86-avx2", seed=1):
    """Against onnxruntime; batch-first models (layout 1, which onnxruntime refuses)
    against onnx's reference evaluator."""
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32)
    names = [o.name for o in model.graph.output]
    if model.graph.node[0].attribute and any(a.name == "layout" and a.i == 1
                                             for a in model.graph.node[0].attribute):
        from onnx.reference import ReferenceEvaluator
        want = dict(zip(names, ReferenceEvaluator(model).run(None, {"x": x})))
    else:
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = dict(zip(names, sess.run(None, {"x": x})))
    got = compile_model(model, target).run({"x": x})
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


# one configuration per op and direction, with states: the quick tier
QUICK = [("LSTM", "bidirectional", True, {}), ("GRU", "reverse", True, {}),
         ("GRU", "forward", False, {"linear_before_reset": 1}), ("RNN", "forward", True, {})]


@pytest.mark.parametrize("op,direction,states,attrs", QUICK)
def test_recurrent_node_matches_onnxruntime_on_x86_avx2(op, direction, states, attrs):
    model, xs = rnn_model(op, direction, states, seq=2, **attrs)
    check_against_onnxruntime(model, xs)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("states", [False, True])
@pytest.mark.parametrize("layout", [0, 1])
def test_every_direction_state_and_layout_on_x86_avx2(op, direction, states, layout):
    attrs = {"linear_before_reset": 1} if op == "GRU" and states else {}
    model, xs = rnn_model(op, direction, states, layout=layout, **attrs)
    check_against_onnxruntime(model, xs)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_lstm_keyword_shape_under_qemu(target):
    """A keyword-spotting sized LSTM (20 frames of 10 features, 16 units) on ARM."""
    from tests.test_onnx_backend_compiled import need_target
    need_target(target)
    model, xs = rnn_model("LSTM", "forward", False, seq=20, hidden=16)
    check_against_onnxruntime(model, xs, target)


def test_clip_and_relu_activation_match_onnxruntime_on_x86_avx2():
    model, xs = rnn_model("RNN", "forward", True, seq=3, activations=["Relu"], clip=0.5)
    check_against_onnxruntime(model, xs)


@pytest.mark.parametrize("attrs,words", [
    ({"activations": ["HardSigmoid", "Tanh", "Tanh"]}, "activations='HardSigmoid'"),
    ({"activation_alpha": [0.5]}, "activation_alpha"),
    ({"input_forget": 1}, "input_forget=1"),
])
def test_unhandled_attributes_are_refused_in_one_line(attrs, words):
    model, _ = rnn_model("LSTM", **attrs)
    with pytest.raises(ModelError) as e:
        load_onnx(model)
    msg = str(e.value)
    assert "\n" not in msg and "(LSTM)" in msg and words in msg, msg


def test_shorter_sequence_lens_are_refused_in_one_line():
    model, _ = rnn_model("GRU", states=True)
    g = model.graph
    g.initializer.append(nh.from_array(np.array([T, T - 1], np.int32), "lens"))
    g.node[0].input[4] = "lens"
    with pytest.raises(ModelError, match=r"\(GRU\): sequence_lens \[5, 4\] differ"):
        load_onnx(model)
    g.initializer[-1].CopyFrom(nh.from_array(np.array([T, T], np.int32), "lens"))
    load_onnx(model)          # every sequence full length: taken
