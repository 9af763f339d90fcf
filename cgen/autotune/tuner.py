"""The tuning loop: propose a batch, build in parallel, measure on the device
pool, check each output, append to the log, retrain, repeat.

    task = parse_workload("gemm:512,512,512", "host")
    with Measurer() as m:                  # or Measurer(pool=DevicePool.from_urls([...]))
        result = Tuner(task, m, log="gemm.jsonl", seed=0).tune(trials=64)
    result.best                            # the fastest correct record

Resuming: the records of this task already in the log count as trials done;
their configs are never proposed again and the model is trained on them
(sorted by config index, so retraining is deterministic).  Records of other
tasks on the same target and template join the training set as groups of
their own (transfer: the ranking objective compares configs only within a
group).  Until the task has `min_train` records, a pretrained model (if
given) or the transfer data ranks the candidates; with neither, picks are
random.

Search "model" anneals on the cost model's scores (cgen.autotune.search);
"random" and "grid" are the baselines.  `candidates` restricts every method
to a fixed set of configs (the replay benchmark: a pool measured once), where
the model scores the whole set instead of annealing.

A candidate that fails (compile error, crash, hang, wrong answer) is a
record with its error kind and a throughput of 0: it trains the model as the
worst, and is never best.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .costmodel import make_model
from .features import TaskFeatures
from .log import LogWriter, read_log
from .search import Annealer, grid_order, pick_batch, random_unmeasured

SEARCHES = ("model", "random", "grid")


def throughput(record, flops: int) -> float:
    """FLOPs per cost unit of a record (0 for a failed one)."""
    if not record.ok or record.mean_cost <= 0:
        return 0.0
    return flops / record.mean_cost


@dataclass
class TuneResult:
    task: object
    records: list                       # this task's records, log order (resumed ones first)
    best: object | None                 # the fastest successful record
    history: list = field(default_factory=list)   # best throughput after each trial
    new: int = 0                        # records measured by this run

    @property
    def best_gflops(self) -> float:
        return self.history[-1] / 1e9 if self.history else 0.0

    @property
    def errors(self) -> int:
        return sum(1 for r in self.records if not r.ok)


def align(X: np.ndarray, names_from, names_to) -> np.ndarray:
    """Columns of X (named names_from) rearranged to names_to; missing columns are 0."""
    if tuple(names_from) == tuple(names_to):
        return X
    pos = {n: i for i, n in enumerate(names_from)}
    out = np.zeros((X.shape[0], len(names_to)), np.float32)
    for j, n in enumerate(names_to):
        if n in pos:
            out[:, j] = X[:, pos[n]]
    return out


class Tuner:
    def __init__(self, task, measurer, log=None, *, model="rank", features: str = "knob",
                 search: str = "model", seed: int = 0, batch_size: int = 8,
                 epsilon: float = 0.05, sa_chains: int = 128, sa_steps: int = 100,
                 candidates=None, transfer=(), pretrained=None, min_train: int = 8,
                 progress: bool = False):
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}; one of {SEARCHES}")
        self.task, self.measurer, self.log = task, measurer, log
        self.search, self.batch_size, self.epsilon = search, batch_size, epsilon
        self.rng = np.random.default_rng(seed)
        self.model = make_model(model, seed) if isinstance(model, str) else model
        self.space = task.space()
        self.features = TaskFeatures(task, features)
        if not self.features.cheap:       # each config costs a lowering: anneal less
            sa_chains, sa_steps = min(sa_chains, 16), min(sa_steps, 20)
        self.annealer = Annealer(self.space, self.rng, sa_chains, sa_steps)
        self.candidates = None if candidates is None else frozenset(int(i) for i in candidates)
        self.transfer = list(transfer)
        self.pretrained = pretrained        # (model, feature names) or None
        self.min_train, self.progress = min_train, progress
        self.flops = task.flops()
        self.cost_unit = getattr(measurer, "cost_unit", "s")
        self.records: list = []
        self.measured: dict = {}            # config index -> record
        self._grid = None
        self.fitted = False

    # ------------------------------------------------------------ state
    def _index(self, record) -> int | None:
        try:
            return self.space.index_of(record.config.get("knobs", record.config))
        except (KeyError, ValueError, AttributeError):
            return None

    def resume(self) -> int:
        """Load this task's records from the log; the number of trials already done."""
        if self.log is None:
            return 0
        for r in read_log(self.log):
            if self.task.matches(r) and r.cost_unit == self.cost_unit:
                i = self._index(r)
                if i is not None and i not in self.measured:
                    self._add(r, i)
        return len(self.records)

    def _add(self, record, index: int):
        self.records.append(record)
        self.measured[index] = record

    def best(self):
        ok = [r for r in self.records if r.ok]
        return min(ok, key=lambda r: r.mean_cost) if ok else None

    # ------------------------------------------------------------ model
    def training_set(self):
        """(X, y, groups): this task (group 0, sorted by config index), then transfer tasks."""
        idx = np.array(sorted(self.measured), dtype=np.int64)
        X = [self.features(idx)]
        y = [np.array([throughput(self.measured[i], self.flops) for i in idx])]
        g = [np.zeros(idx.size, np.int64)]
        for k, (feats, tidx, ty) in enumerate(self.transfer, start=1):
            X.append(align(feats.knobs(tidx) if feats.kind == "knob" else feats(tidx),
                           feats.names, self.features.names))
            y.append(np.asarray(ty, np.float64))
            g.append(np.full(len(tidx), k, np.int64))
        return np.concatenate(X), np.concatenate(y), np.concatenate(g)

    def retrain(self) -> bool:
        own_ok = sum(1 for r in self.records if r.ok)
        if self.search != "model" or (own_ok < self.min_train and not self.transfer):
            return False
        X, y, g = self.training_set()
        if len(np.unique(y)) < 2:
            return False
        self.model.fit(X, y, g)
        self.fitted = True
        return True

    def score(self, indices) -> np.ndarray:
        X = self.features(np.asarray(indices, dtype=np.int64))
        if self.fitted:
            return np.asarray(self.model.predict(X), np.float64)
        model, names = self.pretrained
        return np.asarray(model.predict(align(X, self.features.names, names)), np.float64)

    # ------------------------------------------------------------ proposals
    def propose(self, n: int) -> list:
        taken = set(self.measured)
        if self.search == "grid":
            if self._grid is None:
                self._grid = grid_order(self.space, self.candidates)
            return [i for i in self._grid if i not in taken][:n]
        if self.search == "random" or not (self.fitted or self.pretrained):
            return random_unmeasured(self.space, self.rng, n, taken, self.candidates)
        if self.candidates is not None:
            cand = np.array(sorted(self.candidates - taken), dtype=np.int64)
            s = self.score(cand) if cand.size else np.zeros(0)
            order = np.lexsort((cand, -s))
            ranked = [(float(s[k]), int(cand[k])) for k in order]
        else:
            ranked = self.annealer.run(self.score, exclude=taken, keep=max(64, 4 * n))
        return pick_batch(ranked, self.space, n, self.rng, taken, self.epsilon,
                          pool=self.candidates)

    # ------------------------------------------------------------ loop
    def tune(self, trials: int, early_stopping: int | None = None, plot=None,
             on_record=None) -> TuneResult:
        """Run until the task has `trials` records (resumed ones included)."""
        done0 = self.resume()
        history = []
        best = 0.0
        for r in self.records:
            best = max(best, throughput(r, self.flops))
            history.append(best)
        self.retrain()
        writer = LogWriter(self.log) if self.log is not None else None
        bar = _progress(self.progress, trials, len(self.records), self.task.describe())
        last_gain, new = len(self.records), 0
        try:
            while len(self.records) < trials:
                if early_stopping and len(self.records) - last_gain >= early_stopping:
                    break
                limit = self.space.size if self.candidates is None else len(self.candidates)
                n = min(self.batch_size, trials - len(self.records), limit - len(self.measured))
                if n <= 0:
                    break
                batch = self.propose(n)
                if not batch:
                    break
                configs = [self.space.get(i) for i in batch]
                for c, rec in zip(configs, self.measurer.measure(self.task, configs)):
                    if writer is not None:
                        writer.write(rec)
                    self._add(rec, c.index)
                    new += 1
                    t = throughput(rec, self.flops)
                    if t > best:
                        best, last_gain = t, len(self.records)
                    history.append(best)
                    if on_record is not None:
                        on_record(rec)
                    _advance(bar, best, self.records, self.task)
                self.retrain()
        finally:
            if writer is not None:
                writer.close()
            if bar is not None:
                bar.close()
        result = TuneResult(self.task, list(self.records), self.best(), history, new)
        if plot:
            plot_history(result, plot)
        return result


