"""ARM kernels against XNNPACK (or a physical bound), counted the same way on both sides.

Each case is one layer (GEMM, fully connected, MobileNet pointwise and depthwise, DS-CNN
KWS depthwise and pointwise), in float32 and int8, on a named target:

  A-class (aarch64, rpi5): cgen's kernel (the template the compiler picks, its default
  config) and XNNPACK's assembly micro-kernel as Debian ships it (bench/arm_peers.py),
  each linked into the same bare-metal AArch64 image (cgen.build_baremetal) and counted by
  the same `qemu-system-aarch64 -icount` run (targets/icount.py): unit icount_ticks,
  16 instructions a tick.  The peer is called on weights prepacked in XNNPACK's layout (done
  here, untimed, like cgen's compile-time packing); its outputs are checked against numpy
  before its count is used, and so are cgen's.  Of several XNNPACK kernels of a kind the
  one with the fewest instructions is the peer.
  M-class (cortex-m4, cortex-m55): no registry ships CMSIS-NN, so the peer is the physical
  bound (e.g. Cortex-M4 int8: one SMLAD does 2 MACs), counted in instructions (ratio =
  bound / cgen, 1.0 = at the bound).  cgen's count comes from `qemu-system-arm -icount`
  (bench/peers/mclass.py).

Every row: ratio = peer / cgen (above 1 when cgen needs fewer instructions).  Rows that
cannot be measured (peer not fetched, target missing, kernel not in this XNNPACK build)
say why in `note`, with ratio null.  Big shapes run with --slow only.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import numpy as np

from . import arm_peers, common
from .peers.xnnpack_run import PEER_KERNELS, NoPeerKernel, peer_count

SUITE = "arm"
UNIT = "icount_ticks"


@dataclass(frozen=True)
class Case:
    """One layer.  kind: gemm (M, N, K) | fc (N, K) | pw (C, H, W, F) | dw (C, H, W)."""
    name: str
    kind: str
    dtype: str                    # "float32" | "int8"
    dims: dict = field(default_factory=dict)
    slow: bool = False

    @property
    def macs(self) -> int:
        d = self.dims
        return {"gemm": lambda: d["M"] * d["N"] * d["K"], "fc": lambda: d["N"] * d["K"],
                "pw": lambda: d["C"] * d["H"] * d["W"] * d["F"],
                "dw": lambda: d["C"] * d["H"] * d["W"] * 9}[self.kind]()


def _cases():
    out = []
    for dt, tag in (("float32", "f32"), ("int8", "i8")):
        for n in (64, 128, 256):
            out.append(Case(f"gemm{n}-{tag}", "gemm", dt, {"M": n, "N": n, "K": n}, slow=n > 128))
        out += [
            Case(f"fc-256x512-{tag}", "fc", dt, {"N": 256, "K": 512}),
            Case(f"mbv1-pw-28x28x128x128-{tag}", "pw", dt, {"C": 128, "H": 28, "W": 28, "F": 128}),
            Case(f"mbv1-pw-56x56x64x128-{tag}", "pw", dt, {"C": 64, "H": 56, "W": 56, "F": 128}, slow=True),
            Case(f"mbv1-dw-28x28x128-{tag}", "dw", dt, {"C": 128, "H": 28, "W": 28}),
            Case(f"mbv1-dw-112x112x32-{tag}", "dw", dt, {"C": 32, "H": 112, "W": 112}, slow=True),
            Case(f"dscnn-dw-25x5x64-{tag}", "dw", dt, {"C": 64, "H": 25, "W": 5}),
            Case(f"dscnn-pw-25x5x64x64-{tag}", "pw", dt, {"C": 64, "H": 25, "W": 5, "F": 64}),
        ]
    return tuple(out)


CASES = _cases()
A_TARGETS = ("aarch64", "rpi5")
M_TARGETS = ("cortex-m4", "cortex-m55")


# ------------------------------------------------------------------ cgen side
def cgen_task(case: Case, target):
    """The task the compiler would build for the layer (template, workload, target)."""
    from cgen.autotune.task import parse_workload
    d, i8 = case.dims, case.dtype == "int8"
    if not i8:
        spec = {"gemm": lambda: f"dense:{d['M']},{d['N']},{d['K']}",
                "fc": lambda: f"dense:1,{d['N']},{d['K']}",
                "pw": lambda: f"conv2d:1,{d['C']},{d['H']},{d['W']},{d['F']},1,1,1,0",
                "dw": lambda: f"depthwise:1,{d['C']},{d['H']},{d['W']},3,3,1,1"}[case.kind]()
        return parse_workload(spec, target)
    q = {"x_dtype": "int8", "w_dtype": "int8", "y_dtype": "int8", "rounding": "onnx"}
    # qdense weights (N, K), as the graph passes constant weights (cgen.graph.routes)
    spec = {"gemm": lambda: ("qdense", {"M": d["M"], "N": d["N"], "K": d["K"], "a_dtype": "int8",
                                         "b_dtype": "int8", "y_dtype": "int8", "rounding": "onnx",
                                       "b_layout": "NK"}),
            "fc": lambda: ("qdense", {"M": 1, "N": d["N"], "K": d["K"], "a_dtype": "int8",
                                       "b_dtype": "int8", "y_dtype": "int8", "rounding": "onnx",
                                       "b_layout": "NK"}),
            "pw": lambda: ("qconv2d", {"N": 1, "C": d["C"], "H": d["H"], "W": d["W"], "F": d["F"],
                                        "KH": 1, "KW": 1, "w_layout": "packed", **q}),
            "dw": lambda: ("qdepthwise_conv2d", {"N": 1, "C": d["C"], "H": d["H"], "W": d["W"],
                                                  "KH": 3, "KW": 3, "pads": 1, "w_layout": "packed",
                                                  **q})}[case.kind]()
    return parse_workload(f"{spec[0]}:{json.dumps(spec[1])}", target)


def cgen_count(case: Case, target) -> tuple:
    """(ticks per call, template name) of cgen's default kernel, output checked first."""
    from cgen.autotune.icount_measure import build_icount_candidate
    from cgen.autotune.measure import check_outputs
    from cgen.build_baremetal import icount_benchmark
    task = cgen_task(case, target)
    tmpl, wl, tgt = task.template, task.workload, task.target
    mod, err = build_icount_candidate(tmpl, wl, tgt, tmpl.default(wl, tgt))
    if err is not None:
        raise RuntimeError(f"cgen build failed: {err.error.msg if err.error else err}")
    inputs = tmpl.inputs(wl, np.random.default_rng(0))
    ref = tmpl.reference(wl, inputs)
    res = icount_benchmark(mod, *[a.copy() for a in inputs], repeat=1, number=1, timeout=300)
    if res.error is not None:
        raise RuntimeError(f"cgen run failed: {res.error.kind}: {res.error.msg[:300]}")
    bad = check_outputs(res.outputs, ref)
    if bad:
        raise RuntimeError(f"cgen output wrong: {bad}")
    return res.times[0], tmpl.name


