"""The template protocol: an operator's compute plus a schedule built from one
config of its space.  Every config of a space is legal by construction.

A template is a plain object with:
  name                               short id, also the op of its workloads
  workload(**shape) -> dict          canonical workload (JSON: op, shapes, dtypes, attrs)
  space(wl, target) -> ConfigSpace
  build(wl, target, config) -> (schedule, args)
  default(wl, target) -> Config      a good config without tuning, from the space
  inputs(wl, rng) -> [ndarray]       one array per build argument (outputs zeroed)
  reference(wl, inputs) -> {name: ndarray}
  flops(wl) -> int
"""
from __future__ import annotations
