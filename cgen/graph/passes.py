"""Graph passes: each a function Graph -> Graph (fuse: Graph -> FusedGraph).

    infer_shapes     recompute every node's output shapes and dtypes (checks the graph)
    simplify         local rewrites from a table of rules (identities, reshape chains, ...)
    fold_constants   evaluate nodes whose inputs are all constants (reference interpreter)
    fold_batchnorm   batch_norm -> per-channel mul/add, folded into conv/matmul weights
    fold_qdq         dequantize -> conv/matmul -> quantize  ==>  qlinear_conv2d/qlinear_matmul
    remove_dead      drop nodes and constants that no graph output depends on
    fuse             group nodes by op pattern: anchor (conv/dense/pool) + elementwise
                     epilogue, reduction + elementwise epilogue, injective chains
    optimize         the standard pipeline, in order

The canonical op set, per op: inputs; attributes (all explicit).

    elementwise   relu leaky_relu(alpha) clip(min,max: number|None) sigmoid tanh
                  hard_sigmoid(alpha,beta) hard_swish erf gelu(approximate) exp log
                  sqrt neg abs identity cast(to)                              (x)
    broadcast     add sub mul div pow max min            (a, b) numpy broadcasting
                  quantize(axis)   (x, scale, zero_point) -> zero_point's dtype
                  dequantize(axis) (x, scale, zero_point) -> float32
                  batch_norm(epsilon) (x, scale, bias, mean, var)  [gone after fold_batchnorm]
    anchor        conv2d(strides, pads=(t,l,b,r), dilations, groups)       (x, w[, bias])
                  conv2d_transpose(... , output_padding)                    (x, w[, bias])
                  matmul   (a, b) ranks >= 2, batch dims broadcast (numpy.matmul)
                  qlinear_conv2d(conv attrs) (x, xs, xz, w, ws, wz, ys, yz[, bias int32])
                  qlinear_matmul (a, as, az, b, bs, bz, ys, yz)
                  max_pool2d / avg_pool2d(kernel, strides, pads, dilations, ceil_mode
                                          [, count_include_pad])            (x)
    reduction     reduce_mean/sum/max/min(axes, keepdims) softmax(axis) log_softmax(axis)
                  layer_norm(axis, epsilon) (x, scale[, bias]): normalises axes [axis, rank)
    injective     reshape(shape) transpose(perm) concat(axis) split(axis, sizes)
                  slice(starts, ends, steps): per axis, indices range(start, end, step)
                  pad(pads=(begin..., end...), mode, value) gather(axis) (data, indices)
                  layout_transform(src, dst)

Axes are non-negative; shapes are static; every value has a concrete dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np

from .ir import Graph, ModelError, Node, Value, rename_inputs, unique_name, used_constants, value_of
from .layout import logical_shape, physical_shape

# ====================================================================== op patterns
ELEMWISE, BROADCAST, INJECTIVE, REDUCTION, ANCHOR, OPAQUE = (
    "elementwise", "broadcast", "injective", "reduction", "anchor", "opaque")

UNARY_OPS = ("relu", "leaky_relu", "clip", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "erf",
             "gelu", "exp", "log", "sqrt", "neg", "abs", "identity", "cast")
BINARY_OPS = ("add", "sub", "mul", "div", "pow", "max", "min")

OP_PATTERNS: Mapping[str, str] = {
    **{op: ELEMWISE for op in UNARY_OPS},
    **{op: BROADCAST for op in BINARY_OPS},
    "quantize": BROADCAST, "dequantize": BROADCAST, "batch_norm": BROADCAST,
    "conv2d": ANCHOR, "conv2d_transpose": ANCHOR, "matmul": ANCHOR, "qlinear_conv2d": ANCHOR,
    "qlinear_matmul": ANCHOR, "max_pool2d": ANCHOR, "avg_pool2d": ANCHOR,
    "reduce_mean": REDUCTION, "reduce_sum": REDUCTION, "reduce_max": REDUCTION,
    "reduce_min": REDUCTION, "softmax": REDUCTION, "log_softmax": REDUCTION,
    "layer_norm": REDUCTION,
    "reshape": INJECTIVE, "transpose": INJECTIVE, "concat": INJECTIVE, "split": INJECTIVE,
    "slice": INJECTIVE, "pad": INJECTIVE, "gather": INJECTIVE, "layout_transform": INJECTIVE,
}
CANONICAL_OPS = tuple(OP_PATTERNS)


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
    (xs, xd), (ws, _) = ins[0], ins[1]
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
    from .reference import pool_geometry
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


_FLOAT_ONLY = {"sigmoid", "tanh", "hard_sigmoid", "hard_swish", "erf", "gelu", "exp", "log", "sqrt",
               "leaky_relu", "softmax", "log_softmax", "layer_norm", "batch_norm", "conv2d",
               "conv2d_transpose", "avg_pool2d"}


def output_types(op: str, attrs: Mapping, ins: list) -> list:
    """Logical (shape, dtype) of each output of `op` given logical (shape, dtype) inputs."""
    a = dict(attrs)
    if op == "split":
        xs = ins[0][0]
        ax = a["axis"]
        if sum(a["sizes"]) != xs[ax]:
            raise _err(f"split sizes {a['sizes']} do not add up to {xs[ax]} on axis {ax}")
        return [(xs[:ax] + (s,) + xs[ax + 1:], ins[0][1]) for s in a["sizes"]]
    rule = _SHAPES.get(op)
    if rule is None:
        raise ModelError(f"no shape rule for op {op!r}", "unsupported_op")
    if op in _FLOAT_ONLY and ins[0][1] != "float32":
        raise ModelError(f"{op} takes float32, got {ins[0][1]}", "unsupported_dtype")
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


# ====================================================================== rewriting helpers
def _consumers(graph: Graph) -> dict:
    return graph.consumers()


def _outputs(graph: Graph) -> set:
    return {v.name for v in graph.outputs}


def _single_use(graph: Graph, name: str, consumers: Mapping, outs: set) -> bool:
    return name not in outs and len(consumers.get(name, ())) == 1


def _fresh_const(consts: dict, taken: set, base: str, array) -> Value:
    a = np.ascontiguousarray(array)
    name = unique_name(base, taken)
    consts[name] = a
    return value_of(name, a)


# ====================================================================== fold_constants
def fold_constants(graph: Graph) -> Graph:
    """Nodes whose inputs are all constants are evaluated (reference) into constants."""
    from .reference import evaluate
    consts = dict(graph.constants)
    nodes = []
    for n in graph.nodes:
        if n.inputs and all(v.name in consts for v in n.inputs):
            for v, a in zip(n.outputs, evaluate(n, [consts[v.name] for v in n.inputs])):
                consts[v.name] = a
        else:
            nodes.append(n)
    g = graph.replace(nodes=tuple(nodes), constants=consts)
    keep = used_constants(g)
    return g.replace(constants={k: a for k, a in consts.items() if k in keep}).validate()


# ====================================================================== remove_dead
def remove_dead(graph: Graph) -> Graph:
    """Drop nodes no graph output depends on, and constants nothing reads."""
    live = {v.name for v in graph.outputs}
    keep = []
    for n in reversed(graph.nodes):
        if any(v.name in live for v in n.outputs):
            keep.append(n)
            live.update(n.input_names)
    g = graph.replace(nodes=tuple(reversed(keep)))
    used = used_constants(g)
    return g.replace(constants={k: a for k, a in graph.constants.items() if k in used}).validate()


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
        outs = _outputs(graph)
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


# ====================================================================== fold_batchnorm
def _bn_to_affine(graph: Graph) -> Graph:
    """batch_norm -> mul(x, s) -> add(., t); constants when the statistics are constant."""
    consts = dict(graph.constants)
    taken = set(graph.values()) | set(consts)
    nodes = []
    for n in graph.nodes:
        if n.op != "batch_norm":
            nodes.append(n)
            continue
        x = n.inputs[0]
        shp = (-1,) + (1,) * (len(x.shape) - 2)
        eps = n.attr("epsilon")
        params = [consts.get(v.name) for v in n.inputs[1:]]
        y = n.outputs[0]
        if all(p is not None for p in params):
            scale, bias, mean, var = (p.astype(np.float64) for p in params)
            s = scale / np.sqrt(var + eps)
            t = bias - mean * s
            sv = _fresh_const(consts, taken, f"{n.name}__scale", s.astype(x.dtype).reshape(shp))
            tv = _fresh_const(consts, taken, f"{n.name}__shift", t.astype(x.dtype).reshape(shp))
            mid = Value(unique_name(f"{y.name}__scaled", taken), y.shape, y.dtype)
            nodes.append(Node.make("mul", (x, sv), (mid,), name=f"{n.name}/scale"))
            nodes.append(Node.make("add", (mid, tv), (y,), name=f"{n.name}/shift"))
            continue
        # statistics computed at run time: the same formula, op by op
        def val(base, shape):
            return Value(unique_name(f"{y.name}__{base}", taken), shape, y.dtype)

        def emit(op, ins, base, attrs=None):
            out = infer_node(Node.make(op, ins, (val(base, ()),), attrs, f"{n.name}/{base}"))
            nodes.append(out)
            return out.outputs[0]
        c = x.shape[1]
        cshape = (c,) + (1,) * (len(x.shape) - 2)
        scale, bias, mean, var = (emit("reshape", (v,), f"{v.name}_bc", {"shape": cshape})
                                  for v in n.inputs[1:])
        epsv = _fresh_const(consts, taken, f"{n.name}__eps", np.asarray(eps, x.dtype))
        std = emit("sqrt", (emit("add", (var, epsv), "var_eps"),), "std")
        s = emit("div", (scale, std), "s")
        centered = emit("sub", (x, mean), "centered")
        scaled = emit("mul", (centered, s), "scaled")
        nodes.append(Node.make("add", (scaled, bias), (y,), name=f"{n.name}/shift"))
    return graph.replace(nodes=tuple(nodes), constants=consts).validate()


def _channel_vector(c: np.ndarray, rank: int, axis: int, channels: int):
    """c as a vector over `axis` of a rank-`rank` tensor with `channels` there, or None."""
    if c.ndim > rank:
        return None
    shp = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shp) if i != axis) or shp[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1) if c.size > 1 else c.reshape(()), (channels,))


def _const_operand(graph: Graph, n: Node):
    """(index of the non-constant operand, constant array) of a binary node, or None."""
    a, b = n.inputs
    if b.name in graph.constants and a.name not in graph.constants:
        return 0, graph.constants[b.name]
    if n.op in ("add", "mul") and a.name in graph.constants and b.name not in graph.constants:
        return 1, graph.constants[a.name]
    return None


def _affine_rewrite(graph: Graph, n: Node, p: Node, consts: dict, taken: set):
    """n (mul/add by a constant) reads p's output (single use): a replacement node list or None."""
    co = _const_operand(graph, n)
    if co is None:
        return None
    idx, c = co
    y = n.outputs[0]
    if y.shape != p.outputs[0].shape:
        return None
    if p.op in ("conv2d", "conv2d_transpose") and not p.outputs[0].layout:
        w = p.inputs[1]
        if w.name not in graph.constants or w.layout:
            return None
        bias = p.inputs[2] if len(p.inputs) > 2 else None
        if bias is not None and bias.name not in graph.constants:
            return None
        f = p.outputs[0].shape[1]
        vec = _channel_vector(c, 4, 1, f)
        if vec is None:
            return None
        wa = graph.constants[w.name].astype(np.float64)
        ba = graph.constants[bias.name].astype(np.float64) if bias is not None else np.zeros(f)
        if n.op == "mul":
            if p.op == "conv2d":
                wa = wa * vec.reshape(-1, 1, 1, 1)
            else:
                g = p.attr("groups")
                cin, fg = wa.shape[0], wa.shape[1]
                wa = (wa.reshape(g, cin // g, fg, *wa.shape[2:]) *
                      vec.reshape(g, 1, fg, 1, 1)).reshape(wa.shape)
            ba = ba * vec
        else:
            ba = ba + vec
        dt = p.outputs[0].dtype
        wv = _fresh_const(consts, taken, f"{w.name}__folded", wa.astype(dt)) if n.op == "mul" else w
        bv = _fresh_const(consts, taken, f"{p.name}__bias", ba.astype(dt))
        return [Node.make(p.op, (p.inputs[0], wv, bv), (y,), p.attr_dict, p.name)]
    if p.op == "matmul" and n.op == "mul":
        b = p.inputs[1]
        if b.name not in graph.constants or len(b.shape) != 2:
            return None
        vec = _channel_vector(c, len(y.shape), len(y.shape) - 1, y.shape[-1])
        if vec is None:
            return None
        ba = graph.constants[b.name].astype(np.float64) * vec.reshape(1, -1)
        bv = _fresh_const(consts, taken, f"{b.name}__folded", ba.astype(b.dtype))
        return [Node.make("matmul", (p.inputs[0], bv), (y,), p.attr_dict, p.name)]
    if p.op in ("add", "mul") and _const_operand(graph, p) is not None:
        pidx, pc = _const_operand(graph, p)
        x = p.inputs[pidx]
        if x.shape != y.shape:
            return None
        if p.op == n.op:                                  # (x + c1) + c2 -> x + (c1 + c2)
            merged = pc + c if n.op == "add" else pc * c
            cv = _fresh_const(consts, taken, f"{n.name}__merged", merged.astype(y.dtype))
            return [Node.make(n.op, (x, cv), (y,), name=n.name)]
        if p.op == "add" and n.op == "mul":               # (x + c1) * c2 -> x * c2 + c1 * c2
            c2 = _fresh_const(consts, taken, f"{n.name}__scale", c.astype(y.dtype))
            c12 = _fresh_const(consts, taken, f"{p.name}__shift", (pc * c).astype(y.dtype))
            mid = Value(unique_name(f"{y.name}__scaled", taken), y.shape, y.dtype)
            return [Node.make("mul", (x, c2), (mid,), name=n.name),
                    Node.make("add", (mid, c12), (y,), name=p.name)]
    return None


def fold_batchnorm(graph: Graph) -> Graph:
    """batch_norm disappears: constant statistics become a per-channel mul/add, folded
    into a producing conv2d / conv2d_transpose (weights and bias) or matmul (weights;
    its bias add absorbs the shift).  Other batch_norms become elementwise ops."""
    graph = _bn_to_affine(graph)
    consts = dict(graph.constants)
    taken = set(graph.values()) | set(consts)
    for _ in range(10000):
        graph = graph.replace(constants=consts)
        producers, consumers, outs = graph.producers(), _consumers(graph), _outputs(graph)
        done = False
        for i, n in enumerate(graph.nodes):
            if n.op not in ("mul", "add"):
                continue
            co = _const_operand(graph, n)
            if co is None:
                continue
            src = n.inputs[co[0]]
            p = producers.get(src.name)
            if p is None or len(p.outputs) != 1 or not _single_use(graph, src.name, consumers, outs):
                continue
            new = _affine_rewrite(graph, n, p, consts, taken)
            if new is None:
                continue
            nodes = [m for m in graph.nodes[:i] if m is not p] + new + list(graph.nodes[i + 1:])
            graph = graph.replace(nodes=tuple(nodes), constants=consts)
            done = True
            break
        if not done:
            break
    return remove_dead(graph.replace(constants=consts))


# ====================================================================== fold_qdq
def _scalar_const(graph: Graph, v: Value):
    c = graph.constants.get(v.name)
    return c if c is not None and c.size == 1 else None


def _quantize_bound(b, scale: float, zp: int, dtype: str) -> int:
    info = np.iinfo(dtype)
    q = int(np.rint(np.float32(b) / np.float32(scale))) + zp
    return int(min(max(q, info.min), info.max))


def _qdq_rewrite(graph: Graph, q: Node, producers: Mapping, consumers: Mapping, outs: set,
                 consts: dict, taken: set):
    """quantize(act?(conv|matmul(dequantize(x), dequantize(w)))) -> integer op, or None."""
    ys, yz = q.inputs[1], q.inputs[2]
    if _scalar_const(graph, ys) is None or _scalar_const(graph, yz) is None:
        return None
    y = q.inputs[0]
    p = producers.get(y.name)
    act = None
    if p is not None and p.op in ("relu", "clip") and _single_use(graph, y.name, consumers, outs):
        act, p = p, producers.get(p.inputs[0].name)
        y = act.inputs[0]
    if p is None or p.op not in ("conv2d", "matmul") or not _single_use(graph, y.name, consumers, outs):
        return None
    dx, dw = producers.get(p.inputs[0].name), producers.get(p.inputs[1].name)
    if dx is None or dw is None or dx.op != "dequantize" or dw.op != "dequantize":
        return None
    xq, xs, xz = dx.inputs
    wq, ws, wz = dw.inputs
    if _scalar_const(graph, xs) is None or _scalar_const(graph, xz) is None:
        return None
    if any(v.name not in graph.constants for v in (wq, ws, wz)):
        return None
    wsa = graph.constants[ws.name]
    ins = [xq, xs, xz, wq, ws, wz, ys, yz]
    if p.op == "conv2d":
        f = p.outputs[0].shape[1]
        if wsa.size not in (1, f) or (wsa.size > 1 and dw.attr("axis") != 0):
            return None
        if len(p.inputs) > 2:
            b = p.inputs[2]
            db = producers.get(b.name)
            if db is not None and db.op == "dequantize" and db.inputs[0].dtype == "int32" and all(
                    v.name in graph.constants for v in db.inputs):
                bq = graph.constants[db.inputs[0].name]
                want = graph.constants[xs.name].astype(np.float32) * wsa.astype(np.float32)
                if not np.allclose(graph.constants[db.inputs[1].name], want, rtol=1e-6) or np.any(
                        graph.constants[db.inputs[2].name] != 0):
                    return None
                ins.append(db.inputs[0])
            elif b.name in graph.constants:
                scale = (graph.constants[xs.name].astype(np.float64).reshape(()) *
                         wsa.astype(np.float64).reshape(-1))
                bq = np.rint(graph.constants[b.name].astype(np.float64) / scale)
                ins.append(_fresh_const(consts, taken, f"{b.name}__int32", bq.astype(np.int32)))
            else:
                return None
        op, attrs = "qlinear_conv2d", p.attr_dict
    else:
        n = p.outputs[0].shape[-1]
        if len(wq.shape) != 2 or wsa.size not in (1, n) or (wsa.size > 1 and dw.attr("axis") != 1):
            return None
        op, attrs = "qlinear_matmul", {}
    out = q.outputs[0]
    if act is None:
        return [Node.make(op, ins, (out,), attrs, p.name)]
    s, z = float(_scalar_const(graph, ys).reshape(())), int(_scalar_const(graph, yz).reshape(()))
    lo = 0.0 if act.op == "relu" else act.attr("min")
    hi = None if act.op == "relu" else act.attr("max")
    bounds = {"min": None if lo is None else _quantize_bound(lo, s, z, out.dtype),
              "max": None if hi is None else _quantize_bound(hi, s, z, out.dtype)}
    mid = Value(unique_name(f"{out.name}__unclipped", taken), out.shape, out.dtype)
    return [Node.make(op, ins, (mid,), attrs, p.name),
            Node.make("clip", (mid,), (out,), bounds, act.name)]


def fold_qdq(graph: Graph) -> Graph:
    """QDQ patterns around conv2d / matmul become integer ops.

    quantize(conv2d(dequantize(x), dequantize(w)[, b])) -> qlinear_conv2d, the bias
    (float, or dequantize of int32 at scale xs*ws) as int32; the same around matmul
    (no bias) -> qlinear_matmul.  A relu or clip between the op and the quantize
    becomes an integer clip at the quantised bounds (exact: quantize is monotone).
    Scales and zero points must be constants, per-tensor for activations.
    """
    consts = dict(graph.constants)
    taken = set(graph.values()) | set(consts)
    while True:
        graph = graph.replace(constants=consts)
        producers, consumers, outs = graph.producers(), _consumers(graph), _outputs(graph)
        for i, n in enumerate(graph.nodes):
            if n.op != "quantize":
                continue
            new = _qdq_rewrite(graph, n, producers, consumers, outs, consts, taken)
            if new is not None:
                graph = graph.replace(nodes=graph.nodes[:i] + tuple(new) + graph.nodes[i + 1:],
                                      constants=consts)
                graph = remove_dead(graph)
                consts = dict(graph.constants)
                break
        else:
            return remove_dead(graph)


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
    producers, consumers, outs = graph.producers(), _consumers(graph), _outputs(graph)
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


# ====================================================================== pipeline
def optimize(graph: Graph, layout_prefs: Mapping | None = None) -> Graph:
    """The standard pass order: simplify, fold_qdq, fold_constants, fold_batchnorm,
    fold_constants, simplify, remove_dead, then blocked layouts when asked, infer_shapes."""
    graph = simplify(graph)
    graph = fold_qdq(graph)
    graph = fold_constants(graph)
    graph = fold_batchnorm(graph)
    graph = fold_constants(graph)
    graph = simplify(graph)
    graph = remove_dead(graph)
    if layout_prefs:
        from .layout import convert_layout
        graph = simplify(convert_layout(graph, layout_prefs))
    return infer_shapes(graph)
