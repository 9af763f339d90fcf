"""MobileNetV2 depthwise 3x3 layers (batch 1, float32): cgen's depthwise templates against
onnxruntime, one thread.

`cases(target)` gives the bench cases the `ops` suite aggregates; each is a dict

    name      "dw3x3-32x112x112" (NCHW in and out, like onnxruntime) or
              "dw3x3-32x112x112-nchw16c" (cgen's blocked layout; see `layout`)
    template  cgen.ops.depthwise's DepthwiseNCHWTemplate or DepthwiseNCHWcTemplate
    workload  its workload (pad 1; stride 1, or 2 for the 's2' layers)
    layout    "NCHW" or "NCHW16c": what cgen reads and writes.  onnxruntime always
              gets NCHW, so an NCHW16c case times cgen without the layout conversion
              (as inside a network kept in the blocked layout) against onnxruntime on
              NCHW, which is not the same work; the NCHW case is the like-for-like one
    peer_name "onnxruntime"
    peer_fn   () -> seconds per call, median (one-node ONNX Conv with group = C, 1
              intra/inter-op thread, sequential execution, input prepared once)
    peer_call () -> None, one session.run (for interleaved timing)
    flops     2 * N * C * OH * OW * KH * KW

Measured by `python -m bench ops --cases ...` (bench/ops.py) it
measures each case: the default config and a quick sweep (`quick_configs`, then seeded
random configs) through cgen.autotune.measure.measure_config (each checked against the
numpy reference before its time counts; records appended to --log as tuning-log JSON
lines), then the default, the sweep's fastest (lowest repeat) and onnxruntime interleaved
repeat by repeat (cgen in its child-process harness, onnxruntime in-process; median of
--repeats), and prints a table.  "best" is the faster of the default and the sweep's
fastest in that interleaved run.  ratio = onnxruntime_s / cgen_s (> 1: cgen faster).
"""
from __future__ import annotations


import numpy as np

from cgen.ops.depthwise import (DepthwiseNCHWTemplate, DepthwiseNCHWcTemplate, depthwise_flops,
                                out_size)

# (name, C, H, stride): MobileNetV2's 3x3 depthwise layers at the sizes of the issue
LAYERS = (
    ("dw3x3-32x112x112", 32, 112, 1),
    ("dw3x3-96x112x112s2", 96, 112, 2),      # 96 channels, 112x112 in, 56x56 out
    ("dw3x3-144x56x56", 144, 56, 1),
    ("dw3x3-144x56x56s2", 144, 56, 2),       # 144 channels, 56x56 in, 28x28 out
    ("dw3x3-384x14x14", 384, 14, 1),
)
BLOCK = 16


# ---------------------------------------------------------------- onnxruntime
def ort_session(wl: dict, w: np.ndarray):
    """A one-node depthwise Conv model (NCHW, group = C), one thread, sequential."""
    from onnx import TensorProto, helper, numpy_helper
    node = helper.make_node("Conv", ["X", "W"], ["Y"], kernel_shape=[wl["KH"], wl["KW"]],
                            strides=list(wl["stride"]), dilations=list(wl["dilation"]),
                            pads=list(wl["pad"]), group=wl["C"])
    oh, ow = out_size(wl)
    cm = wl["C"] * wl["multiplier"]
    graph = helper.make_graph(
        [node], "dwconv",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [wl["N"], wl["C"], wl["H"], wl["W"]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [wl["N"], cm, oh, ow])],
        [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from bench import common
    return common.ort_session(model)


def ort_peer(wl: dict, seed: int = 0, repeats: int = 7, min_repeat_s: float = 0.02):
    """(peer_fn, peer_call, check) for onnxruntime on the NCHW version of the workload."""
    from cgen.ops.depthwise import depthwise_reference
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((wl["N"], wl["C"], wl["H"], wl["W"]), dtype=np.float32)
    w = rng.standard_normal((wl["C"] * wl["multiplier"], 1, wl["KH"], wl["KW"]), dtype=np.float32)
    from bench import common
    return common.lazy_peer(lambda: ort_session(wl, w), {"X": x}, lambda: depthwise_reference(x, w, wl["stride"], wl["pad"], wl["dilation"]),
                            repeats, min_repeat_s)


# ---------------------------------------------------------------- cases
def cases(target="host") -> list:
    """Per layer an NCHW case (like-for-like) and an NCHW16c case (cgen's blocked layout)."""
    out = []
    nchw, nchwc = DepthwiseNCHWTemplate(), DepthwiseNCHWcTemplate()
    for name, C, H, stride in LAYERS:
        for tmpl, layout, suffix in ((nchw, "NCHW", ""), (nchwc, f"NCHW{BLOCK}c", f"-nchw{BLOCK}c")):
            kw = {"bn": BLOCK} if tmpl is nchwc else {}
            wl = tmpl.workload(1, C, H, H, 3, 3, stride=stride, pad=1, **kw)
            peer_fn, call, _ = ort_peer(wl)
            out.append(dict(name=name + suffix, template=tmpl, workload=wl, layout=layout,
                            peer_name="onnxruntime", peer_fn=peer_fn, peer_call=call,
                            flops=depthwise_flops(wl)))
    return out
