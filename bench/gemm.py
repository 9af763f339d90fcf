"""Square float32 GEMM, C = A @ B: cgen against numpy (OpenBLAS), one thread and two.

The cgen side is built for `--target` (host, x86-avx2 or x86-avx512; the
machine must run it).  `--schedules default` (the default) measures what a
user gets: the GEMM template's default config (cgen.ops.gemm_template, from
the shipped best-known table cgen.ops.tophub).  `--schedules sweep` also
screens hand-written schedules of the plain te matmul (`candidates`: plain
tilings with B read in place, and the template's one-knob variants), each
checked against numpy (allclose, rtol 1e-4, atol 1e-4 * max|ref|; a wrong
candidate is discarded) and screened by time (best of 5 repeats); the fastest
is kept.

The peer is numpy's `matmul(a, b, out=c)` in a child process whose OpenBLAS
kernel matches the target's ISA: for x86-avx2 OPENBLAS_CORETYPE=Haswell (the
AVX2 kernel, also on an AVX-512 machine), otherwise OpenBLAS's own choice
(OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment);
threadpoolctl reports the kernel in use, and a peer that did not get the
AVX2 kernel it was asked for stops the bench.  cgen runs its harness
executable in another child process; both time inside their process, and the
two are measured interleaved repeat by repeat.  ratio = numpy_s / cgen_s:
above 1 when cgen is faster.  With --threads N (default 2) the largest size
is measured again with the parallel (OpenMP) config against N BLAS threads.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import cgen
from cgen import te
from targets import CompileError, resolve

from . import common

DEFAULT_SIZES = (256, 512, 1024)
# A candidate whose second call (the first one checks the output) is this many
# times slower than the best screened median so far, and slower than
# PRUNE_MIN_S, is not screened further: it cannot win, and timing it is slow.
PRUNE_FACTOR = 4.0
PRUNE_MIN_S = 2e-3
SCREEN_REPEATS = 5


def gemm_te(n: int):
    A = te.placeholder((n, n), "float32", name="A")
    B = te.placeholder((n, n), "float32", name="B")
    k = te.reduce_axis((0, n), name="k")
    C = te.compute((n, n), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    return A, B, C


# ------------------------------------------------------------------ schedules
# Each maker takes n and returns (schedule, [A, B, C]).

def loop_ikj(n: int):
    """i, k, j with j innermost and vectorized: rows of B streamed, C row accumulated in place."""
    A, B, C = gemm_te(n)
    s = te.create_schedule(C)
    i, j = s[C].op.axis
    (k,) = s[C].op.reduce_axis
    s[C].reorder(i, k, j)
    s[C].vectorize(j)
    return s, [A, B, C]


def register_tile(mr: int, nr: int, nc: int | None = None):
    """C in mr x nr tiles, each accumulated over all of k in a local buffer (cache_write).

    The local tile's row loop is unrolled and its column loop vectorized, so
    the compiler keeps the mr x nr accumulators in registers; each k step
    broadcasts mr elements of A against one nr-wide row segment of B.  With
    nc, columns are first blocked by nc (loop order j1, i, j2, ...) so a K x nc
    panel of B is reused from L2 by every row tile.
    """
    def make(n: int):
        A, B, C = gemm_te(n)
        s = te.create_schedule(C)
        CL = s.cache_write(C, "local")
        i, j = s[C].op.axis
        io, ii = s[C].split(i, factor=mr)
        if nc is None:
            jo, ji = s[C].split(j, factor=nr)
            s[C].reorder(io, jo, ii, ji)
            at = jo
        else:
            j1, j2 = s[C].split(j, factor=nc)
            jo, ji = s[C].split(j2, factor=nr)
            s[C].reorder(j1, io, jo, ii, ji)
            at = jo
        s[C].vectorize(ji)
        s[CL].compute_at(s[C], at)
        ci, cj = s[CL].op.axis
        (ck,) = s[CL].op.reduce_axis
        s[CL].reorder(ck, ci, cj)
        s[CL].unroll(ci)
        s[CL].vectorize(cj)
        return s, [A, B, C]
    return make


def k_blocked(mr: int, nr: int, kc: int, mc: int, nc: int):
    """Goto-style blocking without packing: j by nc, k by kc, i by mc, then mr x nr tiles.

    C itself accumulates (no cache_write: each k block revisits C).  The tile's
    rows are unrolled and its columns vectorized, and the tile's addresses do
    not change along the kc loop, so the C compiler keeps the mr x nr tile in
    registers across it (gcc's store motion); a kc x nc panel of B and an
    mc x kc block of A stay in cache while they are reused.
    """
    def make(n: int):
        A, B, C = gemm_te(n)
        s = te.create_schedule(C)
        i, j = s[C].op.axis
        (k,) = s[C].op.reduce_axis
        j1, j2 = s[C].split(j, factor=nc)
        jo, ji = s[C].split(j2, factor=nr)
        i1, i2 = s[C].split(i, factor=mc)
        io, ii = s[C].split(i2, factor=mr)
        ko, ki = s[C].split(k, factor=kc)
        s[C].reorder(j1, ko, i1, jo, io, ki, ii, ji)
        s[C].unroll(ii)
        s[C].vectorize(ji)
        return s, [A, B, C]
    return make


@dataclass(frozen=True)
class Candidate:
    name: str
    make: Callable[[int], tuple]


def candidates(n: int, with_packed: bool = True, nthreads: int = 1, target="host") -> list:
    """The schedules screened for size n in a sweep (tilings that do not divide n are left out)."""
    def divides(*fs):
        return all(f <= n and n % f == 0 for f in fs)
    if nthreads > 1:
        return template_candidates(n, parallel=True, target=target, threads=nthreads)
    out = [Candidate("ikj-vec", loop_ikj)]
    for mr, nr in ((8, 32), (4, 32), (8, 16)):
        if divides(mr, nr):
            out.append(Candidate(f"regtile-{mr}x{nr}", register_tile(mr, nr)))
    for nc in (64, 128):
        if divides(8, 32, nc) and nc < n:
            out.append(Candidate(f"regtile-8x32-nc{nc}", register_tile(8, 32, nc)))
    for mr, nr, kc, mc, nc in ((8, 32, 64, 128, 256), (8, 32, 128, 64, 512), (8, 32, 64, 256, 1024)):
        if divides(mr, nr, kc, mc, nc) and kc < n:
            out.append(Candidate(f"kblock-{mr}x{nr}-kc{kc}-mc{mc}-nc{nc}", k_blocked(mr, nr, kc, mc, nc)))
    if with_packed:
        out.extend(template_candidates(n, target=target))
    return out


def template_candidates(n: int, parallel: bool = False, target="host", variants: bool = True,
                        threads: int = 2) -> list:
    """The GEMM template's default config for the target (cgen.ops.gemm_template), first,
    then (with variants) its one-knob variants; `parallel` sets the OpenMP knob (and caps
    NC so that each of `threads` threads gets a column block)."""
    from cgen.ops.gemm_template import GemmTemplate
    t = GemmTemplate()
    wl = t.workload(n, n, n)
    sp = t.space(wl, target)
    configs = [t.default(wl, target)] + (list(t.quick_configs(wl, target)) if variants else [])
    out, seen = [], set()
    for k, cfg in enumerate(configs):
        values = cfg.to_dict()
        if "parallel" in values:
            values["parallel"] = parallel
        if parallel and threads > 1:
            # the threads share the column blocks: at least one block per thread
            values["NC"] = min(values["NC"], max(-(-n // threads), 1))
        cfg = sp.nearest(values)
        if cfg.index in seen:
            continue
        seen.add(cfg.index)
        name = ("default" if k == 0 else "packed") + "-" + "-".join(
            f"{key}{v}" for key, v in cfg.values if key != "parallel") + ("-par" if parallel else "")
        out.append(Candidate(name, (lambda c: lambda m: t.build(t.workload(m, m, m), target, c))(cfg)))
    return out


def schedule_candidates(n: int, args, nthreads: int = 1) -> list:
    """What --schedules asks for: the template default only, or the whole sweep."""
    if args.schedules == "default":
        return template_candidates(n, parallel=nthreads > 1, target=args.target, variants=False,
                                   threads=nthreads)
    return candidates(n, nthreads=nthreads, target=args.target)


# ------------------------------------------------------------------ the peer
# OpenBLAS's kernel per target ISA: the AVX2 one is forced, else OpenBLAS detects its own
PEER_CORETYPE = {"avx2": "Haswell"}
# variables that change OpenBLAS's kernel or blocking, removed from the peer's environment
PEER_ENV_CLEARED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def peer_env(target) -> dict:
    """The environment of the peer process for a target: its ISA's OpenBLAS kernel."""
    env = {k: v for k, v in os.environ.items() if k not in PEER_ENV_CLEARED}
    coretype = PEER_CORETYPE.get(resolve(target).isa)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    return env


class BlasPeer:
    """numpy's matmul in a child process (`python -m bench.gemm --peer N THREADS`) whose
    OpenBLAS kernel is chosen by its environment before numpy loads.  The child reads a
    call count per line and answers the seconds per call; `blas` is threadpoolctl's
    report from inside the child."""

    def __init__(self, n: int, threads: int, target, clock: str = "wall"):
        cmd = [sys.executable, "-m", "bench.gemm", "--peer", str(n), str(threads), clock]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=peer_env(target), cwd=root)
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise SystemExit("bench gemm: the numpy peer process did not start")
        self.blas = json.loads(line)
        want = PEER_CORETYPE.get(resolve(target).isa)
        if want and (self.blas.get("architecture") or "").lower() != want.lower():
            self.close()
            raise SystemExit(f"bench gemm: OPENBLAS_CORETYPE={want} was asked for, but OpenBLAS "
                             f"runs its {self.blas.get('architecture')} kernel")

    def __call__(self):
        self.per_call(1)

    def per_call(self, number: int) -> float:
        self.proc.stdin.write(f"{number}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the numpy peer process died")
        return float(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def peer_main(n: int, threads: int, clock: str = "wall") -> int:
    """The peer process: the same operands as the parent's (same seed), BLAS limited to
    `threads`, one warm-up call, then seconds per call for each count read (wall, or
    this process's CPU time)."""
    import numpy as np
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=threads)
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)
    print(json.dumps(common.blas_info()), flush=True)
    now = time.process_time if clock == "cpu" else time.perf_counter
    for line in sys.stdin:
        number = int(line)
        t0 = now()
        for _ in range(number):
            np.matmul(a, b, out=c)
        print(repr((now() - t0) / number), flush=True)
    return 0


