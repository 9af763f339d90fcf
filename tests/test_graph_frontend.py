"""ONNX frontend: models built with onnx.helper, imported, interpreted by the
reference and compared with onnxruntime; one-line refusals; the ONNX backend
node tests (built in memory) through frontend + reference.

The model builders here are shared with tests/test_graph_passes.py.
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper as h, numpy_helper  # noqa: E402

from cgen.graph import ModelError, load_onnx, reference  # noqa: E402
from cgen.graph.onnx_frontend import CONVERTERS, parse_input_shape  # noqa: E402
from cgen.graph.onnx_node_tests import node_test_results, node_test_summary  # noqa: E402

F32 = TensorProto.FLOAT
RTOL, ATOL = 1e-4, 1e-5


# ====================================================================== builders
def rng(seed: int = 0):
    return np.random.default_rng(seed)


def make_model(nodes, inputs: dict, outputs, inits: dict | None = None, opset: int = 13,
               dtypes: dict | None = None):
    """inputs: name -> shape (float32 unless dtypes says); outputs: names (shapes inferred by
    onnx) or name -> shape."""
    dtypes = dtypes or {}
    outputs = outputs if isinstance(outputs, dict) else dict.fromkeys(outputs)
    g = h.make_graph(
        nodes, "test",
        [h.make_tensor_value_info(k, dtypes.get(k, F32), list(s)) for k, s in inputs.items()],
        [h.make_tensor_value_info(k, dtypes.get(k, F32), s) for k, s in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(a), k) for k, a in (inits or {}).items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=10)
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)   # fills in the output shapes
    onnx.checker.check_model(m)
    return m


def bn_params(r, c: int, prefix: str) -> dict:
    return {f"{prefix}_s": r.uniform(0.5, 1.5, c).astype(np.float32),
            f"{prefix}_b": r.standard_normal(c).astype(np.float32),
            f"{prefix}_m": (0.1 * r.standard_normal(c)).astype(np.float32),
            f"{prefix}_v": r.uniform(0.5, 1.5, c).astype(np.float32)}


def bn(x: str, y: str, prefix: str):
    return h.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m",
                                              f"{prefix}_v"], [y], epsilon=1e-3, name=prefix)


def w(r, *shape, scale=None):
    fan_in = int(np.prod(shape[1:])) or 1
    return (r.standard_normal(shape) * (scale or 1 / np.sqrt(fan_in))).astype(np.float32)


def mlp(opset: int = 13):
    """Gemm(transB) + Relu + Gemm(alpha, beta, row C) + BatchNorm + Softmax."""
    r = rng(1)
    inits = {"W1": w(r, 32, 16), "b1": w(r, 32, scale=0.1), "W2": w(r, 32, 10),
             "C2": w(r, 1, 10, scale=0.1), **bn_params(r, 10, "bn")}
    nodes = [h.make_node("Gemm", ["x", "W1", "b1"], ["h1"], transB=1, name="fc1"),
             h.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             h.make_node("Gemm", ["a1", "W2", "C2"], ["h2"], alpha=0.5, beta=2.0, name="fc2"),
             bn("h2", "h3", "bn"),
             h.make_node("Softmax", ["h3"], ["y"], axis=-1 if opset >= 13 else 1, name="softmax")]
    return make_model(nodes, {"x": (4, 16)}, ["y"], inits, opset), {
        "x": r.standard_normal((4, 16)).astype(np.float32)}


def lenet(opset: int = 13):
    """Conv/Relu/MaxPool x2 (the second pool an AveragePool), a Shape->Gather->Concat->Reshape
    flatten, Gemm/Relu/Gemm, LogSoftmax."""
    r = rng(2)
    inits = {"c1w": w(r, 6, 1, 5, 5), "c1b": w(r, 6, scale=0.1), "c2w": w(r, 16, 6, 5, 5),
             "c2b": w(r, 16, scale=0.1), "f1w": w(r, 120, 256), "f1b": w(r, 120, scale=0.1),
             "f2w": w(r, 10, 120), "f2b": w(r, 10, scale=0.1),
             "zero": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    nodes = [
        h.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], pads=[2, 2, 2, 2], name="conv1"),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        h.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], name="conv2"),
        h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        h.make_node("AveragePool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2], name="pool2"),
        h.make_node("Shape", ["p2"], ["shp"], name="shape"),
        h.make_node("Gather", ["shp", "zero"], ["batch"], axis=0, name="gather"),
        h.make_node("Concat", ["batch", "minus1"], ["newshape"], axis=0, name="concat"),
        h.make_node("Reshape", ["p2", "newshape"], ["flat"], name="flatten"),
        h.make_node("Gemm", ["flat", "f1w", "f1b"], ["f1"], transB=1, name="fc1"),
        h.make_node("Relu", ["f1"], ["r3"], name="relu3"),
        h.make_node("Gemm", ["r3", "f2w", "f2b"], ["f2"], transB=1, name="fc2"),
        h.make_node("LogSoftmax", ["f2"], ["y"], axis=1, name="logsoftmax"),
    ]
    # 24x24 input: 24 -> conv(pad 2) 24 -> pool 12 -> conv 8 -> pool 4: 16*4*4 = 256
    return make_model(nodes, {"x": (2, 1, 24, 24)}, {"y": (2, 10)}, inits, opset), {
        "x": r.standard_normal((2, 1, 24, 24)).astype(np.float32)}


def conv_bn_relu(opset: int = 13):
    r = rng(3)
    inits = {"cw": w(r, 8, 3, 3, 3), "cb": w(r, 8, scale=0.1), **bn_params(r, 8, "bn")}
    nodes = [h.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             bn("c", "b", "bn"),
             h.make_node("Relu", ["b"], ["y"], name="relu")]
    return make_model(nodes, {"x": (1, 3, 16, 16)}, ["y"], inits, opset), {
        "x": r.standard_normal((1, 3, 16, 16)).astype(np.float32)}


def mobilenet_v2_block(opset: int = 13):
    """Inverted residual: 1x1 expand (x6) + BN + ReLU6, 3x3 depthwise + BN + ReLU6,
    1x1 project + BN, residual add."""
    r = rng(4)
    c, e = 16, 96
    inits = {"we": w(r, e, c, 1, 1), "wd": w(r, e, 1, 3, 3), "wp": w(r, c, e, 1, 1),
             "six": np.array(6.0, np.float32), "zero": np.array(0.0, np.float32),
             **bn_params(r, e, "bn1"), **bn_params(r, e, "bn2"), **bn_params(r, c, "bn3")}
    nodes = [
        h.make_node("Conv", ["x", "we"], ["e"], name="expand"),
        bn("e", "eb", "bn1"),
        h.make_node("Clip", ["eb", "zero", "six"], ["er"], name="relu6_1"),
        h.make_node("Conv", ["er", "wd"], ["d"], pads=[1, 1, 1, 1], group=e, name="depthwise"),
        bn("d", "db", "bn2"),
        h.make_node("Clip", ["db", "zero", "six"], ["dr"], name="relu6_2"),
        h.make_node("Conv", ["dr", "wp"], ["p"], name="project"),
        bn("p", "pb", "bn3"),
        h.make_node("Add", ["x", "pb"], ["y"], name="residual"),
    ]
    return make_model(nodes, {"x": (1, c, 14, 14)}, ["y"], inits, opset), {
        "x": r.standard_normal((1, c, 14, 14)).astype(np.float32)}


def resnet_basic_block(opset: int = 13):
    """ResNet basic block with stride 2 and a 1x1 stride-2 projection shortcut."""
    r = rng(5)
    inits = {"w1": w(r, 32, 16, 3, 3), "w2": w(r, 32, 32, 3, 3), "ws": w(r, 32, 16, 1, 1),
             **bn_params(r, 32, "bn1"), **bn_params(r, 32, "bn2"), **bn_params(r, 32, "bns")}
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv1"),
        bn("c1", "b1", "bn1"),
        h.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        bn("c2", "b2", "bn2"),
        h.make_node("Conv", ["x", "ws"], ["cs"], strides=[2, 2], name="shortcut"),
        bn("cs", "bs", "bns"),
        h.make_node("Add", ["b2", "bs"], ["s"], name="add"),
        h.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    return make_model(nodes, {"x": (1, 16, 16, 16)}, ["y"], inits, opset), {
        "x": r.standard_normal((1, 16, 16, 16)).astype(np.float32)}


def qdq_conv(opset: int = 13):
    """QDQ: DequantizeLinear(x), DequantizeLinear(w per-channel), Conv + bias, Relu, QuantizeLinear."""
    r = rng(6)
    f = 8
    wq = r.integers(-127, 128, (f, 4, 3, 3)).astype(np.int8)
    inits = {"xs": np.array(0.05, np.float32), "xz": np.array(3, np.int8),
             "wq": wq, "ws": r.uniform(0.002, 0.01, f).astype(np.float32),
             "wz": np.zeros(f, np.int8), "b": w(r, f, scale=0.5),
             "ys": np.array(0.08, np.float32), "yz": np.array(-5, np.int8)}
    nodes = [h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"], name="dq_x"),
             h.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], axis=0, name="dq_w"),
             h.make_node("Conv", ["x", "wf", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             h.make_node("Relu", ["c"], ["rl"], name="relu"),
             h.make_node("QuantizeLinear", ["rl", "ys", "yz"], ["y"], name="q_y")]
    m = make_model(nodes, {"xq": (1, 4, 8, 8)}, ["y"], inits, opset,
                   dtypes={"xq": TensorProto.INT8, "y": TensorProto.INT8})
    return m, {"xq": r.integers(-128, 128, (1, 4, 8, 8)).astype(np.int8)}


MODELS = {"mlp": mlp, "lenet": lenet, "conv_bn_relu": conv_bn_relu,
          "mobilenet_v2_block": mobilenet_v2_block, "resnet_basic_block": resnet_basic_block}


# ====================================================================== helpers
def ort_run(model, feeds: dict) -> dict:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def assert_close(got: dict, want: dict, rtol=RTOL, atol=ATOL, int_atol=0):
    assert set(got) == set(want)
    for k, a in want.items():
        assert got[k].shape == a.shape, k
        assert got[k].dtype == a.dtype, k
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(got[k], a, rtol=rtol, atol=atol, err_msg=k)
        else:
            assert np.max(np.abs(got[k].astype(np.int64) - a.astype(np.int64)), initial=0) <= int_atol


def check_vs_ort(model, feeds, input_shapes=None, **tol):
    g = load_onnx(model, input_shapes)
    assert_close(reference.run(g, feeds), ort_run(model, feeds), **tol)
    return g


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    return msg


# ====================================================================== models vs onnxruntime
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_onnxruntime(name):
    model, feeds = MODELS[name]()
    check_vs_ort(model, feeds)


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_models_across_opsets(opset):
    for build in (mlp, lenet, conv_bn_relu):
        model, feeds = build(opset)
        check_vs_ort(model, feeds)


def test_qdq_conv_matches_onnxruntime():
    model, feeds = qdq_conv()
    check_vs_ort(model, feeds, int_atol=1)


def test_load_from_path_bytes_and_proto(tmp_path):
    model, feeds = conv_bn_relu()
    p = tmp_path / "m.onnx"
    p.write_bytes(model.SerializeToString())
    graphs = [load_onnx(model), load_onnx(model.SerializeToString()), load_onnx(p), load_onnx(str(p))]
    assert all(g == graphs[0] for g in graphs)
    for g in graphs:
        np.testing.assert_array_equal(reference.run(g, feeds)["y"], reference.run(graphs[0], feeds)["y"])


def test_canonical_form():
    g = load_onnx(mlp()[0])
    assert g.ops() == ["transpose", "matmul", "add", "relu", "matmul", "mul", "mul", "add",
                       "batch_norm", "softmax"]
    sm = g.nodes[-1]
    assert sm.attr("axis") == 1
    g = load_onnx(lenet()[0])
    conv = g.nodes[0]
    assert conv.op == "conv2d"
    assert conv.attr_dict == {"strides": (1, 1), "pads": (2, 2, 2, 2), "dilations": (1, 1),
                              "groups": 1}
    pool = g.nodes[2]
    assert pool.op == "max_pool2d" and pool.attr("kernel") == (2, 2) and pool.attr("pads") == (0,) * 4
    reshape = next(n for n in g.nodes if n.op == "reshape")
    assert reshape.attr("shape") == (2, 256)                          # -1 resolved, Shape folded
    assert "shape" not in {n.op for n in g.nodes}
    assert all(isinstance(v, tuple) for n in g.nodes for v in (n.inputs, n.outputs, n.attrs))


def test_graph_values_are_frozen():
    g = load_onnx(conv_bn_relu()[0])
    with pytest.raises(Exception):
        g.nodes[0].op = "x"
    with pytest.raises(Exception):
        g.constants["cw"][0, 0, 0, 0] = 1.0
    assert hash(g) == hash(load_onnx(conv_bn_relu()[0]))


# ====================================================================== op coverage vs onnxruntime
def _single(op, inputs: dict, inits=None, opset=13, n_out=1, dtypes=None, **attrs):
    outs = [f"y{i}" for i in range(n_out)]
    node = h.make_node(op, list(inputs) + list(inits or {}), outs, **attrs)
    return make_model([node], {k: v.shape for k, v in inputs.items()}, outs, inits, opset,
                      dtypes=dtypes), {k: v for k, v in inputs.items()}


def _x(*shape, seed=0):
    return rng(seed).standard_normal(shape).astype(np.float32)


def _i64(*v):
    return np.array(v, np.int64)


def _cases():
    """(id, builder) pairs: single-node models covering attribute and opset variants."""
    c = []
    x4 = _x(2, 4, 9, 11)
    cw = _x(6, 4, 3, 3, seed=1)
    for ap in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        c.append((f"conv_{ap}", lambda ap=ap: _single("Conv", {"x": x4}, {"w": cw}, auto_pad=ap,
                                                      strides=[2, 2])))
    c.append(("conv_dil_stride_pads", lambda: _single(
        "Conv", {"x": x4}, {"w": cw, "b": _x(6)}, dilations=[2, 1], strides=[1, 2], pads=[2, 0, 1, 3])))
    c.append(("conv_groups", lambda: _single("Conv", {"x": x4}, {"w": _x(6, 2, 3, 3)}, group=2,
                                             pads=[1, 1, 1, 1])))
    c.append(("conv_1d", lambda: _single("Conv", {"x": _x(2, 4, 15)}, {"w": _x(5, 4, 3)},
                                         strides=[2], pads=[1, 2], dilations=[2])))
    c.append(("convtranspose", lambda: _single(
        "ConvTranspose", {"x": _x(1, 4, 5, 6)}, {"w": _x(4, 3, 3, 3), "b": _x(3)}, strides=[2, 3],
        pads=[1, 0, 0, 1], output_padding=[1, 2])))
    c.append(("convtranspose_groups_dil", lambda: _single(
        "ConvTranspose", {"x": _x(1, 4, 5, 5)}, {"w": _x(4, 2, 3, 2)}, group=2, dilations=[2, 1],
        strides=[2, 2])))
    c.append(("convtranspose_output_shape", lambda: _single(
        "ConvTranspose", {"x": _x(1, 2, 4, 4)}, {"w": _x(2, 3, 3, 3)}, strides=[2, 2],
        output_shape=[9, 10])))
    c.append(("convtranspose_same_upper", lambda: _single(
        "ConvTranspose", {"x": _x(1, 2, 4, 4)}, {"w": _x(2, 3, 3, 3)}, strides=[2, 2],
        auto_pad="SAME_UPPER")))
    for ceil in (0, 1):
        c.append((f"maxpool_ceil{ceil}", lambda ceil=ceil: _single(
            "MaxPool", {"x": x4}, kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1],
            ceil_mode=ceil, dilations=[1, 2])))
        for cip in (0, 1):
            c.append((f"avgpool_ceil{ceil}_cip{cip}", lambda ceil=ceil, cip=cip: _single(
                "AveragePool", {"x": x4}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                ceil_mode=ceil, count_include_pad=cip)))
    c.append(("avgpool_same_upper", lambda: _single("AveragePool", {"x": x4}, kernel_shape=[3, 3],
                                                    strides=[2, 2], auto_pad="SAME_UPPER")))
    c.append(("avgpool_dilations_19", lambda: _single(
        "AveragePool", {"x": x4}, opset=19, kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1])))
    c.append(("maxpool_1d", lambda: _single("MaxPool", {"x": _x(2, 3, 10)}, kernel_shape=[3],
                                            strides=[2])))
    c.append(("globalavgpool", lambda: _single("GlobalAveragePool", {"x": x4})))
    c.append(("globalmaxpool", lambda: _single("GlobalMaxPool", {"x": x4})))
    for ta in (0, 1):
        for tb in (0, 1):
            a = _x(*((5, 3) if ta else (3, 5)))
            b = _x(*((4, 5) if tb else (5, 4)), seed=2)
            c.append((f"gemm_tA{ta}_tB{tb}", lambda a=a, b=b, ta=ta, tb=tb: _single(
                "Gemm", {"a": a}, {"b": b, "c": _x(4, seed=3)}, transA=ta, transB=tb, alpha=0.7,
                beta=1.5)))
    for cs in ((), (1,), (3, 1), (3, 4)):
        c.append((f"gemm_C{cs}", lambda cs=cs: _single("Gemm", {"a": _x(3, 5)},
                                                       {"b": _x(5, 4), "c": _x(*cs, seed=4)})))
    c.append(("gemm_no_C", lambda: _single("Gemm", {"a": _x(3, 5), "b": _x(5, 4)}, alpha=2.0)))
    for sa, sb in (((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                   ((2, 1, 3, 4), (5, 4, 2))):
        c.append((f"matmul_{sa}_{sb}", lambda sa=sa, sb=sb: _single(
            "MatMul", {"a": _x(*sa), "b": _x(*sb, seed=1)})))
    for op in ("Add", "Sub", "Mul", "Div", "Max", "Min"):
        c.append((f"{op}_broadcast", lambda op=op: _single(op, {"a": _x(2, 3, 4), "b": _x(3, 1, seed=1)})))
    c.append(("pow", lambda: _single("Pow", {"a": np.abs(_x(2, 3)) + 0.5, "b": _x(3, seed=1)})))
    c.append(("max_variadic", lambda: _single("Max", {"a": _x(2, 3), "b": _x(3, seed=1),
                                                      "c": _x(2, 1, seed=2)})))
    unary = {"Relu": {}, "LeakyRelu": {"alpha": 0.2}, "Sigmoid": {}, "Tanh": {},
             "HardSigmoid": {"alpha": 0.3, "beta": 0.4}, "Exp": {}, "Erf": {}}
    for op, attrs in unary.items():
        c.append((op, lambda op=op, attrs=attrs: _single(op, {"x": _x(3, 7)}, **attrs)))
    c.append(("HardSwish", lambda: _single("HardSwish", {"x": 4 * _x(3, 7)}, opset=14)))
    c.append(("Log", lambda: _single("Log", {"x": np.abs(_x(3, 7)) + 0.1})))
    c.append(("Sqrt", lambda: _single("Sqrt", {"x": np.abs(_x(3, 7))})))
    for approx in ("none", "tanh"):
        c.append((f"gelu_{approx}", lambda approx=approx: _single("Gelu", {"x": _x(3, 7)}, opset=20,
                                                                  approximate=approx)))
    c.append(("clip_both", lambda: _single("Clip", {"x": _x(3, 7)}, {"lo": np.array(-0.5, np.float32),
                                                                     "hi": np.array(0.7, np.float32)})))
    c.append(("clip_min_only", lambda: _single("Clip", {"x": _x(3, 7)},
                                               {"lo": np.array(-0.5, np.float32)})))
    c.append(("clip_none", lambda: _single("Clip", {"x": _x(3, 7)})))
    c.append(("clip_opset6_attrs", lambda: _single("Clip", {"x": _x(3, 7)}, opset=6, min=-0.2,
                                                   max=0.3)))
    for opset in (11, 13):
        for ax in (0, 1, 2, -1):
            for op in ("Softmax", "LogSoftmax"):
                c.append((f"{op}_{opset}_axis{ax}", lambda op=op, opset=opset, ax=ax: _single(
                    op, {"x": _x(2, 3, 4)}, opset=opset, axis=ax)))
    c.append(("batchnorm", lambda: _single("BatchNormalization", {"x": x4}, {
        k[3:]: v for k, v in bn_params(rng(7), 4, "bn_").items()}, epsilon=1e-4)))
    for ax in (-1, 1):
        c.append((f"layernorm_axis{ax}", lambda ax=ax: _single(
            "LayerNormalization", {"x": _x(2, 3, 5)}, {"s": _x(*((5,) if ax == -1 else (3, 5))),
                                                       "b": _x(*((5,) if ax == -1 else (3, 5)))},
            opset=17, axis=ax)))
    c.append(("layernorm_stats", lambda: _single("LayerNormalization", {"x": _x(2, 3, 5)},
                                                 {"s": _x(5)}, opset=17, n_out=3)))
    for opset, axes_input in ((13, False), (18, True)):
        for op in ("ReduceMean", "ReduceMax", "ReduceMin"):
            c.append((f"{op}_{opset}", lambda op=op, opset=opset, ai=axes_input: _single(
                op, {"x": _x(2, 3, 4)}, {"axes": _i64(0, -1)} if ai else None, opset=opset,
                keepdims=0, **({} if ai else {"axes": [0, -1]}))))
    c.append(("ReduceSum_11", lambda: _single("ReduceSum", {"x": _x(2, 3, 4)}, opset=11, axes=[1])))
    c.append(("ReduceSum_13", lambda: _single("ReduceSum", {"x": _x(2, 3, 4)}, {"axes": _i64(1)})))
    c.append(("ReduceSum_all", lambda: _single("ReduceSum", {"x": _x(2, 3, 4)}, keepdims=1)))
    c.append(("flatten", lambda: _single("Flatten", {"x": x4}, axis=2)))
    c.append(("reshape_0_-1", lambda: _single("Reshape", {"x": x4}, {"s": _i64(0, -1, 11)})))
    c.append(("transpose", lambda: _single("Transpose", {"x": x4}, perm=[0, 2, 3, 1])))
    c.append(("transpose_default", lambda: _single("Transpose", {"x": _x(2, 3, 4)})))
    c.append(("concat", lambda: _single("Concat", {"a": _x(2, 3), "b": _x(2, 5, seed=1)}, axis=-1)))
    c.append(("split_11", lambda: _single("Split", {"x": _x(2, 6)}, opset=11, n_out=2, axis=1,
                                          split=[2, 4])))
    c.append(("split_13", lambda: _single("Split", {"x": _x(2, 6)}, {"s": _i64(1, 5)}, n_out=2,
                                          axis=1)))
    c.append(("split_18_num_outputs", lambda: _single("Split", {"x": _x(7, 2)}, opset=18, n_out=3,
                                                      num_outputs=3)))
    c.append(("slice", lambda: _single("Slice", {"x": x4}, {
        "st": _i64(1, -1, 0), "en": _i64(100, -100, 5), "ax": _i64(2, 3, 1), "sp": _i64(2, -3, 1)})))
    c.append(("squeeze_13", lambda: _single("Squeeze", {"x": _x(1, 3, 1, 2)}, {"a": _i64(0, 2)})))
    c.append(("squeeze_11", lambda: _single("Squeeze", {"x": _x(1, 3, 1, 2)}, opset=11)))
    c.append(("unsqueeze_13", lambda: _single("Unsqueeze", {"x": _x(3, 2)}, {"a": _i64(0, -1)})))
    c.append(("unsqueeze_11", lambda: _single("Unsqueeze", {"x": _x(3, 2)}, opset=11, axes=[1])))
    for mode in ("constant", "reflect", "edge"):
        c.append((f"pad_{mode}", lambda mode=mode: _single(
            "Pad", {"x": _x(1, 2, 4, 5)}, {"p": _i64(0, 0, 1, 2, 0, 0, 2, 1),
                                           "v": np.array(1.5, np.float32)} if mode == "constant"
            else {"p": _i64(0, 0, 1, 2, 0, 0, 2, 1)}, mode=mode)))
    c.append(("pad_18_axes", lambda: _single("Pad", {"x": _x(1, 2, 4, 5)}, {
        "p": _i64(1, 2, 3, 0), "v": np.array(0.0, np.float32), "a": _i64(-1, 2)}, opset=18)))
    c.append(("gather_const_indices", lambda: _single("Gather", {"x": _x(5, 4)},
                                                      {"i": _i64(4, 0, -1)}, axis=0)))
    c.append(("gather_scalar_index", lambda: _single("Gather", {"x": _x(5, 4)},
                                                     {"i": np.array(-2, np.int64)}, axis=1)))
    c.append(("identity", lambda: _single("Identity", {"x": _x(3)})))
    c.append(("dropout", lambda: _single("Dropout", {"x": _x(3)}, opset=13)))
    return c


CASES = _cases()


@pytest.mark.parametrize("build", [b for _, b in CASES], ids=[i for i, _ in CASES])
def test_op_matches_onnxruntime(build):
    model, feeds = build()
    check_vs_ort(model, feeds)


def test_shape_and_constant_of_shape_fold_away():
    nodes = [h.make_node("Shape", ["x"], ["s"], start=1),
             h.make_node("ConstantOfShape", ["s"], ["z"], value=numpy_helper.from_array(
                 np.array([2.0], np.float32))),
             h.make_node("Constant", [], ["k"], value_float=3.0),
             h.make_node("Mul", ["z", "k"], ["zk"]),
             h.make_node("Add", ["x", "zk"], ["y"])]
    model = make_model(nodes, {"x": (2, 3, 4)}, ["y"], opset=15)
    g = check_vs_ort(model, {"x": _x(2, 3, 4)})
    assert {n.op for n in g.nodes} == {"mul", "add"}      # mul of two constants: fold_constants' job


def test_outputs_that_alias_inputs_constants_or_each_other():
    nodes = [h.make_node("Identity", ["x"], ["a"]),
             h.make_node("Constant", [], ["k"], value_floats=[1.0, 2.0, 3.0]),
             h.make_node("Identity", ["k"], ["kc"]),
             h.make_node("Relu", ["x"], ["r"]),
             h.make_node("Identity", ["r"], ["r2"])]
    model = make_model(nodes, {"x": (3,)}, dict.fromkeys(["a", "kc", "r", "r2", "x"], (3,)))
    g = check_vs_ort(model, {"x": _x(3)})
    assert [v.name for v in g.outputs] == ["a", "kc", "r", "r2", "x"]
    assert "kc" in g.constants and g.ops() == ["relu", "identity", "identity"]   # a, r2: copies


def test_quantize_dequantize_per_axis():
    r = rng(8)
    inits = {"s": r.uniform(0.01, 0.1, 3).astype(np.float32),
             "z": r.integers(-10, 10, 3).astype(np.int8)}
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    model = make_model(nodes, {"x": (2, 3, 4)}, ["y", "q"], inits, dtypes={"q": TensorProto.INT8})
    check_vs_ort(model, {"x": _x(2, 3, 4)}, atol=1e-6)


def test_quantize_uint8_default_zero_point():
    nodes = [h.make_node("QuantizeLinear", ["x", "s"], ["y"])]
    model = make_model(nodes, {"x": (3, 5)}, ["y"], {"s": np.array(0.02, np.float32)},
                       dtypes={"y": TensorProto.UINT8})
    check_vs_ort(model, {"x": _x(3, 5)})


def test_qlinear_conv_and_matmul_match_onnxruntime():
    r = rng(9)
    f = 6
    inits = {"xs": np.array(0.03, np.float32), "xz": np.array(128, np.uint8),
             # |w| <= 60: two u8 x s8 products fit int16, which onnxruntime's x86 kernels
             # without VNNI (AVX2: vpmaddubsw) saturate
             "w": r.integers(-60, 61, (f, 3, 3, 3)).astype(np.int8),
             "ws": r.uniform(0.005, 0.02, f).astype(np.float32), "wz": np.zeros(f, np.int8),
             "ys": np.array(0.2, np.float32), "yz": np.array(120, np.uint8),
             "b": r.integers(-500, 500, f).astype(np.int32),
             "m": r.integers(0, 255, (8 * 4 * 4, 5)).astype(np.uint8),
             "ms": np.array(0.01, np.float32), "mz": np.array(127, np.uint8),
             "os": np.array(0.5, np.float32), "oz": np.array(100, np.uint8),
             "shape": _i64(1, -1)}
    nodes = [h.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["c"],
                         pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("Pad", ["c", "pp"], ["cp"]),
             h.make_node("Reshape", ["cp", "shape"], ["flat"]),
             h.make_node("QLinearMatMul", ["flat", "ys", "yz", "m", "ms", "mz", "os", "oz"], ["y"])]
    inits["pp"] = _i64(0, 2, 0, 0, 0, 0, 0, 0)
    model = make_model(nodes, {"x": (1, 3, 8, 8)}, ["y", "c"], inits,
                       dtypes={"x": TensorProto.UINT8, "y": TensorProto.UINT8, "c": TensorProto.UINT8})
    check_vs_ort(model, {"x": r.integers(0, 256, (1, 3, 8, 8)).astype(np.uint8)}, int_atol=1)


def test_symbolic_dim_given_by_input_shapes():
    model, feeds = conv_bn_relu()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(ModelError) as e:
        load_onnx(model)
    msg = one_line(e.value)
    assert "'x'" in msg and "'batch'" in msg and "--input-shape x=1,3,16,16" in msg
    assert e.value.kind == "symbolic_dim"
    x = np.concatenate([feeds["x"], feeds["x"]])
    g = check_vs_ort(model, {"x": x}, input_shapes={"x": (2, 3, 16, 16)})
    assert g.inputs[0].shape == (2, 3, 16, 16)
    with pytest.raises(ModelError) as e:
        load_onnx(model, {"x": (2, 4, 16, 16)})
    assert "does not fit" in one_line(e.value)
    with pytest.raises(ModelError) as e:
        load_onnx(model, {"y": (2, 3, 16, 16)})
    assert "'y'" in one_line(e.value) and "'x'" in str(e.value)
    assert parse_input_shape("x=1,3,224,224") == ("x", (1, 3, 224, 224))
    with pytest.raises(ModelError):
        parse_input_shape("x=1,a")


# ====================================================================== refusals
def test_truncated_and_malformed_files(tmp_path):
    data = lenet()[0].SerializeToString()
    for cut in (len(data) // 2, len(data) - 3, 7):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        with pytest.raises(ModelError) as e:
            load_onnx(p)
        msg = one_line(e.value)
        assert str(p) in msg and ("truncated" in msg or "malformed" in msg or "checker" in msg), msg
    for bad in (b"", b"\x00\x01garbage\xff" * 10, b"not a model at all"):
        with pytest.raises(ModelError) as e:
            load_onnx(bad)
        one_line(e.value)
    with pytest.raises(ModelError) as e:
        load_onnx(tmp_path / "missing.onnx")
    assert "missing.onnx" in one_line(e.value)
    with pytest.raises(ModelError) as e:
        load_onnx(42)
    one_line(e.value)


def test_unsupported_op_names_op_and_node():
    nodes = [h.make_node("Relu", ["x"], ["r"], name="relu"),
             h.make_node("Bernoulli", ["r"], ["y"], name="my_bernoulli")]
    model = make_model(nodes, {"x": (2, 3)}, {"y": (2, 3)}, opset=15)
    with pytest.raises(ModelError) as e:
        load_onnx(model)
    msg = one_line(e.value)
    assert "Bernoulli" in msg and "'my_bernoulli'" in msg and e.value.kind == "unsupported_op"
    assert isinstance(e.value, ValueError)


def test_custom_domain_and_opset_limits():
    g = h.make_graph([h.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft", name="fc")],
                     "t", [h.make_tensor_value_info("x", F32, [1])], [h.make_tensor_value_info("y", F32, [1])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13), h.make_opsetid("com.microsoft", 1)],
                     ir_version=10)
    with pytest.raises(ModelError) as e:
        load_onnx(m)
    assert "com.microsoft.FusedConv" in one_line(e.value) and "'fc'" in str(e.value)
    model, feeds = conv_bn_relu()
    model.opset_import[0].version = 99
    with pytest.raises(ModelError) as e:
        load_onnx(model)
    assert "99" in one_line(e.value) or "checker" in str(e.value)
    model, feeds = conv_bn_relu(9)                      # upgraded by onnx.version_converter
    assert check_vs_ort(model, feeds).ops() == ["conv2d", "batch_norm", "relu"]


def test_unsupported_dtype_and_runtime_shape_operand():
    model = make_model([h.make_node("Relu", ["x"], ["y"])], {"x": (2,)}, ["y"],
                       dtypes={"x": TensorProto.DOUBLE, "y": TensorProto.DOUBLE})
    with pytest.raises(ModelError) as e:
        load_onnx(model)
    assert "'x'" in one_line(e.value) and "float64" in str(e.value)
    model = make_model([h.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                       {"x": (2, 3), "s": (2,)}, {"y": ("a", "b")}, dtypes={"s": TensorProto.INT64})
    with pytest.raises(ModelError) as e:
        load_onnx(model)
    msg = one_line(e.value)
    assert "'rs'" in msg and "'s'" in msg and e.value.kind == "not_constant"


def test_wrong_input_arrays_are_named():
    model, feeds = conv_bn_relu()
    g = load_onnx(model)
    x = feeds["x"]
    cases = [({}, "missing input(s) 'x'"),
             ({"x": x, "z": x}, "unknown input name(s) 'z'"),
             ({"x": x[:, :2]}, "input 'x': expected float32 of shape (1, 3, 16, 16), got float32 of "
                               "shape (1, 2, 16, 16)"),
             ({"x": x.astype(np.float64)}, "got float64"),
             ([x], "mapping")]
    for feeds_, text in cases:
        with pytest.raises(ModelError) as e:
            reference.run(g, feeds_)
        assert text in one_line(e.value), str(e.value)


# ====================================================================== ONNX backend node tests
SUPPORTED_REQUIRED = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow",
                      "Max", "Min", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                      "HardSwish", "Erf", "Gelu", "Exp", "Log", "Sqrt", "Softmax", "LogSoftmax",
                      "BatchNormalization", "LayerNormalization", "MaxPool", "AveragePool",
                      "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax",
                      "Flatten", "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze",
                      "Unsqueeze", "Pad", "Gather", "Shape", "ConstantOfShape", "Constant",
                      "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear", "QLinearConv",
                      "QLinearMatMul"]


def test_required_ops_have_converters():
    assert not [op for op in SUPPORTED_REQUIRED if op not in CONVERTERS]


def test_onnx_backend_node_tests():
    results = node_test_results()
    summary = node_test_summary(results)
    total = {s: sum(1 for r in results if r.status == s) for s in ("pass", "skip", "fail")}
    print(f"\nONNX node tests: {total}")
    for op, row in summary.items():
        if row["supported"]:
            print(f"  {op:22s} pass {row['pass']:3d}  skip {row['skip']:3d}  fail {row['fail']:3d}")
    print(f"  ({sum(not r['supported'] for r in summary.values())} more ops have no converter)")
    failed = [(r.name, r.reason) for r in results if r.status == "fail"]
    assert not failed, failed
    for r in results:
        if r.status == "skip":
            assert r.reason and "\n" not in r.reason
    assert total["pass"] >= 450
    # every required op passes at least one node test
    assert not [op for op in SUPPORTED_REQUIRED if summary.get(op, {}).get("pass", 0) == 0]
