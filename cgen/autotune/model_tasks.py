"""Tuning a whole model: the tasks of its fused graph and how the trials are shared.

    mtasks = extract_tasks("model.onnx", "host")       # one ModelTask per distinct workload
    with Measurer() as m:
        rows = tune_model(mtasks, m, "model.jsonl", trials=200)
    print(format_table(rows))
    compile_model("model.onnx", "host", tuned=apply_best("model.jsonl", kernel_target(...)))

The model is loaded and lowered as `cgen compile` does it (default configs,
kernels scheduled for one core: `cgen.graph.kernels.kernel_target`), and every
group whose kernel comes from an operator template becomes a task; groups with
the same (template, workload) are one task whose `count` is how many there are.

After its trials, each task's default and its fastest candidates are measured
again together, interleaved, and a candidate is kept only when it beats the
default beyond the noise (cgen.autotune.baseline); the verdict is a log record
that compile's apply_best follows.

Trials are shared by each task's share of the model's estimated time: every
task's default config is measured first (it is also trial 1 of that task, and
is read back from the log on a resumed run), then the rest of the budget goes
in proportion to default time x count, with a floor of a few trials per task
and no task given more trials than its space has configs.  The tasks share one
Measurer (one device pool); each task's model is warm-started from the records
of the other tasks of the same template and target already in the log.
"""
from __future__ import annotations

from dataclasses import dataclass
import math

from ..ops.common import config_dict
from .log import LogWriter, canonical, read_log
from .task import Task, make_task

MIN_TRIALS_PER_TASK = 4


@dataclass
class ModelTask:
    task: Task
    count: int                          # groups of the model with this workload
    kernels: tuple                      # their kernel names (C functions)
    default_index: int = -1             # the template's default config in the space
    default_record: object = None       # its measurement (log record), once known

    @property
    def flops(self) -> int:
        return self.task.flops()

    @property
    def default_cost(self) -> float | None:
        r = self.default_record
        return r.mean_cost if r is not None and r.ok else None

    @property
    def default_gflops(self) -> float:
        c = self.default_cost
        return self.flops / c / 1e9 if c else 0.0


@dataclass
class ModelTuneRow:
    mtask: ModelTask
    trials: int                         # trials given to the task (its default included)
    result: object                      # the Tuner's TuneResult
    selection: object = None            # baseline.Selection: the config compile takes

    @property
    def best_cost(self) -> float | None:
        b = self.result.best
        return b.mean_cost if b is not None else None

    @property
    def best_gflops(self) -> float:
        c = self.best_cost
        return self.mtask.flops / c / 1e9 if c else 0.0


def task_label(template: str, workload: dict) -> str:
    """A short name: the template and the workload's integer fields."""
    skip = {"op", "dtype", "layout", "weights"}
    parts = []
    for k, v in workload.items():
        if k in skip or v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, list, tuple)):
            continue
        if isinstance(v, (list, tuple)):
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                continue
            v = "x".join(str(x) for x in v)
        parts.append(f"{k}={v}")
    return f"{template} {','.join(parts)}" if parts else template


def extract_tasks(model, target="host", input_shapes=None, templates=None,
                  objective: str = "latency") -> list:
    """The tuning tasks of a model's fused graph, in graph order (see the module notes).
    objective "ram" / "balanced": the groups as those objectives legalize them, and the
    kernels of both the latency and the RAM routes (a balanced build takes either)."""
    from ..graph import prepare
    from ..graph.drive import legalize, lower_graph
    from ..graph.kernels import kernel_target
    from ..graph.model import model_target
    from ..ops.registry import templates as all_templates
    table = templates if templates is not None else all_templates()
    tgt = kernel_target(model_target(target))
    if objective == "latency":
        fg = legalize(prepare(model, input_shapes), tgt)
        kernels = lower_graph(fg, tgt)
    else:
        fg = legalize(prepare(model, input_shapes), tgt, "ram")
        kernels = lower_graph(fg, tgt) + lower_graph(fg, tgt, None, "ram")
    found: dict = {}
    # a loop (cgen.graph.loop_lower): its body's kernels, built once, are the tasks
    kernels = [f for k in kernels for f in (k.functions() if hasattr(k, "body") else [k])]
    for k in kernels:
        if k.workload is None or k.template not in table:
            continue        # aliases and built-in computes: nothing to tune
        key = canonical(k.workload)
        if key in found and k.name in found[key].kernels:
            continue        # the same group lowered for both objectives
        if key in found:
            found[key].count += 1
            found[key].kernels += (k.name,)
            continue
        task = make_task(k.template, k.workload, tgt, table, task_label(k.template, k.workload))
        found[key] = ModelTask(task, 1, (k.name,))
    return list(found.values())