# ------------------------------------------------------------------ rows
def row(case: Case, target: str, peer: str | None, peer_cost, cgen_cost, **extra) -> dict:
    ratio = (peer_cost / cgen_cost) if peer_cost and cgen_cost else None
    r = {"suite": SUITE, "case": case.name, "target": target, "dtype": case.dtype, "kind": case.kind,
         "macs": case.macs, "unit": extra.pop("unit", UNIT), "ratio": ratio, "peer": peer,
         "peer_cost": peer_cost, "cgen_cost": cgen_cost}
    r.update(extra)
    return r


# Where this XNNPACK build has no kernel (int8 depthwise): NEON's int8 MAC rate without a
# dot product, SMLAL/SMLAL2 on int8 widened to int16, 4 MACs an instruction (16 a tick)
NEON_INT8_BOUND = ("bound-neon-smlal-4mac", 4)


def a_class_row(case: Case, target: str, lib) -> dict:
    from targets import resolve
    try:
        tgt = resolve(target)
    except (ValueError, KeyError) as e:
        return row(case, target, None, None, None, note=f"target missing: {e}")
    try:
        cgen_ticks, tmpl = cgen_count(case, tgt)
    except Exception as e:     # one failing case is a row with its reason, not the end of the run
        return row(case, target, None, None, None, note=f"cgen: {e}"[:400])
    if lib is None:
        return row(case, target, None, None, cgen_ticks, cgen_template=tmpl,
                   note="peer unavailable: XNNPACK neither cached nor downloadable (see "
                        "bench/arm_peers.py); the FMA-bound rows stand in")
    try:
        ticks, kernel = peer_count(case, tgt, lib)
    except NoPeerKernel as e:
        return row(case, target, NEON_INT8_BOUND[0], case.macs / NEON_INT8_BOUND[1] / 16,
                   cgen_ticks, cgen_template=tmpl, goal=0.85, note=f"peer is the bound: {e}")
    except arm_peers.PeerError as e:
        return row(case, target, None, None, cgen_ticks, cgen_template=tmpl, note=f"peer: {e}")
    return row(case, target, arm_peers.PEER_NAME, ticks, cgen_ticks, cgen_template=tmpl,
               peer_kernel=kernel, goal=1.0 if case.dtype == "float32" else 0.9)


