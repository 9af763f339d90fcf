"""Train the pre-trained cost models shipped in cgen/autotune/pretrained_models/.

A new task has no records of its own, so the tuner's first batch would be
random; a model trained on records of *other* workloads of the same template
ranks that first batch instead (cgen.autotune.pretrained.load_pretrained).

How the shipped models were made (2026-11, xgboost 3.2, one background process
with two build/run threads on the 2-core development machine, other jobs running):

    python -m cgen.autotune.pretrain --measure --log pretrain-log.jsonl

8,648 records of 35 workloads per mode in 85 minutes of measuring (the
workload list grew once and the log resumed): about 50 min for 4,200 icount
records (152 failed: dense on aarch64, a tensorize mismatch) and 30 min
for 4,448 host records; training alone (no --measure, from the log) takes
~15 s and gives byte-identical boosters on every run.  Per model,
the held-out figures are in its .json ("holdout"); 11 of the 12 models ship
(dense in icount ticks does not: its spaces are nearly flat except where NC
does not divide N, which knob features cannot see).  The conv2d_winograd icount model was
retrained on 2026-12-06 (`--measure --modes icount --families conv2d_winograd`, 640
records in 18 min) after the bare-metal harness began copying by 64-byte blocks and
local buffers lost their zero fill, which changed every icount cost.

1. Records.  For every workload of TRAINING (a handful of small and medium
   shapes per template family: gemm, dense, depthwise_conv2d, and the conv2d
   families the compiler picks: conv2d_winograd for 3x3 stride-1 convs with
   enough channels and tiles, conv2d_nchwc for the other 3x3 convs, conv2d_1x1
   for 1x1 convs) and each measuring mode of MODES:
     - "host": the development machine (AMD EPYC Zen 4, AVX-512, 2 shared
       cores), host timings in seconds (cgen.autotune.measure.Measurer);
     - "icount": AArch64 code on bare-metal qemu-system-aarch64 -icount,
       deterministic costs in icount ticks (cgen.autotune.icount_measure).
   a seeded random sample of `--configs` configs (default 128; the whole
   space when it is smaller) is measured with --measure.  Records already in
   --log or in the logs given with --records count toward the sample and are
   never measured again (a killed run resumes).  Host timings are noisy (other
   jobs share the two cores): the sample is wide rather than repeated.
2. Data set.  Records are grouped by (template, cost unit); each workload is
   one group (a task), its knob features (cgen.autotune.features, kind "knob":
   knob values plus the workload's numbers) aligned by column name onto the
   union of the template's feature names, labels = FLOPs per mean cost (the
   tuner's own label, cgen.autotune.tuner.throughput; on this busy machine
   the mean also ranked held-out workloads better than the fastest repeat
   did), normalised per task by cost_model.normalise.  Failed candidates are
   left out (and counted in the metadata): every config of a space is legal by
   construction, so a failure is a bug of one shape (e.g. a tensorize
   mismatch), not a performance trait that transfers to other shapes; the
   tuner still learns a task's own failures as the worst.  At most
   --max-per-task records per task (seeded subsample).  The HELD_OUT
   workloads are never trained on: tests check the models on them.
3. Model.  One XGBModel("rank") (rank:pairwise, "mean" pairs, 8 per sample)
   per (template, cost unit), small (--rounds, --depth) so that the shipped
   files stay a few tens of KB each.  Its held-out accuracy is measured
   leave-one-workload-out: for each workload, a model trained on the others
   ranks that workload's records (pairwise accuracy, and the best of its top 8
   as a share of the workload's best), which is what a new task sees.  A
   model ships only when it helps there: its top 8 beat 8 random configs on
   average (top8_share > random8_share) and its pairwise accuracy is above
   0.5; otherwise only its metadata is written ("shipped": false) and
   load_pretrained finds nothing for that template and unit (the tuner's
   first batch is then random, as without a model).
4. Files (--out, default the package's pretrained_models/): for each model
   `TEMPLATE.UNIT.ubj.gz` (the booster in XGBoost's binary JSON, gzipped) and
   `TEMPLATE.UNIT.json` (feature names, targets, workloads with record counts,
   the held-out accuracies, training parameters, xgboost version).

Without --measure the script only trains, from --log and --records.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from .costmodel import XGBModel, normalise, pairwise_accuracy
from .features import TaskFeatures
from .log import LogWriter, canonical, read_log
from .pretrained import BOOSTER_SUFFIX, MODEL_DIR

# measuring mode -> (target, cost unit)
MODES = {"host": ("host", "s"), "icount": ("aarch64", "icount_ticks")}

# template family -> command-line workloads (cgen.autotune.task), small and medium
TRAINING = {
    "gemm": ["gemm:64,64,64", "gemm:96,80,72", "gemm:128,128,128", "gemm:256,128,192",
             "gemm:48,96,128", "gemm:192,192,64"],
    "dense": ["dense:1,256,512", "dense:1,512,1024", "dense:8,128,256", "dense:16,256,256",
              "dense:1,128,256", "dense:4,256,512", "dense:2,384,768", "dense:32,128,128"],
    "depthwise_conv2d": ["depthwise:1,32,28,28,3,3,1,1", "depthwise:1,64,14,14,3,3,1,1",
                         "depthwise:1,16,56,56,3,3,1,1", "depthwise:1,32,28,28,3,3,2,1",
                         "depthwise:1,24,40,40,3,3,1,1", "depthwise:1,96,14,14,3,3,2,1"],
    "conv2d_winograd": ["conv2d:1,32,28,28,32,3,3,1,1", "conv2d:1,64,14,14,64,3,3,1,1",
                        "conv2d:1,16,32,32,32,3,3,1,1", "conv2d:1,32,20,20,32,3,3,1,1",
                        "conv2d:1,48,16,16,64,3,3,1,1"],
    "conv2d_nchwc": ["conv2d:1,32,16,16,32,3,3,2,1", "conv2d:1,8,32,32,16,3,3,1,1",
                     "conv2d:1,64,7,7,64,3,3,1,1", "conv2d:1,16,20,20,32,3,3,2,1",
                     "conv2d:1,128,7,7,64,3,3,1,1"],
    "conv2d_1x1": ["conv2d:1,32,28,28,64,1,1,1,0", "conv2d:1,64,14,14,128,1,1,1,0",
                   "conv2d:1,128,7,7,256,1,1,1,0", "conv2d:1,16,32,32,32,1,1,1,0",
                   "conv2d:1,96,14,14,64,1,1,1,0"],
}

# never trained on: the tests' unseen workloads, one per family
HELD_OUT = {
    "gemm": "gemm:160,96,112",
    "dense": "dense:4,192,160",
    "depthwise_conv2d": "depthwise:1,48,20,20,3,3,1,1",
    "conv2d_winograd": "conv2d:1,24,24,24,48,3,3,1,1",
    "conv2d_nchwc": "conv2d:1,16,24,24,24,3,3,2,1",
    "conv2d_1x1": "conv2d:1,48,16,16,96,1,1,1,0",
}

DEFAULTS = dict(configs=128, seed=0, rounds=60, depth=4, max_per_task=600)


def held_out_keys(targets=("host", "aarch64")) -> set:
    """Canonical workloads of HELD_OUT (per target: a family's workload may depend on it)."""
    from .task import parse_workload
    return {parse_workload(spec, t).key for spec in HELD_OUT.values() for t in targets}


def sample(task, n: int, seed: int) -> list:
    """The seeded random sample of a task's config indices (the whole space when small)."""
    size = task.space().size
    rng = np.random.default_rng([seed, zlib.crc32(f"{task.key}@{task.target_name}".encode())])
    if size <= n:
        return list(range(size))
    return [int(i) for i in rng.choice(size, n, replace=False)]


def _index(space, record):
    try:
        return space.index_of(record.config.get("knobs", record.config))
    except (KeyError, ValueError, AttributeError):
        return None


def measure(records: list, log, modes, configs: int, seed: int, families=None,
            batch: int = 16, out=sys.stderr) -> int:
    """Measure the missing part of each TRAINING workload's sample; new records are
    appended to `log` and to `records`.  The number of records measured."""
    from .task import parse_workload
    done = 0
    writer = LogWriter(log)
    try:
        for mode in modes:
            target, unit = MODES[mode]
            measurer = _measurer(mode, seed)
            try:
                for family, specs in TRAINING.items():
                    if families and family not in families:
                        continue
                    for spec in specs:
                        task = parse_workload(spec, target)
                        space = task.space()
                        have = {_index(space, r) for r in records
                                if task.matches(r) and r.cost_unit == unit}
                        have.discard(None)
                        want = max(0, min(configs, space.size) - len(have))
                        todo = [i for i in sample(task, configs, seed) if i not in have][:want]
                        t0 = time.time()
                        for lo in range(0, len(todo), batch):
                            cfgs = [space.get(i) for i in todo[lo:lo + batch]]
                            for rec in measurer.measure(task, cfgs):
                                writer.write(rec)
                                records.append(rec)
                                done += 1
                        if todo:
                            print(f"[{mode}] {spec} ({task.template.name}): {len(todo)} measured in "
                                  f"{time.time() - t0:.0f} s, {len(have)} reused", file=out, flush=True)
            finally:
                measurer.close()
    finally:
        writer.close()
    return done


def _measurer(mode: str, seed: int):
    if mode == "icount":
        from .icount_measure import IcountMeasurer
        return IcountMeasurer(workers=2, seed=seed)
    from .measure import Measurer
    return Measurer(build_workers=2, repeat=3, min_repeat_ms=10.0, seed=seed)


def label(record, flops: int) -> float:
    """FLOPs per mean cost, as the tuner labels its records; 0 when failed."""
    from .tuner import throughput
    return throughput(record, flops)


def datasets(records, max_per_task: int, seed: int, exclude=frozenset()) -> dict:
    """(template, cost unit) -> [(task, TaskFeatures, indices, labels, failed)], tasks
    sorted by key: the successful records (labels > 0) and the number of failed ones.

    A failed record counts in its own cost unit's set (the IcountMeasurer marks
    its failures "icount_ticks")."""
    from .task import task_of_record
    by: dict = {}
    for r in records:
        op = r.workload.get("op")
        if op is None:
            continue
        key = canonical(r.workload)
        if key in exclude:
            continue
        by.setdefault((op, r.cost_unit), {}).setdefault((key, r.target), []).append(r)
    out: dict = {}
    for (op, unit), tasks in sorted(by.items()):
        rows = []
        for (key, target) in sorted(tasks):
            recs = tasks[(key, target)]
            task = task_of_record(recs[0])
            if task is None:
                continue
            space, flops = task.space(), task.flops()
            lab: dict = {}
            for r in recs:
                i = _index(space, r)
                if i is not None:       # the latest record of a config wins
                    lab[i] = label(r, flops)
            failed = sum(1 for v in lab.values() if v <= 0)
            idx = np.array(sorted(i for i, v in lab.items() if v > 0), dtype=np.int64)
            if idx.size > max_per_task:
                rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
                idx = np.sort(rng.choice(idx, max_per_task, replace=False))
            y = np.array([lab[int(i)] for i in idx])
            if idx.size >= 2:
                rows.append((task, TaskFeatures(task, "knob"), idx, y, failed))
        if rows:
            out[(op, unit)] = rows
    return out


def union_names(rows) -> tuple:
    names, seen = [], set()
    for _, feats, _, _, _ in rows:
        for n in feats.names:
            if n not in seen:
                seen.add(n)
                names.append(n)
    return tuple(names)


def stack(rows, names):
    """(X aligned on names, labels, group ids) of a list of task rows."""
    from .tuner import align
    X, y, g = [], [], []
    for k, (_, feats, idx, lab, _) in enumerate(rows):
        X.append(align(feats(idx), feats.names, names))
        y.append(lab)
        g.append(np.full(idx.size, k, np.int64))
    return np.concatenate(X), np.concatenate(y), np.concatenate(g)


def make_model(rounds: int, depth: int, seed: int) -> XGBModel:
    return XGBModel("rank", seed=seed, rounds=rounds, max_depth=depth, early_stopping=15)


def top_k_share(scores, labels, k: int = 8) -> float:
    """The best label among the k best scored, as a share of the best label."""
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    best = float(np.max(labels))
    return float(np.max(np.asarray(labels)[top]) / best) if best > 0 else float("nan")


def evaluate(rows, names, rounds: int, depth: int, seed: int) -> list:
    """Leave-one-workload-out: per workload, a model trained on the others ranks it."""
    out = []
    if len(rows) < 2:
        return out
    for k, (task, feats, idx, lab, _) in enumerate(rows):
        rest = rows[:k] + rows[k + 1:]
        X, y, g = stack(rest, names)
        m = make_model(rounds, depth, seed).fit(X, y, g)
        from .tuner import align
        s = m.predict(align(feats(idx), feats.names, names))
        yn = normalise(lab, np.zeros(len(lab)))
        rng = np.random.default_rng(seed)
        rand = [top_k_share(rng.random(len(lab)), yn) for _ in range(200)]
        out.append({"workload": task.key, "pairwise_accuracy": round(pairwise_accuracy(s, yn), 4),
                    "top8_share": round(top_k_share(s, yn), 4),
                    "random8_share": round(float(np.mean(rand)), 4)})
    return out


def train(records, out_dir, rounds: int, depth: int, seed: int, max_per_task: int,
          log=sys.stderr, command: str = "") -> list:
    """Train and save every (template, cost unit) model; their metadata."""
    import xgboost
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metas = []
    for (op, unit), rows in datasets(records, max_per_task, seed, held_out_keys()).items():
        names = union_names(rows)
        X, y, g = stack(rows, names)
        t0 = time.time()
        held = evaluate(rows, names, rounds, depth, seed)
        model = make_model(rounds, depth, seed).fit(X, y, g)
        stem = f"{op}.{unit}"
        mean = (lambda key: round(float(np.mean([h[key] for h in held])), 4) if held else None)
        ship = bool(held) and (mean("top8_share") > mean("random8_share")
                               and mean("pairwise_accuracy") > 0.5)
        booster = out_dir / f"{stem}{BOOSTER_SUFFIX}"
        if ship:
            raw = bytes(model.booster.save_raw("ubj"))
            booster.write_bytes(gzip.compress(raw, 9, mtime=0))
        elif booster.exists():
            booster.unlink()        # an earlier run's model of this template and unit
        targets = sorted({r[0].target_name for r in rows})
        meta = {
            "template": op, "cost_unit": unit, "targets": targets, "shipped": ship,
            "arch": sorted({r[0].target.arch for r in rows}),
            "objective": "rank", "features": "knob", "feature_names": list(names),
            "rounds": model.best_rounds, "max_depth": depth, "seed": seed,
            "records": int(len(y)), "failed": int(sum(r[4] for r in rows)),
            "workloads": [{"workload": t.workload, "target": t.target_name, "records": int(i.size),
                           "failed": int(nf)} for t, _, i, _, nf in rows],
            "holdout": {"method": "leave one workload out",
                        "pairwise_accuracy": mean("pairwise_accuracy"),
                        "top8_share": mean("top8_share"), "random8_share": mean("random8_share"),
                        "per_workload": held},
            "validation_accuracy": (None if np.isnan(model.validation_accuracy)
                                    else round(float(model.validation_accuracy), 4)),
            "xgboost": xgboost.__version__, "created": time.strftime("%Y-%m-%d"),
            "command": command,
        }
        (out_dir / f"{stem}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        metas.append(meta)
        h = meta["holdout"]
        print(f"{stem}: {len(rows)} workloads, {len(y)} records (+{meta['failed']} failed, left out), "
              f"held-out pairwise {h['pairwise_accuracy']}, top-8 share {h['top8_share']} "
              f"(random {h['random8_share']}), {model.best_rounds} rounds, "
              + (f"{booster.stat().st_size / 1024:.0f} KB" if ship else "NOT SHIPPED (no better "
                 "than random on held-out workloads)") + f", {time.time() - t0:.1f} s",
              file=log, flush=True)
    return metas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cgen.autotune.pretrain",
                                 description="Train the shipped pre-trained cost models "
                                             "(see the module docstring).")
    ap.add_argument("--out", default=str(MODEL_DIR), help="directory of the model files "
                    "(default: the package's pretrained_models/)")
    ap.add_argument("--records", nargs="*", default=[], metavar="LOG",
                    help="existing tuning logs to train on (and not measure again)")
    ap.add_argument("--log", default="pretrain-log.jsonl",
                    help="log of the script's own measurements, read and appended "
                         "(default: %(default)s)")
    ap.add_argument("--measure", action="store_true",
                    help="measure the missing configs of every training workload first")
    ap.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["icount", "host"],
                    help="measuring modes for --measure (default: icount host)")
    ap.add_argument("--families", nargs="*", choices=sorted(TRAINING), default=None,
                    help="template families to measure (default: all)")
    ap.add_argument("--configs", type=int, default=DEFAULTS["configs"],
                    help="random configs per workload and mode (default: %(default)s)")
    ap.add_argument("--max-per-task", type=int, default=DEFAULTS["max_per_task"])
    ap.add_argument("--rounds", type=int, default=DEFAULTS["rounds"],
                    help="boosting rounds at most (default: %(default)s)")
    ap.add_argument("--depth", type=int, default=DEFAULTS["depth"])
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = ap.parse_args(argv)

    records = []
    for path in [args.log, *args.records]:
        recs = read_log(path)
        print(f"{path}: {len(recs)} records", file=sys.stderr)
        records += recs
    if args.measure:
        t0 = time.time()
        n = measure(records, args.log, args.modes, args.configs, args.seed, args.families)
        print(f"measured {n} records in {(time.time() - t0) / 60:.1f} min", file=sys.stderr)
    if not records:
        print("no records: give --records LOG or --measure", file=sys.stderr)
        return 2
    command = "python -m cgen.autotune.pretrain " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    metas = train(records, args.out, args.rounds, args.depth, args.seed, args.max_per_task,
                  command=command.strip())
    return 0 if metas else 1


if __name__ == "__main__":
    sys.exit(main())
