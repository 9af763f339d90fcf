"""Search over a config space: parallel simulated annealing on a model's scores,
and the batch picked from what it found.

    sa = Annealer(space, features, rng, chains=128, steps=100)
    best = sa.run(score, exclude=measured, keep=256)      # [(score, index)], best first
    batch = pick_batch(best, space, n=16, rng, measured, epsilon=0.05)

Chains persist across rounds (a new round starts where the last one ended,
restarted from the best found when a chain fell behind); each step moves every
chain one knob, scored in one vectorised call; temperature falls linearly to 0.
Scores are scaled by their spread so the temperature means the same for any
model.  Everything random comes from the one Generator the caller passes.
"""
from __future__ import annotations

import heapq

import numpy as np


class Annealer:
    def __init__(self, space, rng: np.random.Generator, chains: int = 128, steps: int = 100,
                 t0: float = 1.0):
        self.space, self.rng = space, rng
        self.chains, self.steps, self.t0 = chains, steps, t0
        self.radix = np.array([len(k.choices) for k in space.knobs], dtype=np.int64)
        self.mult = np.concatenate([[1], np.cumprod(self.radix)[:-1]]).astype(np.int64)
        self.movable = np.flatnonzero(self.radix > 1)
        self.state = None           # digits of each chain [chains, knobs]

    def indices(self, digits) -> np.ndarray:
        return digits @ self.mult

    def _random_digits(self, n: int) -> np.ndarray:
        return (self.rng.random((n, len(self.radix))) * self.radix).astype(np.int64)

    def _mutate(self, digits) -> np.ndarray:
        out = digits.copy()
        if not self.movable.size:
            return out
        n = len(out)
        knob = self.movable[self.rng.integers(self.movable.size, size=n)]
        r = self.radix[knob]
        step = 1 + (self.rng.random(n) * (r - 1)).astype(np.int64)
        out[np.arange(n), knob] = (out[np.arange(n), knob] + step) % r
        return out

    def run(self, score, exclude=frozenset(), keep: int = 256) -> list:
        """[(score, index)] of the best `keep` distinct configs seen, not in `exclude`,
        best first.  score: int64 indices -> float scores."""
        if self.state is None:
            self.state = self._random_digits(min(self.chains, max(1, self.space.size)))
        cur = self.state
        cur_s = score(self.indices(cur))
        seen: dict = {}

        def note(idx, s):
            for i, v in zip(idx.tolist(), s.tolist()):
                if i not in exclude and (i not in seen or v > seen[i]):
                    seen[i] = v

        note(self.indices(cur), cur_s)
        for step in range(self.steps):
            t = self.t0 * (1.0 - step / self.steps)
            new = self._mutate(cur)
            new_idx = self.indices(new)
            new_s = score(new_idx)
            note(new_idx, new_s)
            spread = float(np.std(cur_s)) or 1.0
            gain = (new_s - cur_s) / spread
            with np.errstate(over="ignore"):
                p = np.exp(np.minimum(gain, 0.0) / max(t, 1e-9))
            accept = (gain > 0) | (self.rng.random(len(cur)) < p)
            cur = np.where(accept[:, None], new, cur)
            cur_s = np.where(accept, new_s, cur_s)
        # chains in the worst quarter restart from the best configs of this round
        if len(cur) >= 4 and seen:
            worst = np.argsort(cur_s, kind="stable")[: len(cur) // 4]
            top = heapq.nlargest(len(worst), seen.items(), key=lambda kv: (kv[1], -kv[0]))
            for w, (i, _) in zip(worst, top):
                cur[w] = self.space.digits(i)
        self.state = cur
        best = heapq.nlargest(keep, seen.items(), key=lambda kv: (kv[1], -kv[0]))
        return [(v, i) for i, v in best]


def hamming(a, b) -> int:
    return sum(x != y for x, y in zip(a, b))


def pick_batch(ranked, space, n: int, rng: np.random.Generator, measured=frozenset(),
               epsilon: float = 0.05, min_distance: int = 2, pool=None) -> list:
    """n config indices: the best ranked ones, spread out (each at least `min_distance`
    knobs from those already picked, while that leaves enough), and about epsilon * n
    random unmeasured picks (from `pool` when the search is restricted to it)."""
    n_random = int(round(epsilon * n)) if n > 1 else 0
    n_model = n - n_random
    out, digits = [], []
    order = [i for _, i in ranked if i not in measured]
    for dist in (min_distance, 0):
        for i in order:
            if len(out) >= n_model:
                break
            if i in out:
                continue
            d = space.digits(i)
            if dist and any(hamming(d, e) < dist for e in digits):
                continue
            out.append(i)
            digits.append(d)
    taken = set(out) | set(measured)
    out += random_unmeasured(space, rng, n - len(out), taken, pool)
    return out


def random_unmeasured(space, rng: np.random.Generator, n: int, taken, pool=None) -> list:
    """n distinct random configs not in `taken` (fewer when the space runs out)."""
    if n <= 0:
        return []
    cand = sorted(pool) if pool is not None else None
    size = len(cand) if cand is not None else space.size
    left = size - sum(1 for t in taken if (cand is None or t in pool))
    n = min(n, max(0, left))
    out, tries = [], 0
    while len(out) < n and tries < 50 * n + 1000:
        tries += 1
        k = int(rng.integers(size))
        i = cand[k] if cand is not None else k
        if i not in taken and i not in out:
            out.append(i)
    if len(out) < n:        # nearly exhausted: take the rest in order
        for k in range(size):
            i = cand[k] if cand is not None else k
            if i not in taken and i not in out:
                out.append(i)
                if len(out) == n:
                    break
    return out


def grid_order(space, pool=None) -> list:
    """Every config in index order (the grid-search baseline)."""
    return sorted(pool) if pool is not None else list(range(space.size))
