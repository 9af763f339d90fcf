"""Cost models: score candidates so that faster configs score higher.

    model = XGBModel("rank", seed=0)      # or "reg" (the measured baseline), RandomModel(seed)
    model.fit(X, y, groups)               # y: throughput (0 for failed configs), groups: task ids
    scores = model.predict(X)

Labels are normalised per group (task) by its best throughput, so records of
other tasks can join the training set as groups of their own (transfer): the
ranking objective only compares configs within a group.

The ranking objective is `rank:pairwise` with `lambdarank_pair_method="mean"`
and 8 pairs per sample: xgboost's default top-k pairing ranks poorly across
all pairs, and its built-in ranking metrics refuse float labels, so early
stopping uses our own pairwise accuracy on a held-out fifth.
"""
from __future__ import annotations

import numpy as np

OBJECTIVES = ("rank", "reg")


def normalise(y, groups) -> np.ndarray:
    """Throughput divided by the best of its group (failed = 0)."""
    y = np.asarray(y, dtype=np.float64)
    out = np.zeros_like(y)
    g = np.asarray(groups)
    for k in np.unique(g):
        m = g == k
        top = y[m].max() if m.any() else 0.0
        out[m] = y[m] / top if top > 0 else 0.0
    return out


def pairwise_accuracy(scores, labels, groups=None, max_pairs: int = 200_000, seed: int = 0) -> float:
    """Fraction of pairs with different labels (within a group) that the scores order
    the same way; ties in the scores count half.  Sampled when there are many pairs."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.float64)
    g = np.zeros(len(y), np.int64) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    num, den = 0.0, 0
    for k in np.unique(g):
        idx = np.flatnonzero(g == k)
        n = idx.size
        if n < 2:
            continue
        if n * (n - 1) // 2 <= max_pairs:
            a, b = np.triu_indices(n, 1)
        else:
            a = rng.integers(n, size=max_pairs)
            b = rng.integers(n, size=max_pairs)
        a, b = idx[a], idx[b]
        keep = y[a] != y[b]
        a, b = a[keep], b[keep]
        if not a.size:
            continue
        agree = np.sign(s[a] - s[b]) * np.sign(y[a] - y[b])
        num += float(np.sum(agree > 0) + 0.5 * np.sum(agree == 0))
        den += a.size
    return num / den if den else float("nan")


def recall_at_k(scores, labels, k: int) -> float:
    """Share of the true top-k (by label) among the k best scored."""
    k = min(k, len(labels))
    if k <= 0:
        return float("nan")
    top_true = set(np.argsort(-np.asarray(labels), kind="stable")[:k].tolist())
    top_pred = set(np.argsort(-np.asarray(scores), kind="stable")[:k].tolist())
    return len(top_true & top_pred) / k


class RandomModel:
    """Scores at random (seeded): the baseline the tests use in place of a trained model."""
    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.trained = False

    def fit(self, X, y, groups=None):
        self.trained = True
        return self

    def predict(self, X) -> np.ndarray:
        return self.rng.random(len(X))


class XGBModel:
    """XGBoost on throughput labels, objective "rank" (pairwise) or "reg" (squared error)."""

    # eta 0.05 with up to 1000 rounds and a patience of 100 (was 0.2 / 300 / 30): on the
    # replay bench's measured pools (python -m bench tuner) held-out pairwise accuracy
    # rose by 0.01-0.015 (GEMM 512 0.840 -> 0.853, depthwise 0.921 -> 0.936, conv 3x3
    # 0.923 -> 0.938), trials to 95% unchanged within noise (100 seeds)
    def __init__(self, objective: str = "rank", seed: int = 0, rounds: int = 1000,
                 early_stopping: int = 100, max_depth: int = 4, eta: float = 0.05,
                 pairs_per_sample: int = 8, base=None):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; one of {OBJECTIVES}")
        self.objective, self.seed, self.rounds = objective, seed, rounds
        self.early_stopping, self.max_depth, self.eta = early_stopping, max_depth, eta
        self.pairs_per_sample = pairs_per_sample
        self.base = base            # a fitted model whose scores start this one's (transfer)
        self.booster = None
        self.best_rounds = 0
        self.validation_accuracy = float("nan")

    @property
    def name(self) -> str:
        return f"xgb-{self.objective}"

    @property
    def trained(self) -> bool:
        return self.booster is not None

    def params(self) -> dict:
        p = {"max_depth": self.max_depth, "eta": self.eta, "gamma": 1e-4, "min_child_weight": 1,
             "subsample": 0.9, "colsample_bytree": 0.9, "seed": self.seed, "nthread": 1,
             "disable_default_eval_metric": 1, "verbosity": 0, "tree_method": "hist"}
        if self.objective == "rank":
            p.update(objective="rank:pairwise", lambdarank_pair_method="mean",
                     lambdarank_num_pair_per_sample=self.pairs_per_sample)
        else:
            p.update(objective="reg:squarederror")
        return p

    def _dmatrix(self, X, y, groups):
        import xgboost as xgb
        X = np.asarray(X, np.float32)
        d = xgb.DMatrix(X, label=y)
        if self.objective == "rank":
            order_ok = np.all(np.diff(groups) >= 0)
            assert order_ok, "rows must be sorted by group"
            d.set_group(np.unique(groups, return_counts=True)[1])
        if self.base is not None and self.base.trained:
            d.set_base_margin(self.base.predict(X))
        return d

    def fit(self, X, y, groups=None):
        import xgboost as xgb
        X = np.asarray(X, np.float32)
        g = np.zeros(len(X), np.int64) if groups is None else np.asarray(groups, np.int64)
        order = np.argsort(g, kind="stable")
        X, g = X[order], g[order]
        lab = normalise(np.asarray(y, np.float64)[order], g)
        rounds = self.rounds
        if len(X) >= 40 and self.early_stopping:
            rng = np.random.default_rng(self.seed)
            hold = rng.random(len(X)) < 0.2
            tr, va = ~hold, hold
            dtr = self._dmatrix(X[tr], lab[tr], g[tr])
            dva = self._dmatrix(X[va], lab[va], g[va])
            gva = g[va]

            def metric(pred, dm):
                return "pair_err", 1.0 - pairwise_accuracy(pred, dm.get_label(), gva)

            res = {}
            b = xgb.train(self.params(), dtr, self.rounds, evals=[(dva, "valid")],
                          custom_metric=metric, early_stopping_rounds=self.early_stopping,
                          evals_result=res, verbose_eval=False)
            rounds = max(1, int(b.best_iteration) + 1)
            self.validation_accuracy = 1.0 - float(res["valid"]["pair_err"][rounds - 1])
        self.booster = xgb.train(self.params(), self._dmatrix(X, lab, g), rounds)
        self.best_rounds = rounds
        return self

    def predict(self, X) -> np.ndarray:
        X = np.asarray(X, np.float32)
        if self.booster is None:
            return np.zeros(len(X))
        margin = self.base.predict(X) if self.base is not None and self.base.trained else None
        if margin is None:
            return self.booster.inplace_predict(X)
        import xgboost as xgb
        d = xgb.DMatrix(X)
        d.set_base_margin(margin)
        return self.booster.predict(d)

    def save(self, path) -> None:
        self.booster.save_model(str(path))

    @classmethod
    def load(cls, path, objective: str = "rank") -> "XGBModel":
        import xgboost as xgb
        m = cls(objective)
        m.booster = xgb.Booster()
        m.booster.load_model(str(path))
        return m


def make_model(kind: str, seed: int = 0):
    """A fresh model by name: "rank", "reg" or "random"."""
    if kind == "random":
        return RandomModel(seed)
    return XGBModel(kind, seed=seed)
