"""The learned tuner against random search, replayed on pools of measured configs.

For each workload (GEMM 512, conv2d 3x3 64x56x56, depthwise 3x3 32x112x112,
dense 1x1024 -> 1000, on the host) a fixed pool of configs is chosen
deterministically: the template's default, its quick_configs, then a seeded
permutation of the whole space, the first --pool-size of them (the whole
space when it is smaller; a smaller pool is a prefix of a larger one).

The pool is measured once and cached: cgen.autotune.measure's Measurer
(parallel builds, child-process runs, output checked against the reference,
--pool-repeats repeats of >= --pool-min-repeat-ms, one thread:
OMP_NUM_THREADS=1 as in the operator bench) appends every record to a tuning
log per workload under --pool-log DIR (default $XDG_CACHE_HOME/cgen/bench-tuner,
else ~/.cache/cgen/bench-tuner).  On a shared machine one timing of a kernel
says little (other processes only ever slow it down), so the pool is measured
in --pool-passes passes, each in its own seeded order (a config's passes fall
at different times), and a config stands for its fastest correct record.
Records are matched by canonical workload, resolved target and config, and
found in any log of that directory and in the --reuse-log files (the operator
bench's log by default): each counts as a pass done, so a killed or repeated
run measures only what is missing.

Then, with no new measurement (a replay measurer returns the pool's record for
each config asked for and refuses any other), each method tunes the pool for
--seeds seeds: random search, and the model-based tuner
(cgen.autotune.tuner.Tuner, search "model" restricted to the pool: the model
scores every unmeasured config of the pool each round; batches of --batch-size,
random ones until the task has 8 records) with the ranking objective ("rank")
and the regression baseline ("reg"), and "pre": "rank" with the shipped
pre-trained model (cgen.autotune.pretrained, trained on other workloads of the
template) ranking those first batches, as `cgen tune` does by default.
trials-to-95% counts trials until the best throughput so far (FLOPs / mean cost
of the record) reaches 95% of the pool's best, the pool size when a method
never does; a replay stops there.  Per seed (a JSON row), ratio = random's
trials-to-95% / rank's; the table gives the medians over seeds and the ratio of
those medians.  Goal: ratio >= 3.

The cost model is also judged on its own: trained on a seeded random half of
the pool, its pairwise ranking accuracy on the other half
(cgen.autotune.costmodel.pairwise_accuracy; failed configs labelled 0; goal >=
0.85), beside the measurements' agreement with themselves (the fastest of a
config's odd passes against the fastest of its even passes: the practical
ceiling of any model's accuracy), and its prediction rate:
configs scored per second end to end (knob features from config indices, then
the model) over 10,000 random configs of the space.
"""
from __future__ import annotations

import hashlib
import os
import statistics
import time
from pathlib import Path

import numpy as np

from . import common
from .ops import DEFAULT_LOG as OPS_LOG

WORKLOADS = (
    ("gemm-512", "gemm:512,512,512"),
    ("conv3x3-64x56", "conv2d:1,64,56,56,64,3,3,1,1"),
    ("dw3x3-32x112", "depthwise:1,32,112,112,3,3,1,1"),
    ("dense-1024x1000", "dense:1,1000,1024"),
)
DEFAULT_POOL = 2000
DEFAULT_SEEDS = 3
DEFAULT_BATCH = 4
THRESHOLD = 0.95
GOAL_RATIO = 3.0
GOAL_ACCURACY = 0.85
POOL_SEED = 0
POOL_REPEATS = 3
POOL_MIN_REPEAT_MS = 10.0
MEASURE_BATCH = 16
POOL_PASSES = 3
DETERMINISTIC_ERRORS = ("compile_error", "wrong_answer")
RATE_CONFIGS = 10_000
METHODS = ("random", "rank", "reg", "pre")
DEFAULT_REUSE = (OPS_LOG,)            # the operator bench's default --log


