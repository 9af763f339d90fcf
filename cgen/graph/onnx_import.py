"""Reading an ONNX model: the proto loaded and checked, the opset bounds, and the importer
that walks the nodes and hands each to its converter (`onnx_frontend.CONVERTERS`).
What the import as a whole does is described in `cgen.graph.onnx_frontend`."""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from .graph_ir import Graph, ModelError, Node, Value, check_dtype, unique_name, value_of
from .shapes import output_types

MIN_OPSET = 11


def _onnx():
    try:
        import onnx
    except ImportError:  # pragma: no cover - the venv has it
        raise ModelError("the onnx package is not installed (pip install 'cgen-compiler[onnx]')",
                         "malformed") from None
    return onnx


def max_opset() -> int:
    return _onnx().defs.onnx_opset_version()


# ====================================================================== loading
def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _load_proto(model):
    onnx = _onnx()
    from google.protobuf.message import DecodeError
    if isinstance(model, onnx.ModelProto):
        return model, "<ModelProto>"
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, where = bytes(model), "<bytes>"
    elif isinstance(model, (str, os.PathLike)):
        where = os.fspath(model)
        try:
            with open(where, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelError(f"cannot read ONNX model {where!r}: {e.strerror or e}") from None
    else:
        raise ModelError(f"expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")
    if not data:
        raise ModelError(f"ONNX model {where} is empty")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(f"ONNX model {where} is malformed or truncated "
                         f"(protobuf: {_first_line(e)})") from None
    if isinstance(model, (str, os.PathLike)) and any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        try:
            from onnx.external_data_helper import load_external_data_for_model
            load_external_data_for_model(proto, os.path.dirname(os.path.abspath(where)))
        except Exception as e:  # noqa: BLE001 - any failure is a one-line refusal
            raise ModelError(f"ONNX model {where}: cannot load external data ({_first_line(e)})") \
                from None
    return proto, where


def _check(proto, where: str) -> int:
    onnx = _onnx()
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise ModelError(f"ONNX model {where} has no graph (malformed or truncated file)")
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001 - ValidationError and friends
        raise ModelError(f"ONNX model {where} fails the onnx checker: {_first_line(e)}") from None
    opset = None
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    if opset is None:
        raise ModelError(f"ONNX model {where} imports no default-domain opset")
    newest = max_opset()
    if opset > newest:
        raise ModelError(f"ONNX model {where} uses opset {opset}, newer than the installed onnx "
                         f"defines ({newest})", "unsupported_attr")
    return opset


def _np_dtype_name(elem_type: int) -> str:
    onnx = _onnx()
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # noqa: BLE001
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _to_array(t) -> np.ndarray:
    onnx = _onnx()
    if t.data_type in (onnx.TensorProto.STRING,):
        raise ModelError(f"tensor {t.name!r} holds strings", "unsupported_dtype")
    try:
        return onnx.numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"tensor {t.name!r} cannot be read: {_first_line(e)}") from None


