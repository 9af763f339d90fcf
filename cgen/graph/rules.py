"""simplify: local graph rewrites from a table of one-line rules (identities, reshape and
transpose chains, layout round trips, pads absorbed by convolutions)."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from .fold import remove_dead
from .graph_ir import Graph, Node, Value, rename_inputs


# ====================================================================== simplify
def _const(graph: Graph, v: Value):
    return graph.constants.get(v.name)


def _alias_if(cond: bool, n: Node, v: Value):
    return v if cond and v.shape == n.outputs[0].shape and v.dtype == n.outputs[0].dtype \
        and v.layout == n.outputs[0].layout else None


def _neutral(graph: Graph, n: Node, value: float):
    """The non-constant operand when the other one is a constant equal to `value` everywhere."""
    for i, j in ((0, 1), (1, 0)):
        c = _const(graph, n.inputs[j])
        if c is not None and n.inputs[i].name not in graph.constants and c.size and np.all(c == value):
            if n.op in ("sub", "div") and j == 0:
                continue
            return _alias_if(True, n, n.inputs[i])
    return None


def _compose_transpose(graph: Graph, n: Node, producers: Mapping):
    p = producers.get(n.inputs[0].name)
    if p is None or p.op != "transpose":
        return None
    inner, outer = p.attr("perm"), n.attr("perm")
    perm = tuple(inner[i] for i in outer)
    return Node.make("transpose", p.inputs, n.outputs, {"perm": perm}, n.name)


def _compose_reshape(graph: Graph, n: Node, producers: Mapping):
    p = producers.get(n.inputs[0].name)
    if p is None or p.op != "reshape" or p.inputs[0].layout or n.outputs[0].layout:
        return None
    return Node.make("reshape", p.inputs, n.outputs, n.attr_dict, n.name)


def _compose_layout(graph: Graph, n: Node, producers: Mapping):
    p = producers.get(n.inputs[0].name)
    if p is None or p.op != "layout_transform":
        return None
    if p.attr("src") == n.attr("dst"):                 # there and back: a copy at most
        return Node.make("identity", p.inputs, n.outputs, name=n.name)
    return Node.make("layout_transform", p.inputs, n.outputs,
                     {"src": p.attr("src"), "dst": n.attr("dst")}, n.name)


def _conv_absorbs_pad(graph: Graph, n: Node, producers: Mapping):
    """conv2d(pad(x) with zeros on H and W only) -> conv2d(x) with the pads added."""
    p = producers.get(n.inputs[0].name)
    if p is None or p.op != "pad" or p.attr("mode") != "constant" or p.attr("value") != 0 \
            or n.inputs[0].layout:
        return None
    b0, b1, t, l, e0, e1, b, r = p.attr("pads")
    if b0 or b1 or e0 or e1 or min(t, l, b, r) < 0:
        return None
    pads = tuple(x + y for x, y in zip(n.attr("pads"), (t, l, b, r)))
    return Node.make("conv2d", (p.inputs[0],) + n.inputs[1:], n.outputs,
                     {**n.attr_dict, "pads": pads}, n.name)


# rule: node -> a Value the node's output equals (the node goes), a replacement Node, or None
SIMPLIFY_RULES: Mapping[str, Callable] = {
    "identity": lambda g, n, p: _alias_if(True, n, n.inputs[0]),                # x -> x
    "reshape": lambda g, n, p: _alias_if(True, n, n.inputs[0]) or _compose_reshape(g, n, p),
    "transpose": lambda g, n, p: (_alias_if(n.attr("perm") == tuple(range(len(n.attr("perm")))), n,
                                            n.inputs[0]) or _compose_transpose(g, n, p)),
    "cast": lambda g, n, p: _alias_if(n.attr("to") == n.inputs[0].dtype, n, n.inputs[0]),
    "add": lambda g, n, p: _neutral(g, n, 0),                                       # x + 0 -> x
    "sub": lambda g, n, p: _neutral(g, n, 0),                                       # x - 0 -> x
    "mul": lambda g, n, p: _neutral(g, n, 1),                                       # x * 1 -> x
    "div": lambda g, n, p: _neutral(g, n, 1),                                       # x / 1 -> x
    "pad": lambda g, n, p: _alias_if(not any(n.attr("pads")), n, n.inputs[0]),      # pad 0 -> x
    "slice": lambda g, n, p: _alias_if(not any(n.attr("starts")) and set(n.attr("steps")) == {1},
                                       n, n.inputs[0]),                             # whole -> x
    "concat": lambda g, n, p: _alias_if(len(n.inputs) == 1, n, n.inputs[0]),
    "layout_transform": lambda g, n, p: (_alias_if(n.attr("src") == n.attr("dst"), n, n.inputs[0])
                                         or _compose_layout(g, n, p)),
    "conv2d": _conv_absorbs_pad,
}


def simplify(graph: Graph, rules: Mapping[str, Callable] = SIMPLIFY_RULES) -> Graph:
    """Local rewrites from `rules` (op -> rule), to a fixpoint; then dead nodes go."""
    for _ in range(100):
        producers = graph.producers()
        outs = {v.name for v in graph.outputs}
        mapping: dict = {}
        nodes = []
        changed = False
        for n in graph.nodes:
            n = rename_inputs([n], mapping)[0]
            rule = rules.get(n.op)
            res = rule(graph, n, producers) if rule else None
            if isinstance(res, Value) and n.outputs[0].name not in outs:
                mapping[n.outputs[0].name] = res
                changed = True
                continue
            if isinstance(res, Node) and res != n:
                n = res
                changed = True
            nodes.append(n)
            producers.update({v.name: n for v in n.outputs})
        graph = remove_dead(graph.replace(nodes=tuple(nodes)))
        if not changed:
            return graph
    return graph
