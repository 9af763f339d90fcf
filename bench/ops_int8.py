"""int8 QLinearConv (ONNX rounding, uint8 activations, int8 weights, batch 1): cgen's quantized
conv template against onnxruntime's QLinearConv, one thread.

`cases(target)` gives the bench cases the `ops` suite aggregates; each is a dict

    name      e.g. "qconv3x3-64x28x28"
    template  cgen.ops.quant.QConv2dTemplate()
    workload  its workload (NCHW; zero points, scales and bias are run-time arguments)
    peer_name "onnxruntime"
    peer_fn   () -> seconds per call, median (one-node QLinearConv model whose weights, bias,
              scales and zero points are initializers, 1 intra/inter-op thread, sequential
              execution, all graph optimisations, input prepared once)
    peer_call () -> None, one session.run (for interleaved timing)
    flops     2 * N * F * OH * OW * C/groups * KH * KW (integer multiply-adds x 2)

The ONNX model builders here (`qlinearconv_session`, `qlinearmatmul_session`) are also what
tests/test_quant.py checks bit-exactness against.

Measured by `python -m bench ops --cases ...` (bench/ops.py) it measures each case: the default
config, a quick sweep through cgen.autotune.measure.measure_config (each output checked
bit-exactly against the numpy reference before its time counts; records appended to --log
as tuning-log JSON lines), then default, best and onnxruntime interleaved repeat by repeat
(cgen in its child-process harness, median of --repeats), and prints a table.
ratio = onnxruntime_s / cgen_s (> 1: cgen faster).
"""
from __future__ import annotations


import numpy as np

from cgen.ops.quant import QConv2dTemplate

# (name, C, H, F, K, stride, pad)
LAYERS = (
    ("qconv3x3-64x28x28", 64, 28, 64, 3, 1, 1),
)

_ONNX_TYPES = {"int8": 3, "uint8": 2}  # onnx.TensorProto.INT8 / UINT8


# ---------------------------------------------------------------- onnxruntime
def _session(model):
    from bench import common
    return common.ort_session(model)


def _scalar_or_channel(values, dtype, per_channel: bool):
    v = np.asarray(values).astype(dtype)
    return v.reshape(-1) if per_channel else v.reshape(())


