"""Graph IR: frozen values, nodes and graphs; topological helpers.

A `Graph` is a static-shape dataflow graph over the canonical op set (see
`OPS`).  Node inputs and outputs are `Value`s (name, shape, dtype, layout),
so a node alone says what it reads and writes.  Weights and other constant
tensors are named values whose arrays live in `Graph.constants` (kept out of
equality and hashing; arrays are read-only).

Invariants (checked by `Graph.validate`):
- every value name is defined once: a graph input, a constant, or one node output;
- `nodes` are in topological order;
- a node input that names a constant has the constant's shape and dtype;
- graph outputs are node outputs, graph inputs or constants, with their values.

`layout` is "" for the ONNX layout (NCHW, OIHW, ...); blocked layouts are
written "NCHW8c" (activations, shape (N, C/8, H, W, 8)) and "OIHW4i8o"
(conv weights, shape (O/8, I/4, KH, KW, 4, 8)); `cgen.graph.layout` packs
and unpacks them.  `shape` is always the physical shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np

DTYPES = ("float32", "int8", "uint8", "int16", "int32", "int64", "bool")   # bool: _Bool, 1 byte


class ModelError(ValueError):
    """A refusal: the model, or the arrays given to it, cannot be handled.

    The message is always one line.  `kind` sorts refusals: "malformed",
    "unsupported_op", "unsupported_dtype", "unsupported_attr", "symbolic_dim",
    "not_constant", "bad_input", "shape", "budget", "fallback" (strict compilation).
    """

    def __init__(self, message: str, kind: str = "malformed"):
        message = " ".join(str(message).split())
        super().__init__(message)
        self.kind = kind


def check_dtype(dtype, what: str) -> str:
    """Canonical dtype name, or ModelError naming `what`."""
    name = "bool" if dtype is bool else str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ModelError(f"{what} has dtype {name}; cgen supports {', '.join(DTYPES)}",
                         "unsupported_dtype")
    return name


def _freeze(v):
    """Attribute value -> hashable Python value (tuples, ints, floats, str, None)."""
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.ndarray):
        return tuple(_freeze(x) for x in v.tolist())
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, bytes):
        return v.decode()
    if v is None or isinstance(v, (int, float, str, Graph)):     # Graph: a loop's body
        return v
    raise TypeError(f"attribute value {v!r} of type {type(v).__name__} is not supported")


@dataclass(frozen=True, slots=True)
class Value:
    """A tensor flowing through the graph: physical shape, dtype, layout ("" = ONNX layout)."""
    name: str
    shape: tuple
    dtype: str
    layout: str = ""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass(frozen=True, slots=True)
class Node:
    """One canonical operation.  attrs: sorted tuple of (key, value) pairs."""
    op: str
    inputs: tuple
    outputs: tuple
    attrs: tuple = ()
    name: str = ""

    @staticmethod
    def make(op: str, inputs: Iterable[Value], outputs: Iterable[Value], attrs: Mapping | None = None,
             name: str = "") -> "Node":
        pairs = tuple(sorted((str(k), _freeze(v)) for k, v in (attrs or {}).items()))
        return Node(op, tuple(inputs), tuple(outputs), pairs, name)

    def attr(self, key: str, default: Any = ...):
        for k, v in self.attrs:
            if k == key:
                return v
        if default is ...:
            raise KeyError(f"node {self.name!r} ({self.op}) has no attribute {key!r}")
        return default

    @property
    def attr_dict(self) -> dict:
        return dict(self.attrs)

    def with_attrs(self, **changes) -> "Node":
        d = self.attr_dict
        d.update(changes)
        return Node.make(self.op, self.inputs, self.outputs, d, self.name)

    @property
    def input_names(self) -> tuple:
        return tuple(v.name for v in self.inputs)

    @property
    def output_names(self) -> tuple:
        return tuple(v.name for v in self.outputs)

    def __str__(self) -> str:
        a = ", ".join(f"{k}={v}" for k, v in self.attrs)
        ins = ", ".join(self.input_names)
        outs = ", ".join(f"{v.name}:{v.dtype}{list(v.shape)}{'@' + v.layout if v.layout else ''}"
                         for v in self.outputs)
        return f"{outs} = {self.op}({ins}{'; ' + a if a else ''})"


def _readonly(constants: Mapping) -> Mapping:
    out = {}
    for k, a in constants.items():
        a = np.asarray(a)
        if a.flags.writeable:
            a = a.copy()
            a.flags.writeable = False
        out[k] = a
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class Graph:
    inputs: tuple            # Value, the model's runtime inputs in order
    outputs: tuple           # Value
    nodes: tuple             # Node, topological order
    constants: Mapping = field(default_factory=dict, compare=False, hash=False)
    name: str = "model"

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        if not isinstance(self.constants, MappingProxyType) or any(
                a.flags.writeable for a in self.constants.values()):
            object.__setattr__(self, "constants", _readonly(self.constants))

    def replace(self, **changes) -> "Graph":
        return replace(self, **changes)

    # ------------------------------------------------------------------ queries
    def values(self) -> dict:
        """name -> Value for every value the graph mentions (inputs, constants used, node outputs)."""
        out = {v.name: v for v in self.inputs}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v.name, v)
            for v in n.outputs:
                out[v.name] = v
        for v in self.outputs:
            out.setdefault(v.name, v)
        return out

    def value(self, name: str) -> Value:
        vals = self.values()
        if name not in vals:
            raise KeyError(f"graph {self.name!r} has no value {name!r}")
        return vals[name]

    def producers(self) -> dict:
        """value name -> the node producing it."""
        return {v.name: n for n in self.nodes for v in n.outputs}

    def consumers(self) -> dict:
        """value name -> tuple of nodes reading it (in node order, a node once)."""
        out: dict = {}
        for n in self.nodes:
            for name in dict.fromkeys(n.input_names):
                out.setdefault(name, []).append(n)
        return {k: tuple(v) for k, v in out.items()}

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def ops(self) -> list:
        return [n.op for n in self.nodes]

    def __str__(self) -> str:
        lines = [f"graph {self.name}("
                 + ", ".join(f"{v.name}:{v.dtype}{list(v.shape)}" for v in self.inputs) + ")"]
        lines += ["  " + str(n) for n in self.nodes]
        lines.append("  return " + ", ".join(v.name for v in self.outputs))
        return "\n".join(lines)

    # ------------------------------------------------------------------ checks
    def validate(self) -> "Graph":
        """Check the invariants in the module docstring; return self or raise ModelError."""
        defined: dict = {}
        for v in self.inputs:
            if v.name in defined or v.name in self.constants:
                raise ModelError(f"graph input {v.name!r} is defined twice")
            defined[v.name] = v
        for n in self.nodes:
            for v in n.inputs:
                if v.name in self.constants:
                    a = self.constants[v.name]
                    if tuple(a.shape) != tuple(v.shape) or str(a.dtype) != v.dtype:
                        raise ModelError(f"node {n.name!r} ({n.op}) reads constant {v.name!r} as "
                                         f"{v.dtype}{list(v.shape)} but it is {a.dtype}{list(a.shape)}")
                elif v.name not in defined:
                    raise ModelError(f"node {n.name!r} ({n.op}) reads {v.name!r} before it is defined")
                elif defined[v.name] != v:
                    raise ModelError(f"node {n.name!r} ({n.op}) reads {v.name!r} as {v} but it is "
                                     f"{defined[v.name]}")
            for v in n.outputs:
                if v.name in defined or v.name in self.constants:
                    raise ModelError(f"value {v.name!r} (output of node {n.name!r}) is defined twice")
                defined[v.name] = v
        for v in self.outputs:
            if v.name in self.constants:
                a = self.constants[v.name]
                if tuple(a.shape) != tuple(v.shape) or str(a.dtype) != v.dtype:
                    raise ModelError(f"graph output {v.name!r} does not match its constant")
            elif defined.get(v.name) != v:
                raise ModelError(f"graph output {v.name!r} is not defined as {v}")
        return self

    def check_inputs(self, feeds: Mapping) -> dict:
        """Arrays for the graph inputs, checked: names, shapes and dtypes (ModelError, one line)."""
        if not isinstance(feeds, Mapping):
            raise ModelError(f"inputs must be a mapping name -> array, got {type(feeds).__name__}",
                             "bad_input")
        names = [v.name for v in self.inputs]
        unknown = [k for k in feeds if k not in names]
        if unknown:
            raise ModelError(f"unknown input name(s) {', '.join(map(repr, unknown))}; the model's "
                             f"inputs are {', '.join(map(repr, names)) or 'none'}", "bad_input")
        missing = [k for k in names if k not in feeds]
        if missing:
            raise ModelError(f"missing input(s) {', '.join(map(repr, missing))}", "bad_input")
        out = {}
        for v in self.inputs:
            a = np.asarray(feeds[v.name])
            if str(a.dtype) != v.dtype or tuple(a.shape) != tuple(v.shape):
                raise ModelError(f"input {v.name!r}: expected {v.dtype} of shape {tuple(v.shape)}, "
                                 f"got {a.dtype} of shape {tuple(a.shape)}", "bad_input")
            out[v.name] = a
        return out


# ---------------------------------------------------------------------- helpers
def topo_sort(nodes: Iterable[Node], available: Iterable[str] = ()) -> tuple:
    """Nodes in a topological order (stable: ties keep their given order).

    `available` names values defined outside the nodes (graph inputs, constants).
    Raises ModelError on a cycle or an undefined input.
    """
    nodes = list(nodes)
    ready = set(available)
    produced = {v.name for n in nodes for v in n.outputs}
    out, pending = [], nodes
    while pending:
        rest = []
        for n in pending:
            if all(v.name in ready or v.name not in produced for v in n.inputs):
                out.append(n)
                ready.update(n.output_names)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ModelError(f"the graph has a cycle through node {rest[0].name!r}")
        pending = rest
    missing = [v.name for n in out for v in n.inputs if v.name not in ready]
    if missing:
        raise ModelError(f"value {missing[0]!r} is read but never defined")
    return tuple(out)


def rename_inputs(nodes: Iterable[Node], mapping: Mapping) -> tuple:
    """Nodes with input Values replaced: mapping is name -> Value."""
    out = []
    for n in nodes:
        if any(v.name in mapping for v in n.inputs):
            n = replace(n, inputs=tuple(mapping.get(v.name, v) for v in n.inputs))
        out.append(n)
    return tuple(out)


def unique_name(base: str, taken) -> str:
    """base, or base_1, base_2, ... whichever is not in `taken` (a set, updated)."""
    name, i = base, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


def used_constants(graph: Graph) -> set:
    names = {v.name for n in graph.nodes for v in n.inputs} | {v.name for v in graph.outputs}
    return {k for k in graph.constants if k in names}


def value_of(name: str, array: np.ndarray, layout: str = "") -> Value:
    return Value(name, tuple(int(d) for d in array.shape), str(array.dtype), layout)
