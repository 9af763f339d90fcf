"""Resize and Upsample beyond the ONNX backend node cases (those run compiled in
test_onnx_backend_compiled.py): models from before opset 11 keep their asymmetric
coordinates, integer tensors, an FPN-style neck against onnxruntime on x86, ARM and Cortex-M,
and the one-line refusals."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from cgen.graph import ModelError
from cgen.graph.model import compile_model
from cgen.graph.onnx_frontend import load_onnx


def _resize_model(x_shape, y_shape, opset, op="Resize", dtype=TensorProto.FLOAT, scales=None,
                  sizes=None, **attrs):
    inits, ins = [], ["x"]
    if op == "Upsample" or opset == 10:
        inits.append(nh.from_array(np.asarray(scales, np.float32), "scales"))
        ins.append("scales")
    else:
        ins += ["", "scales" if scales is not None else "", "sizes" if sizes is not None else ""]
        if scales is not None:
            inits.append(nh.from_array(np.asarray(scales, np.float32), "scales"))
        if sizes is not None:
            inits.append(nh.from_array(np.asarray(sizes, np.int64), "sizes"))
    g = h.make_graph([h.make_node(op, ins, ["y"], **attrs)], "g",
                     [h.make_tensor_value_info("x", dtype, x_shape)],
                     [h.make_tensor_value_info("y", dtype, y_shape)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def _x(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 255, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _asymmetric_linear_2x(x):
    """Reference written out: y[i] = x[i/2] interpolated, right edge clamped."""
    def axis(a, d):
        n = a.shape[d]
        src = np.arange(2 * n) / 2
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        f = (src - lo).reshape([-1 if k == d else 1 for k in range(a.ndim)])
        return np.take(a, lo, axis=d) * (1 - f) + np.take(a, hi, axis=d) * f
    return axis(axis(x.astype(np.float64), 2), 3).astype(np.float32)


@pytest.mark.parametrize("op,opset", [("Upsample", 9), ("Resize", 10)])
def test_before_opset_11_linear_is_asymmetric(op, opset):
    """onnx.version_converter turns these into Resize-11 nodes with the half_pixel default;
    the importer keeps their own (asymmetric) coordinates, as onnxruntime runs them."""
    model = _resize_model([1, 2, 3, 4], [1, 2, 6, 8], opset, op, scales=[1, 1, 2, 2],
                          mode="linear")
    x = _x((1, 2, 3, 4))
    got = compile_model(model, "host").run({"x": x})["y"]
    np.testing.assert_allclose(got, _asymmetric_linear_2x(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,opset", [("Upsample", 9), ("Resize", 10)])
def test_before_opset_11_matches_onnxruntime(op, opset):
    ort = pytest.importorskip("onnxruntime")
    cases = [("linear", [1, 1, 2, 2]), ("nearest", [1, 1, 3, 2]), ("nearest", [1, 1, 1.5, 2.5])]
    if op == "Resize":          # (onnxruntime's Upsample refuses scales below 1)
        cases += [("nearest", [1, 1, 0.6, 0.5]), ("nearest", [1, 1, 0.75, 1.5]),
                  ("linear", [1, 1, 0.6, 1.7])]
    for mode, scales in cases:
        shape = [1, 2, 7, 9]
        out = [int(np.floor(d * s)) for d, s in zip(shape, scales)]
        model = _resize_model(shape, out, opset, op, scales=scales, mode=mode)
        x = _x(shape)
        want = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = compile_model(model, "host").run({"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{mode} {scales}")


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_uint8_resize_rounds_and_saturates(mode):
    """Integer tensors: interpolated in float, rounded half to even, saturated (cubic
    overshoots 0..255) -- as onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator
    model = _resize_model([1, 1, 5, 6], [1, 1, 9, 11], 19, dtype=TensorProto.UINT8,
                          sizes=[1, 1, 9, 11], mode=mode)
    x = _x((1, 1, 5, 6), np.uint8)
    x[0, 0, 2, :] = [0, 255, 0, 255, 0, 255]          # edges that make cubic overshoot
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = compile_model(model, "host").run({"x": x})["y"]
    assert got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1      # float32 vs float64


def _fpn_neck():
    """A YOLO-style neck: a 1x1 conv on the deep map, nearest 2x up, concat with the
    shallow map, then a 3x3 conv."""
    rng = np.random.default_rng(4)
    w1 = nh.from_array(rng.standard_normal((8, 16, 1, 1)).astype(np.float32) * 0.2, "w1")
    w2 = nh.from_array(rng.standard_normal((8, 16, 3, 3)).astype(np.float32) * 0.1, "w2")
    sc = nh.from_array(np.array([1, 1, 2, 2], np.float32), "sc")
    nodes = [h.make_node("Conv", ["deep", "w1"], ["c1"]),
             h.make_node("Resize", ["c1", "", "sc"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             h.make_node("Concat", ["up", "shallow"], ["cat"], axis=1),
             h.make_node("Conv", ["cat", "w2"], ["y"], pads=[1, 1, 1, 1])]
    g = h.make_graph(nodes, "neck",
                     [h.make_tensor_value_info("deep", TensorProto.FLOAT, [1, 16, 5, 6]),
                      h.make_tensor_value_info("shallow", TensorProto.FLOAT, [1, 8, 10, 12])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 10, 12])],
                     [w1, w2, sc])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)])


@pytest.mark.parametrize("target", ["x86-avx2", "aarch64", "armv7", "cortex-m4"])
def test_fpn_neck_matches_onnxruntime(target):
    ort = pytest.importorskip("onnxruntime")
    from tests.test_onnx_backend_compiled import need_target
    if target != "x86-avx2":
        need_target(target)
    model = _fpn_neck()
    feeds = {"deep": _x((1, 16, 5, 6), seed=1), "shallow": _x((1, 8, 10, 12), seed=2)}
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = compile_model(model, target).run(feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_runtime_scales_are_refused_in_one_line():
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
             h.make_node("Mul", ["sf", "k"], ["scales"]),
             h.make_node("Relu", ["scales"], ["rs"]),
             h.make_node("Add", ["rs", "z"], ["scales2"]),
             h.make_node("Resize", ["x", "", "scales2"], ["y"], mode="nearest")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2]),
                                  h.make_tensor_value_info("z", TensorProto.FLOAT, [4])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
                     [nh.from_array(np.array([0.25, 0.5, 1, 1], np.float32), "k")])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    with pytest.raises(ModelError) as e:
        load_onnx(model)
    msg = str(e.value)
    assert "\n" not in msg and "Resize" in msg and "scales" in msg and "run time" in msg


def test_bad_attributes_are_refused_in_one_line():
    model = _resize_model([1, 1, 2, 2], [1, 1, 4, 4], 13, scales=[1, 1, 2, 2], mode="area")
    with pytest.raises(ModelError, match=r"^node .*\(Resize\): mode='area'") as e:
        load_onnx(model)
    assert e.value.kind == "unsupported_attr"
    model = _resize_model([1, 1, 2, 2], [1, 1, 4, 4], 19, scales=[1, 1, 2, 2], sizes=[1, 1, 4, 4])
    with pytest.raises(ModelError, match="exactly one of scales and sizes"):
        load_onnx(model)


def test_scale_one_is_no_resize():
    model = _resize_model([1, 1, 3, 3], [1, 1, 3, 3], 13, scales=[1, 1, 1, 1], mode="linear")
    assert [n.op for n in load_onnx(model).nodes] == ["identity"]      # x copied to y
