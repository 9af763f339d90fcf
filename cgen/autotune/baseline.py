"""Keeping a tuned config only when it beats the template's default beyond the noise.

Per-kernel timings on a shared machine are noisy: the fastest of many single
measurements is often a lucky one, so the log's plain fastest record can be a
config slower than the default.  After a task is tuned, its default config and
the few fastest other candidates are built once and measured again together,
interleaved (round r runs them in an order rotated by r, so drift and other
tenants' load fall on every config alike), `rounds` samples each.  The candidate
with the lowest median wins only when its median and its best sample are both at
least `margin` below the default's (a burst of load lifts a median or a single
sample; it seldom lifts both the same way); otherwise the default stays.  The
default is measured in every such comparison, also on a resumed run whose log
already holds it.

The verdict is one more log record: the chosen config, its interleaved costs,
and a `selection` field saying what was compared and why
(log.best_records prefers the last such record of a workload to its fastest one).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import statistics

from .log import LogWriter

TOP = 3             # candidates re-measured with the default
ROUNDS = 9          # interleaved samples of each
MARGIN = 0.04       # a candidate's median and best sample must be this fraction below the default's


@dataclass(frozen=True)
class Selection:
    record: object      # the chosen config's record (with .selection), or None
    chosen: str         # "tuned", "default" or "none" (nothing ran correctly)
    reason: str
    default_median: float | None = None
    best_median: float | None = None

    @property
    def speedup(self) -> float | None:
        """default median / chosen median (1.0 when the default is kept)."""
        if self.chosen == "default":
            return 1.0
        if self.default_median and self.best_median:
            return self.default_median / self.best_median
        return None


def top_candidates(records, space, default_index: int, n: int = TOP) -> list:
    """Config indices of the n fastest correct records other than the default."""
    best: dict = {}
    for r in records:
        if not r.ok or r.selection is not None:
            continue
        try:
            i = space.index_of(r.config.get("knobs", r.config))
        except (KeyError, ValueError, AttributeError, IndexError):
            continue
        if i != default_index and (i not in best or r.mean_cost < best[i]):
            best[i] = r.mean_cost
    return sorted(best, key=lambda i: (best[i], i))[:n]


def compare(measurer, task, configs, rounds: int) -> list:
    """One record per config with `rounds` interleaved samples (Measurer.interleaved); a
    measurer without it (a deterministic count, a test's fake) is asked round by round,
    in rotated order, and the costs of each config's records are joined."""
    inter = getattr(measurer, "interleaved", None)
    if inter is not None:
        return list(inter(task, configs, rounds))
    got = [None] * len(configs)
    costs = [[] for _ in configs]
    order = list(range(len(configs)))
    for r in range(rounds):
        rot = order[r % len(order):] + order[:r % len(order)]
        for i, rec in zip(rot, measurer.measure(task, [configs[i] for i in rot])):
            if got[i] is not None and not got[i].ok:
                continue
            got[i] = rec
            if rec.ok:
                costs[i].extend(rec.costs)
    return [replace(g, costs=tuple(c)) if g is not None and g.ok else g
            for g, c in zip(got, costs)]


def median(rec) -> float | None:
    return statistics.median(rec.costs) if rec is not None and rec.ok else None


def select(task, measurer, records, default_index: int, log=None, *, top: int = TOP,
           rounds: int = ROUNDS, margin: float = MARGIN) -> Selection:
    """Re-measure the default and the `top` fastest candidates of `records` (this task's
    records) together and choose (see the module notes); the verdict is appended to
    `log` (flushed and synced) when one is given."""
    space = task.space()
    idx = [default_index] + top_candidates(records, space, default_index, top)
    recs = compare(measurer, task, [space.get(i) for i in idx], max(1, rounds))
    meds = [median(r) for r in recs]
    d_med = meds[0]
    cand = [(m, i, r) for m, i, r in zip(meds[1:], idx[1:], recs[1:]) if m is not None]
    b_med, b_idx, b_rec = min(cand, key=lambda t: (t[0], t[1])) if cand else (None, None, None)
    if d_med is None and b_med is None:
        return Selection(None, "none", "neither the default nor a candidate ran correctly")
    if d_med is None:
        kind = recs[0].error.kind.value if recs[0] is not None and recs[0].error else "no timing"
        chosen, rec, why = "tuned", b_rec, f"the default failed ({kind})"
    elif b_med is None:
        chosen, rec, why = "default", recs[0], "no correct tuned candidate"
    elif b_med <= d_med * (1.0 - margin) and \
            min(b_rec.costs) <= min(recs[0].costs) * (1.0 - margin):
        chosen, rec, why = "tuned", b_rec, \
            f"median {d_med / b_med:.3f}x and best {min(recs[0].costs) / min(b_rec.costs):.3f}x " \
            f"the default's (needs {1 / (1 - margin):.3f}x)"
    else:
        chosen, rec, why = "default", recs[0], \
            f"best candidate #{b_idx} only {d_med / b_med:.3f}x the default's median and " \
            f"{min(recs[0].costs) / min(b_rec.costs):.3f}x its best (needs {1 / (1 - margin):.3f}x)"
    note = {"chosen": chosen, "reason": why, "default_index": default_index,
            "default_median": d_med, "rounds": rounds, "margin": margin,
            "compared": [[i, m] for i, m in zip(idx, meds)]}
    rec = replace(rec, selection=note)
    if log is not None:
        with LogWriter(log) as w:
            w.write(rec)
    return Selection(rec, chosen, why, d_med, b_med)
