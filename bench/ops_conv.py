"""ResNet-18 conv2d layers (batch 1, float32): cgen's conv templates against onnxruntime, one thread.

`cases(target)` gives the bench cases the `ops` suite aggregates; each is a dict

    name      e.g. "conv3x3-64x56x56"
    template  the template object (cgen.ops.conv), chosen by conv2d_template_for
    workload  its workload: NCHW activations, weights pre-packed (weights="packed"),
              i.e. the convolution alone, as in a compiled model whose weights are
              constants, and like onnxruntime's NCHWc kernels, whose filters are
              packed once when the session is created
    peer_name "onnxruntime"
    peer_fn   () -> seconds per call, median (one-node ONNX Conv model, 1 intra/inter-op
              thread, sequential execution, all graph optimisations, input prepared once)
    peer_call () -> None, one session.run (for interleaved timing)
    flops     2 * N * F * OH * OW * C/groups * KH * KW: direct-convolution FLOPs for every
              family, so Winograd's GFLOP/s are effective (they can exceed the FMA peak)

Measured by `python -m bench ops --cases ...` (bench/ops.py) it measures each
case: the default config, a quick sweep of a few configs through
cgen.autotune.measure.measure_config (each checked against numpy before its time counts;
records appended to --log as tuning-log JSON lines), then the default, the sweep's
best and onnxruntime interleaved repeat by repeat (cgen in its child-process harness,
median of --repeats; onnxruntime's output checked against the numpy reference first),
and prints a table.  best = the faster of the two cgen medians;
ratio = onnxruntime_s / best_s (> 1: cgen faster).
"""
from __future__ import annotations


import numpy as np

from cgen.ops.conv import conv2d_reference, conv2d_template_for, conv_flops, out_size

# (name, C, H, F, K, stride, pad): the ResNet-18 convolutions after the stem
LAYERS = (
    ("conv3x3-64x56x56", 64, 56, 64, 3, 1, 1),
    ("conv3x3-128x28x28", 128, 28, 128, 3, 1, 1),
    ("conv3x3-256x14x14", 256, 14, 256, 3, 1, 1),
    ("conv3x3-512x7x7", 512, 7, 512, 3, 1, 1),
    ("conv3x3s2-64to128-56", 64, 56, 128, 3, 2, 1),
    ("conv3x3s2-128to256-28", 128, 28, 256, 3, 2, 1),
    ("conv3x3s2-256to512-14", 256, 14, 512, 3, 2, 1),
    ("conv1x1s2-64to128-56", 64, 56, 128, 1, 2, 0),
    ("conv1x1s2-128to256-28", 128, 28, 256, 1, 2, 0),
    ("conv1x1s2-256to512-14", 256, 14, 512, 1, 2, 0),
)


# ---------------------------------------------------------------- onnxruntime
def ort_session(wl: dict, w_oihw: np.ndarray):
    """A one-node Conv model for the workload (NCHW), one thread, sequential."""
    from onnx import TensorProto, helper, numpy_helper
    node = helper.make_node("Conv", ["X", "W"], ["Y"], kernel_shape=[wl["KH"], wl["KW"]],
                            strides=list(wl["stride"]), dilations=list(wl["dilation"]),
                            pads=[wl["pad"][0], wl["pad"][1], wl["pad"][2], wl["pad"][3]],
                            group=wl["groups"])
    oh, ow = out_size(wl)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [wl["N"], wl["C"], wl["H"], wl["W"]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [wl["N"], wl["F"], oh, ow])],
        [numpy_helper.from_array(w_oihw, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from bench import common
    return common.ort_session(model)


def ort_peer(wl: dict, seed: int = 0, repeats: int = 7, min_repeat_s: float = 0.02):
    """(peer_fn, peer_call, check): timing of onnxruntime on this workload."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((wl["N"], wl["C"], wl["H"], wl["W"]), dtype=np.float32)
    w = rng.standard_normal((wl["F"], wl["C"] // wl["groups"], wl["KH"], wl["KW"]), dtype=np.float32)
    from bench import common
    return common.lazy_peer(lambda: ort_session(wl, w), {"X": x}, lambda: conv2d_reference(x, w, wl["stride"], wl["pad"], wl["dilation"], wl["groups"]),
                            repeats, min_repeat_s)


# ---------------------------------------------------------------- cases
def layer_workload(C, H, F, K, stride, pad, target="host") -> tuple:
    """(template, workload) for one layer: NCHW, pre-packed weights, the dispatcher's family."""
    return conv2d_template_for(
        {"op": "conv2d", "N": 1, "C": C, "H": H, "W": H, "F": F, "KH": K, "KW": K,
         "stride": [stride, stride], "pad": [pad] * 4, "dilation": [1, 1], "groups": 1,
         "layout": "NCHW", "weights": "packed"}, target)


def cases(target="host") -> list:
    out = []
    for name, C, H, F, K, stride, pad in LAYERS:
        tmpl, wl = layer_workload(C, H, F, K, stride, pad, target)
        peer_fn, call, check = ort_peer(wl)
        out.append(dict(name=name, template=tmpl, workload=wl, peer_name="onnxruntime",
                        peer_fn=peer_fn, peer_call=call, peer_check=check,
                        flops=conv_flops(wl)))
    return out
