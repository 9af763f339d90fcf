"""Shapes of the canonical op set: one module that the passes, the layout pass, the
reference interpreter and the lowering all read.

    physical_shape / logical_shape   stored shape under a layout <-> ONNX shape
    broadcast_shapes                 numpy broadcasting of several shapes
    conv_out_size / pool_geometry    output size of a convolution / pooling window
    output_types(op, attrs, ins)     logical (shape, dtype) of an op's outputs
    infer_node / infer_shapes        a node's / every node's outputs recomputed
"""
from __future__ import annotations

from dataclasses import replace
import re
from typing import Mapping

import numpy as np

from .graph_ir import Graph, ModelError, Node, Value
from .opset import BINARY_OPS, UNARY_OPS
from .loop_op import loop_types
from .ops_extra import EXTRA_OPS


# ====================================================================== layouts
BLOCKED_ACT = re.compile(r"^NCHW(\d+)c$")
BLOCKED_WGT = re.compile(r"^OIHW(\d+)i(\d+)o$")


def blocked(b: int) -> str:
    return f"NCHW{b}c"


def weight_layout(bi: int, bo: int) -> str:
    return f"OIHW{bi}i{bo}o"


def block_of(layout: str) -> int:
    """The channel block of an activation layout (1 for the ONNX layout)."""
    if not layout:
        return 1
    m = BLOCKED_ACT.match(layout)
    if not m:
        raise ValueError(f"not an activation layout: {layout!r}")
    return int(m.group(1))


def physical_shape(shape: tuple, layout: str) -> tuple:
    """Logical (ONNX) shape -> stored shape under `layout`."""
    shape = tuple(shape)
    if not layout:
        return shape
    if m := BLOCKED_ACT.match(layout):
        b = int(m.group(1))
        n, c, h, w = shape
        if c % b:
            raise ValueError(f"{c} channels do not divide into blocks of {b}")
        return (n, c // b, h, w, b)
    if m := BLOCKED_WGT.match(layout):
        bi, bo = int(m.group(1)), int(m.group(2))
        o, i, kh, kw = shape
        if o % bo or i % bi:
            raise ValueError(f"weight {shape} does not divide into blocks {bi}i{bo}o")
        return (o // bo, i // bi, kh, kw, bi, bo)
    raise ValueError(f"unknown layout {layout!r}")


def logical_shape(shape: tuple, layout: str) -> tuple:
    """Stored shape under `layout` -> logical (ONNX) shape."""
    shape = tuple(shape)
    if not layout:
        return shape
    if BLOCKED_ACT.match(layout):
        n, cb, h, w, b = shape
        return (n, cb * b, h, w)
    if BLOCKED_WGT.match(layout):
        ob, ib, kh, kw, bi, bo = shape
        return (ob * bo, ib * bi, kh, kw)
    raise ValueError(f"unknown layout {layout!r}")


# ====================================================================== geometry
def pool_geometry(size: int, k: int, s: int, d: int, before: int, after: int, ceil_mode: bool):
    """(output size, extra padding after) per ONNX: a ceil-mode window starting in the
    trailing pad region is dropped; the extra padding lets every window fit."""
    span = (k - 1) * d + 1
    avail = size + before + after - span
    o = (-(-avail // s) if ceil_mode else avail // s) + 1
    if ceil_mode and (o - 1) * s >= size + before:
        o -= 1
    extra = max(0, (o - 1) * s + span - (size + before + after))
    return o, extra


# ====================================================================== shapes
def _err(msg: str) -> ModelError:
    return ModelError(msg, "shape")


def broadcast_shapes(*shapes) -> tuple:
    nd = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (nd - len(s)) + tuple(s) for s in shapes]):
        big = {d for d in dims if d != 1}
        if len(big) > 1:
            raise _err(f"shapes {', '.join(str(tuple(s)) for s in shapes)} do not broadcast")
        out.append(big.pop() if big else 1)
    return tuple(out)


def _conv_size(size, k, s, d, before, after, what):
    span = (k - 1) * d + 1
    if size + before + after < span:
        raise _err(f"{what}: window {span} is larger than the padded input {size + before + after}")
    return (size + before + after - span) // s + 1


def _shape_conv(a, ins):
    (xs, _), (ws, _) = ins[0], ins[1]
    if len(xs) != 4 or len(ws) != 4:
        raise _err(f"conv2d needs rank-4 input and weight, got {xs} and {ws}")
    g = a["groups"]
    if xs[1] != ws[1] * g or ws[0] % g:
        raise _err(f"conv2d: input {xs} and weight {ws} do not match with groups={g}")
    t, l, b, r = a["pads"]
    oh = _conv_size(xs[2], ws[2], a["strides"][0], a["dilations"][0], t, b, "conv2d height")
    ow = _conv_size(xs[3], ws[3], a["strides"][1], a["dilations"][1], l, r, "conv2d width")
    return (xs[0], ws[0], oh, ow)


def _shape_conv_t(a, ins):
    (xs, _), (ws, _) = ins[0], ins[1]
    if len(xs) != 4 or len(ws) != 4 or xs[1] != ws[0] or xs[1] % a["groups"]:
        raise _err(f"conv2d_transpose: input {xs} and weight {ws} do not match")
    t, l, b, r = a["pads"]
    s, d, op = a["strides"], a["dilations"], a["output_padding"]
    oh = s[0] * (xs[2] - 1) + op[0] + (ws[2] - 1) * d[0] + 1 - t - b
    ow = s[1] * (xs[3] - 1) + op[1] + (ws[3] - 1) * d[1] + 1 - l - r
    if oh < 1 or ow < 1:
        raise _err(f"conv2d_transpose: output size {oh}x{ow} is empty")
    return (xs[0], ws[1] * a["groups"], oh, ow)


def _shape_matmul(sa, sb):
    if len(sa) < 2 or len(sb) < 2 or sa[-1] != sb[-2]:
        raise _err(f"matmul: shapes {sa} and {sb} do not match")
    return broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1])


