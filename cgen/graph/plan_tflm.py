"""The yardsticks a workspace is measured against: the per-operator lower bound, and the
plan TensorFlow Lite Micro's greedy planner would make.

    op_lower_bound(graph)    # bytes: the largest inputs + outputs of any single op
    tflm_plan(fused_graph)   # memory.Plan: TFLM's rule over the same kernels

`op_lower_bound`: over the nodes of the optimized graph (after constant folding,
BatchNorm and QDQ folding, before fusion), the largest sum of the distinct values one node
reads and writes, graph inputs and outputs (the caller's buffers) and constants excluded,
reshape / identity nodes (no data moved) skipped.  An op-by-op runtime cannot run that
node with less; fusion can go below it, scratch and lifetimes above it.

`tflm_plan` follows the rule of TFLM's GreedyMemoryPlanner: one buffer per tensor, living
from the step writing it to the last step reading it, in graph order (no reordering), no
in-place reuse, no patches; buffers sorted by size, largest first (ties: first created),
each placed at the lowest offset where it fits between the buffers already placed that
are live at the same time; sizes rounded up to TFLM's 16-byte alignment.  It runs over
cgen's fused groups (the kernels, in group order; a reshape shares its input's buffer),
so the comparison is of planners, not of fusion, and kernel scratch is left out (TFLM's
kernels would add their own): both favour TFLM.
"""
from __future__ import annotations

from .kernels import ALIAS_OPS
from .memory import Interval, Plan

TFLM_ALIGN = 16


def op_lower_bound(graph, fused: bool = False) -> int:
    """The per-operator activation lower bound: the largest inputs + outputs of any single
    op (reshapes and other aliases excluded), or with `fused` of any single fused kernel;
    graph inputs, outputs and constants excluded."""
    io = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    if fused:
        from .fuse import fuse
        ops = [tuple(g.inputs) + tuple(g.outputs) for g in fuse(graph).groups]
    else:
        ops = [tuple(n.inputs) + tuple(n.outputs) for n in graph.nodes if n.op not in ALIAS_OPS]
    return max((sum(v.nbytes for v in {v.name: v for v in vals if v is not None
                                       and v.name not in io
                                       and v.name not in graph.constants}.values())
                for vals in ops), default=0)


def _is_alias(group) -> bool:
    return (all(n.op in ALIAS_OPS for n in group.nodes) and len(group.inputs) == 1
            and len(group.outputs) == 1 and group.inputs[0].dtype == group.outputs[0].dtype)


def tensor_lifetimes(fg) -> list:
    """One interval per tensor a group writes into the arena, in group order."""
    graph = fg.graph
    out_names = {v.name for v in graph.outputs}
    link = {}
    for g in fg.groups:
        if _is_alias(g):
            link[g.outputs[0].name] = g.inputs[0].name

    def root(name):
        while name in link:
            name = link[name]
        return name
    made, last = {}, {}
    for step, g in enumerate(fg.groups):
        if _is_alias(g):
            continue
        for v in g.inputs:
            last[root(v.name)] = step
        for v in g.outputs:
            made.setdefault(v.name, (step, v.nbytes))
    for v in graph.outputs:     # a graph output read through an alias stays to the end
        last[root(v.name)] = len(fg.groups)
    return [Interval(name, size, step, max(step, last.get(name, step)))
            for name, (step, size) in made.items() if name not in out_names]


def _fits_at(iv, placed, align) -> int:
    """The lowest offset where `iv` fits among the placed buffers live with it."""
    size = -(-iv.size // align) * align
    off = 0
    for lo, hi in sorted((o, o + -(-p.size // align) * align) for p, o in placed
                         if p.start <= iv.end and iv.start <= p.end):
        if off + size <= lo:
            break
        off = max(off, hi)
    return off


def tflm_plan(fg, align: int = TFLM_ALIGN) -> Plan:
    """TFLM's greedy-by-size plan of the tensors of a fused graph's groups."""
    ivs = tensor_lifetimes(fg)
    order = sorted(range(len(ivs)), key=lambda i: (-ivs[i].size, i))
    placed, offsets = [], {}
    for i in order:
        off = _fits_at(ivs[i], placed, align)
        placed.append((ivs[i], off))
        offsets[ivs[i].name] = off
    total = max((o + -(-iv.size // align) * align for iv, o in placed), default=0)
    return Plan(offsets, total, "tflm_greedy", align)
