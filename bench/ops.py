"""Operator templates against their peers (numpy/OpenBLAS, onnxruntime), one thread.

Cases come from the modules bench/ops_*.py (ops_dense: GEMM 256/512/1024 and a
dense 1x1024 -> 1000 layer; ops_conv: ResNet-18 convolutions; ops_dw:
MobileNetV2 depthwise layers; ops_int8: an int8 convolution), each exposing
`cases(target) -> [dict(name, template, workload, peer_name, peer_fn, flops)]`
(peer_fn() -> the peer's median seconds per call; optional peer_call() -> one
call, for timing interleaved with cgen; optional extra_peers [(name, fn)]).
A module that is missing or fails to load is listed as not available.

For each case: the template's default config and a quick seeded sweep
(default, the template's quick_configs if it has them, random configs, then
neighbours of the best so far; --sweep in all) are measured through
cgen.autotune.measure.measure_config (child-process runner, output checked
against the reference before its time counts); every record is appended to a
tuning log (--log, JSON lines).  Then the default, the two fastest other
configs of the sweep (FINALISTS) and the peer are timed interleaved, repeat by repeat
(bench.common.measure_interleaved; cgen in its child-process harness), median of
--repeats repeats, under threadpool_limits(1); "best" is the fastest of these
cgen medians.  ratio = peer_s / best_s (> 1: cgen faster); default/best =
best_s / default_s (1 when the default is the best).

With --target other than host the kernels run under QEMU: their times are
emulation times, printed as such, and no ratio against a host peer is computed.
"""
from __future__ import annotations

import importlib
import json
import statistics
import time
import traceback

import numpy as np

from . import common

CASE_MODULES = ("bench.ops_dense", "bench.ops_conv", "bench.ops_dw", "bench.ops_int8")
DEFAULT_SWEEP = 12
DEFAULT_LOG = "bench-ops-log.jsonl"
SWEEP_REPEATS = 3
SWEEP_MIN_REPEAT_MS = 10.0
FINALISTS = 2


def add_arguments(p) -> None:
    p.add_argument("--target", default="host",
                   help="where cgen's kernels run (default host; others run under QEMU: "
                        "emulated times, no ratios)")
    p.add_argument("--cases", default="",
                   help="only cases whose name contains one of these comma-separated substrings")
    p.add_argument("--sweep", type=int, default=DEFAULT_SWEEP,
                   help=f"configs measured per case, the default first (default {DEFAULT_SWEEP})")
    p.add_argument("--seed", type=int, default=0, help="seed of the sweep's random configs")
    p.add_argument("--log", default=DEFAULT_LOG,
                   help=f"tuning log the sweep's records are appended to (default {DEFAULT_LOG})")


# ---------------------------------------------------------------- cases
def load_cases(target, want=()) -> tuple:
    """(cases, unavailable): every case of every loadable module; unavailable lists
    (module, reason) for modules that are missing or fail."""
    cases, missing = [], []
    for name in CASE_MODULES:
        try:
            mod = importlib.import_module(name)
            got = list(mod.cases(target))
        except ModuleNotFoundError as e:
            missing.append((name, f"not available ({e})"))
            continue
        except Exception as e:  # a broken module must not take the other cases down
            missing.append((name, f"not available: {type(e).__name__}: {e}"))
            continue
        for c in got:
            c = dict(c)
            c["module"] = name
            if want and not any(w in c["name"] for w in want):
                continue
            cases.append(c)
    return cases, missing


def _template(t):
    if isinstance(t, str):
        from cgen.ops.registry import template
        return template(t)
    return t