# Pi board -> (core, its bound row's peer name) for the GEMM micro-kernel's FMA-pipe fraction
FMA_BOUND_BOARDS = {"rpi3": ("cortex-a53", "fma-bound-a53"), "rpi4": ("cortex-a72", "fma-bound-a72"),
                    "rpi5": ("cortex-a76", "fma-bound-a76")}


def fma_bound_rows() -> list:
    """The NEON f32 GEMM micro-kernel's cycles per k step (llvm-mca) against the FMA-pipe
    bound on each Pi core: ratio = bound / predicted cycles (cgen.autotune.mca)."""
    from cgen.autotune import mca
    case = Case("gemm-ukernel-f32", "gemm", "float32", {"M": 8, "N": 8, "K": 1})
    rows = []
    for board, (cpu, name) in FMA_BOUND_BOARDS.items():
        if mca.missing("aarch64"):
            rows.append(row(case, board, name, None, None, unit="mca_cycles",
                            note=f"llvm-mca unavailable: {mca.missing('aarch64')}"))
            continue
        for r in mca.gemm_microkernel_report(board, cpu):
            rows.append(row(case, board, name, r["bound_cycles"], r["cycles_per_iter"],
                            unit="mca_cycles", goal=0.9, cgen_kernel=r["kernel"], tile=r["tile"],
                            bottleneck=r["bottleneck"]))
    return rows


def add_arguments(p) -> None:
    p.add_argument("--slow", action="store_true", help="also the big shapes (GEMM 256, 56x56 and 112x112 layers)")
    p.add_argument("--offline", dest="fetch_peers", action="store_false",
                   help="use the peer cache only: without a cached XNNPACK the rows say peer "
                        "unavailable (default: download Debian's arm64 libxnnpack0 once into "
                        "$XDG_CACHE_HOME/cgen-peers, else ~/.cache/cgen-peers)")
    p.add_argument("--no-fma-bound", dest="fma_bound", action="store_false",
                   help="leave out the llvm-mca FMA-pipe rows of the GEMM micro-kernel")
    p.add_argument("--cases", default="", help="comma-separated substrings of case names to run")
    p.add_argument("--targets", default=",".join(A_TARGETS + M_TARGETS),
                   help=f"targets to run (default {','.join(A_TARGETS + M_TARGETS)})")


def selected(args) -> list:
    want = [w for w in args.cases.split(",") if w]
    return [c for c in CASES if (args.slow or not c.slow) and (not want or any(w in c.name for w in want))]


def run(args) -> int:
    from .peers.mclass import m_class_row
    targets = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(targets) - set(A_TARGETS + M_TARGETS))
    cases = selected(args)
    if unknown or not cases:
        what = (f"unknown target(s) {', '.join(unknown)}; known: {', '.join(A_TARGETS + M_TARGETS)}"
                if unknown else f"no case matches --cases {args.cases!r}" + ("" if args.slow else " (without --slow)"))
        print(f"bench arm: {what}", file=sys.stderr)
        return 2
    lib = None                  # the peer is fetched once the arguments are known good
    try:
        lib = arm_peers.fetch_xnnpack(download=args.fetch_peers)
    except arm_peers.PeerError as e:
        common.progress(args, f"XNNPACK peer unavailable: {e}")
    rows = fma_bound_rows() if args.fma_bound else []
    for case in cases:
        for target in targets:
            if target in M_TARGETS:
                if case.dtype != "int8":
                    continue            # the M-class bound is the int8 MAC rate
                r = m_class_row(case, target, row)
            else:
                if target == "rpi5" and case.dtype != "int8":
                    continue            # rpi5 differs from aarch64 in its int8 (dotprod) path
                r = a_class_row(case, target, lib)
            rows.append(r)
            common.progress(args, f"{case.name:32s} {target:10s} ratio {_fmt(r['ratio'])} "
                                  f"(peer {r['peer']} {r['peer_cost']} / cgen {r['cgen_cost']})"
                                  + (f"  [{r['note']}]" if r.get("note") else ""))
    if args.json:
        common.print_json_lines(rows)
    else:
        print(common.format_table(
            ["case", "target", "peer", "peer ticks", "cgen ticks", "ratio", "note"],
            [[r["case"], r["target"], r["peer"], r["peer_cost"], r["cgen_cost"], r["ratio"],
              r.get("note", r.get("peer_kernel", ""))] for r in rows]))
    return 0


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


__all__ = ["CASES", "Case", "PEER_KERNELS", "add_arguments", "run", "cgen_count", "a_class_row"]