def _shape_pool(a, ins):
    xs = ins[0][0]
    if len(xs) != 4:
        raise _err(f"pooling needs a rank-4 input, got {xs}")
    (kh, kw), s, d, p = a["kernel"], a["strides"], a["dilations"], a["pads"]
    out = []
    for size, k, st, dl, bf, af in ((xs[2], kh, s[0], d[0], p[0], p[2]),
                                    (xs[3], kw, s[1], d[1], p[1], p[3])):
        if size + bf + af < (k - 1) * dl + 1:
            raise _err(f"pooling window {k} is larger than the padded input {size + bf + af}")
        out.append(pool_geometry(size, k, st, dl, bf, af, bool(a["ceil_mode"]))[0])
    return (xs[0], xs[1], out[0], out[1])


def _shape_reduce(a, ins):
    xs = ins[0][0]
    axes = a["axes"]
    if any(not 0 <= ax < len(xs) for ax in axes):
        raise _err(f"reduce axes {axes} out of range for shape {xs}")
    if a["keepdims"]:
        return tuple(1 if i in axes else d for i, d in enumerate(xs))
    return tuple(d for i, d in enumerate(xs) if i not in axes)


def _shape_reshape(a, ins):
    xs, shape = ins[0][0], tuple(a["shape"])
    if int(np.prod(xs, dtype=np.int64)) != int(np.prod(shape, dtype=np.int64)) or any(
            d < 0 for d in shape):
        raise _err(f"reshape of {xs} to {shape}: sizes differ")
    return shape


def _shape_concat(a, ins):
    ax = a["axis"]
    first = ins[0][0]
    total = 0
    for s, _ in ins:
        if len(s) != len(first) or any(x != y for i, (x, y) in enumerate(zip(s, first)) if i != ax):
            raise _err(f"concat on axis {ax}: shapes {[s for s, _ in ins]} differ off the axis")
        total += s[ax]
    return first[:ax] + (total,) + first[ax + 1:]


def _shape_slice(a, ins):
    xs = ins[0][0]
    if not (len(a["starts"]) == len(a["ends"]) == len(a["steps"]) == len(xs)):
        raise _err(f"slice attributes must cover every axis of {xs}")
    return tuple(len(range(s, e, st)) for s, e, st in zip(a["starts"], a["ends"], a["steps"]))


def _shape_pad(a, ins):
    xs, p = ins[0][0], a["pads"]
    r = len(xs)
    out = tuple(d + p[i] + p[r + i] for i, d in enumerate(xs))
    if len(p) != 2 * r or any(d < 0 for d in out):
        raise _err(f"pad {p} does not fit shape {xs}")
    return out


def _shape_gather(a, ins):
    (ds, _), (is_, _) = ins
    ax = a["axis"]
    return ds[:ax] + tuple(is_) + ds[ax + 1:]


def _same(a, ins):
    return ins[0][0]


def _bcast(a, ins):
    return broadcast_shapes(*(s for s, _ in ins))


_SHAPES: dict = {
    **{op: _same for op in UNARY_OPS},
    **{op: _bcast for op in BINARY_OPS},
    "quantize": _same, "dequantize": _same, "batch_norm": _same, "layer_norm": _same,
    "softmax": _same, "log_softmax": _same, "layout_transform": _same,
    "conv2d": _shape_conv, "conv2d_transpose": _shape_conv_t, "qlinear_conv2d":
        lambda a, ins: _shape_conv(a, [ins[0], ins[3]]),
    "matmul": lambda a, ins: _shape_matmul(ins[0][0], ins[1][0]),
    "qlinear_matmul": lambda a, ins: _shape_matmul(ins[0][0], ins[3][0]),
    "max_pool2d": _shape_pool, "avg_pool2d": _shape_pool,
    "reduce_mean": _shape_reduce, "reduce_sum": _shape_reduce, "reduce_max": _shape_reduce,
    "reduce_min": _shape_reduce,
    "reshape": _shape_reshape,
    "transpose": lambda a, ins: tuple(ins[0][0][p] for p in a["perm"]),
    "concat": _shape_concat, "slice": _shape_slice, "pad": _shape_pad, "gather": _shape_gather,
    "resize": lambda a, ins: a["sizes"],
}