def default_index(task: Task) -> int:
    d = task.template.default(task.workload, task.target)
    return task.space().index_of(config_dict(d))


def measure_defaults(mtasks, measurer, log, on_record=None) -> None:
    """Each task's default config measured once and logged (read back when the log has it)."""
    records = read_log(log) if log is not None else []
    writer = None
    try:
        for mt in mtasks:
            space = mt.task.space()
            mt.default_index = default_index(mt.task)
            for r in records:
                if mt.task.matches(r) and _index(space, r) == mt.default_index:
                    mt.default_record = r
                    break
            if mt.default_record is not None:
                continue
            config = space.get(mt.default_index)
            (rec,) = list(measurer.measure(mt.task, [config]))
            if log is not None:
                if writer is None:
                    writer = LogWriter(log)
                writer.write(rec)
            mt.default_record = rec
            if on_record is not None:
                on_record(mt, rec)
    finally:
        if writer is not None:
            writer.close()


def _index(space, record):
    try:
        return space.index_of(record.config.get("knobs", record.config))
    except (KeyError, ValueError, AttributeError, IndexError):
        return None


def estimated_times(mtasks) -> list:
    """Seconds each task takes in one run of the model: default time x count.  A task whose
    default failed is estimated from its FLOPs at the other tasks' median throughput."""
    rates = sorted(mt.flops / mt.default_cost for mt in mtasks if mt.default_cost)
    rate = rates[len(rates) // 2] if rates else 1e9
    return [mt.count * (mt.default_cost if mt.default_cost else max(mt.flops, 1) / rate)
            for mt in mtasks]


def allocate_trials(total: int, shares, caps, floor: int = MIN_TRIALS_PER_TASK) -> list:
    """Trials per task: `total` shared in proportion to `shares`, each task clamped between a
    floor of min(floor, cap) trials (at least 1; fewer than `floor` when the budget cannot
    give every task that many) and its cap (its space's size).  What a capped task cannot take
    goes to the others.  Integer shares by largest remainders (ties: the earlier task); the
    sum is `total` unless the floors exceed it or every task reaches its cap."""
    n = len(shares)
    if n == 0:
        return []
    caps = [max(1, int(c)) for c in caps]
    floor = max(1, min(int(floor), total // n))
    lo = [min(floor, c) for c in caps]
    w = [float(x) if math.isfinite(float(x)) and float(x) > 0 else 0.0 for x in shares]
    if not any(w):
        w = [1.0] * n

    def at(x):      # the continuous allocation at scale x
        return [min(max(x * wi, li), ci) for wi, li, ci in zip(w, lo, caps)]

    most = at(float("inf")) if all(w) else [c if wi else li for wi, li, c in zip(w, lo, caps)]
    if total <= sum(lo):
        return lo
    if total >= sum(most):
        return [int(v) for v in most]
    a, b = 0.0, max(c / wi for c, wi in zip(caps, w) if wi)
    for _ in range(200):        # sum(at(x)) grows with x: bisect for sum == total
        mid = (a + b) / 2
        if sum(at(mid)) < total:
            a = mid
        else:
            b = mid
    cont = at(b)
    alloc = [int(math.floor(v + 1e-9)) for v in cont]
    left = total - sum(alloc)
    order = sorted(range(n), key=lambda i: (-(cont[i] - alloc[i]), i))
    while left > 0:
        moved = False
        for i in order:
            if left > 0 and alloc[i] < caps[i]:
                alloc[i] += 1
                left -= 1
                moved = True
        if not moved:
            break
    while left < 0:             # rounding up overshot (cannot happen with floors): trim
        i = max((i for i in range(n) if alloc[i] > lo[i]), key=lambda i: alloc[i] - cont[i])
        alloc[i] -= 1
        left += 1
    return alloc


def tune_model(mtasks, measurer, log, trials: int, *, seed: int = 0, batch_size: int = 8,
               model: str = "rank", search: str = "model", early_stopping=None,
               progress: bool = False, floor: int = MIN_TRIALS_PER_TASK, on_default=None,
               on_plan=None, on_task=None, pretrained=None, verify: bool = True) -> list:
    """Measure the defaults, share `trials` among the tasks, tune each, and (verify) keep
    each tuned config only if it beats the default when re-measured: [ModelTuneRow].

    pretrained: task -> (model, feature names) or None, the ranking before a task
    has records of its own (cgen.autotune.pretrained.load_pretrained)."""
    from .baseline import select
    from .tuner import Tuner, transfer_set
    measure_defaults(mtasks, measurer, log, on_default)
    alloc = allocate_trials(trials, estimated_times(mtasks),
                            [mt.task.space().size for mt in mtasks], floor)
    if on_plan is not None:
        on_plan(mtasks, alloc)
    rows = []
    for mt, n in zip(mtasks, alloc):
        unit = getattr(measurer, "cost_unit", "s")
        transfer = transfer_set(read_log(log), mt.task, cost_unit=unit) if log is not None else ()
        tuner = Tuner(mt.task, measurer, log, model=model, search=search, seed=seed,
                      batch_size=batch_size, transfer=transfer, progress=progress,
                      pretrained=pretrained(mt.task) if pretrained else None)
        row = ModelTuneRow(mt, n, tuner.tune(n, early_stopping=early_stopping))
        if verify:
            row.selection = select(mt.task, measurer, row.result.records, mt.default_index, log)
        rows.append(row)
        if on_task is not None:
            on_task(row)
    return rows


def format_table(rows) -> str:
    """task, count, trials, default and best GFLOP/s, speed-up, and which config compile
    takes; then the estimated time of the template kernels in one run of the model, before
    and after.  With a selection (cgen.autotune.baseline) the speed-up is the re-measured
    one (1.00x when the default is kept), else the tuning run's best against the default."""
    wid = min(max([len(r.mtask.task.describe()) for r in rows] + [4]), 80)
    head = f"{'task':<{wid}} {'count':>5} {'trials':>6} {'default GFLOP/s':>15} " \
           f"{'best GFLOP/s':>12} {'speed-up':>8} {'kept':>7}"
    lines = [head, "-" * len(head)]
    before = after = 0.0
    complete = True
    for r in rows:
        mt, sel = r.mtask, r.selection
        d, b = mt.default_cost, r.best_cost
        up = d / b if d and b else None
        if sel is not None:
            up = sel.speedup
        kept = sel.chosen if sel is not None else "-"
        dg = f"{mt.default_gflops:.2f}" if d else "failed"
        bg = f"{r.best_gflops:.2f}" if b else "failed"
        ups = f"{up:.2f}x" if up else "-"
        lines.append(f"{mt.task.describe()[:wid]:<{wid}} {mt.count:>5} {len(r.result.records):>6} "
                     f"{dg:>15} {bg:>12} {ups:>8} {kept:>7}")
        if d and up:
            before += mt.count * d
            after += mt.count * d / max(up, 1.0)
        else:
            complete = False
    if before > 0:
        note = "" if complete else " (tasks without a correct default or best left out)"
        lines.append(f"template kernels, one run of the model: {before * 1e6:.1f} us with the "
                     f"defaults -> {after * 1e6:.1f} us tuned ({before / after:.2f}x){note}")
    return "\n".join(lines)


def plot_histories(results, path) -> None:
    """Best-so-far GFLOP/s against trials, one line per task, in one image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for res in results:
        ys = [h / 1e9 for h in res.history]
        ax.plot(range(1, len(ys) + 1), ys, drawstyle="steps-post",
                label=res.task.describe()[:50])
    ax.set_xlabel("trials")
    ax.set_ylabel("best GFLOP/s")
    ax.grid(True, alpha=0.3)
    if results:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["ModelTask", "ModelTuneRow", "extract_tasks", "measure_defaults", "estimated_times",
           "allocate_trials", "tune_model", "format_table", "plot_histories", "task_label",
           "default_index", "MIN_TRIALS_PER_TASK"]
