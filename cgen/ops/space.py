"""Config spaces: knobs with finite choices, enumerable, mapped to and from integers.

Index <-> config is mixed radix over the knobs in declaration order, so an
index is stable as long as the space is; configs serialise as plain JSON.
"""
from __future__ import annotations

from dataclasses import dataclass
import json
import math

import numpy as np


@dataclass(frozen=True)
class Knob:
    name: str
    choices: tuple

    def __post_init__(self):
        if not self.choices:
            raise ValueError(f"knob {self.name} has no choices")
        json.dumps(list(self.choices))  # choices must be JSON values


@dataclass(frozen=True)
class Config:
    """One point of a space: its index and its knob values."""
    index: int
    values: tuple  # (name, value) pairs in knob order

    def __getitem__(self, name):
        for k, v in self.values:
            if k == name:
                return v
        raise KeyError(name)

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def to_dict(self) -> dict:
        return dict(self.values)

    def to_json(self) -> dict:
        return {"index": self.index, "knobs": dict(self.values)}


@dataclass(frozen=True)
class ConfigSpace:
    knobs: tuple

    @property
    def size(self) -> int:
        return math.prod(len(k.choices) for k in self.knobs)

    def __len__(self):
        return self.size

    def names(self) -> tuple:
        return tuple(k.name for k in self.knobs)

    def get(self, index: int) -> Config:
        if not 0 <= index < self.size:
            raise IndexError(f"config index {index} outside a space of {self.size}")
        vals, rest = [], int(index)
        for k in self.knobs:
            rest, d = divmod(rest, len(k.choices))
            vals.append((k.name, k.choices[d]))
        return Config(int(index), tuple(vals))

    def digits(self, index: int) -> list:
        out, rest = [], int(index)
        for k in self.knobs:
            rest, d = divmod(rest, len(k.choices))
            out.append(d)
        return out

    def from_digits(self, digits) -> int:
        idx, mul = 0, 1
        for k, d in zip(self.knobs, digits):
            idx += int(d) * mul
            mul *= len(k.choices)
        return idx

    def index_of(self, values: dict) -> int:
        digits = []
        for k in self.knobs:
            if k.name not in values:
                raise KeyError(f"config lacks knob {k.name}")
            try:
                digits.append(k.choices.index(values[k.name]))
            except ValueError:
                raise ValueError(f"knob {k.name}: {values[k.name]!r} is not one of {k.choices}") from None
        return self.from_digits(digits)

    def nearest(self, want: dict, larger_on_tie: bool = False) -> Config:
        """The config closest to `want`, knob by knob: the wanted value when it is a choice,
        else the nearest numeric choice (ties: the smaller, or the larger), else the first
        choice.  Templates use it to name a default that always lies in their space."""
        values = {}
        for k in self.knobs:
            v = want.get(k.name, k.choices[0])
            if v not in k.choices:
                nums = [x for x in k.choices if isinstance(x, (int, float)) and not isinstance(x, bool)]
                numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
                sign = -1 if larger_on_tie else 1
                v = min(nums, key=lambda x: (abs(x - v), sign * x)) if nums and numeric else k.choices[0]
            values[k.name] = v
        return self.get(self.index_of(values))

    def from_json(self, d: dict) -> Config:
        knobs = d.get("knobs", d)
        return self.get(self.index_of(knobs))

    def __iter__(self):
        for i in range(self.size):
            yield self.get(i)

    def sample(self, rng: np.random.Generator, n: int) -> list:
        """n distinct configs (all of them when the space is smaller)."""
        n = min(n, self.size)
        if self.size <= 4 * n:
            idx = rng.permutation(self.size)[:n]
        else:
            seen = set()
            while len(seen) < n:
                seen.add(int(rng.integers(self.size)))
            idx = sorted(seen)
        return [self.get(int(i)) for i in idx]

    def neighbour(self, index: int, rng: np.random.Generator) -> int:
        """Another config differing in one knob (for annealing)."""
        movable = [i for i, k in enumerate(self.knobs) if len(k.choices) > 1]
        if not movable:
            return index
        d = self.digits(index)
        i = movable[int(rng.integers(len(movable)))]
        n = len(self.knobs[i].choices)
        d[i] = (d[i] + 1 + int(rng.integers(n - 1))) % n
        return self.from_digits(d)


def divisors(n: int) -> list:
    return [d for d in range(1, n + 1) if n % d == 0]


def split_choices(extent: int, limit: int | None = None, near: bool = True) -> tuple:
    """Split factors for an extent: its divisors, plus powers of two (near-divisors:
    a tail is correct, just a guarded remainder), up to `limit`."""
    limit = extent if limit is None else min(limit, extent)
    out = set(d for d in divisors(extent) if d <= limit)
    if near:
        p = 1
        while p <= limit:
            out.add(p)
            p *= 2
    return tuple(sorted(out))