def _out_dtype(op: str, a: dict, ins: list) -> str:
    if op == "cast":
        return a["to"]
    if op == "quantize":
        return ins[2][1]
    if op == "dequantize":
        return "float32"
    if op == "qlinear_conv2d":
        return ins[7][1]
    if op == "qlinear_matmul":
        return ins[7][1]
    return ins[0][1]


# The dtypes a core op compiles, for every operand (an op not listed takes any): what is
# refused here is one line at import, never a C compile error.  matmul: the GEMM templates
# and their portable C accumulate in float32 (integer products are matmul_integer).
_COMPILES = {op: ("float32",) for op in (
    "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "erf", "gelu", "exp", "log", "sqrt",
    "leaky_relu", "softmax", "log_softmax", "layer_norm", "batch_norm", "conv2d",
    "conv2d_transpose", "avg_pool2d", "matmul")}


# the core ops that only move or convert data take bool (the ops_extra ones say themselves)
_BOOL_OK = {"identity", "cast", "reshape", "transpose", "concat", "split", "slice", "gather",
            "layout_transform"}


def output_types(op: str, attrs: Mapping, ins: list) -> list:
    """Logical (shape, dtype) of each output of `op` given logical (shape, dtype) inputs."""
    a = dict(attrs)
    if op == "split":
        xs = ins[0][0]
        ax = a["axis"]
        if sum(a["sizes"]) != xs[ax]:
            raise _err(f"split sizes {a['sizes']} do not add up to {xs[ax]} on axis {ax}")
        return [(xs[:ax] + (s,) + xs[ax + 1:], ins[0][1]) for s in a["sizes"]]
    if any(dt == "bool" for _, dt in ins) and op not in _BOOL_OK and op not in EXTRA_OPS:
        raise ModelError(f"{op} does not take bool", "unsupported_dtype")
    if op in EXTRA_OPS:
        return EXTRA_OPS[op].types(a, ins)
    if op == "loop":
        return loop_types(a, ins)
    rule = _SHAPES.get(op)
    if rule is None:
        raise ModelError(f"no shape rule for op {op!r}", "unsupported_op")
    bad = [dt for _, dt in ins if dt not in _COMPILES.get(op, (dt,))]
    if bad:
        raise ModelError(f"{op} takes {', '.join(_COMPILES[op])}, got {bad[0]}",
                         "unsupported_dtype")
    if op in BINARY_OPS and ins[0][1] != ins[1][1]:
        raise _err(f"{op}: operand dtypes differ ({ins[0][1]} and {ins[1][1]})")
    shape = tuple(int(d) for d in rule(a, ins))
    return [(shape, _out_dtype(op, a, ins))]


def infer_node(node: Node) -> Node:
    """The node with its output Values' shapes and dtypes recomputed (layouts kept)."""
    ins = [(logical_shape(v.shape, v.layout), v.dtype) for v in node.inputs]
    try:
        types = output_types(node.op, node.attr_dict, ins)
    except ModelError as e:
        raise ModelError(f"node {node.name!r} ({node.op}): {e}", e.kind) from None
    if len(types) != len(node.outputs):
        raise _err(f"node {node.name!r} ({node.op}) has {len(node.outputs)} outputs, expected "
                   f"{len(types)}")
    outs = tuple(Value(v.name, physical_shape(s, v.layout), dt, v.layout)
                 for v, (s, dt) in zip(node.outputs, types))
    return node if outs == node.outputs else replace(node, outputs=outs)


def infer_shapes(graph: Graph) -> Graph:
    """Every node's outputs recomputed from the graph inputs and constants, in order."""
    known = {v.name: v for v in graph.inputs}
    for k, a in graph.constants.items():
        known[k] = None
    nodes = []
    for n in graph.nodes:
        ins = []
        for v in n.inputs:
            if v.name in graph.constants:
                a = graph.constants[v.name]
                ins.append(Value(v.name, tuple(a.shape), str(a.dtype), v.layout))
            elif v.name in known:
                ins.append(known[v.name])
            else:
                raise ModelError(f"node {n.name!r} reads {v.name!r} before it is defined", "shape")
        n = infer_node(replace(n, inputs=tuple(ins)))
        nodes.append(n)
        for v in n.outputs:
            known[v.name] = v
    outs = tuple(known.get(v.name) or v for v in graph.outputs)
    return graph.replace(nodes=tuple(nodes), outputs=outs).validate()
