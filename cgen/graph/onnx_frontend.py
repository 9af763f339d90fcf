"""ONNX -> graph IR.

    load_onnx(model, input_shapes=None) -> Graph

`model` is a path, the bytes of a model, or an `onnx.ModelProto`.  The model
is checked (`onnx.checker`), its default-domain opset must lie between 11 and
the newest the installed onnx defines (older models go through
`onnx.version_converter` first), and every graph input must have a
static shape (a symbolic dimension takes its value from `input_shapes`, e.g.
``{"x": (1, 3, 224, 224)}``, the CLI's ``--input-shape x=1,3,224,224``).

Each ONNX node becomes one or more canonical nodes (see `cgen.graph.passes`)
with every attribute explicit: pads as (top, left, bottom, right), axes
non-negative, Gemm as transposes + matmul + mul(alpha) + add(beta * C),
1-D convolutions and pools as 2-D ones between reshapes, softmax before
opset 13 as reshape + softmax + reshape.  Operands that act as attributes
(Reshape's shape, Slice's starts, Pad's pads, Clip's bounds, axes, split
sizes, Gather's indices) must be computable at import: initializers, Constant
nodes, Shape of a (static) value, or nodes over those.  Shape, Size,
ConstantOfShape and Constant become constants; Identity and Dropout vanish.  A tensor
without elements (an input or a node's output) has only one value, so it is a constant
too: no node computes it and the parts of a Concat or Split that are empty drop out.

Every refusal is a `ModelError` with a one-line message.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Mapping

import numpy as np

from .ir import Graph, ModelError, Node, Value, check_dtype, unique_name, value_of
from .passes import output_types

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
                dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
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
                    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
                    if len(dims) != len(val.shape) or any(
                            d is not None and d != s for d, s in zip(dims, val.shape)):
                        raise ModelError(f"output {o.name!r}: the model declares shape "
                                         f"{tuple(dims)}, cgen computes {val.shape}", "shape")
            outputs.append(val)
        used = {v.name for n in self.nodes for v in n.inputs} | {v.name for v in outputs}
        consts = {k: a for k, a in self.consts.items() if k in used}
        return Graph(tuple(self.inputs), tuple(outputs), tuple(self.nodes), consts,
                     name=g.name or "model").validate()


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


# ====================================================================== converters
def _c_unary(op: str, **fixed):
    def conv(imp, n, a):
        attrs = {k: (a.get(k, d) if not callable(d) else d(imp, a)) for k, d in fixed.items()}
        imp.emit(op, [n.input[0]], attrs, outputs=[n.output[0]])
    return conv


def _c_binary(op: str):
    def conv(imp, n, a):
        x, y = n.input[0], n.input[1]
        if imp.v(y).dtype != imp.v(x).dtype:
            if op != "pow":
                _refuse(imp, f"operand dtypes differ ({imp.v(x).dtype}, {imp.v(y).dtype})",
                        "unsupported_dtype")
            y = imp.cast(y, imp.v(x).dtype)
        imp.emit(op, [x, y], outputs=[n.output[0]])
    return conv


def _c_variadic(op: str, mean: bool = False):
    def conv(imp, n, a):
        ins = [i for i in n.input if i]
        if len(ins) == 1 and not mean:
            imp.alias[n.output[0]] = imp.resolve(ins[0])
            return
        acc = ins[0]
        for k, x in enumerate(ins[1:]):
            last = k == len(ins) - 2 and not mean
            acc = imp.emit(op, [acc, x], outputs=[n.output[0]] if last else None)[0]
        if mean:
            c = imp.add_const(np.asarray(len(ins), dtype=imp.v(acc).dtype), f"{n.output[0]}__count")
            imp.emit("div", [acc, c], outputs=[n.output[0]])
    return conv


def _c_identity(imp, n, a):
    imp.alias[n.output[0]] = imp.resolve(n.input[0])


def _c_dropout(imp, n, a):
    tm = _inp(n, 2)
    if tm is not None and bool(imp.const(tm, "training_mode").reshape(-1)[0]):
        _refuse(imp, "training_mode is true; cgen compiles inference only")
    if len(n.output) > 1 and n.output[1] and _is_used(imp, n.output[1]):
        _refuse(imp, "the Dropout mask output is used (a bool tensor)", "unsupported_dtype")
    imp.alias[n.output[0]] = imp.resolve(n.input[0])


def _is_used(imp, name: str) -> bool:
    g = imp.proto.graph
    return any(name in m.input for m in g.node) or any(o.name == name for o in g.output)


def _c_reciprocal(imp, n, a):
    x = n.input[0]
    one = imp.add_const(np.ones((), dtype=imp.v(x).dtype), f"{n.output[0]}__one")
    imp.emit("div", [one, x], outputs=[n.output[0]])


def _c_cast(imp, n, a):
    to = check_dtype(_np_dtype_name(a["to"]), f"{imp.where_node()}: target type")
    x = n.input[0]
    if imp.v(x).dtype == to:
        imp.alias[n.output[0]] = imp.resolve(x)
    else:
        imp.emit("cast", [x], {"to": to}, outputs=[n.output[0]])


def _c_cast_like(imp, n, a):
    x, to = n.input[0], imp.v(n.input[1]).dtype
    if imp.v(x).dtype == to:
        imp.alias[n.output[0]] = imp.resolve(x)
    else:
        imp.emit("cast", [x], {"to": to}, outputs=[n.output[0]])


def _c_clip(imp, n, a):
    x = n.input[0]
    dt = imp.v(x).dtype
    lo = hi = None            # opset 6's min/max attributes are inputs after conversion to 11
    if _inp(n, 1):
        lo = imp.const(n.input[1], "min").reshape(-1)[0]
    if _inp(n, 2):
        hi = imp.const(n.input[2], "max").reshape(-1)[0]
    conv = float if dt == "float32" else int
    imp.emit("clip", [x], {"min": None if lo is None else conv(lo),
                           "max": None if hi is None else conv(hi)}, outputs=[n.output[0]])


def _c_gelu(imp, n, a):
    approx = a.get("approximate", "none")
    if approx not in ("none", "tanh"):
        _refuse(imp, f"approximate={approx!r}")
    imp.emit("gelu", [n.input[0]], {"approximate": approx}, outputs=[n.output[0]])


# ------------------------------------------------------------------ conv and pools
def _spatial_pads(imp, a, in_sizes, kernel, strides, dilations, nsp):
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0] * 2 * nsp))
        if len(pads) != 2 * nsp:
            _refuse(imp, f"pads {pads} do not have {2 * nsp} entries", "shape")
        return pads[:nsp], pads[nsp:]
    if auto == "VALID":
        return [0] * nsp, [0] * nsp
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        _refuse(imp, f"auto_pad={auto!r}")
    begin, end = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin, end


def _geometry(imp, a, xshape, kernel):
    nsp = len(xshape) - 2
    if nsp not in (1, 2):
        _refuse(imp, f"{nsp} spatial dimensions; cgen handles 1-D and 2-D")
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    begin, end = _spatial_pads(imp, a, xshape[2:], kernel, strides, dil, nsp)
    if nsp == 1:   # as 2-D with height 1
        return 1, (1, strides[0]), (0, begin[0], 0, end[0]), (1, dil[0])
    return 2, tuple(strides), (begin[0], begin[1], end[0], end[1]), tuple(dil)


def _as_2d(imp, name: str, nsp: int) -> str:
    if nsp == 2:
        return imp.resolve(name)
    s = imp.v(name).shape
    return imp.reshape(name, s[:2] + (1,) + s[2:], tag="as2d")


def _finish_2d(imp, n, op, ins, attrs, nsp):
    if nsp == 2:
        imp.emit(op, ins, attrs, outputs=[n.output[0]])
        return
    y = imp.emit(op, ins, attrs)[0]
    s = imp.v(y).shape
    imp.reshape(y, s[:2] + s[3:], out=n.output[0])


def _c_conv(imp, n, a):
    x, w, b = n.input[0], n.input[1], _inp(n, 2)
    xs, ws = imp.v(x).shape, imp.v(w).shape
    kernel = list(a.get("kernel_shape", ws[2:]))
    if tuple(kernel) != tuple(ws[2:]):
        _refuse(imp, f"kernel_shape {kernel} differs from the weight's {ws[2:]}", "shape")
    nsp, strides, pads, dil = _geometry(imp, a, xs, kernel)
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "groups": a.get("group", 1)}
    ins = [_as_2d(imp, x, nsp), _as_2d(imp, w, nsp)] + ([b] if b else [])
    _finish_2d(imp, n, "conv2d", ins, attrs, nsp)


def _c_conv_transpose(imp, n, a):
    x, w, b = n.input[0], n.input[1], _inp(n, 2)
    xs, ws = imp.v(x).shape, imp.v(w).shape
    nsp = len(xs) - 2
    if nsp not in (1, 2):
        _refuse(imp, f"{nsp} spatial dimensions; cgen handles 1-D and 2-D")
    kernel = list(a.get("kernel_shape", ws[2:]))
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    opad = list(a.get("output_padding", [0] * nsp))
    auto = a.get("auto_pad", "NOTSET")
    out_shape = a.get("output_shape")
    if out_shape is not None and len(out_shape) == len(xs):
        out_shape = out_shape[2:]
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        if out_shape is None:
            out_shape = [xs[2 + i] * strides[i] for i in range(nsp)]
        begin, end = [], []
        for i in range(nsp):
            total = strides[i] * (xs[2 + i] - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1 - out_shape[i]
            total = max(0, total)       # a bigger output_shape grows the trailing output padding
            if auto == "SAME_UPPER":
                begin.append(total // 2)
                end.append(total - total // 2)
            else:
                begin.append(total - total // 2)
                end.append(total // 2)
            natural = strides[i] * (xs[2 + i] - 1) + (kernel[i] - 1) * dil[i] + 1
            opad[i] = out_shape[i] - (natural - total)
    elif auto in ("NOTSET", "", "VALID"):
        pads = list(a.get("pads", [0] * 2 * nsp)) if auto != "VALID" else [0] * 2 * nsp
        begin, end = pads[:nsp], pads[nsp:]
    else:
        _refuse(imp, f"auto_pad={auto!r}")
    if nsp == 1:
        attrs = {"strides": (1, strides[0]), "pads": (0, begin[0], 0, end[0]),
                 "dilations": (1, dil[0]), "output_padding": (0, opad[0])}
    else:
        attrs = {"strides": tuple(strides), "pads": (begin[0], begin[1], end[0], end[1]),
                 "dilations": tuple(dil), "output_padding": tuple(opad)}
    attrs["groups"] = a.get("group", 1)
    ins = [_as_2d(imp, x, nsp), _as_2d(imp, w, nsp)] + ([b] if b else [])
    _finish_2d(imp, n, "conv2d_transpose", ins, attrs, nsp)


def _c_pool(kind: str):
    def conv(imp, n, a):
        if kind == "max" and len(n.output) > 1 and n.output[1] and _is_used(imp, n.output[1]):
            _refuse(imp, "the Indices output of MaxPool is used")
        x = n.input[0]
        xs = imp.v(x).shape
        kernel = list(a["kernel_shape"])
        nsp, strides, pads, dil = _geometry(imp, a, xs, kernel)
        k2 = (1, kernel[0]) if nsp == 1 else tuple(kernel)
        attrs = {"kernel": k2, "strides": strides, "pads": pads, "dilations": dil,
                 "ceil_mode": int(a.get("ceil_mode", 0))}
        if kind == "avg":
            attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
        _finish_2d(imp, n, f"{kind}_pool2d", [_as_2d(imp, x, nsp)], attrs, nsp)
    return conv


def _c_global_pool(op: str):
    def conv(imp, n, a):
        r = len(imp.v(n.input[0]).shape)
        imp.emit(op, [n.input[0]], {"axes": tuple(range(2, r)), "keepdims": 1}, outputs=[n.output[0]])
    return conv


# ------------------------------------------------------------------ dense
def _c_gemm(imp, n, a):
    A, B, C = n.input[0], n.input[1], _inp(n, 2)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    if a.get("transA", 0):
        A = imp.emit("transpose", [A], {"perm": (1, 0)}, tag="transA")[0]
    if a.get("transB", 0):
        B = imp.emit("transpose", [B], {"perm": (1, 0)}, tag="transB")[0]
    last = C is None or beta == 0.0
    y = imp.emit("matmul", [A, B], outputs=[n.output[0]] if last and alpha == 1.0 else None)[0]
    if alpha != 1.0:
        k = imp.add_const(np.asarray(alpha, dtype=imp.v(y).dtype), f"{n.output[0]}__alpha")
        y = imp.emit("mul", [y, k], outputs=[n.output[0]] if last else None, tag="alpha")[0]
    if not last:
        if beta != 1.0:
            k = imp.add_const(np.asarray(beta, dtype=imp.v(C).dtype), f"{n.output[0]}__beta")
            C = imp.emit("mul", [C, k], tag="beta")[0]
        imp.emit("add", [y, C], outputs=[n.output[0]])


def _matmul_like(imp, n, op, a_name, b_name, extra_before, extra_after):
    sa, sb = imp.v(a_name).shape, imp.v(b_name).shape
    if len(sa) == 0 or len(sb) == 0:
        _refuse(imp, "matmul of a scalar", "shape")
    A = imp.reshape(a_name, (1,) + sa, tag="a2d") if len(sa) == 1 else imp.resolve(a_name)
    B = imp.reshape(b_name, sb + (1,), tag="b2d") if len(sb) == 1 else imp.resolve(b_name)
    ins = [A] + extra_before + [B] + extra_after
    if len(sa) > 1 and len(sb) > 1:
        imp.emit(op, ins, outputs=[n.output[0]])
        return
    y = imp.emit(op, ins)[0]
    s = imp.v(y).shape
    final = s[:-2] + ((s[-2],) if len(sa) > 1 else ()) + ((s[-1],) if len(sb) > 1 else ())
    imp.reshape(y, final, out=n.output[0])


def _c_matmul(imp, n, a):
    _matmul_like(imp, n, "matmul", n.input[0], n.input[1], [], [])


# ------------------------------------------------------------------ normalisation
def _c_softmax(op: str):
    def conv(imp, n, a):
        x = n.input[0]
        s = imp.v(x).shape
        r = len(s)
        if imp.opset >= 13:
            imp.emit(op, [x], {"axis": _axis(imp, a.get("axis", -1), r)}, outputs=[n.output[0]])
            return
        ax = _axis(imp, a.get("axis", 1), r)
        if ax == r - 1:
            imp.emit(op, [x], {"axis": ax}, outputs=[n.output[0]])
            return
        rows, cols = int(np.prod(s[:ax], dtype=np.int64)), int(np.prod(s[ax:], dtype=np.int64))
        flat = imp.reshape(x, (rows, cols), tag="flat2d")
        y = imp.emit(op, [flat], {"axis": 1})[0]
        imp.reshape(y, s, out=n.output[0])
    return conv


def _c_batchnorm(imp, n, a):
    if a.get("training_mode", 0):
        _refuse(imp, "training_mode=1; cgen compiles inference only")
    if any(o and _is_used(imp, o) for o in n.output[1:]):
        _refuse(imp, "running mean/variance outputs are used (training mode)")
    if len(imp.v(n.input[0]).shape) < 2:
        _refuse(imp, "input of rank < 2", "shape")
    imp.emit("batch_norm", list(n.input[:5]), {"epsilon": float(a.get("epsilon", 1e-5))},
             outputs=[n.output[0]])


def _c_layernorm(imp, n, a):
    x, scale, bias = n.input[0], n.input[1], _inp(n, 2)
    r = len(imp.v(x).shape)
    ax = _axis(imp, a.get("axis", -1), r)
    eps = float(a.get("epsilon", 1e-5))
    imp.emit("layer_norm", [x, scale] + ([bias] if bias else []), {"axis": ax, "epsilon": eps},
             outputs=[n.output[0]])
    extra = [o if i < len(n.output) else "" for i, o in enumerate(n.output)][1:]
    if any(extra):
        axes = tuple(range(ax, r))
        mean = imp.emit("reduce_mean", [x], {"axes": axes, "keepdims": 1},
                        outputs=[extra[0]] if extra[0] else None, tag="mean")[0]
        if len(extra) > 1 and extra[1]:
            d = imp.emit("sub", [x, mean], tag="centered")[0]
            sq = imp.emit("mul", [d, d], tag="square")[0]
            var = imp.emit("reduce_mean", [sq], {"axes": axes, "keepdims": 1}, tag="var")[0]
            e = imp.add_const(np.asarray(eps, np.float32), f"{n.output[0]}__eps")
            ve = imp.emit("add", [var, e], tag="var_eps")[0]
            sd = imp.emit("sqrt", [ve], tag="std")[0]
            one = imp.add_const(np.ones((), np.float32), f"{n.output[0]}__one")
            imp.emit("div", [one, sd], outputs=[extra[1]])


def _reduce_axes(imp, n, a, input_from: int):
    """Axes of a Reduce*: the attribute before opset `input_from`, the optional input after."""
    r = len(imp.v(n.input[0]).shape)
    axes = None
    if imp.opset >= input_from:
        if _inp(n, 1):
            axes = [int(x) for x in imp.const(n.input[1], "axes").reshape(-1)]
    else:
        axes = a.get("axes")
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return None
        return tuple(range(r))
    return tuple(sorted({_axis(imp, int(x), r) for x in axes}))


def _c_reduce(op: str, input_from: int):
    def conv(imp, n, a):
        axes = _reduce_axes(imp, n, a, input_from)
        if axes is None:
            imp.alias[n.output[0]] = imp.resolve(n.input[0])
            return
        imp.emit(op, [n.input[0]], {"axes": axes, "keepdims": int(a.get("keepdims", 1))},
                 outputs=[n.output[0]])
    return conv


# ------------------------------------------------------------------ shapes
def _c_flatten(imp, n, a):
    s = imp.v(n.input[0]).shape
    ax = a.get("axis", 1)
    ax = ax + len(s) if ax < 0 else ax
    if not 0 <= ax <= len(s):
        _refuse(imp, f"axis {a.get('axis')} out of range", "shape")
    shape = (int(np.prod(s[:ax], dtype=np.int64)), int(np.prod(s[ax:], dtype=np.int64)))
    imp.reshape(n.input[0], shape, out=n.output[0])


def _c_reshape(imp, n, a):
    s = imp.v(n.input[0]).shape
    want = [int(d) for d in imp.const(n.input[1], "shape").reshape(-1)]
    allowzero = a.get("allowzero", 0)
    out = []
    for i, d in enumerate(want):
        if d == 0 and not allowzero:
            if i >= len(s):
                _refuse(imp, f"shape {want}: 0 at {i} has no input dimension to copy", "shape")
            out.append(s[i])
        else:
            out.append(d)
    if out.count(-1) > 1:
        _refuse(imp, f"shape {want} has more than one -1", "shape")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        total = int(np.prod(s, dtype=np.int64))
        if known == 0 or total % known:
            _refuse(imp, f"cannot reshape {s} to {want}", "shape")
        out[out.index(-1)] = total // known
    imp.reshape(n.input[0], out, out=n.output[0])


def _c_transpose(imp, n, a):
    r = len(imp.v(n.input[0]).shape)
    perm = tuple(int(p) % max(r, 1) for p in a.get("perm", list(range(r))[::-1]))
    if sorted(perm) != list(range(r)):
        _refuse(imp, f"perm {perm} is not a permutation of {r} axes", "shape")
    imp.emit("transpose", [n.input[0]], {"perm": perm}, outputs=[n.output[0]])


def _c_concat(imp, n, a):
    ins = [i for i in n.input if i]
    r = len(imp.v(ins[0]).shape)
    ax = _axis(imp, a["axis"], r)
    # empty parts add nothing: the others are concatenated (one left: it is the output);
    # when all are empty, emit makes the empty output a constant
    full = [i for i in ins if imp.v(i).size] or ins
    if len(full) == 1 and len(ins) > 1:
        imp.alias[n.output[0]] = imp.resolve(full[0])
        return
    imp.emit("concat", full, {"axis": ax}, outputs=[n.output[0]])


def _c_split(imp, n, a):
    s = imp.v(n.input[0]).shape
    ax = _axis(imp, a.get("axis", 0), len(s))
    outs = list(n.output)
    if imp.opset >= 13 and _inp(n, 1):
        sizes = [int(x) for x in imp.const(n.input[1], "split").reshape(-1)]
    elif imp.opset < 13 and "split" in a:
        sizes = list(a["split"])
    elif "num_outputs" in a:
        k = a["num_outputs"]
        chunk = -(-s[ax] // k)
        sizes = [chunk] * (k - 1) + [s[ax] - chunk * (k - 1)]
    else:
        if s[ax] % len(outs):
            _refuse(imp, f"cannot split {s[ax]} evenly into {len(outs)}", "shape")
        sizes = [s[ax] // len(outs)] * len(outs)
    if len(sizes) != len(outs):
        _refuse(imp, f"{len(sizes)} split sizes for {len(outs)} outputs", "shape")
    if sum(sizes) != s[ax] or min(sizes) < 0:
        _refuse(imp, f"split sizes {sizes} do not cover the axis of {s[ax]}", "shape")
    names = [o if o else imp.fresh(f"{n.name}__unused{i}") for i, o in enumerate(outs)]
    for name, size in zip(names, sizes):       # an empty part is a constant, not an output
        if size == 0:
            shape = tuple(0 if d == ax else x for d, x in enumerate(s))
            imp.set_const(name, np.zeros(shape, imp.v(n.input[0]).dtype))
    kept = [(name, size) for name, size in zip(names, sizes) if size]
    if len(kept) == 1:
        imp.alias[kept[0][0]] = imp.resolve(n.input[0])
        return
    imp.emit("split", [n.input[0]], {"axis": ax, "sizes": tuple(z for _, z in kept)},
             outputs=[name for name, _ in kept])


def _c_slice(imp, n, a):
    s = imp.v(n.input[0]).shape
    r = len(s)
    starts = [int(x) for x in imp.const(n.input[1], "starts").reshape(-1)]
    ends = [int(x) for x in imp.const(n.input[2], "ends").reshape(-1)]
    axes = ([int(x) for x in imp.const(n.input[3], "axes").reshape(-1)] if _inp(n, 3)
            else list(range(len(starts))))
    steps = ([int(x) for x in imp.const(n.input[4], "steps").reshape(-1)] if _inp(n, 4)
             else [1] * len(starts))
    st, en, sp = [0] * r, list(s), [1] * r
    for b, e, ax, step in zip(starts, ends, axes, steps):
        ax = _axis(imp, ax, r)
        d = s[ax]
        if step == 0:
            _refuse(imp, "slice step 0", "shape")
        b = b + d if b < 0 else b
        e = e + d if e < 0 else e
        if step > 0:
            b, e = min(max(b, 0), d), min(max(e, 0), d)
        else:
            b, e = min(max(b, 0), d - 1), min(max(e, -1), d - 1)
        st[ax], en[ax], sp[ax] = b, e, step
    imp.emit("slice", [n.input[0]], {"starts": tuple(st), "ends": tuple(en), "steps": tuple(sp)},
             outputs=[n.output[0]])


def _unsqueeze_axes(imp, n, a):
    if imp.opset >= 13:
        return [int(x) for x in imp.const(n.input[1], "axes").reshape(-1)] if _inp(n, 1) else None
    return a.get("axes")


def _c_squeeze(imp, n, a):
    s = imp.v(n.input[0]).shape
    axes = _unsqueeze_axes(imp, n, a)
    if axes is None:
        axes = [i for i, d in enumerate(s) if d == 1]
    axes = {_axis(imp, x, len(s)) for x in axes}
    if any(s[x] != 1 for x in axes):
        _refuse(imp, f"cannot squeeze axes {sorted(axes)} of shape {s}", "shape")
    imp.reshape(n.input[0], [d for i, d in enumerate(s) if i not in axes], out=n.output[0])


def _c_unsqueeze(imp, n, a):
    s = list(imp.v(n.input[0]).shape)
    axes = _unsqueeze_axes(imp, n, a)
    if not axes:
        _refuse(imp, "Unsqueeze without axes", "shape")
    r = len(s) + len(axes)
    axes = sorted({_axis(imp, x, r) for x in axes})
    for x in axes:
        s.insert(x, 1)
    imp.reshape(n.input[0], s, out=n.output[0])


def _c_pad(imp, n, a):
    s = imp.v(n.input[0]).shape
    r = len(s)
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        _refuse(imp, f"mode={mode!r}")
    pads = [int(x) for x in imp.const(n.input[1], "pads").reshape(-1)]
    value = 0
    if _inp(n, 2):
        cv = imp.const(n.input[2], "constant_value").reshape(-1)
        value = cv[0].item() if cv.size else 0
    axes = ([_axis(imp, int(x), r) for x in imp.const(n.input[3], "axes").reshape(-1)]
            if _inp(n, 3) else list(range(r)))
    if len(pads) != 2 * len(axes):
        _refuse(imp, f"{len(pads)} pads for {len(axes)} axes", "shape")
    full = [0] * (2 * r)
    for i, ax in enumerate(axes):
        full[ax], full[r + ax] = pads[i], pads[len(axes) + i]
    if mode == "reflect" and any(p >= d for p, d in zip(full, list(s) * 2)):
        _refuse(imp, f"reflect pads {full} reach past the input {s}", "shape")
    dt = imp.v(n.input[0]).dtype
    value = float(value) if dt == "float32" else int(value)
    imp.emit("pad", [n.input[0]], {"pads": tuple(full), "mode": mode, "value": value},
             outputs=[n.output[0]])


def _c_gather(imp, n, a):
    data, idx = n.input[0], n.input[1]
    s = imp.v(data).shape
    ax = _axis(imp, a.get("axis", 0), len(s))
    ind = imp.const(idx, "indices").astype(np.int64)
    if np.any(ind >= s[ax]) or np.any(ind < -s[ax]):
        _refuse(imp, f"indices out of range for axis of size {s[ax]}", "shape")
    ind = np.where(ind < 0, ind + s[ax], ind)
    c = imp.add_const(ind, f"{n.output[0]}__indices")
    imp.emit("gather", [data, c], {"axis": ax}, outputs=[n.output[0]])


def _c_shape(imp, n, a):
    s = imp.v(n.input[0]).shape
    r = len(s)
    start, end = a.get("start", 0), a.get("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    imp.set_const(n.output[0], np.asarray(s[start:end], dtype=np.int64))


def _c_size(imp, n, a):
    imp.set_const(n.output[0], np.asarray(int(np.prod(imp.v(n.input[0]).shape)), dtype=np.int64))


def _c_constant_of_shape(imp, n, a):
    shape = [int(x) for x in imp.const(n.input[0], "shape").reshape(-1)]
    val = a.get("value")
    val = np.zeros((1,), np.float32) if val is None else np.asarray(val).reshape(-1)
    imp.set_const(n.output[0], np.full(shape, val[0], dtype=val.dtype))


def _c_constant(imp, n, a):
    if "sparse_value" in a or "value_string" in a or "value_strings" in a:
        _refuse(imp, "sparse or string constants", "unsupported_dtype")
    if "value" in a:
        v = np.asarray(a["value"])
    elif "value_float" in a:
        v = np.asarray(a["value_float"], np.float32)
    elif "value_floats" in a:
        v = np.asarray(a["value_floats"], np.float32)
    elif "value_int" in a:
        v = np.asarray(a["value_int"], np.int64)
    elif "value_ints" in a:
        v = np.asarray(a["value_ints"], np.int64)
    else:
        _refuse(imp, "no value attribute")
    imp.set_const(n.output[0], v)


# ------------------------------------------------------------------ quantisation
def _qparams(imp, scale: str, zp: str | None, zdtype: str, what: str):
    sd = imp.v(scale).dtype
    if sd != "float32":
        _refuse(imp, f"{what} scale is {sd}; cgen supports float32 scales", "unsupported_dtype")
    if zp is None:
        zp = imp.add_const(np.zeros(imp.v(scale).shape, dtype=zdtype), f"{scale}__zero_point")
    if imp.v(zp).dtype not in ("int8", "uint8", "int16", "int32"):
        _refuse(imp, f"{what} zero point is {imp.v(zp).dtype}", "unsupported_dtype")
    return zp


def _c_quantize(imp, n, a):
    if a.get("block_size", 0):
        _refuse(imp, "blocked quantisation (block_size)")
    x, scale, zp = n.input[0], n.input[1], _inp(n, 2)
    out_dt = "uint8"
    if a.get("output_dtype"):
        out_dt = check_dtype(_np_dtype_name(a["output_dtype"]), f"{imp.where_node()}: output_dtype")
    zp = _qparams(imp, scale, zp, out_dt, "y")
    r = len(imp.v(x).shape)
    ax = _axis(imp, a.get("axis", 1), r) if imp.v(scale).size > 1 else 0
    imp.emit("quantize", [x, scale, zp], {"axis": ax}, outputs=[n.output[0]])


def _c_dequantize(imp, n, a):
    if a.get("block_size", 0):
        _refuse(imp, "blocked quantisation (block_size)")
    x, scale, zp = n.input[0], n.input[1], _inp(n, 2)
    zp = _qparams(imp, scale, zp, imp.v(x).dtype, "x")
    if imp.v(zp).dtype != imp.v(x).dtype:
        _refuse(imp, "zero point and input dtypes differ", "unsupported_dtype")
    r = len(imp.v(x).shape)
    ax = _axis(imp, a.get("axis", 1), r) if imp.v(scale).size > 1 else 0
    imp.emit("dequantize", [x, scale, zp], {"axis": ax}, outputs=[n.output[0]])


def _c_qlinear_conv(imp, n, a):
    x, xs, xz, w, ws, wz, ys, yz = n.input[:8]
    b = _inp(n, 8)
    sx, sw = imp.v(x).shape, imp.v(w).shape
    kernel = list(a.get("kernel_shape", sw[2:]))
    nsp, strides, pads, dil = _geometry(imp, a, sx, kernel)
    for p in (xs, ws, ys):
        if imp.v(p).dtype != "float32":
            _refuse(imp, f"scale {p!r} is {imp.v(p).dtype}", "unsupported_dtype")
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "groups": a.get("group", 1)}
    ins = [_as_2d(imp, x, nsp), xs, xz, _as_2d(imp, w, nsp), ws, wz, ys, yz] + ([b] if b else [])
    _finish_2d(imp, n, "qlinear_conv2d", ins, attrs, nsp)


def _c_qlinear_matmul(imp, n, a):
    a_, as_, az, b, bs, bz, ys, yz = n.input[:8]
    _matmul_like(imp, n, "qlinear_matmul", a_, b, [as_, az], [bs, bz, ys, yz])


# ------------------------------------------------------------------ the table
CONVERTERS: Mapping[str, Callable] = {
    "Conv": _c_conv, "ConvTranspose": _c_conv_transpose, "Gemm": _c_gemm, "MatMul": _c_matmul,
    "Add": _c_binary("add"), "Sub": _c_binary("sub"), "Mul": _c_binary("mul"),
    "Div": _c_binary("div"), "Pow": _c_binary("pow"),
    "Max": _c_variadic("max"), "Min": _c_variadic("min"), "Sum": _c_variadic("add"),
    "Mean": _c_variadic("add", mean=True),
    "Relu": _c_unary("relu"), "LeakyRelu": _c_unary("leaky_relu", alpha=0.01),
    "Clip": _c_clip, "Sigmoid": _c_unary("sigmoid"), "Tanh": _c_unary("tanh"),
    "HardSigmoid": _c_unary("hard_sigmoid", alpha=0.2, beta=0.5),
    "HardSwish": _c_unary("hard_swish"), "Erf": _c_unary("erf"), "Gelu": _c_gelu,
    "Exp": _c_unary("exp"), "Log": _c_unary("log"), "Sqrt": _c_unary("sqrt"),
    "Neg": _c_unary("neg"), "Abs": _c_unary("abs"), "Reciprocal": _c_reciprocal,
    "Softmax": _c_softmax("softmax"), "LogSoftmax": _c_softmax("log_softmax"),
    "BatchNormalization": _c_batchnorm, "LayerNormalization": _c_layernorm,
    "MaxPool": _c_pool("max"), "AveragePool": _c_pool("avg"),
    "GlobalAveragePool": _c_global_pool("reduce_mean"),
    "GlobalMaxPool": _c_global_pool("reduce_max"),
    "ReduceMean": _c_reduce("reduce_mean", 18), "ReduceSum": _c_reduce("reduce_sum", 13),
    "ReduceMax": _c_reduce("reduce_max", 18), "ReduceMin": _c_reduce("reduce_min", 18),
    "Flatten": _c_flatten, "Reshape": _c_reshape, "Transpose": _c_transpose, "Concat": _c_concat,
    "Split": _c_split, "Slice": _c_slice, "Squeeze": _c_squeeze, "Unsqueeze": _c_unsqueeze,
    "Pad": _c_pad, "Gather": _c_gather, "Shape": _c_shape, "Size": _c_size,
    "ConstantOfShape": _c_constant_of_shape, "Constant": _c_constant, "Identity": _c_identity,
    "Dropout": _c_dropout, "Cast": _c_cast, "CastLike": _c_cast_like,
    "QuantizeLinear": _c_quantize, "DequantizeLinear": _c_dequantize,
    "QLinearConv": _c_qlinear_conv, "QLinearMatMul": _c_qlinear_matmul,
}
SUPPORTED_ONNX_OPS = tuple(sorted(CONVERTERS))


def load_onnx(model, input_shapes: Mapping | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) as a canonical Graph (see module doc)."""
    proto, where = _load_proto(model)
    opset = _check(proto, where)
    if opset < MIN_OPSET:
        try:     # older models are upgraded by onnx's own converter, or refused
            from onnx import version_converter
            proto = version_converter.convert_version(proto, MIN_OPSET)
            opset = _check(proto, where)
        except ModelError as e:
            raise ModelError(f"ONNX model {where} uses opset {opset}; after conversion to opset "
                             f"{MIN_OPSET}: {e}", "unsupported_attr") from None
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"ONNX model {where} uses opset {opset}; cgen supports opsets "
                             f"{MIN_OPSET} to {max_opset()} and onnx.version_converter cannot "
                             f"upgrade it ({_first_line(e)})", "unsupported_attr") from None
    if len(proto.functions):
        try:
            from onnx import inliner
            proto = inliner.inline_local_functions(proto)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"cannot inline the model's local functions: {_first_line(e)}") from None
    return _Importer(proto, opset, input_shapes, where).run(CONVERTERS)


