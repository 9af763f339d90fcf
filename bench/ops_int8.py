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

Run standalone (`python -m bench.ops_int8 [--sweep N]`) it measures each case: the default
config, a quick sweep through cgen.autotune.measure.measure_config (each output checked
bit-exactly against the numpy reference before its time counts; records appended to --log
as tuning-log JSON lines), then default, best and onnxruntime interleaved repeat by repeat
(cgen in its child-process harness, median of --repeats), and prints a table.
ratio = onnxruntime_s / cgen_s (> 1: cgen faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from cgen.ops.quant import QConv2dTemplate

# (name, C, H, F, K, stride, pad)
LAYERS = (
    ("qconv3x3-64x28x28", 64, 28, 64, 3, 1, 1),
)

_ONNX_TYPES = {"int8": 3, "uint8": 2}  # onnx.TensorProto.INT8 / UINT8


# ---------------------------------------------------------------- onnxruntime
def _session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _scalar_or_channel(values, dtype, per_channel: bool):
    v = np.asarray(values).astype(dtype)
    return v.reshape(-1) if per_channel else v.reshape(())


def qlinearconv_session(wl: dict, inputs: list):
    """(session, feeds): a one-node QLinearConv for a qconv2d / qdepthwise_conv2d workload with
    rounding "onnx"; `inputs` as the template's inputs(): X, W, B, x_zp, w_zp, y_zp, x_scale,
    w_scale, y_scale[, Y].  Everything but X is an initializer (constant, as in a model)."""
    from onnx import TensorProto, helper, numpy_helper
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


def sweep_configs(template, wl: dict, target, n: int, seed: int = 0) -> list:
    """The default config first, then the template's quick_configs, then seeded random configs."""
    out = []
    extra = template.space(wl, target).sample(np.random.default_rng(seed), 4 * n)
    for c in [template.default(wl, target)] + template.quick_configs(wl, target) + extra:
        if len(out) >= n:
            break
        if c.index not in {o.index for o in out}:
            out.append(c)
    return out


# ---------------------------------------------------------------- standalone
def main(argv=None) -> int:
    from bench import common
    from cgen.autotune.log import LogWriter
    from cgen.autotune.measure import measure_config
    import cgen
    p = argparse.ArgumentParser(prog="python -m bench.ops_int8", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="host")
    p.add_argument("--sweep", type=int, default=8, help="configs per case, default first (default 8)")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--min-repeat-ms", type=float, default=30.0)
    p.add_argument("--log", default="", help="append the sweep's tuning-log records to this file")
    args = p.parse_args(argv)
    rows = []
    log = LogWriter(args.log) if args.log else None
    with common.single_thread():
        for case in cases(args.target):
            tmpl, wl = case["template"], case["workload"]
            t0 = time.perf_counter()
            inputs = tmpl.inputs(wl, np.random.default_rng(0))
            ref = tmpl.reference(wl, inputs)
            recs = []
            for cfg in sweep_configs(tmpl, wl, args.target, args.sweep):
                rec = measure_config(tmpl, wl, args.target, cfg, inputs=inputs, reference=ref,
                                     repeat=5, min_repeat_ms=20.0)
                recs.append((cfg, rec))
                if log is not None:
                    log.write(rec)
                msg = (f"{statistics.median(rec.costs) * 1e3:8.3f} ms" if rec.ok
                       else f"{rec.error['kind']}: {rec.error['msg'][:120]}")
                print(f"  {case['name']:20s} {cfg.to_dict()}  {msg}", file=sys.stderr, flush=True)
            ok = [(cfg, rec) for cfg, rec in recs if rec.ok]
            if not ok:
                rows.append((case["name"], None, None, None, None, None))
                continue
            best_cfg, _ = min(ok, key=lambda cr: statistics.median(cr[1].costs))
            timers = []
            for cfg in ([recs[0][0]] if recs[0][1].ok else []) + [best_cfg]:
                s, targs = tmpl.build(wl, args.target, cfg)
                mod = cgen.build(s, targs, target=args.target, name=tmpl.name)
                timers.append(common.ChildTimer(mod, [a.copy() for a in inputs]))
            tims = common.measure_interleaved(timers + [case["peer_call"]], repeats=args.repeats,
                                              min_repeat_s=args.min_repeat_ms / 1e3)
            peer, best = tims[-1].median, tims[-2].median
            dflt = tims[0].median if len(timers) == 2 else None
            fl = case["flops"]
            rows.append((case["name"], dflt and dflt * 1e3, best * 1e3, peer * 1e3, peer / best,
                         fl / best / 1e9))
            print(f"  {case['name']}: best {best_cfg.to_dict()} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    print(common.format_table(["case", "default ms", "best ms", "onnxruntime ms", "ratio",
                               "GOP/s"], rows))
    print(f"measured: median of {args.repeats} interleaved repeats, each >= {args.min_repeat_ms:g} ms "
          "of back-to-back calls; cgen in its child-process harness, onnxruntime in-process; "
          "1 thread each; ratio = onnxruntime_s / cgen best_s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
