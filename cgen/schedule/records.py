"""Schedule primitives as data: each record names its stage and axes.

A schedule is the ordered tuple of these records; replaying them on the same
tensors gives the same loop IR, and they round-trip through JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict, fields
import json


@dataclass(frozen=True)
class Split:
    stage: str
    axis: str
    factor: int | None = None
    nparts: int | None = None


@dataclass(frozen=True)
class Reorder:
    stage: str
    axes: tuple


@dataclass(frozen=True)
class Fuse:
    stage: str
    outer: str
    inner: str


@dataclass(frozen=True)
class Annotate:
    """kind: unroll, vectorize or parallel."""
    stage: str
    axis: str
    kind: str


@dataclass(frozen=True)
class Pragma:
    stage: str
    axis: str
    text: str


@dataclass(frozen=True)
class ComputeAt:
    stage: str
    target: str
    axis: str


@dataclass(frozen=True)
class ComputeInline:
    stage: str


@dataclass(frozen=True)
class ComputeRoot:
    stage: str


@dataclass(frozen=True)
class CacheWrite:
    stage: str
    scope: str = "local"


@dataclass(frozen=True)
class CacheRead:
    """A copy of `tensor` read by `readers` instead of it (packing when computed at a loop)."""
    stage: str          # the tensor's name (a placeholder or a stage)
    scope: str
    readers: tuple


@dataclass(frozen=True)
class Tensorize:
    stage: str
    axis: str
    intrin: str


@dataclass(frozen=True)
class Prefetch:
    stage: str
    tensor: str
    axis: str
    distance: int


RECORD_TYPES = {cls.__name__.lower(): cls for cls in
                (Split, Reorder, Fuse, Annotate, Pragma, ComputeAt, ComputeInline,
                 ComputeRoot, CacheWrite, CacheRead, Tensorize, Prefetch)}


def record_to_json(r) -> dict:
    d = {"prim": type(r).__name__.lower()}
    d.update({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(r).items()})
    return d


def record_from_json(d: dict):
    d = dict(d)
    cls = RECORD_TYPES.get(d.pop("prim", None))
    if cls is None:
        raise ValueError(f"unknown schedule primitive in {d!r}")
    names = {f.name for f in fields(cls)}
    if set(d) - names:
        raise ValueError(f"unknown fields {sorted(set(d) - names)} for {cls.__name__}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def records_to_json(records) -> str:
    return json.dumps([record_to_json(r) for r in records], sort_keys=True)


def records_from_json(text: str) -> tuple:
    return tuple(record_from_json(d) for d in json.loads(text))
