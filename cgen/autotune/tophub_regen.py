"""Regenerate the shipped best-known configs (cgen.ops.tophub) by measurement.

    python -m cgen.autotune.tophub_regen --target x86-avx2 --workload gemm:512,512,512 \\
        [--trials 64] [--finalists 4] [--rounds 5] [--log DIR]

Per (target, workload): the tuner (cgen.autotune, pre-trained first batch,
seeded) runs `--trials` trials over the single-thread configs (a `parallel`
knob is held at False: the table is for one thread; a threaded caller turns
it on), logging to `--log DIR/<target>.jsonl` (resumed when it exists).
Timings are noisy on a shared machine, so the `--finalists` best configs, the
template's current default, its one-knob variants (`quick_configs`) and any
`--also` knobs are measured again, `--rounds` times round-robin, in CPU
seconds per call of the harness process (time spent descheduled by other jobs
does not count), and the lowest median wins.  Icount costs (`--cost icount`,
aarch64) are deterministic: the tuner's best is kept as is.

The entry for that workload in `cgen/ops/tophub/<target class>/<template>.json`
is replaced (other entries are kept), with its cost and how it was measured.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

from targets.cpu_clock import cpu_seconds_per_call, fixed_cpu_seconds

from ..ops import tophub


def cpu_name() -> str:
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def single_thread_candidates(space) -> list | None:
    """Indices of the configs whose `parallel` knob is False (None: no such knob)."""
    if "parallel" not in space.names():
        return None
    return [c.index for c in space if not c["parallel"]]


def confirm(task, configs, rounds: int, min_s: float = 0.2, seed: int = 0) -> list:
    """(median CPU seconds per call, config) per config that builds and computes the
    reference, each measured `rounds` times round-robin (a neighbour's burst slows one
    round of each config, not one config)."""
    import numpy as np
    from .measure import build_candidate, check_outputs
    tpl, wl, tgt = task.template, task.workload, task.target
    inputs = tpl.inputs(wl, np.random.default_rng(seed))
    reference = tpl.reference(wl, inputs)
    runs = []
    with tempfile.TemporaryDirectory(prefix="tophub-") as tmp:
        for c in configs:
            mod, err = build_candidate(tpl, wl, tgt, c)
            if err is not None:
                continue
            arrays = [a.copy() for a in inputs]
            mod(*arrays)
            names = [p.name for p in mod.func.params]
            if check_outputs(dict(zip(names, arrays)), reference):
                continue
            files = []
            for k, a in enumerate(inputs):
                files.append(Path(tmp) / f"c{c.index}_{k}")
                np.ascontiguousarray(a).tofile(files[-1])
            exe = mod.executable()
            base = fixed_cpu_seconds(exe, files)
            first = cpu_seconds_per_call(exe, files, 1, base)
            runs.append((c, exe, files, base, max(1, int(min_s / max(first, 1e-6)))))
        costs = {c.index: [] for c, *_ in runs}
        for _ in range(rounds):
            for c, exe, files, base, number in runs:
                costs[c.index].append(cpu_seconds_per_call(exe, files, number, base))
    return sorted(((statistics.median(costs[c.index]), c) for c, *_ in runs),
                  key=lambda t: t[0])


def tune_one(task, measurer, log: Path, args) -> tuple:
    """(best config, its cost, how it was measured) for one task."""
    from .pretrained import load_pretrained
    from .tuner import Tuner
    unit = measurer.cost_unit
    space = task.space()
    tuner = Tuner(task, measurer, log, seed=args.seed, batch_size=args.batch,
                  candidates=single_thread_candidates(space),
                  pretrained=load_pretrained(task, cost_unit=unit), progress=not args.quiet)
    res = tuner.tune(args.trials)
    if res.best is None:
        raise SystemExit(f"tophub_regen: no correct candidate for {task.describe()} on "
                         f"{task.target_name}")
    how = f"cgen tune, {len(res.records)} trials"
    if unit != "s":
        return space.from_json(res.best.config), res.best.mean_cost, how + f" ({unit})"
    ok = sorted((r for r in res.records if r.ok), key=lambda r: r.mean_cost)
    finalists, seen = [], set()
    default = task.template.default(task.workload, task.target)
    quick = getattr(task.template, "quick_configs", lambda wl, tgt: [])(task.workload, task.target)
    single = {"parallel": False} if "parallel" in space.names() else {}
    also = [space.nearest({**default.to_dict(), **knobs, **single}) for knobs in args.also]
    for c in [space.from_json(r.config) for r in ok[:args.finalists]] + [default] + [
            q for q in quick if not q.get("parallel", False)] + also:
        if c.index not in seen:
            seen.add(c.index)
            finalists.append(c)
    ranked = confirm(task, finalists, args.rounds, seed=args.seed)
    if not ranked:
        raise SystemExit(f"tophub_regen: no finalist of {task.describe()} measured correctly "
                         f"{args.rounds} times")
    cost, best = ranked[0]
    return best, cost, how + f"; its best {args.finalists}, the previous default and its one-knob " \
                             f"variants re-measured {args.rounds} rounds round-robin in CPU time, median"


def write_entry(template: str, target_class: str, workload: dict, knobs: dict, cost: float,
                unit: str, measured: str, root: Path = tophub.TABLE_DIR) -> Path:
    """Replace (or add) the entry for `workload` in its table file."""
    path = tophub.table_path(template, target_class, root)
    data = {"version": tophub.VERSION, "template": template, "target": target_class,
            "entries": []}
    if path.is_file():
        data = json.loads(path.read_text())
    entries = [e for e in data["entries"] if e["workload"] != workload]
    entries.append({"workload": workload, "knobs": knobs, "cost": float(f"{cost:.4g}"),
                    "cost_unit": unit, "measured": measured})
    data["entries"] = sorted(entries, key=lambda e: json.dumps(e["workload"], sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_table(data))
    return path


def format_table(data: dict) -> str:
    """The file's JSON with one entry per line (diffs show which workloads changed)."""
    head = {k: v for k, v in data.items() if k != "entries"}
    lines = [json.dumps(e) for e in data["entries"]]
    return (json.dumps(head)[:-1] + ', "entries": [\n ' + ",\n ".join(lines) + "\n]}\n")