# ------------------------------------------------------------------ measuring
@dataclass
class Tried:
    name: str
    seconds: float | None = None    # fastest screening repeat, per call
    error: str | None = None        # compile_error | schedule_error | wrong_answer | pruned | ...
    detail: str = ""
    module: object = None
    schedule: object = None

    def record(self, flop: float) -> dict:
        d = {"name": self.name}
        if self.seconds is not None:
            d["gflops"] = round(flop / self.seconds / 1e9, 2)
        if self.error:
            d["error"] = self.error
            d["detail"] = self.detail[:300]
        return d


def try_candidate(cand: Candidate, n: int, a, b, ref, best_s, args) -> Tried:
    t = Tried(cand.name)
    try:
        sch, tensors = cand.make(n)
        t.schedule = sch
        mod = cgen.build(sch, tensors, target=args.target, name=f"gemm{n}")
    except cgen.ScheduleError as e:
        t.error, t.detail = "schedule_error", str(e)
        return t
    except CompileError as e:
        t.error, t.detail = "compile_error", str(e)
        return t
    except (ValueError, TypeError) as e:  # lowering refused the schedule
        t.error, t.detail = "build_error", str(e)
        return t
    c = np.full((n, n), np.nan, dtype=np.float32)
    try:
        mod(a, b, c)
    except RuntimeError as e:
        t.error, t.detail = "runtime_error", str(e)
        return t
    ok, err, atol = common.check_close(c, ref)
    if not ok:
        t.error, t.detail = "wrong_answer", f"max abs error {err:.3g} > atol {atol:.3g}"
        return t
    timer = common.ChildTimer(mod, [a, b, c])
    try:
        second = common.time_once(timer)
    except RuntimeError as e:
        t.error, t.detail = "runtime_error", str(e)
        return t
    if best_s is not None and second > max(PRUNE_FACTOR * best_s, PRUNE_MIN_S):
        t.seconds, t.error = second, "pruned"
        t.detail = f"one call {second * 1e3:.1f} ms > {PRUNE_FACTOR:g} x best {best_s * 1e3:.2f} ms"
        return t
    timing = common.measure(timer, repeats=SCREEN_REPEATS,
                            min_repeat_s=args.min_repeat_ms / 1e3, warmup=0)
    # Ranking uses the fastest screening repeat: on a shared machine interference
    # only ever adds time.  The reported figure is the winner's median, measured again.
    t.seconds, t.module = min(timing.times), mod
    return t