def qlinearconv_session(wl: dict, inputs: list):
    """(session, feeds): a one-node QLinearConv for a qconv2d / qdepthwise_conv2d workload with
    rounding "onnx"; `inputs` as the template's inputs(): X, W, B, x_zp, w_zp, y_zp, x_scale,
    w_scale, y_scale[, Y].  Everything but X is an initializer (constant, as in a model)."""
    from onnx import helper, numpy_helper
    if wl["rounding"] != "onnx":
        raise ValueError("onnxruntime implements the ONNX rounding only")
    x, w, b, xz, wz, yz, xs, ws, ys = inputs[:9]
    if wl.get("w_layout", "OIHW") == "packed":     # (F, KH*KW*Cg) OHWI -> OIHW
        w = np.ascontiguousarray(w.reshape(wl["F"], wl["KH"], wl["KW"], -1).transpose(0, 3, 1, 2))
    per = wl["per_channel"]
    xt, wt, yt = wl["x_dtype"], wl["w_dtype"], wl["y_dtype"]
    inits = [numpy_helper.from_array(np.float32(xs.reshape(-1)[0]).reshape(()), "x_scale"),
             numpy_helper.from_array(_scalar_or_channel(xz, xt, False), "x_zero_point"),
             numpy_helper.from_array(w, "W"),
             numpy_helper.from_array(_scalar_or_channel(ws, np.float32, per), "w_scale"),
             numpy_helper.from_array(_scalar_or_channel(wz, wt, per), "w_zero_point"),
             numpy_helper.from_array(np.float32(ys.reshape(-1)[0]).reshape(()), "y_scale"),
             numpy_helper.from_array(_scalar_or_channel(yz, yt, False), "y_zero_point"),
             numpy_helper.from_array(np.asarray(b, np.int32), "B")]
    t, l, bo, r = wl["pads"]
    node = helper.make_node(
        "QLinearConv", ["X", "x_scale", "x_zero_point", "W", "w_scale", "w_zero_point", "y_scale",
                        "y_zero_point", "B"], ["Y"],
        kernel_shape=[wl["KH"], wl["KW"]], strides=list(wl["stride"]), pads=[t, l, bo, r],
        dilations=list(wl["dilation"]), group=wl["groups"])
    graph = helper.make_graph(
        [node], "qconv", [helper.make_tensor_value_info("X", _ONNX_TYPES[xt], list(x.shape))],
        [helper.make_tensor_value_info("Y", _ONNX_TYPES[yt], None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return _session(model), {"X": x}


def qlinearmatmul_session(wl: dict, inputs: list):
    """(session, feeds): a one-node QLinearMatMul for a qdense workload (rounding "onnx", bias
    must be zero: QLinearMatMul has none); Bm and the parameters are initializers."""
    from onnx import helper, numpy_helper
    if wl["rounding"] != "onnx":
        raise ValueError("onnxruntime implements the ONNX rounding only")
    a, bm, bias, az, bz, yz, as_, bs, ys = inputs[:9]
    if np.any(bias != 0):
        raise ValueError("QLinearMatMul has no bias: pass a zero bias")
    if wl.get("b_layout", "KN") == "NK":
        bm = np.ascontiguousarray(bm.T)
    per = wl["per_channel"]
    at, bt, yt = wl["a_dtype"], wl["b_dtype"], wl["y_dtype"]
    inits = [numpy_helper.from_array(np.float32(as_.reshape(-1)[0]).reshape(()), "a_scale"),
             numpy_helper.from_array(_scalar_or_channel(az, at, False), "a_zero_point"),
             numpy_helper.from_array(bm, "B"),
             numpy_helper.from_array(_scalar_or_channel(bs, np.float32, per), "b_scale"),
             numpy_helper.from_array(_scalar_or_channel(bz, bt, per), "b_zero_point"),
             numpy_helper.from_array(np.float32(ys.reshape(-1)[0]).reshape(()), "y_scale"),
             numpy_helper.from_array(_scalar_or_channel(yz, yt, False), "y_zero_point")]
    node = helper.make_node("QLinearMatMul", ["A", "a_scale", "a_zero_point", "B", "b_scale",
                                              "b_zero_point", "y_scale", "y_zero_point"], ["Y"])
    graph = helper.make_graph(
        [node], "qmatmul", [helper.make_tensor_value_info("A", _ONNX_TYPES[at], list(a.shape))],
        [helper.make_tensor_value_info("Y", _ONNX_TYPES[yt], None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return _session(model), {"A": a}


def ort_peer(template, wl: dict, seed: int = 0, repeats: int = 7, min_repeat_s: float = 0.02):
    """(peer_fn, peer_call, check) for onnxruntime on a workload; check() -> bool: its output
    equals the template's numpy reference bit for bit."""
    rng = np.random.default_rng(seed)
    inputs = template.inputs(wl, rng)
    if template.name == "qdense":
        inputs[2][...] = 0
    state = {}

    def session():
        if "s" not in state:
            make = qlinearmatmul_session if template.name == "qdense" else qlinearconv_session
            state["s"] = make(wl, inputs)
        return state["s"]

    def call():
        sess, feeds = session()
        sess.run(None, feeds)

    def peer_fn() -> float:
        from bench import common
        return common.measure(call, repeats=repeats, min_repeat_s=min_repeat_s).median

    def check() -> bool:
        sess, feeds = session()
        y = sess.run(None, feeds)[0]
        return bool(np.array_equal(y, template.reference(wl, inputs)["Y"]))
    return peer_fn, call, check


# ---------------------------------------------------------------- cases
def layer_workload(C, H, F, K, stride, pad) -> dict:
    return QConv2dTemplate().workload(1, C, H, H, F, K, K, stride=stride, pads=pad,
                                      x_dtype="uint8", w_dtype="int8", rounding="onnx")


def cases(target="host") -> list:
    out = []
    tmpl = QConv2dTemplate()
    for name, C, H, F, K, stride, pad in LAYERS:
        wl = layer_workload(C, H, F, K, stride, pad)
        peer_fn, call, _ = ort_peer(tmpl, wl)
        out.append(dict(name=name, template=tmpl, workload=wl, peer_name="onnxruntime",
                        peer_fn=peer_fn, peer_call=call, flops=tmpl.flops(wl)))
    return out