def add_arguments(p) -> None:
    p.add_argument("--workloads", default="",
                   help="comma-separated case names or workload specs (default: the four "
                        "cases: " + ", ".join(n for n, _ in WORKLOADS) + "); a spec such as "
                        "gemm:64,64,64 is a case of its own")
    p.add_argument("--pool-size", type=int, default=DEFAULT_POOL,
                   help=f"configs per pool (default {DEFAULT_POOL}; the whole space when smaller)")
    p.add_argument("--pool-log", default=None,
                   help="directory of the pools' tuning logs (default $XDG_CACHE_HOME/cgen/"
                        "bench-tuner or ~/.cache/cgen/bench-tuner)")
    p.add_argument("--reuse-log", action="append", default=None,
                   help="another tuning log whose records of the pools' configs are reused "
                        "(repeatable; default: the operator bench's " + DEFAULT_REUSE[0] + ")")
    p.add_argument("--pool-repeats", type=int, default=POOL_REPEATS,
                   help=f"timed repeats per pool config (default {POOL_REPEATS})")
    p.add_argument("--pool-min-repeat-ms", type=float, default=POOL_MIN_REPEAT_MS,
                   help=f"a pool repeat lasts at least this long (default {POOL_MIN_REPEAT_MS:g})")
    p.add_argument("--pool-passes", type=int, default=POOL_PASSES,
                   help="measurements per pool config, each pass in its own seeded order; a "
                        f"config's fastest correct one counts (default {POOL_PASSES})")
    p.add_argument("--measure-only", action="store_true",
                   help="measure (complete) the pools and stop, no replay")
    p.add_argument("--no-measure", action="store_true",
                   help="replay on what the logs hold already; measure nothing")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help=f"replays per method, seeds 0.. (default {DEFAULT_SEEDS})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help=f"the model-based tuner's batch (default {DEFAULT_BATCH})")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="replayed methods among random, rank, reg and pre (rank with the "
                        "shipped pre-trained model ranking the first batch, as `cgen tune` "
                        "does; default all)")


# ---------------------------------------------------------------- workloads and pools
def default_pool_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cgen" / "bench-tuner"


def select_workloads(text: str) -> list:
    """[(case name, spec)] from --workloads (names of WORKLOADS or specs)."""
    if not text.strip():
        return list(WORKLOADS)
    names = dict(WORKLOADS)
    out = []
    # specs contain commas themselves: split on commas that start a new name or OP:
    items, cur = [], ""
    for part in text.split(","):
        part = part.strip()
        if cur and (part in names or ":" in part):
            items.append(cur)
            cur = part
        else:
            cur = f"{cur},{part}" if cur else part
    if cur:
        items.append(cur)
    for item in items:
        if item in names:
            out.append((item, names[item]))
        elif ":" in item:
            out.append((item, item))
        else:
            raise SystemExit(f"unknown workload {item!r}; cases: {', '.join(names)} or OP:ARGS")
    return out


def pool_indices(task, size: int, seed: int = POOL_SEED) -> list:
    """The pool: the default, the quick configs, then a seeded permutation of the space;
    the first `size` distinct ones.  A smaller pool is a prefix of a larger one."""
    tmpl, wl, tgt = task.template, task.workload, task.target
    space = task.space()
    out, seen = [], set()

    def add(i):
        if i not in seen and len(out) < size:
            seen.add(i)
            out.append(int(i))
    add(tmpl.default(wl, tgt).index)
    if hasattr(tmpl, "quick_configs"):
        for c in tmpl.quick_configs(wl, tgt):
            add(c.index)
    if len(out) < size:
        for i in np.random.default_rng(seed).permutation(space.size):
            add(int(i))
            if len(out) >= size:
                break
    return out


def pool_log_path(pool_dir: Path, task) -> Path:
    h = hashlib.sha1(f"{task.key}|{task.target_name}".encode()).hexdigest()[:12]
    return Path(pool_dir) / f"{task.template.name}-{h}.jsonl"


def known_records(task, paths) -> dict:
    """config index -> [records of this task found in the logs, in seconds], in log order."""
    from cgen.autotune.log import read_log
    space = task.space()
    out: dict = {}
    seen = set()
    for p in paths:
        for r in read_log(p):
            if not task.matches(r) or r.cost_unit != "s":     # host timings only
                continue
            try:
                i = space.index_of(r.config.get("knobs", r.config))
            except (KeyError, ValueError, AttributeError):
                continue
            key = (i, r.timestamp, tuple(r.costs))     # one record read through two paths
            if key not in seen:
                seen.add(key)
                out.setdefault(i, []).append(r)
    return out


