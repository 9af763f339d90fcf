"""llvm-mca as a cost: does it rank like real timing, and how close are the NEON tiles
to the FMA pipe?

Rank check (on this x86 machine, the only place seconds can be had): the GEMM
template's configs (`--size`, a seeded sample of `--configs` serial configs of the
x86-avx2 space) are each built, checked against numpy (cgen.autotune.measure.Measurer)
and timed in CPU seconds of its harness process (bench.common.CpuTimer: the fastest of --repeats,
each >= --min-repeat-ms; time descheduled by other jobs does not count), and
estimated by the rule of `cgen tune --cost mca`:

    cycles = instructions of one call x llvm-mca's cycles per instruction

the instructions counted by valgrind (callgrind, collecting inside the kernel's
function only: this machine has no perf events and x86 no icount), the cycles per
instruction those of the candidate's hot loop (cgen.autotune.mca.module_loop) on
the host core (`--cpu`, default sapphirerapids: LLVM 14 models it with its
Skylake-server tables).  The row reports Spearman's rank correlation (rho) of the
estimate against seconds, of the instruction count alone, and of the timing against
its own retest (a second pass in the opposite order): on a shared machine that last
figure bounds what any estimate can reach.

Bound report: the NEON f32 GEMM micro-kernels of the aarch64 target built for each
Raspberry Pi core (-mcpu=cortex-a53 / a72 / a76) and llvm-mca's fraction of that
core's FMA-pipe bound (cgen.autotune.mca.gemm_microkernel_report); peer = the
bound.  Goal >= 0.9.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import common

RANK_TARGET = "x86-avx2"


def add_arguments(p) -> None:
    p.add_argument("--size", type=int, default=128, help="square GEMM size of the rank check (128)")
    p.add_argument("--configs", type=int, default=30, help="configs in the rank check (default 30)")
    p.add_argument("--cpu", default="sapphirerapids", help="llvm-mca core of this host (x86)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-rank", action="store_true", help="only the Pi cores' bound report")
    p.add_argument("--skip-bounds", action="store_true", help="only the rank check")


def ranks(x) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float:
    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def sample_configs(task, n: int, seed: int) -> list:
    """n serial configs of the task's space, a seeded sample (one thread: a shared
    machine's second core would only add noise)."""
    space = task.space()
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(space)):
        c = space.get(int(i))
        if not dict(c.values).get("parallel", False):
            out.append(c)
        if len(out) == n:
            break
    return out


def instructions(mod, inputs) -> int:
    """Instructions of one call of the module's kernel, counted by valgrind's callgrind
    (collection toggled on inside the kernel's function: the harness's file I/O is out)."""
    with tempfile.TemporaryDirectory(prefix="cgen-mca-") as d:
        files = []
        for k, a in enumerate(inputs):
            f = Path(d) / f"arg{k}.bin"
            f.write_bytes(np.ascontiguousarray(a).tobytes())
            files.append(str(f))
        out = Path(d) / "callgrind.out"
        proc = subprocess.run(["valgrind", "--tool=callgrind", f"--toggle-collect={mod.name}",
                               f"--callgrind-out-file={out}", str(mod.executable()), *files],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"valgrind on {mod.name}: {proc.stderr.strip().splitlines()[-1:]}")
        m = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.M)
        return int(m.group(1))


def _cpu_seconds(mod, inputs, args) -> float:
    with common.CpuTimer(mod, [a.copy() for a in inputs]) as timer:
        return float(min(common.measure(timer, args.repeats, args.min_repeat_ms / 1e3).times))


def rank_check(args) -> dict:
    from cgen.autotune.mca import module_loop
    from cgen.autotune.measure import Measurer, build_candidate
    from cgen.autotune.task import parse_workload
    n = args.size
    task = parse_workload(f"gemm:{n},{n},{n}", RANK_TARGET)
    configs = sample_configs(task, args.configs, args.seed)
    mods, est, insns, skipped = [], [], [], 0
    # the measurer only checks each candidate's output (one short repeat)
    with Measurer(repeat=1, min_repeat_ms=1.0) as m:
        inputs = m.prepare(task).inputs
        for c, rec in zip(configs, m.measure(task, configs)):
            mod, err = build_candidate(task.template, task.workload, task.target, c)
            if not rec.ok or err is not None:
                skipped += 1
                continue
            loop = module_loop(mod.c_source, task.target, args.cpu)
            mods.append(mod)
            insns.append(instructions(mod, inputs))
            est.append(insns[-1] * loop.cycles_per_instruction)
            common.progress(args, f"mca: #{c.index} {insns[-1]} instructions, {est[-1]:.0f} cycles est")
    # timed in CPU seconds of the harness process, the fastest repeat (time descheduled by
    # other jobs does not count), in two passes in opposite orders: how well the timing
    # ranks against itself is the ceiling for any estimate on this machine
    order = list(range(len(mods)))
    passes = []
    for p in range(2):
        secs = [0.0] * len(mods)
        for k in (order if p == 0 else order[::-1]):
            secs[k] = _cpu_seconds(mods[k], inputs, args)
        passes.append(secs)
        common.progress(args, f"mca: timing pass {p + 1} done")
    best = np.minimum(*passes)
    ok = len(est) > 2

    def rho(a, b):
        return round(spearman(a, b), 3) if ok else float("nan")
    return {"suite": "mca", "case": f"rank gemm {n} {RANK_TARGET}", "cpu": args.cpu,
            "configs": len(est), "skipped": skipped, "spearman_rho": rho(est, best),
            "spearman_rho_instructions_only": rho(insns, best),
            "spearman_rho_timing_retest": rho(*passes),
            "unit": "mca cycles (estimate) vs CPU s (measured)"}


def bound_rows() -> list:
    from cgen.autotune.mca import PI_CORES, gemm_microkernel_report
    out = []
    for cpu in PI_CORES:
        for r in gemm_microkernel_report("aarch64", cpu):
            out.append({"suite": "mca", "case": f"gemm tile {r['tile']} {cpu}", "peer": "fma-pipe bound",
                        "ratio": r["fraction"], **r})
    return out


def run(args) -> int:
    from cgen.autotune.mca import missing
    why = missing("aarch64") or (None if args.skip_rank else missing("x86-64"))
    if not args.skip_rank and shutil.which("valgrind") is None:
        why = "valgrind is not installed (it counts the x86 instructions of the rank check)"
    if why:
        print(f"bench mca: {why}")
        return 2
    rows = [] if args.skip_bounds else bound_rows()
    if not args.skip_rank:
        rows.append(rank_check(args))
    for r in rows:
        if args.json:
            print(json.dumps(r))
        elif "spearman_rho" in r:
            print(f"{r['case']}: Spearman rho {r['spearman_rho']} over {r['configs']} configs "
                  f"(llvm-mca -mcpu={r['cpu']} vs CPU seconds; instructions alone "
                  f"{r['spearman_rho_instructions_only']}; timing against its own retest "
                  f"{r['spearman_rho_timing_retest']}; {r['skipped']} skipped)")
        else:
            print(f"{r['case']}: {r['cycles_per_iter']} cycles per k step, bound {r['bound_cycles']}, "
                  f"fraction {r['fraction']} ({r['bottleneck']})")
    return 0


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m bench mca", description=__doc__)
    common.add_common_arguments(p)
    add_arguments(p)
    return run(p.parse_args(argv))
