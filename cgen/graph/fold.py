"""Folding passes, each a function Graph -> Graph.

    fold_constants   evaluate nodes whose inputs are all constants (reference interpreter)
    remove_dead      drop nodes and constants that no graph output depends on
    fold_batchnorm   batch_norm -> per-channel mul/add, folded into conv/matmul weights
    fold_qdq         dequantize -> conv/matmul -> quantize  ==>  qlinear_conv2d/qlinear_matmul
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .graph_ir import Graph, Node, Value, unique_name, used_constants, value_of
from .reference import evaluate
from .shapes import infer_node


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
