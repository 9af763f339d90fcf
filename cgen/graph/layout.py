"""Blocked layouts: packing primitives and the layout pass.

Layouts (``Value.layout``):

    ""            the ONNX layout (NCHW activations, OIHW conv weights, ...)
    "NCHW{b}c"    rank-4 activation (N, C, H, W) stored as (N, C/b, H, W, b):
                  element (n, c, h, w) is at [n, c // b, h, w, c % b]
    "OIHW{i}i{o}o" conv weight (O, I, KH, KW) stored as (O/o, I/i, KH, KW, i, o)

`convert_layout(graph, prefs)` chooses layouts: an op in `prefs` (e.g.
``{"conv2d": 8}``) produces NCHW{b}c when its output channels divide by b and
reads NCHW{b}c when its input channels do; its weights are pre-packed.  Ops in
`FOLLOWERS` (elementwise, per-channel broadcasts, pooling, spatial pads,
channel concats, global reductions) keep whatever blocked layout reaches them;
every other op reads the ONNX layout.  `layout_transform` nodes are inserted
only where a value crosses between the two, and graph outputs are always in
the ONNX layout.  Per-channel constants read by blocked ops are re-packed, so a
blocked kernel broadcasts them elementwise against its block.

What a blocked conv2d node means (the layouts are on its Values):
    input  NCHW{bi}c (or the ONNX layout when C % b != 0: bi = 1)
    weight OIHW{bi}i{bo}o, pre-packed constant; depthwise (groups == C == F): OIHW1i{b}o
           with input and output both NCHW{b}c
    bias   (F,) unchanged;  output NCHW{bo}c
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from .graph_ir import Graph, Node, Value, unique_name, used_constants
from .shapes import (BLOCKED_ACT, BLOCKED_WGT, block_of, blocked, infer_node,  # noqa: F401
                     logical_shape, physical_shape, weight_layout)  # re-exported

def pack(a: np.ndarray, layout: str) -> np.ndarray:
    """A logical array stored in `layout` (a copy, C-contiguous)."""
    if not layout:
        return a
    shape = physical_shape(a.shape, layout)
    if BLOCKED_ACT.match(layout):
        n, cb, h, w, b = shape
        return np.ascontiguousarray(a.reshape(n, cb, b, h, w).transpose(0, 1, 3, 4, 2))
    ob, ib, kh, kw, bi, bo = shape
    return np.ascontiguousarray(a.reshape(ob, bo, ib, bi, kh, kw).transpose(0, 2, 4, 5, 3, 1))


def unpack(a: np.ndarray, layout: str) -> np.ndarray:
    """A stored array in `layout` back in the ONNX layout."""
    if not layout:
        return a
    if BLOCKED_ACT.match(layout):
        n, cb, h, w, b = a.shape
        return np.ascontiguousarray(a.transpose(0, 1, 4, 2, 3).reshape(n, cb * b, h, w))
    ob, ib, kh, kw, bi, bo = a.shape
    return np.ascontiguousarray(a.transpose(0, 5, 1, 4, 2, 3).reshape(ob * bo, ib * bi, kh, kw))


# ------------------------------------------------------------------ the pass
UNARY_FOLLOWERS = frozenset({"relu", "leaky_relu", "clip", "sigmoid", "tanh", "hard_sigmoid",
                             "hard_swish", "erf", "gelu", "exp", "log", "sqrt", "neg", "abs",
                             "identity", "cast"})
BINARY_FOLLOWERS = frozenset({"add", "sub", "mul", "div", "pow", "max", "min"})
FOLLOWERS = UNARY_FOLLOWERS | BINARY_FOLLOWERS | {"max_pool2d", "avg_pool2d", "pad", "concat",
                                                  "reduce_mean", "reduce_max", "reduce_sum",
                                                  "reduce_min", "quantize", "dequantize"}

BLOCKABLE = frozenset({"conv2d"})     # ops whose kernels may ask for NCHW{b}c
Prefs = Mapping[str, "int | Callable[[Node], int | None]"]


def _channels_ok(shape: tuple, b: int) -> bool:
    return len(shape) == 4 and shape[1] % b == 0


def _per_channel(shape: tuple, c: int) -> bool:
    """A broadcast operand that varies (at most) along the channel axis of a rank-4 tensor."""
    s = (1,) * (4 - len(shape)) + tuple(shape) if len(shape) <= 4 else None
    return s is not None and s[0] == 1 and s[2] == 1 and s[3] == 1 and s[1] in (1, c)


def _follow_block(node: Node, graph: Graph, lay: dict) -> int:
    """The block a follower op keeps, or 1 when it must read the ONNX layout."""
    acts = [v for v in node.inputs if v.name not in graph.constants]
    blocks = {block_of(lay.get(v.name, "")) for v in acts}
    b = max(blocks, default=1)
    if b == 1 or len(node.outputs) != 1:
        return 1
    out = node.outputs[0].shape
    if not _channels_ok(out, b):
        return 1
    op = node.op
    if op in UNARY_FOLLOWERS:
        return b
    if op in BINARY_FOLLOWERS:
        for v in node.inputs:
            if v.shape == out and v.name not in graph.constants:
                continue
            if v.name in graph.constants and (v.size == 1 or _per_channel(v.shape, out[1])):
                continue
            return 1
        return b
    if op in ("max_pool2d", "avg_pool2d"):
        return b
    if op == "pad":
        p = node.attr("pads")
        return b if node.attr("mode") == "constant" and p[0] == p[1] == p[4] == p[5] == 0 else 1
    if op == "concat":
        return b if node.attr("axis") == 1 and all(_channels_ok(v.shape, b) for v in acts) \
            and not any(v.name in graph.constants for v in node.inputs) else 1
    if op.startswith("reduce_"):
        return b if node.attr("axes") == (2, 3) and node.attr("keepdims") else 1
    if op in ("quantize", "dequantize"):
        return b if all(graph.constants[v.name].size == 1 for v in node.inputs[1:]
                        if v.name in graph.constants) and all(
                            v.name in graph.constants for v in node.inputs[1:]) else 1
    return 1


def convert_layout(graph: Graph, prefs: Prefs) -> Graph:
    """Blocked layouts where `prefs` asks for them, converted only at the boundaries.

    prefs: op name -> block size, or a function node -> block size | None.  An
    op with a preference must be rank-4 conv2d-like (conv2d: plain or
    depthwise; grouped convs other than depthwise stay in the ONNX layout).
    Returns a new graph (shapes physical, values annotated with their layout).
    """
    for op, want in prefs.items():
        if op not in BLOCKABLE:
            raise ValueError(f"convert_layout: op {op!r} has no blocked layout; ops that do: "
                             f"{', '.join(sorted(BLOCKABLE))}")
        if not callable(want) and (not isinstance(want, int) or isinstance(want, bool) or want < 1):
            raise ValueError(f"convert_layout: the block for {op!r} must be a positive int or a "
                             f"function node -> int | None, got {want!r}")
    consts = dict(graph.constants)
    taken = set(graph.values()) | set(consts)
    lay: dict = {}            # original value name -> layout it is produced in
    avail: dict = {}          # (original name, layout) -> Value available in that layout
    for v in graph.inputs:
        avail[(v.name, "")] = v
    out_nodes: list = []
    packed_consts: dict = {}

    def get(v: Value, layout: str) -> Value:
        """Value `v` (an original name) as seen in `layout`; inserts a transform if needed."""
        if v.name in consts:
            return const_in(v, layout)
        key = (v.name, layout)
        if key in avail:
            return avail[key]
        src = avail[(v.name, lay.get(v.name, ""))]
        logical = v.shape
        name = v.name if not layout else unique_name(f"{v.name}__{layout}", taken)
        dst = Value(name, physical_shape(logical, layout), v.dtype, layout)
        out_nodes.append(Node.make("layout_transform", (src,), (dst,),
                                   {"src": src.layout, "dst": layout},
                                   name=unique_name(f"{v.name}__to_{layout or 'plain'}", taken)))
        avail[key] = dst
        return dst

    def const_in(v: Value, layout: str) -> Value:
        if not layout or v.size == 1:
            return v
        key = (v.name, layout)
        if key not in packed_consts:
            a = consts[v.name]
            if BLOCKED_WGT.match(layout):
                arr = pack(a, layout)
            else:
                arr = pack(a.reshape((1,) * (4 - a.ndim) + a.shape), layout)
            name = unique_name(f"{v.name}__{layout}", taken)
            consts[name] = arr
            packed_consts[key] = Value(name, arr.shape, str(arr.dtype), layout)
        return packed_consts[key]

    for node in graph.nodes:
        want = prefs.get(node.op)
        b_out = None
        if want is not None:
            b_out = want(node) if callable(want) else want
        if b_out and b_out > 1 and node.op == "conv2d" and _conv_blockable(node, graph, b_out):
            x, w = node.inputs[0], node.inputs[1]
            g = node.attr("groups")
            bi = b_out if x.shape[1] % b_out == 0 else 1
            if g != 1:
                bi = b_out           # depthwise: the input is blocked like the output
            xin = get(x, blocked(bi) if bi > 1 else "")
            wl = weight_layout(1 if g != 1 else bi, b_out)
            win = const_in(w, wl)
            ins = (xin, win) + tuple(node.inputs[2:])
            out = node.outputs[0]
            name = unique_name(f"{out.name}__{blocked(b_out)}", taken)
            ov = Value(name, physical_shape(out.shape, blocked(b_out)), out.dtype, blocked(b_out))
            new = Node.make(node.op, ins, (ov,), node.attr_dict, node.name)
            out_nodes.append(infer_node(new))
            lay[out.name] = blocked(b_out)
            avail[(out.name, blocked(b_out))] = ov
            continue
        b = _follow_block(node, graph, lay) if node.op in FOLLOWERS else 1
        if b > 1:
            L = blocked(b)
            ins = []
            for v in node.inputs:
                if v.name in consts:
                    ins.append(const_in(v, L) if v.size > 1 else v)
                else:
                    ins.append(get(v, L))
            outs = []
            for v in node.outputs:
                name = unique_name(f"{v.name}__{L}", taken)
                ov = Value(name, physical_shape(v.shape, L), v.dtype, L)
                outs.append(ov)
                lay[v.name] = L
                avail[(v.name, L)] = ov
            out_nodes.append(Node.make(node.op, ins, outs, node.attr_dict, node.name))
            continue
        ins = [v if v.name in consts else get(v, "") for v in node.inputs]
        out_nodes.append(Node.make(node.op, ins, node.outputs, node.attr_dict, node.name))
        for v in node.outputs:
            avail[(v.name, "")] = v
    outputs = []
    for v in graph.outputs:
        outputs.append(v if v.name in consts else get(v, ""))
    g2 = graph.replace(nodes=tuple(out_nodes), outputs=tuple(outputs), constants=consts)
    keep = used_constants(g2)
    return g2.replace(constants={k: a for k, a in consts.items() if k in keep}).validate()


def _conv_blockable(node: Node, graph: Graph, b: int) -> bool:
    x, w = node.inputs[0], node.inputs[1]
    if w.name not in graph.constants or len(x.shape) != 4 or x.layout or w.layout:
        return False
    f, c = node.outputs[0].shape[1], x.shape[1]
    g = node.attr("groups")
    if f % b:
        return False
    if g == 1:
        return True
    return g == c == f        # depthwise with multiplier 1
