"""MobileNetV2 depthwise 3x3 layers (batch 1, float32): cgen's depthwise templates against
onnxruntime, one thread.

`cases(target)` gives the bench cases the `ops` suite aggregates; each is a dict

    name      "dw3x3-32x112x112" (NCHW in and out, like onnxruntime) or
              "dw3x3-32x112x112-nchw16c" (cgen's blocked layout; see `layout`)
    template  cgen.ops.depthwise's DepthwiseNCHWTemplate or DepthwiseNCHWcTemplate
    workload  its workload (pad 1; stride 1, or 2 for the 96-channel layer)
    layout    "NCHW" or "NCHW16c": what cgen reads and writes.  onnxruntime always
              gets NCHW, so an NCHW16c case times cgen without the layout conversion
              (as inside a network kept in the blocked layout) against onnxruntime on
              NCHW, which is not the same work; the NCHW case is the like-for-like one
    peer_name "onnxruntime"
    peer_fn   () -> seconds per call, median (one-node ONNX Conv with group = C, 1
              intra/inter-op thread, sequential execution, input prepared once)
    peer_call () -> None, one session.run (for interleaved timing)
    flops     2 * N * C * OH * OW * KH * KW

Run standalone (`python -m bench.ops_dw [--sweep N] [--cases a,b] [--log FILE]`) it
measures each case: the default config and a quick sweep (`quick_configs`, then seeded
random configs) through cgen.autotune.measure.measure_config (each checked against the
numpy reference before its time counts; records appended to --log as tuning-log JSON
lines), then the default, the sweep's fastest (lowest repeat) and onnxruntime interleaved
repeat by repeat (cgen in its child-process harness, onnxruntime in-process; median of
--repeats), and prints a table.  "best" is the faster of the default and the sweep's
fastest in that interleaved run.  ratio = onnxruntime_s / cgen_s (> 1: cgen faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from cgen.ops.depthwise import (DepthwiseNCHWTemplate, DepthwiseNCHWcTemplate, depthwise_flops,
                                out_size)

# (name, C, H, stride): MobileNetV2's 3x3 depthwise layers at the sizes of the issue
LAYERS = (
    ("dw3x3-32x112x112", 32, 112, 1),
    ("dw3x3-96x112x112s2", 96, 112, 2),      # 96 channels, 112x112 in, 56x56 out
    ("dw3x3-144x56x56", 144, 56, 1),
    ("dw3x3-384x14x14", 384, 14, 1),
)
BLOCK = 16


# ---------------------------------------------------------------- onnxruntime
def ort_session(wl: dict, w: np.ndarray):
    """A one-node depthwise Conv model (NCHW, group = C), one thread, sequential."""
    import onnxruntime as ort
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
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_peer(wl: dict, seed: int = 0, repeats: int = 7, min_repeat_s: float = 0.02):
    """(peer_fn, peer_call, check) for onnxruntime on the NCHW version of the workload."""
    from cgen.ops.depthwise import depthwise_reference
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((wl["N"], wl["C"], wl["H"], wl["W"]), dtype=np.float32)
    w = rng.standard_normal((wl["C"] * wl["multiplier"], 1, wl["KH"], wl["KW"]), dtype=np.float32)
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
        ref = depthwise_reference(x, w, wl["stride"], wl["pad"], wl["dilation"])
        return float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))
    return peer_fn, call, check


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


def sweep_configs(template, wl: dict, target, n: int, seed: int = 0) -> list:
    """The default config first, then the template's quick list, then seeded random ones."""
    out = [template.default(wl, target)]
    extra = list(template.quick_configs(wl, target))
    extra += template.space(wl, target).sample(np.random.default_rng(seed), n)
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
    p = argparse.ArgumentParser(prog="python -m bench.ops_dw", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="host")
    p.add_argument("--sweep", type=int, default=8, help="configs per case, default first (default 8)")
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
            inputs = tmpl.inputs(wl, np.random.default_rng(0))
            ref = tmpl.reference(wl, inputs)
            recs = []
            for cfg in sweep_configs(tmpl, wl, args.target, args.sweep):
                rec = measure_config(tmpl, wl, args.target, cfg, inputs=inputs, reference=ref,
                                     repeat=5, min_repeat_ms=20.0)
                recs.append((cfg, rec))
                if log is not None:
                    log.write(rec)
                msg = (f"{statistics.median(rec.costs) * 1e6:9.1f} us" if rec.ok
                       else f"{rec.error['kind']}: {rec.error['msg'][:120]}")
                print(f"  {case['name']:28s} {cfg.to_dict()}  {msg}", file=sys.stderr, flush=True)
            ok = [(cfg, rec) for cfg, rec in recs if rec.ok]
            if not ok:
                rows.append((case["name"], case["layout"], None, None, None, None, None, None))
                continue
            best_cfg, _ = min(ok, key=lambda cr: min(cr[1].costs))
            timers = []
            for cfg in ([recs[0][0]] if recs[0][1].ok else []) + [best_cfg]:
                s, targs = tmpl.build(wl, args.target, cfg)
                mod = cgen.build(s, targs, target=args.target, name=tmpl.name)
                timers.append(common.ChildTimer(mod, [a.copy() for a in inputs]))
            tims = common.measure_interleaved(timers + [case["peer_call"]], repeats=args.repeats,
                                              min_repeat_s=args.min_repeat_ms / 1e3)
            peer, best = tims[-1].median, tims[-2].median
            dflt = tims[0].median if len(timers) == 2 else None
            if dflt is not None and dflt < best:     # the default is one of the sweep's configs
                best, best_cfg = dflt, recs[0][0]
            fl = case["flops"]
            rows.append((case["name"], case["layout"], dflt and dflt * 1e6, best * 1e6,
                         peer * 1e6, peer / best, dflt and peer / dflt, fl / best / 1e9))
            print(f"  {case['name']}: best {best_cfg.to_dict()} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    print(common.format_table(["case", "cgen layout", "default us", "best us", "onnxruntime us",
                               "ratio best", "ratio default", "GFLOP/s"], rows))
    print(f"measured: median of {args.repeats} interleaved repeats, each >= {args.min_repeat_ms:g} ms "
          "of back-to-back calls; cgen in its child-process harness, onnxruntime in-process; "
          "1 thread each; ratio = onnxruntime_s / cgen_s.  onnxruntime always reads and writes "
          f"NCHW; the -nchw{BLOCK}c cases time cgen on the blocked layout without conversions.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