def _knobs(text: str) -> dict:
    try:
        out = json.loads(text)
    except json.JSONDecodeError:
        out = None
    if not isinstance(out, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of knobs, got {text!r}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgen.autotune.tophub_regen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", required=True,
                   help="a built-in target (repeatable); its table is its ISA family's")
    p.add_argument("--workload", action="append", required=True,
                   help="a workload spec as for cgen tune, e.g. gemm:512,512,512 (repeatable)")
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--finalists", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--also", action="append", default=[], metavar="JSON", type=_knobs,
                   help='knobs to race with the finalists besides the tuner\'s best, over the '
                        'default (e.g. \'{"pack_a": true}\'; repeatable)')
    p.add_argument("--cost", choices=("time", "icount"), default="time")
    p.add_argument("--log", type=Path, default=Path("tophub_logs"),
                   help="directory of the tuning logs, one per target (default tophub_logs)")
    p.add_argument("--root", type=Path, default=tophub.TABLE_DIR, help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    from targets import resolve
    from .task import WorkloadError, parse_workload
    try:
        targets = [resolve(t) for t in args.target]
        tasks = [(t, parse_workload(w, t)) for t in targets for w in args.workload]
    except (ValueError, WorkloadError) as e:
        print(f"tophub_regen: error: {e}", file=sys.stderr)
        return 2
    args.log.mkdir(parents=True, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    for tgt, task in tasks:
        classes = tophub.target_classes(tgt)
        if not classes:
            print(f"tophub_regen: error: target {tgt.name} has no table name", file=sys.stderr)
            return 2
        if args.cost == "icount":
            from .icount_measure import IcountMeasurer
            measurer = IcountMeasurer()
        else:
            from .measure import Measurer
            measurer = Measurer(repeat=3, min_repeat_ms=20)
        with measurer:
            best, cost, how = tune_one(task, measurer, args.log / f"{tgt.name}.jsonl", args)
        knobs = best.to_dict()
        measured = f"{how}; {cpu_name() if args.cost == 'time' else 'qemu icount'}; {stamp}"
        path = write_entry(task.template.name, classes[0], task.workload, knobs, cost,
                           measurer.cost_unit, measured, args.root)
        print(f"{task.describe()} on {tgt.name}: {json.dumps(knobs)} {cost:.6g} "
              f"{measurer.cost_unit} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