def run_size(n: int, args, peak: float | None, nthreads: int = 1) -> dict:
    flop = 2.0 * n ** 3
    rng = np.random.default_rng(n)   # the peer process makes the same operands from n
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ref = a @ b
    case = (f"gemm-{n}" + (f"-{nthreads}threads" if nthreads > 1 else "")
            + ("" if args.target == "host" else f"-{args.target}"))
    tried, best = [], None
    t0 = time.perf_counter()
    for cand in schedule_candidates(n, args, nthreads):
        t = try_candidate(cand, n, a, b, ref, best.seconds if best else None, args)
        tried.append(t)
        if t.seconds is not None and t.error:
            note = f"{flop / t.seconds / 1e9:7.1f} GFLOP/s  ({t.error}: {t.detail})"
        elif t.error:
            note = f"{'':>7s}          {t.error}: {t.detail.splitlines()[0] if t.detail else ''}"
        else:
            note = f"{flop / t.seconds / 1e9:7.1f} GFLOP/s"
            if best is None or t.seconds < best.seconds:
                best = t
        common.progress(args, f"  {case}  {t.name:32s} {note}")
    if best is None:
        raise SystemExit(f"{case}: no candidate schedule built and matched numpy: "
                         + "; ".join(f"{t.name}: {t.error}" for t in tried))
    # Final figure: the winner and numpy, interleaved repeat by repeat.
    c = np.empty((n, n), dtype=np.float32)
    mod = best.module
    clock = args.clock if nthreads == 1 else "wall"
    with BlasPeer(n, nthreads, args.target, clock) as peer_proc, \
            common.CpuTimer(mod, [a, b, c]) if clock == "cpu" else \
            contextlib.nullcontext(common.ChildTimer(mod, [a, b, c])) as cg_timer:
        timers = [cg_timer, peer_proc]
        if nthreads > 1:
            # with threads, back-to-back blocks instead of interleaving: a BLAS pool keeps
            # spinning for a while after each call and would steal the cores cgen's child needs
            cg, peer = (common.measure(t, repeats=args.repeats,
                                       min_repeat_s=args.min_repeat_ms / 1e3) for t in timers)
        else:
            # with the CPU clock each cgen repeat is a process whose fixed cost (files,
            # one untimed call) is subtracted: long repeats keep that subtraction's noise small
            min_s = args.min_repeat_ms / 1e3 if clock == "wall" else max(args.min_repeat_ms / 1e3,
                                                                        CPU_MIN_REPEAT_S)
            cg, peer = common.measure_interleaved(timers, repeats=args.repeats, min_repeat_s=min_s)
        blas = peer_proc.blas
    mod(a, b, c)
    ok, err, atol = common.check_close(c, ref)
    if not ok:  # the timed calls must still be right
        raise SystemExit(f"{case}: {best.name} went wrong while timing: max abs error {err:.3g}")
    gflops = flop / cg.median / 1e9
    common.progress(args, f"  {case}  {best.name}: {gflops:.1f} GFLOP/s, numpy "
                          f"{flop / peer.median / 1e9:.1f} GFLOP/s ({blas.get('architecture')} "
                          f"kernel; {time.perf_counter() - t0:.1f} s)")
    return {
        "suite": "gemm",
        "case": case,
        "ratio": peer.median / cg.median,
        "unit": "s",
        "cgen_s": cg.median,
        "peer": "numpy",
        "peer_s": peer.median,
        "gflops": gflops,
        "peer_gflops": flop / peer.median / 1e9,
        "peak_gflops": peak,
        "peak_fraction": gflops / peak if peak else None,
        "n": n,
        "flop": flop,
        "schedules": args.schedules,
        "schedule_name": best.name,
        "schedule": json.loads(best.schedule.to_json()),
        "candidates": [t.record(flop) for t in tried],
        "timing": {"stat": "median", "repeats": args.repeats, "cgen_number": cg.number,
                   "peer_number": peer.number, "min_repeat_ms": args.min_repeat_ms,
                   "warmup": 1, "interleaved": nthreads == 1, "threads": nthreads, "clock": clock,
                   "cgen_times": list(cg.times), "peer_times": list(peer.times)},
        "blas": blas,
        "target": mod.target.name,
        "isa": mod.target.isa,
    }


