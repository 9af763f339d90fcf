"""What the graph lowering makes and how it chooses: the kernel records (`Arg`,
`GroupKernel`, `Route`), the one place a group's config is chosen (`group_config`, where
a tuning log overrides a template's default), and the target kernels are built for.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import json
from typing import Callable, Mapping

from ..ops.common import config_dict
from .graph_ir import ModelError
from .fuse import Group

ALIAS_OPS = ("reshape", "identity")


# ====================================================================== records
@dataclass(frozen=True)
class Arg:
    """One kernel parameter: a graph value (activation, graph input or output) or a constant."""
    kind: str       # "value" | "const"
    name: str       # the value's or the constant's name


@dataclass
class GroupKernel:
    """The kernel of one fused group (an alias when `func` is None)."""
    group: Group
    name: str                   # C function name
    template: str               # template name, "te" (built-in computes) or "alias"
    workload: dict | None
    config: dict | None
    inputs: tuple               # Arg, in parameter order
    outputs: tuple              # value names written, after the inputs
    func: object = None         # PrimFunc for the target
    portable: object = None     # PrimFunc without intrinsics (None when func has none)
    consts: dict = field(default_factory=dict)   # constants this kernel made (packed weights)
    flops: int = 0
    note: str = ""              # why the built-in computes were used
    fallback: str = ""          # set when a template should have built this kernel and did
                                # not: the reason (the report marks it, strict refuses it)

    @property
    def is_alias(self) -> bool:
        return self.func is None

    def describe(self) -> str:
        return " -> ".join(n.op for n in self.group.nodes)


def workload_key(workload: Mapping) -> str:
    """Canonical JSON of a workload: the key a tuning log's best configs are looked up by."""
    return json.dumps(workload, sort_keys=True, separators=(",", ":"))


# knob values that leave a template without scratch buffers (the RAM objective): padding
# read in place rather than copied, activations read unpacked, no im2col block, exp
# recomputed rather than stored, int8 columns packed per tile, the GEMM accumulating
# one register tile of columns at a time into a block buffer (not the whole output)
RAM_KNOBS = {"pad_at": "inline", "pack_a": False, "im2col": False, "exp": "inline",
             "col_at": "tile", "NC": 1, "block": "goto"}


def group_config(group: Group, template, workload: dict, target, tuned=None,
                 objective: str = "latency") -> dict:
    """The config a group's kernel is built with -- the one place it is chosen.

    `tuned` overrides the template's default for the target: None, a mapping
    from `workload_key(workload)` (or "TEMPLATE_NAME KEY") to a config dict, or
    a callable (group, template, workload, target) -> config dict or None.  An
    override must be a point of the template's space for the target.
    """
    cfg = None
    if callable(tuned):
        cfg = tuned(group, template, workload, target)
    elif tuned:
        key = workload_key(workload)
        pick = getattr(tuned, "for_objective", None)    # a Pareto front (autotune.log)
        cfg = pick(key, objective) if pick else tuned.get(key, tuned.get(f"{template.name} {key}"))
    if cfg is not None:
        cfg = config_dict(cfg)
        try:
            space = template.space(workload, target)
            extra = set(cfg) - set(space.names())
            if extra:
                raise KeyError(f"knobs {sorted(extra)} are not in the space")
            space.index_of(cfg)
        except (KeyError, ValueError, IndexError) as e:
            raise ModelError(f"group {group.id}: tuned config {cfg} is not a point of "
                             f"{template.name}'s space: {e}") from None
        return cfg
    default = config_dict(template.default(workload, target))
    if objective == "ram":
        space = template.space(workload, target)
        # a number goes to the nearest choice (NC 1: the narrowest block); other values
        # only where they are a choice
        want = {k.name: RAM_KNOBS[k.name] for k in space.knobs if k.name in RAM_KNOBS and (
            RAM_KNOBS[k.name] in k.choices or type(RAM_KNOBS[k.name]) is int)}
        return config_dict(space.nearest({**default, **want}))
    return default


@dataclass
class Route:
    """How a group becomes a kernel: the template (or None), its workload, the kernel's
    inputs (Arg per template input tensor), the constants made for it, and
    build(target, config) -> (schedule, tensors: inputs then outputs)."""
    template: object
    workload: dict | None
    args: list
    build: Callable
    consts: dict = field(default_factory=dict)
    epilogue: tuple = ()               # nodes still to fuse after the template's output
    block_hint: Callable | None = None  # (config, build target) -> [(axis, factor)]
    portable_build: Callable | None = None   # build over the same args when the template
    flops: int = 0                           # cannot schedule the portable target


class _NoTemplate(Exception):
    """The group's op has no template: the built-in computes are its kernel."""


class _NotCovered(_NoTemplate):
    """The op has a template family, but it does not cover this group (batched matmul,
    weights computed at run time ...): the built-in computes are a fallback, reported."""


# ====================================================================== targets
def kernel_target(target):
    """The target kernels are scheduled for: no threads (one call, one core)."""
    from targets import resolve
    return replace(resolve(target), threads=False)


def portable_target(target):
    """The same target without its vector ISA (the portable fallback's schedules)."""
    return replace(kernel_target(target), isa="none", vector_bits=0)
