"""Graph passes: each one keeps the numbers (reference interpreter vs onnxruntime before
and after every pass) and has the structural effect it promises."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper as h  # noqa: E402

from cgen.graph import (FusedGraph, Graph, ModelError, Node, Value, convert_layout,  # noqa: E402
                        fold_batchnorm, fold_constants, fold_qdq, fuse, infer_shapes, load_onnx,
                        optimize, prepare, reference, remove_dead, simplify, topo_sort)
from cgen.graph.layout import pack, unpack  # noqa: E402
from tests.test_graph_frontend import (MODELS, assert_close, conv_bn_relu, lenet,  # noqa: E402
                                       make_model, mlp, mobilenet_v2_block, ort_run, qdq_conv,
                                       resnet_basic_block, w, rng)

PIPELINE = [
    ("simplify", simplify),
    ("fold_qdq", fold_qdq),
    ("fold_constants", fold_constants),
    ("fold_batchnorm", fold_batchnorm),
    ("fold_constants_again", fold_constants),
    ("remove_dead", remove_dead),
    ("infer_shapes", infer_shapes),
    ("convert_layout", lambda g: convert_layout(g, {"conv2d": 4})),
    ("simplify_after_layout", simplify),
]


def _steps(model):
    """(pass name, graph) after loading and after each pass of PIPELINE."""
    g = load_onnx(model)
    out = [("load_onnx", g)]
    for name, fn in PIPELINE:
        g = fn(g)
        out.append((name, g))
    return out


# ====================================================================== numbers kept
@pytest.mark.parametrize("name", sorted(MODELS) + ["qdq_conv"])
def test_every_pass_matches_onnxruntime(name):
    model, feeds = (MODELS.get(name) or qdq_conv)()
    want = ort_run(model, feeds)
    for step, g in _steps(model):
        g.validate()
        try:
            assert_close(reference.run(g, feeds), want, int_atol=1)
        except AssertionError as e:
            raise AssertionError(f"after {step}: {e}") from None
    fg = fuse(g)
    assert_close(reference.run(fg.graph, feeds), want, int_atol=1)
    assert sorted(n.name for grp in fg.groups for n in grp.nodes) == sorted(n.name for n in g.nodes)


def test_prepare_is_the_pipeline():
    model, feeds = resnet_basic_block()
    fg = prepare(model, layout_prefs={"conv2d": 8})
    assert isinstance(fg, FusedGraph)
    assert_close(reference.run(fg.graph, feeds), ort_run(model, feeds))


# ====================================================================== fold_batchnorm
def test_conv_bn_relu_folds_to_conv_relu():
    model, feeds = conv_bn_relu()
    g = fold_batchnorm(load_onnx(model))
    assert g.ops() == ["conv2d", "relu"]
    conv = g.nodes[0]
    assert len(conv.inputs) == 3 and all(v.name in g.constants for v in conv.inputs[1:])
    assert "cw" not in g.constants                          # the unfolded weight is gone
    assert_close(reference.run(g, feeds), ort_run(model, feeds))


@pytest.mark.parametrize("build", [mobilenet_v2_block, resnet_basic_block, mlp])
def test_batchnorm_gone(build):
    model, feeds = build()
    g = load_onnx(model)
    assert "batch_norm" in g.ops()
    g = fold_batchnorm(g)
    assert "batch_norm" not in g.ops()
    if build is mlp:    # Gemm + BN: the scale goes into the weights, the shift into the bias add
        g = optimize(g)
        assert g.ops() == ["matmul", "add", "relu", "matmul", "add", "softmax"]
    else:               # every BN follows a conv: nothing elementwise is left of it
        assert g.ops().count("mul") == 0 and g.ops().count("add") <= 1
    assert_close(reference.run(g, feeds), ort_run(model, feeds))


def test_batchnorm_without_conv_becomes_mul_add_and_runtime_statistics_decompose():
    r = rng(11)
    c = 3
    inits = {"s": r.uniform(0.5, 1.5, c).astype(np.float32), "b": w(r, c),
             "m": w(r, c), "v": r.uniform(0.5, 1.5, c).astype(np.float32)}
    nodes = [h.make_node("Relu", ["x"], ["r"]),
             h.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["y"])]
    model = make_model(nodes, {"x": (2, c, 4, 4)}, ["y"], inits)
    feeds = {"x": r.standard_normal((2, c, 4, 4)).astype(np.float32)}
    g = fold_batchnorm(load_onnx(model))
    assert g.ops() == ["relu", "mul", "add"]
    assert_close(reference.run(g, feeds), ort_run(model, feeds))
    # statistics as runtime inputs: the same formula, op by op
    nodes = [h.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])]
    model = make_model(nodes, {"x": (2, c, 4, 4), "s": (c,), "b": (c,), "m": (c,), "v": (c,)}, ["y"])
    feeds.update({k: inits[k] for k in "sbmv"})
    g = fold_batchnorm(load_onnx(model))
    assert "batch_norm" not in g.ops()
    assert_close(reference.run(g, feeds), ort_run(model, feeds))


def test_conv_transpose_bn_folds():
    r = rng(12)
    inits = {"w": w(r, 4, 3, 3, 3), "s": r.uniform(0.5, 1.5, 6).astype(np.float32),
             "b": w(r, 6), "m": w(r, 6), "v": r.uniform(0.5, 1.5, 6).astype(np.float32)}
    inits["w"] = w(r, 4, 3, 3, 3)
    nodes = [h.make_node("ConvTranspose", ["x", "w"], ["c"], group=2, strides=[2, 2]),
             h.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])]
    model = make_model(nodes, {"x": (1, 4, 5, 5)}, ["y"], inits)
    feeds = {"x": r.standard_normal((1, 4, 5, 5)).astype(np.float32)}
    g = fold_batchnorm(load_onnx(model))
    assert g.ops() == ["conv2d_transpose"]
    assert_close(reference.run(g, feeds), ort_run(model, feeds))


# ====================================================================== fold_constants / dead / simplify
def test_fold_constants_transposes_gemm_weights():
    model, feeds = mlp()
    g = load_onnx(model)
    tr = next(n for n in g.nodes if n.op == "transpose")
    w1 = g.constants["W1"]
    g2 = fold_constants(g)
    assert "transpose" not in g2.ops()
    assert tr.outputs[0].name in g2.constants
    np.testing.assert_array_equal(g2.constants[tr.outputs[0].name], w1.T)
    assert "W1" not in g2.constants                        # nothing reads it any more
    assert g2.ops().count("mul") == 1                      # beta * C folded, alpha kept
    assert_close(reference.run(g2, feeds), ort_run(model, feeds))


def test_shape_computation_folds_and_dies():
    model, feeds = lenet()
    g = load_onnx(model)
    assert {"gather", "concat"} <= set(g.ops())            # computing the Reshape's shape
    g = remove_dead(g)                                      # the Reshape reads an attribute:
    assert not {"gather", "concat"} & set(g.ops())          # its shape computation is dead
    g = fold_constants(g)
    assert "transpose" not in g.ops()
    assert g.ops() == ["conv2d", "relu", "max_pool2d", "conv2d", "relu", "avg_pool2d", "reshape",
                       "matmul", "add", "relu", "matmul", "add", "log_softmax"]
    assert_close(reference.run(g, feeds), ort_run(model, feeds))


def _graph(nodes, inputs, outputs, consts=None):
    return Graph(tuple(inputs), tuple(outputs), tuple(nodes), consts or {}).validate()


def test_remove_dead_drops_nodes_and_constants():
    x = Value("x", (2, 3), "float32")
    c = Value("c", (3,), "float32")
    a, b, d = (Value(n, (2, 3), "float32") for n in "abd")
    nodes = [Node.make("add", (x, c), (a,), name="used"),
             Node.make("mul", (x, c), (b,), name="dead1"),
             Node.make("relu", (b,), (d,), name="dead2")]
    g = _graph(nodes, [x], [a], {"c": np.ones(3, np.float32), "unused": np.zeros(2, np.float32)})
    g2 = remove_dead(g)
    assert [n.name for n in g2.nodes] == ["used"]
    assert set(g2.constants) == {"c"}
    assert remove_dead(g2) == g2


def test_simplify_rules():
    x = Value("x", (2, 3, 4), "float32")
    one = Value("one", (), "float32")
    vals = {n: Value(n, s, "float32") for n, s in
            [("i", (2, 3, 4)), ("t1", (4, 3, 2)), ("t2", (2, 3, 4)), ("r1", (6, 4)), ("r2", (24,)),
             ("m", (24,)), ("y", (24,))]}
    nodes = [Node.make("identity", (x,), (vals["i"],), name="id"),
             Node.make("transpose", (vals["i"],), (vals["t1"],), {"perm": (2, 1, 0)}, name="t1"),
             Node.make("transpose", (vals["t1"],), (vals["t2"],), {"perm": (2, 1, 0)}, name="t2"),
             Node.make("reshape", (vals["t2"],), (vals["r1"],), {"shape": (6, 4)}, name="r1"),
             Node.make("reshape", (vals["r1"],), (vals["r2"],), {"shape": (24,)}, name="r2"),
             Node.make("mul", (vals["r2"], one), (vals["m"],), name="mul1"),
             Node.make("sigmoid", (vals["m"],), (vals["y"],), name="sig")]
    g = _graph(nodes, [x], [vals["y"]], {"one": np.ones((), np.float32)})
    g2 = simplify(g)
    assert g2.ops() == ["reshape", "sigmoid"]
    assert g2.nodes[0].inputs[0] == x and g2.nodes[0].attr("shape") == (24,)
    feeds = {"x": rng().standard_normal((2, 3, 4)).astype(np.float32)}
    np.testing.assert_array_equal(reference.run(g2, feeds)["y"], reference.run(g, feeds)["y"])


def test_simplify_keeps_graph_outputs():
    x = Value("x", (3,), "float32")
    y = Value("y", (3,), "float32")
    g = _graph([Node.make("identity", (x,), (y,), name="copy")], [x], [y])
    assert simplify(g) == g


def test_simplify_pad_into_conv():
    r = rng(14)
    nodes = [h.make_node("Pad", ["x", "p"], ["xp"]),
             h.make_node("Conv", ["xp", "w"], ["y"], pads=[1, 0, 0, 0])]
    model = make_model(nodes, {"x": (1, 3, 6, 7)}, ["y"],
                       {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "w": w(r, 4, 3, 3, 3)})
    feeds = {"x": r.standard_normal((1, 3, 6, 7)).astype(np.float32)}
    g = simplify(load_onnx(model))
    assert g.ops() == ["conv2d"] and g.nodes[0].attr("pads") == (2, 2, 2, 1)
    assert_close(reference.run(g, feeds), ort_run(model, feeds))


def test_simplify_cancels_layout_round_trips():
    x = Value("x", (1, 8, 2, 2), "float32")
    b = Value("b", (1, 1, 2, 2, 8), "float32", "NCHW8c")
    y = Value("y", (1, 8, 2, 2), "float32")
    r = Value("r", (1, 8, 2, 2), "float32")
    nodes = [Node.make("layout_transform", (x,), (b,), {"src": "", "dst": "NCHW8c"}, name="in"),
             Node.make("layout_transform", (b,), (y,), {"src": "NCHW8c", "dst": ""}, name="out"),
             Node.make("relu", (y,), (r,), name="relu")]
    g = simplify(_graph(nodes, [x], [r]))
    assert g.ops() == ["relu"] and g.nodes[0].inputs[0] == x
    g = simplify(_graph(nodes[:2], [x], [y]))        # y is a graph output: a copy remains
    assert g.ops() == ["identity"] and g.nodes[0].inputs[0] == x


# ====================================================================== infer_shapes and the IR
def test_infer_shapes_recomputes_and_checks():
    x = Value("x", (1, 3, 8, 8), "float32")
    wv = Value("w", (4, 3, 3, 3), "float32")
    wrong = Value("c", (9, 9), "float32")
    r = Value("r", (9, 9), "float32")
    conv = Node.make("conv2d", (x, wv), (wrong,), {"strides": (2, 2), "pads": (1, 1, 1, 1),
                                                   "dilations": (1, 1), "groups": 1}, name="conv")
    relu = Node.make("relu", (wrong,), (r,), name="relu")
    g = Graph((x,), (r,), (conv, relu), {"w": np.zeros((4, 3, 3, 3), np.float32)})
    g2 = infer_shapes(g)
    assert g2.nodes[0].outputs[0].shape == (1, 4, 4, 4)
    assert g2.nodes[1].inputs[0].shape == (1, 4, 4, 4) and g2.outputs[0].shape == (1, 4, 4, 4)
    bad = Node.make("conv2d", (x, Value("w", (4, 2, 3, 3), "float32")), (wrong,), conv.attr_dict,
                    name="conv")
    with pytest.raises(ModelError) as e:
        infer_shapes(Graph((x,), (wrong,), (bad,), {"w": np.zeros((4, 2, 3, 3), np.float32)}))
    assert "'conv'" in str(e.value) and "\n" not in str(e.value)


def test_graph_validate_and_topo_sort():
    x = Value("x", (2,), "float32")
    a, b = Value("a", (2,), "float32"), Value("b", (2,), "float32")
    n1 = Node.make("relu", (x,), (a,), name="n1")
    n2 = Node.make("neg", (a,), (b,), name="n2")
    with pytest.raises(ModelError, match="before it is defined"):
        Graph((x,), (b,), (n2, n1)).validate()
    assert topo_sort([n2, n1], ["x"]) == (n1, n2)
    loop = Node.make("neg", (b,), (a,), name="loop")
    with pytest.raises(ModelError, match="cycle"):
        topo_sort([n2, loop], ["x"])
    with pytest.raises(ModelError, match="defined twice"):
        Graph((x,), (a,), (n1, Node.make("neg", (x,), (a,), name="again"))).validate()
    g = Graph((x,), (b,), (n1, n2))
    assert g == Graph((x,), (b,), (n1, n2), {"unrelated": np.zeros(1, np.float32)})   # constants
    assert g.consumers()["a"] == (n2,) and g.producers()["b"] is n2                   # not compared


# ====================================================================== fuse
def _fused_ops(fg: FusedGraph):
    return [[n.op for n in grp.nodes] for grp in fg.groups]


def test_fuse_conv_bn_relu():
    fg = fuse(optimize(load_onnx(conv_bn_relu()[0])))
    assert _fused_ops(fg) == [["conv2d", "relu"]]
    grp = fg.groups[0]
    assert grp.kind == "anchor" and grp.anchor.op == "conv2d" and [n.op for n in grp.epilogue] == ["relu"]
    assert [v.name for v in grp.inputs] == ["x"] and [v.name for v in grp.outputs] == ["y"]
    assert len(grp.params) == 2 and all(p.name in fg.graph.constants for p in grp.params)


def test_fuse_resnet_block():
    fg = fuse(optimize(load_onnx(resnet_basic_block()[0])))
    assert _fused_ops(fg) == [["conv2d", "relu"], ["conv2d"], ["conv2d", "add", "relu"]]
    last = fg.groups[-1]
    assert last.anchor.name == "conv2" and {v.name for v in last.inputs} == {
        fg.groups[0].outputs[0].name, fg.groups[1].outputs[0].name}
    assert last.outputs[0].name == "y" and last.outputs[0].shape == (1, 32, 8, 8)


def test_fuse_mobilenet_v2_block():
    fg = fuse(optimize(load_onnx(mobilenet_v2_block()[0])))
    assert _fused_ops(fg) == [["conv2d", "clip"], ["conv2d", "clip"], ["conv2d", "add"]]
    dw = fg.groups[1].anchor
    assert dw.attr("groups") == 96


def test_fuse_mlp_and_lenet():
    fg = fuse(optimize(load_onnx(mlp()[0])))
    assert _fused_ops(fg) == [["matmul", "add", "relu"], ["matmul", "add"], ["softmax"]]
    assert [g.kind for g in fg.groups] == ["anchor", "anchor", "reduction"]
    fg = fuse(optimize(load_onnx(lenet()[0])))
    assert _fused_ops(fg) == [["conv2d", "relu"], ["max_pool2d"], ["conv2d", "relu"], ["avg_pool2d"],
                              ["reshape"], ["matmul", "add", "relu"], ["matmul", "add"],
                              ["log_softmax"]]


def _chain_graph(spec, inputs, consts=None):
    """spec: (op, [input names], output name, shape, attrs) in order; returns a validated Graph."""
    vals = {v.name: v for v in inputs}
    for k, a in (consts or {}).items():
        vals[k] = Value(k, a.shape, str(a.dtype))
    nodes = []
    for op, ins, out, shape, attrs in spec:
        vals[out] = Value(out, shape, "float32")
        nodes.append(Node.make(op, [vals[i] for i in ins], [vals[out]], attrs, name=out))
    return infer_shapes(Graph(tuple(inputs), (vals[spec[-1][2]],), tuple(nodes), consts or {}))


CONV = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "groups": 1}


def test_fuse_swish_epilogue_reads_anchor_twice():
    x = Value("x", (1, 4, 5, 5), "float32")
    g = _chain_graph([("conv2d", ["x", "w"], "c", (1, 4, 5, 5), CONV),
                      ("sigmoid", ["c"], "s", (1, 4, 5, 5), {}),
                      ("mul", ["c", "s"], "y", (1, 4, 5, 5), {})],
                     [x], {"w": np.ones((4, 4, 1, 1), np.float32)})
    fg = fuse(g)
    assert _fused_ops(fg) == [["conv2d", "sigmoid", "mul"]]
    assert [v.name for v in fg.groups[0].outputs] == ["y"]


def test_fuse_stops_at_shared_values_and_cycles():
    x = Value("x", (1, 4, 5, 5), "float32")
    consts = {"w": np.ones((4, 4, 1, 1), np.float32)}
    # a = conv(x) read by conv b and by add(a, b): a's group cannot take the add (cycle)
    g = _chain_graph([("conv2d", ["x", "w"], "a", (), CONV),
                      ("conv2d", ["a", "w"], "b", (), CONV),
                      ("add", ["a", "b"], "y", (), {})], [x], consts)
    assert _fused_ops(fuse(g)) == [["conv2d"], ["conv2d", "add"]]
    # c = conv(x) read by relu and by a second conv: relu stays out (c must be written);
    # the relu starts an elementwise group that takes the add (d does not depend on it)
    g = _chain_graph([("conv2d", ["x", "w"], "c", (), CONV),
                      ("relu", ["c"], "r", (), {}),
                      ("conv2d", ["c", "w"], "d", (), CONV),
                      ("add", ["r", "d"], "y", (), {})], [x], consts)
    fg = fuse(g)
    assert _fused_ops(fg) == [["conv2d"], ["conv2d"], ["relu", "add"]]
    assert [grp.kind for grp in fg.groups] == ["anchor", "anchor", "injective"]


def test_fuse_never_two_reductions_and_injective_chains():
    x = Value("x", (2, 3, 4), "float32")
    g = _chain_graph([("softmax", ["x"], "s", (), {"axis": 2}),
                      ("reduce_sum", ["s"], "r", (), {"axes": (2,), "keepdims": 1}),
                      ("exp", ["r"], "e", (), {}),
                      ("transpose", ["e"], "t", (), {"perm": (2, 1, 0)}),
                      ("reshape", ["t"], "rs", (), {"shape": (3, 2)}),
                      ("relu", ["rs"], "y", (), {})], [x])
    fg = fuse(g)
    assert _fused_ops(fg) == [["softmax"], ["reduce_sum", "exp"], ["transpose", "reshape", "relu"]]
    assert [grp.kind for grp in fg.groups] == ["reduction", "reduction", "injective"]
    assert all(sum(n.op.startswith(("reduce", "softmax")) for n in grp.nodes) <= 1 for grp in fg.groups)


def test_fuse_pattern_table_is_explicit():
    g = optimize(load_onnx(conv_bn_relu()[0]))
    fg = fuse(g, patterns={"conv2d": "opaque", "relu": "elementwise"})
    assert _fused_ops(fg) == [["conv2d"], ["relu"]]


# ====================================================================== layout
def test_pack_unpack_roundtrip():
    a = rng().standard_normal((2, 16, 3, 5)).astype(np.float32)
    p = pack(a, "NCHW8c")
    assert p.shape == (2, 2, 3, 5, 8) and p[1, 1, 2, 4, 3] == a[1, 11, 2, 4]
    np.testing.assert_array_equal(unpack(p, "NCHW8c"), a)
    wt = rng().standard_normal((16, 8, 3, 3)).astype(np.float32)
    pw = pack(wt, "OIHW4i8o")
    assert pw.shape == (2, 2, 3, 3, 4, 8) and pw[1, 0, 2, 1, 3, 5] == wt[13, 3, 2, 1]
    np.testing.assert_array_equal(unpack(pw, "OIHW4i8o"), wt)


def test_layout_converts_only_at_boundaries():
    model, feeds = resnet_basic_block()
    g = optimize(load_onnx(model))
    assert convert_layout(g, {}) == g                        # no preferences, no change
    g8 = convert_layout(g, {"conv2d": 8})
    tr = [n for n in g8.nodes if n.op == "layout_transform"]
    assert [(n.attr("src"), n.attr("dst")) for n in tr] == [("", "NCHW8c"), ("NCHW8c", "")]
    assert tr[0].inputs[0].name == "x" and tr[-1].outputs[0].name == "y"
    for n in g8.nodes:
        if n.op == "conv2d":
            assert n.inputs[0].layout == n.outputs[0].layout == "NCHW8c"
            assert n.inputs[1].layout.startswith("OIHW8i8o") and n.inputs[1].name in g8.constants
        elif n.op != "layout_transform":
            assert all(v.layout == "NCHW8c" for v in n.outputs)
    assert g8.outputs[0].layout == "" and g8.outputs[0].shape == (1, 32, 8, 8)
    assert_close(reference.run(g8, feeds), ort_run(model, feeds))
    assert _fused_ops(fuse(g8)) == [["layout_transform"], ["conv2d", "relu"], ["conv2d"],
                                    ["conv2d", "add", "relu"], ["layout_transform"]]


def test_layout_lenet_mixed_channels():
    model, feeds = lenet()
    g = convert_layout(optimize(load_onnx(model)), {"conv2d": 2})
    # conv1 reads the 1-channel input as is and writes NCHW2c; pools and relus follow;
    # the flatten needs the ONNX layout back
    assert [n.op for n in g.nodes][:7] == ["conv2d", "relu", "max_pool2d", "conv2d", "relu",
                                           "avg_pool2d", "layout_transform"]
    assert g.nodes[0].inputs[0].layout == "" and g.nodes[0].outputs[0].layout == "NCHW2c"
    assert g.nodes[0].inputs[1].layout == "OIHW1i2o"
    assert g.ops().count("layout_transform") == 1
    assert_close(reference.run(g, feeds), ort_run(model, feeds))


def test_layout_depthwise_and_residual():
    model, feeds = mobilenet_v2_block()
    g = convert_layout(optimize(load_onnx(model)), {"conv2d": 8})
    dw = next(n for n in g.nodes if n.op == "conv2d" and n.attr("groups") > 1)
    assert dw.inputs[0].layout == "NCHW8c" and dw.inputs[1].layout == "OIHW1i8o"
    assert dw.inputs[1].shape == (12, 1, 3, 3, 1, 8)
    assert g.ops().count("layout_transform") == 2            # x in, y out; the residual reads x@8c
    assert_close(reference.run(g, feeds), ort_run(model, feeds))


def test_layout_per_op_preference_function():
    model, feeds = resnet_basic_block()
    g = optimize(load_onnx(model))
    g2 = convert_layout(g, {"conv2d": lambda n: 8 if n.name != "shortcut" else None})
    sc = next(n for n in g2.nodes if n.name == "shortcut")
    assert sc.outputs[0].layout == "" and sc.inputs[0].layout == ""
    assert_close(reference.run(g2, feeds), ort_run(model, feeds))
    for bad in ({"matmul": 8}, {"conv2d": 0}, {"conv2d": "8"}):
        with pytest.raises(ValueError):
            convert_layout(g, bad)


# ====================================================================== fold_qdq
def test_fold_qdq_makes_integer_conv():
    model, feeds = qdq_conv()
    g = load_onnx(model)
    assert g.ops() == ["dequantize", "dequantize", "conv2d", "relu", "quantize"]
    g2 = fold_qdq(g)
    assert g2.ops() == ["qlinear_conv2d", "clip"]
    q = g2.nodes[0]
    assert q.inputs[0].name == "xq" and q.inputs[0].dtype == "int8"
    assert q.inputs[3].name == "wq" and q.inputs[8].dtype == "int32"
    assert g2.nodes[1].attr_dict == {"min": -5, "max": None}          # relu at the zero point
    assert_close(reference.run(g2, feeds), ort_run(model, feeds), int_atol=1)


def test_fold_qdq_matmul():
    r = rng(13)
    inits = {"as": np.array(0.05, np.float32), "az": np.array(0, np.int8),
             "b": r.integers(-127, 128, (6, 5)).astype(np.int8), "bs": np.array(0.01, np.float32),
             "bz": np.array(0, np.int8), "ys": np.array(0.1, np.float32), "yz": np.array(2, np.int8)}
    nodes = [h.make_node("DequantizeLinear", ["a", "as", "az"], ["af"]),
             h.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bf"]),
             h.make_node("MatMul", ["af", "bf"], ["m"]),
             h.make_node("QuantizeLinear", ["m", "ys", "yz"], ["y"])]
    from onnx import TensorProto
    model = make_model(nodes, {"a": (3, 6)}, ["y"], inits,
                       dtypes={"a": TensorProto.INT8, "y": TensorProto.INT8})
    feeds = {"a": r.integers(-128, 128, (3, 6)).astype(np.int8)}
    g = optimize(load_onnx(model))
    assert g.ops() == ["qlinear_matmul"]
    assert_close(reference.run(g, feeds), ort_run(model, feeds), int_atol=1)
