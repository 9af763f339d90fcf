"""The driver of the graph lowering: fused groups -> te computes + schedules -> loop IR,
one kernel per group.

    fg = legalize(fg, target)                         # groups as the backend lowers them
    kernels = lower_graph(fg, target, tuned=None)      # [GroupKernel], in group order

Read top-down: `kernels` (the records, `group_config`), `routes` (the template routes,
`ROUTES` keyed by (group kind, anchor op)), `te_anchors` (the anchor ops as plain te
computes), `te_ops` (the op set's te index functions), `te_schedule` (default schedules,
epilogue fusion), then this module.

Every group of a `FusedGraph` becomes one kernel (a `GroupKernel`), except the
groups that only reinterpret memory (reshape / identity chains): those are
aliases, their output is their input's buffer.

A group whose anchor has a route gets the template's compute and schedule for its
workload, with the config from `group_config` and the weights packed at compile time.
The group's elementwise epilogue (bias, activations, residual adds ...) is fused into the
template's output stage: its body is wrapped by the epilogue expression when it is not a
reduction, else an epilogue stage is added that computes the template's output block by
block (compute_at) or whole.  The dense template's own epilogue steps are used when the
epilogue is expressible with them.

Groups without a template use the plain te computes with a simple default schedule.  A
group whose template should have built it and did not (a template error, or a case its
family does not cover) falls back to them too, never silently: `GroupKernel.fallback`
says why, the report marks the row, and strict compilation refuses it.

`legalize` first reshapes the fused groups for the backend: an epilogue that
broadcasts the anchor's output to a larger shape becomes a group of its own,
and an im2col convolution with many taps per pixel reads a padded copy of its
input made by a pad group.

Each kernel is lowered twice when the target has a vector ISA: for the target
(intrinsics) and portable (the same template and workload -- so the same
packed weights -- scheduled for the target without its ISA and lowered with no
target), so the model's C file compiles with no flags beyond -std=c99.
Schedules never use threads: a model is one call on one core.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..codegen.c import uses_isa
from .graph_ir import Graph, ModelError
from .fuse import FusedGraph, Group
from .kernels import ALIAS_OPS, Arg, GroupKernel, Route, _NoTemplate, _NotCovered, group_config, kernel_target, portable_target
from .routes import route_for, split_conv_padding
from .te_anchors import _te_route
from .te_ops import Inputs
from .te_schedule import _epilogue_fn, epilogue_is_pointwise, lanes_of, wrap_output


# ====================================================================== lowering


def _realize(route: Route, group: Group, graph: Graph, cfg, tgt, lower_tgt, name: str,
             portable: bool = False):
    """Build, fuse the epilogue, lower: (PrimFunc, Args of the inputs, new constants)."""
    from ..lower.lower import lower
    if portable and route.portable_build is not None and route.template is not None:
        try:
            s, tensors = route.build(tgt, cfg)
        except Exception:  # noqa: BLE001 - the template cannot schedule portable C
            s, tensors = route.portable_build(tgt, cfg)
    else:
        s, tensors = route.build(tgt, cfg)
    n_out = 1 if route.template is not None else len(group.outputs)
    args = list(route.args)
    consts = dict(route.consts)
    if route.epilogue:
        inputs = Inputs(graph, prefix="ep")
        sub = replace(group, nodes=(group.nodes[0],) + tuple(route.epilogue))
        ep = _epilogue_fn(sub, graph, inputs)
        Y = tensors[-1]
        hint = route.block_hint(cfg, tgt) if route.block_hint and cfg is not None else None
        s, out = wrap_output(s, Y, lambda v, i: ep(v, i, Y.shape), tgt, hint)
        tensors = tensors[:-1] + inputs.tensors + [out]
        args += inputs.args
        consts.update(inputs.consts)
    func = lower(s, tensors, name, lower_tgt)
    if len(func.params) != len(args) + n_out:
        raise AssertionError(f"{name}: {len(func.params)} parameters for {len(args)} inputs")
    return func, args, consts


def lower_group(fg: FusedGraph, group: Group, target, tuned=None, name: str | None = None,
                objective: str = "latency") -> GroupKernel:
    """One group -> its kernel (template route first, built-in computes otherwise);
    `objective` "ram" takes the routes and knobs without scratch (kernels.RAM_KNOBS)."""
    graph = fg.graph
    name = name or f"k{group.id}_{group.nodes[0].op}"
    if group.nodes[0].op == "loop":     # its body's groups come back here, once
        from .loop_lower import lower_loop
        return lower_loop(fg, group, target, tuned, name, objective, lower_group, legalize)
    if group.kind == "injective" and all(n.op in ALIAS_OPS for n in group.nodes) \
            and len(group.inputs) == 1 and len(group.outputs) == 1 \
            and group.inputs[0].dtype == group.outputs[0].dtype:
        return GroupKernel(group, name, "alias", None, None, (Arg("value", group.inputs[0].name),),
                           (group.outputs[0].name,))
    tgt, ptgt = kernel_target(target), portable_target(target)
    has_isa = lanes_of(tgt) > 1 or tgt.isa != "none"
    note = fallback = ""
    route = None
    if epilogue_is_pointwise(group):
        try:
            route = route_for(group, graph, tgt, objective)
            cfg = group_config(group, route.template, route.workload, tgt, tuned, objective)
            func, args, consts = _realize(route, group, graph, cfg, tgt, tgt, name)
            portable = None
            if has_isa and uses_isa(func):
                try:        # the template's default for portable C (never a tuned one)
                    pcfg = group_config(group, route.template, route.workload, ptgt)
                except Exception:  # noqa: BLE001 - no portable space: the portable build
                    pcfg = cfg
                portable, pargs, _ = _realize(route, group, graph, pcfg, ptgt, None, name,
                                              portable=True)
                if pargs != args:
                    raise AssertionError(f"{name}: portable kernel takes other arguments")
            return GroupKernel(group, name, route.template.name, route.workload, cfg, tuple(args),
                               tuple(v.name for v in group.outputs), func, portable, consts,
                               route.flops)
        except _NotCovered as e:
            note = fallback = f"no template: {e}"
        except _NoTemplate as e:
            note = str(e)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - a failing template falls back, reported
            note = fallback = (
                f"template error: {route.template.name if route and route.template else 'route'}"
                f": {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    else:
        note = fallback = "no template: the epilogue broadcasts the anchor's output"
    route = _te_route(group, graph, tgt)
    func, args, consts = _realize(route, group, graph, None, tgt, tgt, name)
    portable = None
    if has_isa and uses_isa(func):
        portable, pargs, _ = _realize(_te_route(group, graph, ptgt), group, graph, None, ptgt,
                                      None, name)
        if pargs != args:
            raise AssertionError(f"{name}: portable kernel takes other arguments")
    return GroupKernel(group, name, "te", None, None, tuple(args),
                       tuple(v.name for v in group.outputs), func, portable, consts,
                       _te_flops(group), note, fallback)


def _te_flops(group: Group) -> int:
    total = 0
    for n in group.nodes:
        out = n.outputs[0]
        size = out.size
        if n.op == "conv2d":
            w = n.inputs[1].shape
            total += 2 * size * int(np.prod(w[1:]))
        elif n.op == "matmul":
            total += 2 * size * n.inputs[0].shape[-1]
        else:
            total += size
    return total


def split_broadcast_epilogues(fg: FusedGraph) -> FusedGraph:
    """Groups whose epilogue grows the anchor's output by broadcasting are cut in two:
    the anchor alone, and the epilogue as an injective group."""
    groups = []
    for g in fg.groups:
        if epilogue_is_pointwise(g):
            groups.append(g)
            continue
        anchor = g.nodes[0]
        out = anchor.outputs[0]
        groups.append(Group(0, g.kind, (anchor,), tuple(v for v in anchor.inputs
                                                      if v.name not in fg.graph.constants),
                            tuple(v for v in anchor.inputs if v.name in fg.graph.constants),
                            (out,)))
        rest = g.nodes[1:]
        produced = {v.name for n in rest for v in n.outputs}
        ins, params = {}, {}
        for n in rest:
            for v in n.inputs:
                if v.name in fg.graph.constants:
                    params.setdefault(v.name, v)
                elif v.name not in produced:
                    ins.setdefault(v.name, v)
        groups.append(Group(0, "injective", rest, tuple(ins.values()), tuple(params.values()),
                            g.outputs))
    return FusedGraph(fg.graph, tuple(replace(g, id=i) for i, g in enumerate(groups)))


def split_widening_epilogues(fg: FusedGraph) -> FusedGraph:
    """For the RAM objective: an anchor group whose epilogue ends in a wider type than the
    anchor's (an int8 convolution's dequantize to float) is cut before the first widening
    step, so the anchor's input and the wide output are never live together."""
    graph, groups = fg.graph, []
    for g in fg.groups:
        cut = next((i for i, n in enumerate(g.nodes[1:], 1)
                    if n.outputs[0].nbytes > g.nodes[i - 1].outputs[0].nbytes), None)
        if g.kind != "anchor" or cut is None or len(g.outputs) != 1:
            groups.append(g)
            continue
        head, rest = g.nodes[:cut], g.nodes[cut:]
        mid = head[-1].outputs[0]
        consts = graph.constants
        groups.append(Group(0, g.kind, head, g.inputs, tuple(
            v for v in g.params if any(v.name in n.input_names for n in head)), (mid,)))
        made = {v.name for n in rest for v in n.outputs}
        ins = {}
        for n in rest:
            for v in n.inputs:
                if v.name not in consts and v.name not in made:
                    ins.setdefault(v.name, v)
        groups.append(Group(0, "injective", rest, tuple(ins.values()), tuple(
            v for v in g.params if any(v.name in n.input_names for n in rest)), g.outputs))
    return FusedGraph(graph, tuple(replace(g, id=i) for i, g in enumerate(groups)))


def legalize(fg: FusedGraph, target, objective: str = "latency") -> FusedGraph:
    """The groups as the backend lowers them: broadcast-growing epilogues split off,
    padding of im2col convolutions made by a kernel of its own (not for "ram", which
    splits widening epilogues off instead)."""
    fg = split_broadcast_epilogues(fg)
    if objective == "ram":
        fg = split_widening_epilogues(fg)
    return split_conv_padding(fg, kernel_target(target), objective)


def lower_graph(fg: FusedGraph, target, tuned=None, objective: str = "latency") -> list:
    """Every group of a (legalized) fused graph -> its GroupKernel (aliases included)."""
    return [lower_group(fg, g, target, tuned, objective=objective) for g in fg.groups]
