"""The `loop` op: a small body graph run `trips` times, state carried between steps
(the recurrent ops' time loop; lowered by cgen.graph.loop_lower).

A loop node's attributes:

    body      Graph of one step (its inputs and outputs are named below)
    trips     T, the number of steps
    reverse   step t works on slot T-1-t of the sequences (a reverse-direction RNN)
    seq_in    body inputs fed slot t of a node input of shape (T,) + the body input's shape
    state     (body input, body output, has_init): the input of step t+1 is the output of
              step t; step 0 reads the node's init input, or zeros when has_init is false
    invariant body inputs that read the same node input at every step
    seq_out   body outputs stacked into a node output of shape (T,) + their shape
    final     body outputs of the last step (each one a state's output)

The node's inputs are, in order: one per seq_in, one per state with has_init, one per
invariant; its outputs: one per seq_out, then one per final.  The body is kept whole
through the graph passes (its constants live in the body graph, named after the node);
fuse makes the node a group of its own (an unknown op is opaque).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph_ir import Graph, ModelError


@dataclass(frozen=True)
class LoopSpec:
    """A loop node's attributes, read back."""
    body: Graph
    trips: int
    reverse: bool
    seq_in: tuple
    state: tuple          # (body input, body output, has_init)
    invariant: tuple
    seq_out: tuple
    final: tuple

    @staticmethod
    def of(node) -> "LoopSpec":
        a = node.attr_dict
        return LoopSpec(a["body"], int(a["trips"]), bool(a["reverse"]), tuple(a["seq_in"]),
                        tuple(tuple(s) for s in a["state"]), tuple(a["invariant"]),
                        tuple(a["seq_out"]), tuple(a["final"]))

    def attrs(self) -> dict:
        return {"body": self.body, "trips": self.trips, "reverse": self.reverse,
                "seq_in": self.seq_in, "state": self.state, "invariant": self.invariant,
                "seq_out": self.seq_out, "final": self.final}

    @property
    def inits(self) -> tuple:
        """Body inputs of the states that have an init input (in node input order)."""
        return tuple(i for i, _, has in self.state if has)

    def input_roles(self) -> list:
        """(role, body input name) for each node input, in order."""
        return ([("seq", n) for n in self.seq_in] + [("init", n) for n in self.inits]
                + [("invariant", n) for n in self.invariant])

    def slot(self, t: int) -> int:
        return self.trips - 1 - t if self.reverse else t


def _body_value(body: Graph, name: str):
    for v in tuple(body.inputs) + tuple(body.outputs):
        if v.name == name:
            return v
    raise ModelError(f"loop body has no input or output {name!r}")


def loop_types(a: dict, ins: list) -> list:
    """(shape, dtype) of each output of a loop node (the shape rule), checking its inputs."""
    spec = LoopSpec(a["body"], int(a["trips"]), bool(a["reverse"]), tuple(a["seq_in"]),
                    tuple(tuple(s) for s in a["state"]), tuple(a["invariant"]),
                    tuple(a["seq_out"]), tuple(a["final"]))
    roles = spec.input_roles()
    if len(roles) != len(ins):
        raise ModelError(f"loop: {len(ins)} inputs, expected {len(roles)}", "shape")
    for (role, name), (shape, dtype) in zip(roles, ins):
        v = _body_value(spec.body, name)
        want = ((spec.trips,) if role == "seq" else ()) + tuple(v.shape)
        if tuple(shape) != want or dtype != v.dtype:
            raise ModelError(f"loop: input for {name!r} is {dtype}{list(shape)}, expected "
                             f"{v.dtype}{list(want)}", "shape")
    outs = [((spec.trips,) + tuple(_body_value(spec.body, n).shape),
             _body_value(spec.body, n).dtype) for n in spec.seq_out]
    outs += [(tuple(_body_value(spec.body, n).shape), _body_value(spec.body, n).dtype)
             for n in spec.final]
    return outs


def run_loop(node, arrays, run_graph) -> list:
    """The loop's reference: the body run step by step (`run_graph(graph, feeds)` -> name
    -> array is the interpreter, passed in by cgen.graph.reference)."""
    spec = LoopSpec.of(node)
    fixed, seqs, state = {}, {}, {}
    for (role, name), a in zip(spec.input_roles(), arrays):
        {"seq": seqs, "init": state, "invariant": fixed}[role][name] = np.asarray(a)
    for name, _, has in spec.state:
        if not has:
            v = _body_value(spec.body, name)
            state[name] = np.zeros(v.shape, v.dtype)
    ys = {n: [None] * spec.trips for n in spec.seq_out}
    out = {}
    for t in range(spec.trips):
        s = spec.slot(t)
        feeds = {**fixed, **state, **{n: a[s] for n, a in seqs.items()}}
        out = run_graph(spec.body, {v.name: feeds[v.name] for v in spec.body.inputs})
        for n in spec.seq_out:
            ys[n][s] = out[n]
        state = {i: out[o] for i, o, _ in spec.state}
    return [np.stack(ys[n]) for n in spec.seq_out] + [out[n] for n in spec.final]
