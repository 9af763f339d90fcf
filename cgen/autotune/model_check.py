"""The tuned model against the default one, in the model: a kernel measured alone (hot
caches, its own buffers) can rank configs differently from the same kernel between its
neighbours, so after `tune_model` the whole model is built twice -- default configs and
the log's -- and the two are timed interleaved on the machine.

    chk = check_model("m.onnx", "x86-avx2", rows, log)
    print(chk.line)

Both builds run on this machine and are timed in the CPU seconds of their harness child.

When the tuned build is not faster by `margin`, each task whose tuned kernels were slower
than the default's in a per-kernel profile of both builds (cgen.graph CompiledModel.profile,
interleaved, medians) goes back to its default; if the model is still not faster, every
task does.  A fallback is one more selection record per task (cgen.autotune.baseline's
`selection` field, reason "in-model ..."), so compile follows it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import statistics
import time

from .log import LogWriter, apply_pareto

ROUNDS = 21
MARGIN = 0.01       # the tuned model must be at least this much faster in the median


@dataclass(frozen=True)
class ModelCheck:
    default_s: float        # median seconds per run, default configs
    tuned_s: float          # the same with the log's configs (after any fallback)
    reverted: tuple         # task descriptions sent back to their defaults
    line: str


def _build(model, target, shapes, tuned):
    from ..graph.model import compile_model
    return compile_model(model, target, input_shapes=shapes, tuned=tuned)


def time_interleaved(models, feeds, rounds: int = ROUNDS, min_repeat_s: float = 0.02) -> list:
    """(median, best) seconds per run of each compiled model, one repeat of each per round,
    in an order rotated by round.  The clock is the harness child's CPU time
    (targets.cpu_clock): on a shared machine wall time counts the moments a run sat
    descheduled behind other jobs."""
    import tempfile
    from pathlib import Path
    import numpy as np
    from targets.cpu_clock import cpu_seconds_per_call, fixed_cpu_seconds
    times = [[] for _ in models]
    with tempfile.TemporaryDirectory(prefix="cgen-check-") as d:
        runs = []
        for m, cm in enumerate(models):
            arrays = cm.check_feeds(feeds) + [np.zeros(v.shape, v.dtype) for v in cm.graph.outputs]
            files = []
            for k, a in enumerate(arrays):
                files.append(Path(d) / f"m{m}_{k}.bin")
                a.tofile(files[-1])
            exe = cm.executable()
            base = fixed_cpu_seconds(exe, files)
            one = max(cpu_seconds_per_call(exe, files, 4, base), 1e-7)
            runs.append((exe, files, base, max(1, int(min_repeat_s / one))))
        order = list(range(len(models)))
        for r in range(rounds):
            for i in order[r % len(order):] + order[:r % len(order)]:
                exe, files, base, number = runs[i]
                times[i].append(cpu_seconds_per_call(exe, files, number, base))
    return [(statistics.median(t), min(t)) for t in times]


def kernel_times(models, feeds, rounds: int = 3) -> list:
    """kernel name -> median in-model seconds per call, for each model (interleaved)."""
    got = [{} for _ in models]
    for _ in range(rounds):
        for g, cm in zip(got, models):
            for name, s in cm.profile(feeds, number=50):
                g.setdefault(name, []).append(s)
    return [{k: statistics.median(v) for k, v in g.items()} for g in got]


def revert(rows, log, why: str) -> list:
    """Selection records sending each row's task back to its default; their descriptions."""
    out = []
    with LogWriter(log) as w:
        for r in rows:
            d = r.mtask.default_record
            if d is None or not d.ok:
                continue
            w.write(replace(d, timestamp=time.time(), selection={
                "chosen": "default", "reason": why, "default_index": r.mtask.default_index}))
            out.append(r.mtask.task.describe())
    return out


def check_model(model, target, rows, log, input_shapes=None, rounds: int = ROUNDS,
                margin: float = MARGIN) -> ModelCheck:
    """Time the default and the tuned model; fall back per task, then entirely, when the
    tuned one is not faster (see the module notes).  rows: tune_model's [ModelTuneRow]."""
    from ..graph.kernels import kernel_target
    from ..graph.model import model_target, random_feeds
    ktgt = kernel_target(model_target(target))
    base = _build(model, target, input_shapes, None)
    feeds = random_feeds(base.graph)
    tuned_rows = [r for r in rows if r.selection is not None and r.selection.chosen == "tuned"]
    if not tuned_rows:
        return ModelCheck(0.0, 0.0, (), "in-model check: every kernel kept its default config")

    def faster(d, t):   # the median by the margin, and the best repeat not worse
        return t[0] <= d[0] * (1 - margin) and t[1] <= d[1]
    tuned = _build(model, target, input_shapes, apply_pareto(log, ktgt))
    d_s, t_s = time_interleaved([base, tuned], feeds, rounds)
    first = f"default {d_s[0] * 1e6:.1f} us, tuned {t_s[0] * 1e6:.1f} us"
    reverted: list = []
    if not faster(d_s, t_s):
        kd, kt = kernel_times([base, tuned], feeds)
        slower = [r for r in tuned_rows
                  if sum(kt.get(k, 0.0) for k in r.mtask.kernels)
                  >= sum(kd.get(k, 0.0) for k in r.mtask.kernels)]
        reverted += revert(slower, log, "in-model: its tuned kernels were not faster "
                                        "than the default ones between their neighbours")
        if slower:
            tuned = _build(model, target, input_shapes, apply_pareto(log, ktgt))
            d_s, t_s = time_interleaved([base, tuned], feeds, rounds)
        if not faster(d_s, t_s):
            left = [r for r in tuned_rows if r not in slower]
            why = (f"in-model: the tuned model ({t_s[0] * 1e6:.1f} us) was not faster than "
                   f"the default ({d_s[0] * 1e6:.1f} us)")
            reverted += revert(left, log, why)
            t_s = d_s
    n = len(tuned_rows)
    if not reverted:
        return ModelCheck(d_s[0], t_s[0], (),
                          f"in-model check (interleaved, CPU-time medians): default "
                          f"{d_s[0] * 1e6:.1f} us, tuned {t_s[0] * 1e6:.1f} us "
                          f"({d_s[0] / t_s[0]:.2f}x); all {n} tuned tasks kept")
    return ModelCheck(d_s[0], t_s[0], tuple(reverted),
                      f"in-model check (interleaved, CPU-time medians): {first}; {len(reverted)} "
                      f"of {n} tuned tasks sent back to their defaults: {'; '.join(reverted)}; "
                      f"now default {d_s[0] * 1e6:.1f} us, tuned {t_s[0] * 1e6:.1f} us "
                      f"({d_s[0] / t_s[0]:.2f}x)")