def add_arguments(p) -> None:
    p.add_argument("--sizes", type=_sizes, nargs="+", default=[DEFAULT_SIZES],
                   help="square sizes, space- or comma-separated (default 256 512 1024)")
    p.add_argument("--threads", type=int, default=2,
                   help="also measure the largest size with this many threads, cgen's OpenMP "
                        "against numpy's BLAS (default 2; 1 turns it off)")
    p.add_argument("--target", default="host", choices=BENCH_TARGETS,
                   help="cgen's target (default host); the peer runs OpenBLAS's kernel for "
                        "the same ISA (x86-avx2: OPENBLAS_CORETYPE=Haswell)")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="single-thread rows: wall time (default), or CPU time of each side's "
                        "process (time spent descheduled by other jobs on a shared machine "
                        "does not count); threaded rows always use wall time")
    p.add_argument("--schedules", default="default", choices=("default", "sweep"),
                   help="default: the GEMM template's default config (what a user gets; "
                        "the default); sweep: hand schedules and one-knob variants too, "
                        "the fastest kept")


# shortest repeat with --clock cpu (seconds)
CPU_MIN_REPEAT_S = 0.2
# targets whose code this bench runs here, natively, against a native numpy
BENCH_TARGETS = ("host", "x86-avx2", "x86-avx512")
# the CPU flags a target's code needs on this machine
TARGET_CPU_FLAGS = {"x86-avx2": {"avx2", "fma"}, "x86-avx512": {"avx512f", "avx512bw",
                                                                 "avx512vl", "avx512dq"}}