def pool_record(records: list):
    """The record a config stands for in the pool: its fastest correct measurement
    (interference from other processes only slows a run down), else its first failure."""
    ok = [r for r in records if r.ok]
    return min(ok, key=lambda r: r.mean_cost) if ok else records[0]


def needs_pass(records: list, p: int) -> bool:
    """Whether a config with these records is measured in pass p (0-based): it has fewer
    than p + 1 records, unless it failed in a way another run cannot change."""
    if len(records) > p:
        return False
    return not any(r.error and r.error.get("kind") in DETERMINISTIC_ERRORS for r in records)


def log_paths(pool_dir: Path, reuse) -> list:
    paths = sorted(Path(pool_dir).glob("*.jsonl")) if Path(pool_dir).is_dir() else []
    return paths + [Path(p) for p in reuse if Path(p).exists() and Path(p) not in paths]


def measure_pool(args, name, task, pool, pool_dir: Path, reuse) -> dict:
    """config index -> every record of that pool config (the known ones, then those
    measured now; empty lists with --no-measure).  Pass p measures, in its own seeded
    order, the configs with fewer than p + 1 records (known ones count: earlier runs,
    the reused logs)."""
    from cgen.autotune.log import LogWriter
    from cgen.autotune.measure import Measurer
    known = known_records(task, log_paths(pool_dir, reuse))
    recs = {i: list(known.get(i, ())) for i in pool}
    path = pool_log_path(pool_dir, task)
    todo = [[i for i in pool if needs_pass(recs[i], p)] for p in range(args.pool_passes)]
    common.progress(args, f"tuner: {name}: pool {len(pool)}, {sum(1 for i in pool if recs[i])} "
                          f"known, to measure per pass {[len(t) for t in todo]} -> {path}")
    if not getattr(args, "no_measure", False) and any(todo):
        space = task.space()
        with Measurer(repeat=args.pool_repeats, min_repeat_ms=args.pool_min_repeat_ms) as m, \
                LogWriter(path) as log:
            for p in range(args.pool_passes):
                order = [i for i in pool if needs_pass(recs[i], p)]
                if p:
                    order = [order[k] for k in np.random.default_rng(p).permutation(len(order))]
                t0 = time.perf_counter()
                for b in range(0, len(order), MEASURE_BATCH):
                    chunk = order[b:b + MEASURE_BATCH]
                    for i, rec in zip(chunk, m.measure(task, [space.get(i) for i in chunk])):
                        log.write(rec)
                        recs[i].append(rec)
                    done, el = b + len(chunk), time.perf_counter() - t0
                    common.progress(args, f"tuner: {name}: pass {p + 1}: measured {done}/"
                                          f"{len(order)} ({el:.0f} s, {el / done:.2f} s each)")
    return recs


def pass_agreement(task, recs: dict) -> float | None:
    """How far the measurements agree with themselves: a config's correct records split
    in two (passes 1, 3, 5... and 2, 4...), the fastest of each half, and the pairwise
    accuracy of one half's figures against the other's (configs with two or more).
    A cost model is judged against labels of this quality: its practical ceiling."""
    from cgen.autotune.costmodel import pairwise_accuracy
    from cgen.autotune.tuner import throughput
    flops = task.flops()
    a, b = [], []
    for i, records in recs.items():
        ok = [throughput(r, flops) for r in records if r.ok]
        if len(ok) >= 2:
            a.append(max(ok[0::2]))
            b.append(max(ok[1::2]))
    return float(pairwise_accuracy(a, b)) if len(a) >= 10 else None


# ---------------------------------------------------------------- replay
class ReplayMeasurer:
    """Measures nothing: returns the pool's record of each config asked for.  A config
    outside the pool is a bug of the replay (AssertionError)."""

    def __init__(self, records: dict):
        self.records = records
        self.asked = 0

    def measure(self, task, configs):
        for c in configs:
            assert c.index in self.records, f"replay asked for config {c.index}, not in the pool"
            self.asked += 1
            yield self.records[c.index]


