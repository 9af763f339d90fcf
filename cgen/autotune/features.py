"""Feature vectors of candidates for the cost model.

Two kinds, both of fixed length for every config of a task:

  "knob"     derived from the knob values alone, vectorised over many configs at
             once (a table lookup per knob on the config's mixed-radix digits):
             log2(1 + value) for numeric knobs, a one-hot for the others, then
             log2(1 + v) of the workload's numbers (constant within a task: they
             let records of other shapes of the same template teach the model).
             Scoring 10,000 configs costs a few milliseconds, so simulated
             annealing can explore freely.
  "itervar"  the knob features followed by the loop-IR features of
             cgen.autotune.itervar (per loop and per buffer, AutoTVM style),
             computed by lowering each config (~20 ms) and cached by config
             index; the annealer is sized down to fit when it is used.

`names` give the layout: two tasks' features are comparable (for transfer)
exactly when their names are equal.
"""
from __future__ import annotations

import math

import numpy as np

KINDS = ("knob", "itervar")


def _numeric(v) -> bool:
    return isinstance(v, (int, float, bool)) and not (isinstance(v, float) and math.isnan(v))


def _log(v) -> float:
    return math.copysign(math.log2(1.0 + abs(float(v))), float(v))


def workload_numbers(wl: dict, prefix: str = "wl") -> list:
    """(name, value) of every number in a workload, in key order (lists flattened)."""
    out = []
    for k in sorted(wl):
        v = wl[k]
        if isinstance(v, bool) or not isinstance(v, (int, float, list, tuple)):
            continue
        if isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                if _numeric(x):
                    out.append((f"{prefix}.{k}[{i}]", _log(x)))
        else:
            out.append((f"{prefix}.{k}", _log(v)))
    return out


class KnobFeatures:
    """Knob features of one task's space: `features(indices) -> float32 [n, width]`."""

    def __init__(self, space, workload: dict | None = None):
        self.space = space
        self.radix = np.array([len(k.choices) for k in space.knobs], dtype=np.int64)
        self.tables, names = [], []
        for k in space.knobs:
            if all(_numeric(c) for c in k.choices):
                self.tables.append(np.array([[_log(c)] for c in k.choices], np.float32))
                names.append(f"knob.{k.name}")
            else:
                self.tables.append(np.eye(len(k.choices), dtype=np.float32))
                names += [f"knob.{k.name}={c}" for c in k.choices]
        wn = workload_numbers(workload or {})
        self.constant = np.array([v for _, v in wn], np.float32)
        self.names = tuple(names + [n for n, _ in wn])

    @property
    def width(self) -> int:
        return len(self.names)

    def digits(self, indices) -> np.ndarray:
        rest = np.asarray(indices, dtype=np.int64).copy()
        out = np.empty((rest.size, len(self.radix)), dtype=np.int64)
        for j, r in enumerate(self.radix):
            out[:, j] = rest % r
            rest //= r
        return out

    def __call__(self, indices) -> np.ndarray:
        d = self.digits(indices)
        cols = [t[d[:, j]] for j, t in enumerate(self.tables)]
        if self.constant.size:
            cols.append(np.broadcast_to(self.constant, (d.shape[0], self.constant.size)))
        if not cols:
            return np.zeros((d.shape[0], 0), np.float32)
        return np.concatenate(cols, axis=1).astype(np.float32, copy=False)


class TaskFeatures:
    """The feature function the tuner uses for one task, with a cache for the costly kind."""

    def __init__(self, task, kind: str = "knob"):
        if kind not in KINDS:
            raise ValueError(f"unknown feature kind {kind!r}; one of {KINDS}")
        self.task, self.kind = task, kind
        self.knobs = KnobFeatures(task.space(), task.workload)
        self._cache: dict = {}
        self._ir_names = None

    @property
    def names(self) -> tuple:
        if self.kind == "knob":
            return self.knobs.names
        from .itervar import feature_names
        if self._ir_names is None:
            self._ir_names = tuple(f"ir.{n}" for n in feature_names())
        return self.knobs.names + self._ir_names

    @property
    def cheap(self) -> bool:
        return self.kind == "knob"

    def __call__(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        x = self.knobs(idx)
        if self.kind == "knob":
            return x
        return np.concatenate([x, np.stack([self._ir(int(i)) for i in idx])
                               if idx.size else np.zeros((0, len(self.names) - x.shape[1]))],
                              axis=1).astype(np.float32)

    def _ir(self, index: int) -> np.ndarray:
        if index not in self._cache:
            from .itervar import candidate_features
            t = self.task
            self._cache[index] = candidate_features(t.template, t.workload, t.target,
                                                    t.space().get(index))
        return self._cache[index]