def _sizes(text: str) -> tuple:
    try:
        out = tuple(int(x) for x in text.replace(",", " ").split())
    except ValueError:
        out = ()
    if not out or any(n < 1 for n in out):
        raise argparse.ArgumentTypeError(f"sizes are positive integers, got {text!r}")
    return out


def _check_target(name: str) -> None:
    """One clear line when this machine cannot run the target's code."""
    from targets.target import _cpu_flags
    missing = TARGET_CPU_FLAGS.get(name, set()) - _cpu_flags()
    if missing:
        raise SystemExit(f"bench gemm: this machine cannot run {name} code "
                         f"(CPU lacks {', '.join(sorted(missing))})")


def run(args) -> int:
    _check_target(args.target)
    peak = args.peak_gflops if args.peak_gflops is not None else common.default_peak_gflops(args.target)
    results = []
    with common.single_thread():
        sizes = [n for group in args.sizes for n in group]
        for n in sizes:
            results.append(run_size(n, args, peak))
    if args.threads > 1 and max(sizes) >= 256:
        with common.threads(args.threads):
            results.append(run_size(max(sizes), args, peak * args.threads if peak else None,
                                    nthreads=args.threads))
    if args.json:
        common.print_json_lines(results)
        return 0
    what = "template default" if args.schedules == "default" else "best of the sweep"
    print(f"gemm: C = A @ B, float32, square; cgen ({what}) vs numpy matmul(a, b, out=c); "
          "ratio = numpy_s / cgen_s (> 1: cgen faster)")
    rows = [(r["case"], r["schedule_name"], r["gflops"], r["peer_gflops"], r["ratio"],
             r["peak_fraction"]) for r in results]
    print(common.format_table(["size", "schedule", "cgen GFLOP/s", "numpy GFLOP/s", "ratio",
                               "of peak"], rows))
    r0 = results[0]
    print(f"measured: median of {args.repeats} repeats per kernel, each >= {args.min_repeat_ms:g} ms "
          "of back-to-back calls after 1 warm-up, cgen and numpy interleaved (each in its own "
          f"process), threads=1 (threadpoolctl), {args.clock} clock")
    print(f"numpy BLAS: {common.describe_blas(r0['blas'])}; cgen target {r0['target']} ({r0['isa']})")
    print("peak: " + (f"{peak:g} GFLOP/s (--peak-gflops; default: REFERENCE.md's one-core FMA figure)"
                      if peak else "unknown on this host (pass --peak-gflops)"))
    if peak and any(max(r["gflops"], r["peer_gflops"]) > peak for r in results):
        print(f"note: a measured rate exceeds {peak:g} GFLOP/s, so this host's peak is higher; "
              "pass --peak-gflops (FLOP/cycle x GHz of one core) for a meaningful 'of peak'")
    for r in results:
        print(f"schedule {r['case']}: {r['schedule_name']}: {json.dumps(r['schedule'])}")
    return 0


if __name__ == "__main__":
    # the peer process (BlasPeer): python -m bench.gemm --peer N THREADS
    if len(sys.argv) == 5 and sys.argv[1] == "--peer":
        sys.exit(peer_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
    sys.exit("usage: python -m bench gemm [options]")