class _Reached(Exception):
    pass


def pool_throughputs(task, records: dict, pool) -> tuple:
    """(indices, throughputs) of the pool's measured configs, in pool order."""
    from cgen.autotune.tuner import throughput
    flops = task.flops()
    idx = [i for i in pool if i in records]
    return np.array(idx, np.int64), np.array([throughput(records[i], flops) for i in idx])


def replay(task, records: dict, method: str, seed: int, batch_size: int, target: float,
           pretrained=None) -> dict:
    """One replay of a method on the pool: trials until the best so far reaches `target`
    throughput (the pool size when it never does), and the seconds it took.  The replay
    stops at the threshold (what follows does not change the figure).  Methods: "random"
    search, the model-based tuner with the "rank" or "reg" objective (its first batch
    random), "pre": "rank" with `pretrained` ranking until the task has records."""
    from cgen.autotune.tuner import Tuner, throughput
    m = ReplayMeasurer(records)
    flops, n = task.flops(), len(records)
    seen = {"best": 0.0, "trials": 0}

    def on_record(rec):
        seen["trials"] += 1
        seen["best"] = max(seen["best"], throughput(rec, flops))
        if seen["best"] >= target:
            raise _Reached

    if method == "random":
        tuner = Tuner(task, m, model="random", search="random", seed=seed,
                      batch_size=batch_size, candidates=list(records))
    else:
        tuner = Tuner(task, m, model="rank" if method == "pre" else method, search="model",
                      seed=seed, batch_size=batch_size, candidates=list(records),
                      pretrained=pretrained if method == "pre" else None)
    t0 = time.perf_counter()
    try:
        tuner.tune(trials=n, on_record=on_record)
        trials = n
    except _Reached:
        trials = seen["trials"]
    assert m.asked == seen["trials"]
    return {"trials": trials, "seconds": time.perf_counter() - t0}


