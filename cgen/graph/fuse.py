"""fuse: Graph -> FusedGraph, nodes grouped by op pattern into the kernels to build."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from .graph_ir import Graph
from .opset import ANCHOR, BROADCAST, ELEMWISE, INJECTIVE, OP_PATTERNS, OPAQUE, REDUCTION


# ====================================================================== fuse
@dataclass(frozen=True)
class Group:
    """Nodes run as one kernel.

    kind: "anchor" (conv / dense / pool + elementwise epilogue), "reduction"
    (+ elementwise epilogue), "injective" (a chain of elementwise, broadcast and
    data-movement ops), "opaque".  For anchor and reduction groups nodes[0] is
    the anchor and nodes[1:] its epilogue, in order.  inputs are the
    non-constant values the group reads, params the constants, outputs the
    values other groups or the graph read (one, except for multi-output roots).
    """
    id: int
    kind: str
    nodes: tuple
    inputs: tuple
    params: tuple
    outputs: tuple

    @property
    def anchor(self):
        return self.nodes[0] if self.kind in ("anchor", "reduction") else None

    @property
    def epilogue(self) -> tuple:
        return self.nodes[1:] if self.kind in ("anchor", "reduction") else ()

    def __str__(self) -> str:
        return (f"group {self.id} [{self.kind}] {' -> '.join(n.op for n in self.nodes)}: "
                f"({', '.join(v.name for v in self.inputs)}) -> "
                f"({', '.join(v.name for v in self.outputs)})")


@dataclass(frozen=True)
class FusedGraph:
    graph: Graph
    groups: tuple               # Group, in an order where every group follows its inputs

    def group_of(self, node_name: str) -> Group:
        for g in self.groups:
            if any(n.name == node_name for n in g.nodes):
                return g
        raise KeyError(node_name)

    def __str__(self) -> str:
        return "\n".join(str(g) for g in self.groups)


_ACCEPTS = {ANCHOR: (ELEMWISE, BROADCAST), REDUCTION: (ELEMWISE, BROADCAST),
            ELEMWISE: (ELEMWISE, BROADCAST, INJECTIVE), BROADCAST: (ELEMWISE, BROADCAST, INJECTIVE),
            INJECTIVE: (ELEMWISE, BROADCAST, INJECTIVE), OPAQUE: ()}
_KIND = {ANCHOR: "anchor", REDUCTION: "reduction", ELEMWISE: "injective", BROADCAST: "injective",
         INJECTIVE: "injective", OPAQUE: "opaque"}


def fuse(graph: Graph, patterns: Mapping[str, str] = OP_PATTERNS) -> FusedGraph:
    """Group nodes by op pattern (`patterns`: op -> elementwise | broadcast | injective |
    reduction | anchor | opaque; unknown ops are opaque).

    A group starts at the first unassigned node (its root) and absorbs consumers
    of its values, in topological order: elementwise/broadcast ops after an
    anchor or a reduction, elementwise/broadcast/injective ops after an injective
    root.  A consumer joins only if its other inputs are constants or do not
    depend on the group (no cycles between groups).  The group is then cut back
    to its longest prefix with a single output value, so every intermediate is
    read only inside the group.  Reductions are only roots: never two per group.
    """
    nodes = graph.nodes
    pos = {n.name: i for i, n in enumerate(nodes)}
    producers, consumers, outs = graph.producers(), graph.consumers(), {v.name for v in graph.outputs}
    assigned: dict = {}
    groups = []

    def depends_on(name: str, members: set, root_pos: int) -> bool:
        stack, seen = [name], set()
        while stack:
            p = producers.get(stack.pop())
            if p is None or p.name in seen or pos[p.name] < root_pos:
                continue
            if p.name in members:
                return True
            seen.add(p.name)
            stack.extend(p.input_names)
        return False

    def external_outputs(members: list) -> list:
        names = {m.name for m in members}
        res = []
        for m in members:
            for v in m.outputs:
                if v.name in outs or any(c.name not in names for c in consumers.get(v.name, ())):
                    res.append(v)
        return res

    for root in nodes:
        if root.name in assigned:
            continue
        pat = patterns.get(root.op, OPAQUE)
        accept = _ACCEPTS[pat] if len(root.outputs) == 1 else ()
        members, names = [root], {root.name}
        while accept:
            cands = sorted({c.name: c for m in members for v in m.outputs
                            for c in consumers.get(v.name, ())
                            if c.name not in names and c.name not in assigned
                            and patterns.get(c.op, OPAQUE) in accept and len(c.outputs) == 1
                            }.values(), key=lambda c: pos[c.name])
            chosen = None
            produced = {v.name for m in members for v in m.outputs}
            for c in cands:
                if all(v.name in graph.constants or v.name in produced
                       or not depends_on(v.name, names, pos[root.name]) for v in c.inputs):
                    chosen = c
                    break
            if chosen is None:
                break
            members.append(chosen)
            names.add(chosen.name)
        k = len(members)
        while k > 1 and len(external_outputs(members[:k])) != 1:
            k -= 1
        members = members[:k]
        for m in members:
            assigned[m.name] = len(groups)
        groups.append(members)

    result = []
    for gid, members in enumerate(groups):
        names = {m.name for m in members}
        produced = {v.name for m in members for v in m.outputs}
        ins, params = {}, {}
        for m in members:
            for v in m.inputs:
                if v.name in graph.constants:
                    params.setdefault(v.name, v)
                elif v.name not in produced:
                    ins.setdefault(v.name, v)
        root_pat = patterns.get(members[0].op, OPAQUE)
        result.append(Group(gid, _KIND[root_pat], tuple(sorted(members, key=lambda m: pos[m.name])),
                            tuple(ins.values()), tuple(params.values()),
                            tuple(external_outputs(members))))
    # order groups so each follows the groups it reads from (stable: by root position)
    made = {v.name: g.id for g in result for v in g.outputs}
    deps = {g.id: {made[v.name] for v in g.inputs if v.name in made} - {g.id} for g in result}
    order, done = [], set()
    while len(order) < len(result):
        ready = next(g for g in result if g.id not in done and deps[g.id] <= done)
        order.append(ready)
        done.add(ready.id)
    order = [replace(g, id=i) for i, g in enumerate(order)]     # ids follow the order
    return FusedGraph(graph, tuple(order))