# ---------------------------------------------------------------- sweep
def sweep_configs(template, wl: dict, target, n: int, seed: int) -> list:
    """The first configs of the sweep: default, then the template's quick_configs (if
    any), then seeded random ones; neighbours of the best are added while measuring."""
    space = template.space(wl, target)
    out, seen = [], set()

    def add(c):
        if c.index not in seen and len(out) < n:
            seen.add(c.index)
            out.append(c)
    add(template.default(wl, target))
    if hasattr(template, "quick_configs"):
        for c in template.quick_configs(wl, target):
            add(c)
    n_random = max(0, (n - len(out) + 1) // 2)  # about half the rest; neighbours follow
    for c in space.sample(np.random.default_rng(seed), n_random + len(out)):
        if n_random > 0 and c.index not in seen:
            add(c)
            n_random -= 1
    return out


def run_sweep(args, case, template, wl, target, inputs, ref, log) -> list:
    """[(config, record)] for --sweep configs, every record logged."""
    from cgen.autotune.measure import measure_config
    space = template.space(wl, target)
    rng = np.random.default_rng(args.seed + 1)
    queue = sweep_configs(template, wl, target, args.sweep, args.seed)
    done, seen = [], {c.index for c in queue}
    while queue and len(done) < args.sweep:
        cfg = queue.pop(0)
        rec = measure_config(template, wl, target, cfg, inputs=inputs, reference=ref,
                             repeat=SWEEP_REPEATS, min_repeat_ms=SWEEP_MIN_REPEAT_MS)
        log.write(rec)
        done.append((cfg, rec))
        msg = (f"{min(rec.costs) * 1e3:9.3f} ms" if rec.ok
               else f"{rec.error['kind']}: {rec.error['msg'].splitlines()[0][:100]}")
        common.progress(args, f"  {case['name']:26s} {msg}  {json.dumps(cfg.to_dict())}")
        if not queue and len(done) < args.sweep:
            ok = [(c, r) for c, r in done if r.ok]
            base = min(ok, key=lambda cr: min(cr[1].costs))[0] if ok else done[0][0]
            for _ in range(32):  # a neighbour not measured yet (small spaces run out)
                idx = space.neighbour(base.index, rng)
                if idx not in seen:
                    seen.add(idx)
                    queue.append(space.get(idx))
                    break
    return done


# ---------------------------------------------------------------- timing
class _Rounds:
    """A peer measured by its own peer_fn (median seconds per call), once per repeat."""

    def __init__(self, fn):
        self.fn = fn


def interleaved(fns, repeats: int, min_repeat_s: float) -> list:
    """common.measure_interleaved over callables and ChildTimers; peers given only as
    peer_fn (seconds per call) are called once per repeat, in turn with the others."""
    plain = [f for f in fns if not isinstance(f, _Rounds)]
    if len(plain) == len(fns):
        return common.measure_interleaved(fns, repeats=repeats, min_repeat_s=min_repeat_s)
    numbers = {}
    for k, f in enumerate(fns):
        if not isinstance(f, _Rounds):
            f()
            numbers[k] = common.calibrate(f, min_repeat_s)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, f in enumerate(fns):
            if isinstance(f, _Rounds):
                times[k].append(float(f.fn()))
            else:
                times[k].append(common._per_call(f, numbers[k]))
    return [common.Timing(statistics.median(t), tuple(t), numbers.get(k, 1))
            for k, t in enumerate(times)]


def run_case(args, case, target, peak, log) -> dict:
    import cgen
    from targets import resolve
    tgt = resolve(target)
    emulated = not tgt.is_host
    template = _template(case["template"])
    wl = case["workload"]
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    inputs = template.inputs(wl, rng)
    ref = template.reference(wl, inputs)
    done = run_sweep(args, case, template, wl, tgt, inputs, ref, log)
    ok = [(c, r) for c, r in done if r.ok]
    base = {"suite": "ops", "case": case["name"], "unit": "s", "peer": case.get("peer_name"),
            "template": template.name, "workload": wl, "target": tgt.name, "emulated": emulated,
            "module": case["module"], "sweep": {"measured": len(done), "ok": len(ok)}}
    if not ok:
        errs = sorted({r.error["kind"] for _, r in done})
        base.update(ratio=None, cgen_s=None, peer_s=None, error="every config failed: " + ", ".join(errs))
        return base
    default_cfg, default_rec = done[0]
    # finalists: the default and the FINALISTS fastest of the sweep, timed again interleaved
    # with the peer; the best is the fastest finalist (a sweep on a shared machine ranks
    # close configs by noise, the interleaved medians less so)
    ranked = sorted(ok, key=lambda cr: min(cr[1].costs))
    cfgs = ([default_cfg] if default_rec.ok else [])
    cfgs += [c for c, _ in ranked if c.index != default_cfg.index][:FINALISTS]
    timers = []
    for cfg in cfgs:
        s, targs = template.build(wl, tgt, cfg)
        mod = cgen.build(s, targs, target=tgt, name=template.name.replace("-", "_"))
        timers.append(common.ChildTimer(mod, [a.copy() for a in inputs]))
    peers = []
    if not emulated and case.get("peer_fn") is not None:
        peers.append((case.get("peer_name"), case.get("peer_call") or _Rounds(case["peer_fn"])))
        for name, fn in case.get("extra_peers", ()):
            peers.append((name, _Rounds(fn)))
    tims = interleaved(timers + [p for _, p in peers], args.repeats, args.min_repeat_ms / 1e3)
    k_best = min(range(len(timers)), key=lambda k: tims[k].median)
    best_cfg, best_t = cfgs[k_best], tims[k_best]
    default_t = tims[0] if default_rec.ok else None
    flops = float(case["flops"])
    gflops = flops / best_t.median / 1e9
    peer_s = tims[len(timers)].median if peers else None
    out = dict(base)
    out.update({
        "ratio": (peer_s / best_t.median) if peer_s else None,
        "cgen_s": best_t.median,
        "peer_s": peer_s,
        "default_s": default_t.median if default_t else None,
        "default_over_best": (best_t.median / default_t.median) if default_t else None,
        "gflops": gflops,
        "default_gflops": flops / default_t.median / 1e9 if default_t else None,
        "peer_gflops": flops / peer_s / 1e9 if peer_s else None,
        "peak_gflops": peak,
        "peak_fraction": gflops / peak if peak and not emulated else None,
        "flops": flops,
        "config": best_cfg.to_json(),
        "default_config": default_cfg.to_json(),
        "extra_peers": {name: t.median for (name, _), t in zip(peers[1:], tims[len(timers) + 1:])},
        "finalists": [{"config": c.to_json(), "median_s": t.median} for c, t in zip(cfgs, tims)],
        "timing": {"stat": "median", "repeats": args.repeats, "min_repeat_ms": args.min_repeat_ms,
                   "warmup": 1, "interleaved": True, "threads": 1, "emulated": emulated,
                   "cgen_number": best_t.number, "cgen_times": list(best_t.times),
                   "peer_times": list(tims[len(timers)].times) if peers else [],
                   "sweep_repeats": SWEEP_REPEATS, "sweep_min_repeat_ms": SWEEP_MIN_REPEAT_MS},
        "seconds": time.perf_counter() - t0,
    })
    return out


# ---------------------------------------------------------------- output
def _fmt_ratio(v):
    return None if v is None else float(v)


def run(args) -> int:
    from cgen.autotune.log import LogWriter
    from targets import resolve
    tgt = resolve(args.target)
    peak = args.peak_gflops if args.peak_gflops is not None else common.default_peak_gflops(tgt)
    want = [w for w in args.cases.split(",") if w]
    if args.sweep < 1:
        raise SystemExit("--sweep must be >= 1")
    results = []
    with common.single_thread():
        blas = common.blas_info()
        cases, missing = load_cases(tgt.name, want)
        for name, why in missing:
            common.progress(args, f"ops: {name}: {why}")
        with LogWriter(args.log) as log:
            for case in cases:
                try:
                    r = run_case(args, case, tgt.name, peak, log)
                except Exception as e:  # one broken case is reported, the others still run
                    common.progress(args, traceback.format_exc())
                    r = {"suite": "ops", "case": case["name"], "unit": "s", "ratio": None,
                         "cgen_s": None, "peer": case.get("peer_name"), "peer_s": None,
                         "module": case.get("module"), "error": f"{type(e).__name__}: {e}"}
                r["blas"] = blas
                results.append(r)
                if "error" in r:
                    common.progress(args, f"  {r['case']}: {r['error']}")
                else:
                    common.progress(args, f"  {r['case']}: best {r['gflops']:.1f} GFLOP/s"
                                          f" ({r['seconds']:.0f} s)")
    if args.json:
        common.print_json_lines(results)
        return 0
    emu = not tgt.is_host
    unit = "GFLOP/s (emulated)" if emu else "GFLOP/s"
    print(f"ops: cgen templates (default config; best of a {args.sweep}-config sweep) against "
          "their peers, one thread; ratio = peer_s / best_s (> 1: cgen faster)")
    rows = []
    for r in results:
        rows.append((r["case"], r.get("default_gflops"), r.get("gflops"),
                     r.get("peer") or "-", "n/a" if emu else r.get("peer_gflops"),
                     "n/a" if emu else _fmt_ratio(r.get("ratio")), r.get("default_over_best"),
                     "n/a" if emu else r.get("peak_fraction"), r.get("error", "")))
    print(common.format_table(["case", f"default {unit}", f"best {unit}", "peer", "peer GFLOP/s",
                               "ratio", "default/best", "of peak", "note"], rows))
    print(f"measured: median of {args.repeats} repeats per kernel, each >= {args.min_repeat_ms:g} ms "
          f"of back-to-back calls after 1 warm-up; the default, the {FINALISTS} fastest sweep "
          "configs and the peer interleaved repeat by repeat, best = the fastest of them; cgen "
          "in its child-process harness, peers in-process; threads=1 "
          "(threadpoolctl, OMP_NUM_THREADS=1, onnxruntime 1 intra/inter-op thread)")
    print(f"sweep: {args.sweep} configs per case (seed {args.seed}), each checked against the "
          f"reference, best of {SWEEP_REPEATS} repeats >= {SWEEP_MIN_REPEAT_MS:g} ms; records "
          f"appended to {args.log}")
    print(f"numpy BLAS: {common.describe_blas(blas)}; cgen target {tgt.name} ({tgt.isa})"
          + ("; times are QEMU emulation times, no ratios against host peers" if emu else ""))
    print("peak: " + (f"{peak:g} GFLOP/s (--peak-gflops; default: REFERENCE.md's one-core FMA figure)"
                      if peak else "unknown for this target (pass --peak-gflops)"))
    rates = [x for r in results for x in (r.get("gflops"), r.get("peer_gflops")) if x]
    if peak and not emu and rates and max(rates) > peak:
        print(f"note: a measured rate exceeds {peak:g} GFLOP/s, so this host's peak is higher; "
              "pass --peak-gflops (FLOP/cycle x GHz of one core) for a meaningful 'of peak'")
    for name, why in missing:
        print(f"{name}: {why}")
    for r in results:
        extra = r.get("extra_peers") or {}
        if extra and r.get("flops"):
            print(f"{r['case']}: also " + ", ".join(
                f"{n} {r['flops'] / s / 1e9:.1f} GFLOP/s (ratio {s / r['cgen_s']:.2f})"
                for n, s in extra.items()))
        if r.get("config"):
            print(f"config {r['case']}: {json.dumps(r['config']['knobs'])}")
    return 0