def parse_input_shape(text: str) -> tuple:
    """'name=1,3,224,224' -> ('name', (1, 3, 224, 224)) (the CLI's --input-shape)."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(",") if d.strip())
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise ModelError(f"--input-shape {text!r}: expected NAME=D0,D1,... with positive sizes",
                         "bad_input")
    return name, shape


# ====================================================================== ONNX node tests
# Operand positions that act as attributes: frozen as initializers when a node test feeds them.
SHAPE_OPERANDS: Mapping[str, tuple] = {
    "Reshape": (1,), "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "Pad": (1, 2, 3),
    "Split": (1,), "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "Clip": (1, 2), "Gather": (1,), "ConstantOfShape": (0,), "Dropout": (1, 2),
}


# Ops whose output depends only on the (static) shape of their input, not its values: the
# walk from a shape-like operand stops there, so that input stays a graph input.
SHAPE_ONLY = frozenset({"Shape", "Size"})


@dataclasses.dataclass(frozen=True)
class NodeTestResult:
    name: str
    op: str               # the ONNX op the case tests (from its name; see _primary_op)
    ops: tuple            # ONNX op types in the case's graph (an _expanded case has many)
    status: str           # "pass" | "skip" | "fail"
    reason: str = ""      # why skipped or failed (one line)
    kind: str = ""        # a skip's ModelError kind: unsupported_op, _dtype or _attr


def _primary_op(name: str, ops: tuple) -> str:
    """The op a node test is about: the longest ONNX op name its name starts with
    (test_reduce_sum_square_... -> ReduceSumSquare), else its only op."""
    key = name.removeprefix("test_").replace("_", "").lower()
    best = ""
    for op in _onnx_op_names():
        if key.startswith(op.lower()) and len(op) > len(best):
            best = op
    return best or (ops[0] if len(ops) == 1 else "+".join(ops))


@functools.lru_cache(maxsize=1)
def _onnx_op_names() -> tuple:
    return tuple(sorted({s.name for s in _onnx().defs.get_all_schemas()}))


def freeze_shape_operands(model, inputs: list):
    """Copy of the model where graph inputs feeding shape-like operands become initializers."""
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names = [v.name for v in g.input if v.name not in {t.name for t in g.initializer}]
    feed = dict(zip(names, inputs))
    producer = {o: node for node in g.node for o in node.output}
    freeze, seen = set(), set()
    todo = [node.input[pos] for node in g.node for pos in SHAPE_OPERANDS.get(node.op_type, ())
            if pos < len(node.input) and node.input[pos]]
    while todo:                       # everything a shape-like operand is computed from
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in feed:
            freeze.add(name)
        elif name in producer and producer[name].op_type not in SHAPE_ONLY:
            todo.extend(i for i in producer[name].input if i)
    for name in freeze:
        g.initializer.append(onnx.numpy_helper.from_array(np.asarray(feed[name]), name))
    keep = [v for v in g.input if v.name not in freeze]
    del g.input[:]
    g.input.extend(keep)
    return m, {k: v for k, v in feed.items() if k not in freeze}


def _compare(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str:
    want = np.asarray(want)
    if got.shape != want.shape:
        return f"shape {got.shape} != expected {want.shape}"
    if str(got.dtype) != str(want.dtype):
        return f"dtype {got.dtype} != expected {want.dtype}"
    if np.issubdtype(want.dtype, np.floating):
        ok = np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        ok = np.array_equal(got, want)
    if ok:
        return ""
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return f"max abs diff {np.nanmax(diff):.3g}"


SKIP_KINDS = ("unsupported_op", "unsupported_dtype", "unsupported_attr")


def run_node_test(case, rtol: float = 1e-3, atol: float = 1e-5, target=None,
                  name: str = "m") -> NodeTestResult:
    """One ONNX backend node case: with target None through load_onnx + the reference
    interpreter; with a target compiled and run on it by the code path of `cgen run`
    (cgen.graph.model.compile_model, then CompiledModel.run)."""
    ops = tuple(sorted({n.op_type for n in case.model.graph.node}))
    result = functools.partial(NodeTestResult, case.name, _primary_op(case.name, ops), ops)
    unsupported = [op for op in ops if op not in CONVERTERS]
    if unsupported:
        return result("skip", f"unsupported op {', '.join(unsupported)}", "unsupported_op")
    for inputs, outputs in case.data_sets:
        try:
            model, feeds = freeze_shape_operands(case.model, list(inputs))
            got, out_names = _run_case(model, feeds, target, name)
        except ModelError as e:
            if e.kind in SKIP_KINDS:
                return result("skip", str(e), e.kind)
            return result("fail", f"{e.kind}: {e}")
        except Exception as e:  # noqa: BLE001 - a crash is a failure to report
            return result("fail", f"{type(e).__name__}: {_first_line(e)}")
        for out_name, want in zip(out_names, outputs):
            msg = _compare(got[out_name], np.asarray(want), rtol, atol)
            if msg:
                return result("fail", f"output {out_name!r}: {msg}")
    return result("pass")


def _run_case(model, feeds: dict, target, name: str):
    """(outputs by name, graph output names) of one data set, interpreted or compiled."""
    if target is None:
        from . import reference
        graph = load_onnx(model)
        return reference.run(graph, {v.name: np.asarray(feeds[v.name]) for v in graph.inputs}), \
            [v.name for v in graph.outputs]
    from .model import compile_model
    cm = compile_model(model, target, name=name)
    return cm.run({v.name: np.asarray(feeds[v.name]) for v in cm.graph.inputs}), \
        [v.name for v in cm.graph.outputs]


@functools.lru_cache(maxsize=1)
def backend_node_cases() -> tuple:
    """Every ONNX backend node case that has a model, built in memory (once: onnx computes
    the expected outputs with its reference implementation, a few seconds)."""
    import warnings
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(c for c in collect_testcases(None) if c.model is not None)


def node_test_results(cases=None, target=None) -> list:
    """Every ONNX backend node case (built in memory) run through frontend + reference,
    or compiled for `target` (see run_node_test)."""
    if cases is None:
        cases = backend_node_cases()
    return [run_node_test(c, target=target) for c in cases if c.model is not None]


def node_test_summary(results) -> dict:
    """op -> {"pass": n, "skip": n, "fail": n, "supported": bool, "skipped": [(case, reason)],
    "failed": [(case, reason)]}, each case counted once, under the op it tests; sorted by op.
    "supported" says whether cgen imports the op at all."""
    out: dict = {}
    for r in results:
        row = out.setdefault(r.op, {"pass": 0, "skip": 0, "fail": 0, "supported": r.op in CONVERTERS,
                                    "skipped": [], "failed": []})
        row[r.status] += 1
        if r.status == "skip":
            row["skipped"].append((r.name, r.reason))
        elif r.status == "fail":
            row["failed"].append((r.name, r.reason))
    return dict(sorted(out.items()))