def model_quality(task, idx, thr, objective: str, seed: int) -> dict:
    """The cost model trained on a seeded random half of the pool: pairwise accuracy on
    the other half, and configs of the space scored per second end to end."""
    from cgen.autotune.costmodel import make_model, pairwise_accuracy
    from cgen.autotune.features import TaskFeatures
    rng = np.random.default_rng(1000 + seed)
    perm = rng.permutation(len(idx))
    tr, te_ = np.sort(perm[: len(idx) // 2]), np.sort(perm[len(idx) // 2:])
    feats = TaskFeatures(task, "knob")
    model = make_model(objective, seed)
    t0 = time.perf_counter()
    order = np.argsort(idx[tr], kind="stable")           # the tuner's order: by config index
    model.fit(feats(idx[tr][order]), thr[tr][order])
    fit_s = time.perf_counter() - t0
    acc = pairwise_accuracy(model.predict(feats(idx[te_])), thr[te_])
    size = task.space().size
    probe = np.random.default_rng(seed).integers(size, size=RATE_CONFIGS)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        f = TaskFeatures(task, "knob")
        model.predict(f(probe))
        times.append(time.perf_counter() - t0)
    return {"accuracy": float(acc), "rate": RATE_CONFIGS / statistics.median(times),
            "fit_s": fit_s}


def run_case(args, case: dict, methods) -> list:
    """One JSON row per seed for a workload."""
    name, task, pool, records = case["name"], case["task"], case["pool"], case["records"]
    idx, thr = pool_throughputs(task, records, pool)
    n = len(idx)
    best = float(thr.max()) if n else 0.0
    base = {"suite": "tuner", "case": name, "unit": "trials", "peer": "random search",
            "workload": task.workload, "spec": task.name, "template": task.template.name,
            "target": task.target_name, "pool": n, "pool_wanted": len(pool),
            "pool_errors": int(np.sum(thr <= 0)), "space": task.space().size,
            "pool_best_gflops": best / 1e9, "pool_passes": case["passes"],
            "pass_agreement": case["agreement"], "threshold": THRESHOLD,
            "pool_at_threshold": int(np.sum(thr >= THRESHOLD * best)) if n else 0,
            "random_expected": (n + 1) / (int(np.sum(thr >= THRESHOLD * best)) + 1) if n else None,
            "batch_size": args.batch_size}
    if n < 2 or best <= 0:
        return [dict(base, ratio=None, rank_accuracy=None,
                     error=f"pool has {n} measured configs, {int(np.sum(thr > 0))} correct")]
    target = THRESHOLD * best
    recs = {int(i): records[int(i)] for i in idx}
    pre = None
    if "pre" in methods:
        from cgen.autotune.pretrained import choose, load_pretrained
        pre = load_pretrained(task, cost_unit="s")
        meta = choose(task, cost_unit="s")
        base["pretrained"] = (None if meta is None else
                              {"template": meta["template"], "cost_unit": meta["cost_unit"],
                               "workloads": len(meta.get("workloads", ())),
                               "file": Path(meta["path"]).name})
    rows = []
    for seed in range(args.seeds):
        row = dict(base, seed=seed, trials={}, replay_s={})
        for method in methods:
            r = replay(task, recs, method, seed, args.batch_size, target, pre)
            row["trials"][method] = r["trials"]
            row["replay_s"][method] = r["seconds"]
            common.progress(args, f"tuner: {name} seed {seed}: {method:6s} {r['trials']:5d} "
                                  f"trials to {THRESHOLD:.0%} ({r['seconds']:.1f} s)")
        rnd = row["trials"].get("random")
        row["random_trials"] = rnd
        row["model_trials"] = row["trials"].get("rank")
        row["reg_trials"] = row["trials"].get("reg")
        row["ratio"] = rnd / row["model_trials"] if rnd and row["model_trials"] else None
        row["ratio_reg"] = rnd / row["reg_trials"] if rnd and row["reg_trials"] else None
        row["pre_trials"] = row["trials"].get("pre")
        row["ratio_pre"] = rnd / row["pre_trials"] if rnd and row["pre_trials"] else None
        for objective in ("rank", "reg"):
            q = model_quality(task, idx, thr, objective, seed)
            row[f"{objective}_accuracy"] = q["accuracy"]
            row[f"{objective}_predict_rate"] = q["rate"]
            row[f"{objective}_fit_s"] = q["fit_s"]
        row["predict_rate"] = row["rank_predict_rate"]
        row["predict_configs"] = RATE_CONFIGS
        rows.append(row)
    return rows


# ---------------------------------------------------------------- run
def load_pools(args, cases) -> list:
    """For each case {name, task, pool, records: {index: pool record}, agreement, passes
    (the median number of records of a pool config)}, measuring what is missing first."""
    from cgen.autotune.task import parse_workload
    pool_dir = Path(args.pool_log) if args.pool_log else default_pool_dir()
    reuse = args.reuse_log if args.reuse_log is not None else list(DEFAULT_REUSE)
    out = []
    for name, spec in cases:
        task = parse_workload(spec, "host")
        pool = pool_indices(task, args.pool_size)
        recs = measure_pool(args, name, task, pool, pool_dir, reuse)
        out.append({"name": name, "task": task, "pool": pool,
                    "records": {i: pool_record(v) for i, v in recs.items() if v},
                    "agreement": pass_agreement(task, recs),
                    "passes": statistics.median(len(v) for v in recs.values())})
    return out


def run(args) -> int:
    if args.pool_size < 2:
        raise SystemExit("--pool-size must be >= 2")
    if args.pool_passes < 1 or args.seeds < 1 or args.batch_size < 1:
        raise SystemExit("--pool-passes, --seeds and --batch-size must be >= 1")
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - set(METHODS):
        raise SystemExit(f"--methods: one or more of {', '.join(METHODS)}")
    cases = select_workloads(args.workloads)
    with common.threads(1):
        pools = load_pools(args, cases)
    if args.measure_only:
        return 0
    rows = []
    for case in pools:
        rows += run_case(args, case, methods)
    if args.json:
        common.print_json_lines(rows)
        return 0
    print_table(args, rows)
    return 0


def _median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _ratio(num, den):
    return num / den if num and den else None


def print_table(args, rows) -> None:
    names = list(dict.fromkeys(r["case"] for r in rows))
    trials, models, notes = [], [], []
    for c in names:
        rs = [r for r in rows if r["case"] == c]
        r0 = rs[0]
        if "error" in r0:
            notes.append(f"{c}: {r0['error']}")
            continue
        med = {m: _median(r["trials"].get(m) for r in rs) for m in METHODS}
        ratio = _ratio(med["random"], med["rank"])
        acc = _median(r["rank_accuracy"] for r in rs)
        note = []
        if ratio is not None:
            note.append("ok" if ratio >= GOAL_RATIO else f"< {GOAL_RATIO:g}x")
        if r0["random_expected"] < GOAL_RATIO:
            note.append("flat pool: even a perfect model cannot be 3x faster")
        trials.append((c, r0["pool"], r0["pool_at_threshold"], r0["pool_best_gflops"],
                       r0["random_expected"], med["random"], med["rank"], med["reg"], med["pre"],
                       ratio, _median(r["ratio"] for r in rs), _ratio(med["random"], med["reg"]),
                       _ratio(med["random"], med["pre"]), ", ".join(note)))
        models.append((c, acc, _median(r["reg_accuracy"] for r in rs), r0["pass_agreement"],
                       _median(r["rank_fit_s"] for r in rs), _median(r["reg_fit_s"] for r in rs),
                       _median(r["predict_rate"] for r in rs) / 1e6,
                       "ok" if acc is not None and acc >= GOAL_ACCURACY
                       else f"< {GOAL_ACCURACY:g}"))
        if r0["pool"] < r0["pool_wanted"]:
            notes.append(f"{c}: only {r0['pool']} of the pool's {r0['pool_wanted']} configs "
                         "are measured")
    print(f"tuner: trials to reach {THRESHOLD:.0%} of the pool's best throughput, replayed on "
          f"measured pools, median over {args.seeds} seeds; ratio = random's median / the "
          f"model tuner's (rank) median, goal >= {GOAL_RATIO:g}")
    print(common.format_table(
        ["case", "pool", ">=95%", "best GFLOP/s", "E[random]", "random", "rank", "reg", "pre",
         "ratio", "ratio/seed", "ratio reg", "ratio pre", "note"], trials))
    print()
    print(f"cost model: pairwise ranking accuracy on a held-out half of the pool (trained on "
          f"the other half; goal >= {GOAL_ACCURACY:g}), fit seconds, prediction rate")
    print(common.format_table(
        ["case", "acc rank", "acc reg", "agree", "fit s rank", "fit s reg", "Mcfg/s", "note"],
        models))
    print()
    print(f"rank, reg: the model-based tuner (cgen.autotune.tuner.Tuner) with that objective, "
          f"batches of {args.batch_size}: random until it has 8 records (min_train; the same "
          "configs as random search's), then XGBoost on knob features, retrained after each "
          "batch, scores every unmeasured config of the pool; pre: rank with the shipped "
          "pre-trained model ranking those first batches instead (as `cgen tune` does; trained "
          "on other workloads of the template).  A method "
          "that never reaches the threshold counts as the pool size.  >=95%: pool configs at "
          "the threshold; E[random]: random search's expected trials, (pool + 1) / (>=95% + 1); "
          "ratio/seed: median of the per-seed ratios (the JSON rows' ratio).  agree: pairwise "
          "agreement of the fastest of a config's odd passes with the fastest of its even "
          "passes (the measurements' own consistency, a practical ceiling of acc).  Mcfg/s: "
          "millions of configs scored per second end to end, features included (10,000 random "
          "configs of the space, rank model)")
    passes = ", ".join(f"{r['case']} {r['pool_passes']:g}"
                       for r in {r["case"]: r for r in rows if "error" not in r}.values())
    print(f"pools: the default, the quick configs, then a seeded permutation of the space; "
          f"measured in passes (here: {passes}; --pool-passes {args.pool_passes} asked) of "
          f"{args.pool_repeats} repeats >= {args.pool_min_repeat_ms:g} ms on one thread, a "
          f"config's fastest correct pass counts; logs in "
          f"{Path(args.pool_log) if args.pool_log else default_pool_dir()}")
    for n in notes:
        print(n)
