"""The template protocol: an operator's compute plus a schedule built from one
config of its space.  Every config of a space is legal by construction.

Templates are plain objects that satisfy `Template` structurally (no base class);
`registry.templates()` lists them.  The tuner (cgen.autotune) only consumes this
protocol and the config spaces of cgen.ops.space, so cgen.ops never imports it.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from .space import Config, ConfigSpace


@runtime_checkable
class Template(Protocol):
    name: str  # short id, also the op of its workloads

    def workload(self, *shape, **attrs) -> dict:
        """The canonical workload (JSON: op, shapes, dtypes, attrs), checked."""

    def space(self, wl: dict, target) -> ConfigSpace:
        """The knobs of this workload on this target."""

    def build(self, wl: dict, target, config) -> tuple:
        """(schedule, args) for one config (a Config or a knob dict)."""

    def default(self, wl: dict, target) -> Config:
        """A good config without tuning, always of the space."""

    def inputs(self, wl: dict, rng) -> list:
        """One array per build argument (outputs zeroed)."""

    def reference(self, wl: dict, inputs) -> dict:
        """{output name: ndarray} computed with numpy."""

    def flops(self, wl: dict) -> int:
        """Floating-point (or integer multiply-add) operations of one run."""
