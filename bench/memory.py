"""Workspace (RAM) of every test model on a microcontroller target beside its yardsticks.

Per model (tests/zoo.py, plus the dilated grouped convolution of
tests/test_memory_objective.py), compiled for --target (default cortex-m4):

  bound      per-op lower bound: over the optimized graph's nodes (after folding,
             before fusion), the largest sum of the distinct values one node reads and
             writes, graph inputs/outputs, constants and reshapes excluded
             (cgen.graph.plan_tflm.op_lower_bound)
  tflm       TFLM's GreedyMemoryPlanner rule over the same kernels in graph order: no
             in-place, no reordering, no patches, 16-byte alignment, kernel scratch
             left out (cgen.graph.plan_tflm.tflm_plan)
  latency    cgen's workspace with --objective latency
  ram        cgen's workspace with --objective ram, per layer (no patches)
  patched    cgen's workspace with --objective ram as compiled (patches where the
             planner applies them, cgen.graph.patch), and the extra MACs they cost
  code, weights   flash bytes of the ram build's object (cgen.graph.flash), with
             --flash (builds each model for the target)

  insns      with --icount (Cortex-M targets): instructions of one inference of the
             latency build and of the ram build as compiled, under `qemu-system-arm
             -icount` with SysTick calibrated in the same run (bench.peers.mclass)

ratio = tflm / ram (above 1 when cgen's plan is smaller); the closing note says how
each model stands against 1.1x its bound.
"""
from __future__ import annotations

from . import common


def add_arguments(p) -> None:
    p.add_argument("--target", default="cortex-m4", help="target (default cortex-m4)")
    p.add_argument("--models", nargs="*", default=None, metavar="NAME",
                   help="only these models (default: every one)")
    p.add_argument("--flash", action="store_true",
                   help="also build each ram build for the target and read its code bytes")
    p.add_argument("--icount", action="store_true",
                   help="also count the instructions of one inference (latency and ram "
                        "builds) under qemu-system-arm -icount (Cortex-M targets)")


def models() -> dict:
    from tests.test_memory_objective import MODELS
    return dict(MODELS)


def per_layer_workspace(model, target, objective: str) -> int:
    """The workspace compile_model makes for the objective, without patches."""
    from cgen.graph.drive import legalize
    from cgen.graph.emit import emit_model
    from cgen.graph.kernels import kernel_target
    from cgen.graph.objective import choose_kernels, legalize_objective
    from cgen.graph.pipeline import prepare
    tgt = kernel_target(target)
    fg = legalize(prepare(model), tgt, legalize_objective(objective))
    kernels, options = choose_kernels(fg, tgt, None, objective)
    return emit_model(fg.graph, kernels, tgt, "m", **options).workspace_bytes


def row(name: str, build, target: str, flash: bool = False, icount: bool = False) -> dict:
    from cgen.graph.drive import legalize
    from cgen.graph.kernels import kernel_target
    from cgen.graph.model import compile_model
    from cgen.graph.pipeline import prepare
    from cgen.graph.plan_tflm import op_lower_bound, tflm_plan
    model, feeds = build()
    tgt = kernel_target(target)
    fg = legalize(prepare(model), tgt, "ram")
    bound, tflm = op_lower_bound(fg.graph), tflm_plan(fg).total
    latency = per_layer_workspace(model, target, "latency")
    ram = per_layer_workspace(model, target, "ram")
    cm = compile_model(model, target, name=name, objective="ram")
    patched = cm.workspace_bytes
    plan = getattr(cm, "patches", None)
    rec = {"suite": "memory", "case": name, "ratio": tflm / ram if ram else None,
           "unit": "bytes", "target": tgt.name, "cgen_bytes": ram, "peer": "tflm_greedy",
           "peer_bytes": tflm, "lower_bound_bytes": bound, "tflm_bytes": tflm,
           "latency_bytes": latency, "ram_bytes": ram, "patched_bytes": patched,
           "patches": plan.to_json() if plan is not None else None,
           "ram_over_bound": ram / bound if bound else None,
           "weight_bytes": cm.report.weight_bytes, "code_bytes": None}
    if flash:
        rec["code_bytes"] = cm.flash().code_bytes
    rec["latency_insns"] = rec["ram_insns"] = None
    if icount:
        from .peers.mclass import model_instructions
        fast = compile_model(model, target, name=name, objective="latency", patches="off")
        rec["latency_insns"] = model_instructions(fast, feeds)
        rec["ram_insns"] = model_instructions(cm, feeds)
    return rec


def run(args) -> int:
    table = models()
    names = args.models or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown model(s): {', '.join(unknown)}; one of {', '.join(table)}")
    recs = []
    for n in names:
        common.progress(args, f"  {n} ...")
        recs.append(row(n, table[n], args.target, args.flash, args.icount))
    def count(key):
        over = [r["case"] for r in recs if r[key] > 1.1 * r["lower_bound_bytes"]]
        above = [r["case"] for r in recs if r[key] > r["tflm_bytes"]]
        return (f"within 1.1x the per-op bound {len(recs) - len(over)} of {len(recs)}"
                + (f" (over: {', '.join(over)})" if over else "")
                + f", at or below the TFLM-style plan {len(recs) - len(above)} of {len(recs)}"
                + (f" (above: {', '.join(above)})" if above else ""))
    patched = [r for r in recs if r["patches"]]
    below = ", ".join(f"{r['case']} {r['patched_bytes'] / r['lower_bound_bytes']:.2f}x"
                      for r in patched if r["lower_bound_bytes"])
    note = (f"memory on {args.target}, {len(recs)} models: ram objective as compiled "
            f"(patches where planned): {count('patched_bytes')}; per layer: "
            f"{count('ram_bytes')}; patched, workspace / bound: {below or 'none'}")
    if args.json:
        common.print_json_lines(recs)
        common.progress(args, note)
        return 0
    print(common.format_table(
        ["model", "bound", "tflm", "latency", "ram", "patched", "ram/bound", "tflm/ram",
         "weights", "code", "insns latency", "insns ram"],
        [(r["case"], r["lower_bound_bytes"], r["tflm_bytes"], r["latency_bytes"],
          r["ram_bytes"], r["patched_bytes"], r["ram_over_bound"], r["ratio"],
          r["weight_bytes"], r["code_bytes"], r["latency_insns"], r["ram_insns"])
         for r in recs]))
    print(note)
    return 0