def _progress(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=min(initial, total), desc=desc[:40], unit="trial",
                dynamic_ncols=True)


def _advance(bar, best: float, records, task):
    if bar is None:
        return
    errors = sum(1 for r in records if not r.ok)
    unit = records[-1].cost_unit if records else "s"
    best_s = f"{best / 1e9:.1f} GFLOP/s" if unit == "s" else f"{best:.3g} flop/tick"
    bar.set_postfix_str(f"best {best_s}, errors {errors}")
    bar.update(1)


def plot_history(result: TuneResult, path) -> None:
    """Best-so-far throughput against trials, as an image (matplotlib, no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    unit = result.records[0].cost_unit if result.records else "s"
    ys = [h / 1e9 for h in result.history] if unit == "s" else result.history
    ax.plot(range(1, len(ys) + 1), ys, drawstyle="steps-post")
    ax.set_xlabel("trials")
    ax.set_ylabel("best GFLOP/s" if unit == "s" else "best FLOPs per tick")
    ax.set_title(result.task.describe()[:60], fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def transfer_set(records, task, kind: str = "knob", templates=None, max_per_task: int = 2000,
                 cost_unit: str = "s"):
    """[(TaskFeatures, indices, throughputs)] from records of OTHER tasks of the same
    template, target and cost unit as `task` (the warm start of a new task's model)."""
    from .log import canonical
    from .task import task_of_record
    groups: dict = {}
    for r in records:
        if r.target != task.target_name or r.workload.get("op") != task.workload.get("op") \
                or r.cost_unit != cost_unit:
            continue
        key = canonical(r.workload)
        if key == task.key:
            continue
        groups.setdefault(key, []).append(r)
    out = []
    for key in sorted(groups):
        recs = groups[key]
        t = task_of_record(recs[0], templates)
        if t is None:
            continue
        feats = TaskFeatures(t, kind)
        space = t.space()
        rows = {}
        for r in recs:
            try:
                i = space.index_of(r.config.get("knobs", r.config))
            except (KeyError, ValueError, AttributeError):
                continue
            rows[i] = throughput(r, t.flops())
        idx = np.array(sorted(rows)[:max_per_task], dtype=np.int64)
        if idx.size >= 2:
            out.append((feats, idx, np.array([rows[i] for i in idx])))
    return out
