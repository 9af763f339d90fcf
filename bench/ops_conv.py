"""ResNet-18 conv2d layers (batch 1, float32): cgen's conv templates against onnxruntime, one thread.

`cases(target)` gives the bench cases the `ops` suite aggregates; each is a dict

    name      e.g. "conv3x3-64x56x56"
    template  the template object (cgen.ops.conv2d), chosen by conv2d_template_for
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

Run standalone (`python -m bench.ops_conv [--sweep N] [--cases a,b]`) it measures each
case: the default config, a quick sweep of a few configs through
cgen.autotune.measure.measure_config (each checked against numpy before its time counts;
records appended to --log as tuning-log JSON lines), then the default, the sweep's
best and onnxruntime interleaved repeat by repeat (cgen in its child-process harness,
median of --repeats; onnxruntime's output checked against the numpy reference first),
and prints a table.  best = the faster of the two cgen medians;
ratio = onnxruntime_s / best_s (> 1: cgen faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from cgen.ops.conv2d import conv2d_reference, conv2d_template_for, conv_flops, out_size

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
    import onnxruntime as ort
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
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_peer(wl: dict, seed: int = 0, repeats: int = 7, min_repeat_s: float = 0.02):
    """(peer_fn, peer_call, check): timing of onnxruntime on this workload."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((wl["N"], wl["C"], wl["H"], wl["W"]), dtype=np.float32)
    w = rng.standard_normal((wl["F"], wl["C"] // wl["groups"], wl["KH"], wl["KW"]), dtype=np.float32)
    state = {}

    def session():
        if "s" not in state:
            state["s"] = ort_session(wl, w)
        return state["s"]

    def call():
        session().run(None, {"X": x})

    def peer_fn() -> float:
        from bench import common
        return common.measure(call, repeats=repeats, min_repeat_s=min_repeat_s).median

    def check() -> float:
        """Relative max error of onnxruntime against the numpy reference (sanity)."""
        y = session().run(None, {"X": x})[0]
        ref = conv2d_reference(x, w, wl["stride"], wl["pad"], wl["dilation"], wl["groups"])
        return float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))
    return peer_fn, call, check


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


def sweep_configs(template, wl: dict, target, n: int, seed: int = 0) -> list:
    """The default config first, then up to n - 1 others: the template's own short list
    (`quick_configs`) when it has one, else seeded random configs."""
    default = template.default(wl, target)
    out = [default]
    extra = template.quick_configs(wl, target) if hasattr(template, "quick_configs") else []
    if len(extra) < n - 1:
        extra = extra + template.space(wl, target).sample(np.random.default_rng(seed), n)
    for c in extra:
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
    p = argparse.ArgumentParser(prog="python -m bench.ops_conv", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="host")
    p.add_argument("--sweep", type=int, default=6, help="configs per case, default first (default 6)")
    p.add_argument("--cases", default="", help="comma-separated substrings of case names")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--min-repeat-ms", type=float, default=30.0)
    p.add_argument("--log", default="", help="append the sweep's tuning-log records to this file")
    args = p.parse_args(argv)
    want = [w for w in args.cases.split(",") if w]
    rows = []
    log = LogWriter(args.log) if args.log else None
    with common.single_thread():
        for case in cases(args.target):
            if want and not any(w in case["name"] for w in want):
                continue
            tmpl, wl = case["template"], case["workload"]
            t0 = time.perf_counter()
            peer_err = case["peer_check"]()
            if peer_err > 1e-4:
                raise SystemExit(f"{case['name']}: onnxruntime differs from the numpy reference "
                                 f"({peer_err:.2g} relative)")
            rng = np.random.default_rng(0)
            inputs = tmpl.inputs(wl, rng)
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
                print(f"  {case['name']:24s} {cfg.to_dict()}  {msg}", file=sys.stderr, flush=True)
            ok = [(cfg, rec) for cfg, rec in recs if rec.ok]
            if not ok:
                rows.append((case["name"], tmpl.name, None, None, None, None, "all configs failed"))
                continue
            best_cfg, _ = min(ok, key=lambda cr: min(cr[1].costs))
            timers = []
            for cfg in ([recs[0][0]] if recs[0][1].ok else []) + [best_cfg]:
                s, targs = tmpl.build(wl, args.target, cfg)
                mod = cgen.build(s, targs, target=args.target, name=tmpl.name)
                timers.append(common.ChildTimer(mod, [a.copy() for a in inputs]))
            tims = common.measure_interleaved(timers + [case["peer_call"]], repeats=args.repeats,
                                              min_repeat_s=args.min_repeat_ms / 1e3)
            peer = tims[-1].median
            dflt = tims[0].median if len(timers) == 2 else None
            best = min(t.median for t in tims[:-1])      # the default may win the final timing
            fl = case["flops"]
            rows.append((case["name"], tmpl.name, dflt and dflt * 1e3, best * 1e3, peer * 1e3,
                         peer / best, fl / best / 1e9))
            print(f"  {case['name']}: best {best_cfg.to_dict()} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    print(common.format_table(["case", "template", "default ms", "best ms", "onnxruntime ms",
                               "ratio", "GFLOP/s"], rows))
    print(f"measured: median of {args.repeats} interleaved repeats, each >= {args.min_repeat_ms:g} ms "
          "of back-to-back calls; cgen in its child-process harness, onnxruntime in-process; "
          "1 thread each; best = the faster of the default and the sweep's best, both timed "
          "again interleaved with onnxruntime; ratio = onnxruntime_s / cgen best_s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