# ====================================================================== the importer
class _Importer:
    def __init__(self, proto, opset: int, input_shapes: Mapping | None, where: str):
        self.proto, self.opset, self.where = proto, opset, where
        self.values: dict = {}        # name -> Value (non-constant, logical)
        self.consts: dict = {}        # name -> array
        self.known: dict = {}         # name -> array evaluated at import (not constants)
        self.producer: dict = {}      # name -> Node
        self.alias: dict = {}         # ONNX name -> our name
        self.nodes: list = []
        self.taken: set = set()
        self.node = None              # the ONNX node being converted (for messages)
        g = proto.graph
        for t in g.initializer:
            self.taken.add(t.name)
        for v in list(g.input) + list(g.output) + list(g.value_info):
            self.taken.add(v.name)
        for n in g.node:
            self.taken.update(n.output)
        for t in g.initializer:
            a = _to_array(t)
            check_dtype(a.dtype, f"initializer {t.name!r}")
            self.consts[t.name] = a
        if len(g.sparse_initializer):
            raise ModelError("sparse initializers are not supported", "unsupported_attr")
        self.overridden = bool(input_shapes)    # declared output shapes may then be stale
        self.inputs = self._inputs(dict(input_shapes or {}))

    # ------------------------------------------------------------------ graph inputs
    def _inputs(self, overrides: dict) -> list:
        g = self.proto.graph
        runtime = [v for v in g.input if v.name not in self.consts]
        names = [v.name for v in runtime]
        unknown = [k for k in overrides if k not in names]
        if unknown:
            raise ModelError(f"--input-shape names unknown input(s) {', '.join(map(repr, unknown))}; "
                             f"the model's inputs are {', '.join(map(repr, names))}", "bad_input")
        out = []
        for v in runtime:
            tt = v.type.tensor_type if v.type.HasField("tensor_type") else None
            if tt is None:
                raise ModelError(f"input {v.name!r} is not a tensor", "unsupported_dtype")
            dtype = check_dtype(_np_dtype_name(tt.elem_type), f"input {v.name!r}")
            if not tt.HasField("shape"):
                if v.name not in overrides:
                    raise ModelError(f"input {v.name!r} has no shape; give it with --input-shape "
                                     f"{v.name}=D0,D1,...", "symbolic_dim")
                dims = [None] * len(overrides[v.name])
                syms = [""] * len(dims)
            else:
                dims = [_dim(d) for d in tt.shape.dim]
                syms = [d.dim_param for d in tt.shape.dim]
            if v.name in overrides:
                want = tuple(int(x) for x in overrides[v.name])
                if len(want) != len(dims) or any(d is not None and d != w for d, w in zip(dims, want)) \
                        or any(w <= 0 for w in want):
                    raise ModelError(f"--input-shape {v.name}={','.join(map(str, want))} does not fit "
                                     f"the model's shape {self._dims_str(dims, syms)}", "bad_input")
                dims = list(want)
            for i, d in enumerate(dims):
                if d is None:
                    sym = f" ('{syms[i]}')" if syms[i] else ""
                    example = ",".join(str(x) if x is not None else "1" for x in dims)
                    raise ModelError(f"input {v.name!r} dimension {i}{sym} is symbolic and has no value; "
                                     f"give the shape with --input-shape {v.name}={example}",
                                     "symbolic_dim")
            val = Value(v.name, tuple(dims), dtype)
            if 0 in dims:   # no elements: its value is known, so its readers see a constant
                self.alias[v.name] = self.add_const(np.zeros(val.shape, dtype), f"{v.name}__empty")
            self.values[v.name] = val
            out.append(val)
        return out

    @staticmethod
    def _dims_str(dims, syms) -> str:
        return "(" + ",".join(str(d) if d is not None else (s or "?") for d, s in zip(dims, syms)) + ")"

    # ------------------------------------------------------------------ values
    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def v(self, name: str) -> Value:
        name = self.resolve(name)
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            return value_of(name, self.consts[name])
        raise ModelError(f"{self.where_node()}: input {name!r} is not defined")

    def is_const(self, name: str) -> bool:
        return self.resolve(name) in self.consts

    def where_node(self) -> str:
        n = self.node
        return f"node {n.name!r} ({n.op_type})" if n is not None else "model"

    def const(self, name: str, what: str) -> np.ndarray:
        """The value of `name`, which must be computable at import."""
        name = self.resolve(name)
        got = self._try_const(name)
        if got is None:
            raise ModelError(f"{self.where_node()}: {what} {name!r} is computed at run time; cgen needs "
                             f"it constant (an initializer or computable from constants and shapes)",
                             "not_constant")
        return got

    def _try_const(self, name: str):
        if name in self.consts:
            return self.consts[name]
        if name in self.known:
            return self.known[name]
        node = self.producer.get(name)
        if node is None:
            return None
        args = []
        for v in node.inputs:
            a = self._try_const(v.name)
            if a is None:
                return None
            args.append(a)
        from .reference import evaluate
        for v, a in zip(node.outputs, evaluate(node, args)):
            self.known[v.name] = a
        return self.known[name]

    def fresh(self, base: str) -> str:
        return unique_name(base, self.taken)

    def add_const(self, array, base: str, dtype=None) -> str:
        a = np.asarray(array, dtype=dtype)
        check_dtype(a.dtype, f"{self.where_node()}: constant {base!r}")
        name = self.fresh(base)
        self.consts[name] = a
        return name

    def set_const(self, name: str, array) -> None:
        a = np.asarray(array)
        check_dtype(a.dtype, f"{self.where_node()}: output {name!r}")
        self.consts[name] = a

    def emit(self, op: str, inputs, attrs: Mapping | None = None, outputs=None, n_out: int = 1,
             tag: str | None = None) -> list:
        """Append a canonical node; returns the output names."""
        attrs = dict(attrs or {})
        ins = [self.v(i) for i in inputs]
        try:
            types = output_types(op, attrs, [(v.shape, v.dtype) for v in ins])
        except ModelError as e:
            raise ModelError(f"{self.where_node()}: {e}", e.kind) from None
        onnx_name = self.node.name if self.node is not None else op
        if outputs is None:
            first = self.node.output[0] if self.node is not None and self.node.output else op
            outputs = [self.fresh(f"{first}__{tag or op}") for _ in types]
        if len(outputs) != len(types):
            raise ModelError(f"{self.where_node()}: expected {len(types)} outputs, got {len(outputs)}")
        empty = [0 in shape for shape, _ in types]
        if all(empty):      # a tensor without elements has one value, known now: no node
            for name, (shape, dtype) in zip(outputs, types):
                self.set_const(name, np.zeros(shape, dtype))
            return list(outputs)
        if any(empty):
            raise ModelError(f"{self.where_node()}: some outputs would be empty and others not; "
                             f"cgen does not handle that", "unsupported_attr")
        outs = [Value(name, shape, dtype) for name, (shape, dtype) in zip(outputs, types)]
        node = Node.make(op, ins, outs, attrs, name=self.fresh(f"{onnx_name}" if tag is None
                                                               else f"{onnx_name}/{tag}"))
        self.nodes.append(node)
        for v in outs:
            self.values[v.name] = v
            self.producer[v.name] = node
        return [v.name for v in outs]

    def reshape(self, name: str, shape, out: str | None = None, tag: str = "reshape") -> str:
        shape = tuple(int(d) for d in shape)
        if out is None and self.v(name).shape == shape:
            return self.resolve(name)
        return self.emit("reshape", [name], {"shape": shape},
                         outputs=None if out is None else [out], tag=tag)[0]

    def cast(self, name: str, dtype: str) -> str:
        if self.v(name).dtype == dtype:
            return self.resolve(name)
        return self.emit("cast", [name], {"to": dtype}, tag="cast")[0]

    # ------------------------------------------------------------------ conversion
    def run(self, converters: Mapping) -> Graph:
        onnx = _onnx()
        g = self.proto.graph
        for i, n in enumerate(g.node):
            if not n.name:
                n = _named(n, f"{n.op_type}_{i}")
            self.node = n
            if n.domain not in ("", "ai.onnx"):
                raise ModelError(f"unsupported operator {n.domain}.{n.op_type} (node {n.name!r})",
                                 "unsupported_op")
            conv = converters.get(n.op_type)
            if conv is None:
                raise ModelError(f"unsupported operator {n.op_type} (node {n.name!r}, opset "
                                 f"{self.opset})", "unsupported_op")
            attrs = {a.name: _attr(a) for a in n.attribute}
            conv(self, n, attrs)
        self.node = None
        outputs = []
        for o in g.output:
            name = self.resolve(o.name)
            if name != o.name:
                if name in self.consts:
                    self.consts[o.name] = self.consts[name]
                else:
                    self.emit("identity", [name], outputs=[o.name])
            if o.name in self.consts:
                val = value_of(o.name, self.consts[o.name])
            elif o.name in self.values:
                val = self.values[o.name]      # may be a graph input: the emitter copies it
            else:
                raise ModelError(f"graph output {o.name!r} is never computed")
            tt = o.type.tensor_type
            if o.type.HasField("tensor_type") and tt.elem_type:
                declared = _np_dtype_name(tt.elem_type)
                if declared != val.dtype:
                    check_dtype(declared, f"output {o.name!r}")
                    raise ModelError(f"output {o.name!r}: the model declares {declared}, cgen computes "
                                     f"{val.dtype}", "unsupported_dtype")
                if tt.HasField("shape") and not self.overridden:
                    dims = [_dim(d) for d in tt.shape.dim]
                    if len(dims) != len(val.shape) or any(
                            d is not None and d != s for d, s in zip(dims, val.shape)):
                        raise ModelError(f"output {o.name!r}: the model declares shape "
                                         f"{tuple(dims)}, cgen computes {val.shape}", "shape")
            outputs.append(val)
        used = {v.name for n in self.nodes for v in n.inputs} | {v.name for v in outputs}
        consts = {k: a for k, a in self.consts.items() if k in used}
        return Graph(tuple(self.inputs), tuple(outputs), tuple(self.nodes), consts,
                     name=g.name or "model").validate()


def _dim(d):
    """A stored dimension's size, or None when symbolic: a name, no value, or a negative
    value (Paddle2ONNX and some other exporters write -1 for "any")."""
    return d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None


def _named(n, name):
    onnx = _onnx()
    m = onnx.NodeProto()
    m.CopyFrom(n)
    m.name = name
    return m


def _attr(a):
    onnx = _onnx()
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, onnx.TensorProto):
        return _to_array(v)
    if isinstance(v, list):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    return v


def _inp(n, i: int):
    """Name of input i, or None when absent or empty (an omitted optional input)."""
    return n.input[i] if i < len(n.input) and n.input[i] else None


def _refuse(imp, msg: str, kind: str = "unsupported_attr"):
    raise ModelError(f"{imp.where_node()}: {msg}", kind)


def _axis(imp, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        _refuse(imp, f"{what} {axis} out of range for rank {rank}", "shape")
    return axis % max(rank, 1)
