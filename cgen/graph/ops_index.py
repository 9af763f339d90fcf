"""Canonical ops that read or write through an index tensor (see ops_extra.py for how an
OpDef is used):

    gather_elements(axis)  (data, indices)      out[i] = data[i with i[axis] = indices[i]]
    gather_nd(batch_dims)  (data, indices)      rows of data picked by index tuples
    scatter                (data, updates, map) data with updates written where `map` (a
                                                constant int64: flat index into updates, or -1)
    one_hot(axis, depth)   (indices, values)    values[1] where index == position, else [0]
    topk(axis, k, largest) (x) -> (values, int64 indices), sorted, ties to the lower index
                           (unrolled ranks: n * n <= UNROLL_MAX terms for an axis of n)

Negative indices count from the end of their axis.  Scatter indices must be constants:
the frontend turns them into `map` (ScatterND and ScatterElements without reduction).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .. import te
from ..te.expr import INDEX, const
from .ops_def import ALL, NUMERIC, OpDef, _err, check_unroll


def _as_index(e, n: int):
    """An index expression from an integer (or float) element, negative ones wrapped."""
    j = e if e.dtype == INDEX else te.cast(INDEX, e)
    return te.if_then_else(j < 0, j + n, j)


def _index_dtype(a, ins):
    if ins[1][1] not in ("int32", "int64"):
        raise _err(f"indices are {ins[1][1]}, not int32 or int64")
    if ins[0][1] not in ALL:
        raise _err(f"data is {ins[0][1]}")
    return ins[0][1]


# ------------------------------------------------------------------ gather_elements
def _gather_elements_fn(node, ins, graph, inputs):
    fd, fi = ins
    ax, n = node.attr("axis"), node.inputs[0].shape[node.attr("axis")]
    return [lambda idx: fd(tuple(_as_index(fi(idx), n) if d == ax else i
                                 for d, i in enumerate(idx)))]


def _ref_gather_elements(n, data, ind):
    ax = n.attr("axis")
    ind = np.where(ind < 0, ind + data.shape[ax], ind)
    return np.take_along_axis(data, ind.astype(np.int64), axis=ax)


# ------------------------------------------------------------------ gather_nd
def _gather_nd_shape(a, ins):
    (ds, _), (is_, _) = ins
    b, m = a["batch_dims"], is_[-1]
    return tuple(is_[:-1]) + tuple(ds[b + m:])


def _gather_nd_fn(node, ins, graph, inputs):
    fd, fi = ins
    ds, is_ = node.inputs[0].shape, node.inputs[1].shape
    b, m, q = node.attr("batch_dims"), is_[-1], len(is_)

    def fn(idx):
        lead = tuple(idx[:q - 1])
        picked = tuple(_as_index(fi(lead + (k,)), ds[b + k]) for k in range(m))
        return fd(tuple(idx[:b]) + picked + tuple(idx[q - 1:]))
    return [fn]


def _ref_gather_nd(n, data, ind):
    b = n.attr("batch_dims")
    ind = ind.astype(np.int64)
    m = ind.shape[-1]
    out_shape = ind.shape[:-1] + data.shape[b + m:]
    out = np.empty(out_shape, data.dtype)
    for pos in np.ndindex(*ind.shape[:-1]):
        t = tuple(int(j) % data.shape[b + k] for k, j in enumerate(ind[pos]))
        out[pos] = data[tuple(pos[:b]) + t]
    return out


# ------------------------------------------------------------------ scatter
def scatter_map(data_shape, indices: np.ndarray, updates_shape, axis=None) -> np.ndarray:
    """For ScatterND (axis None) or ScatterElements (axis): per data element, the flat index
    of the update written there last, or -1 (untouched)."""
    m = np.full(data_shape, -1, np.int64)
    ind = indices.astype(np.int64)
    for k, pos in enumerate(np.ndindex(*updates_shape)):
        if axis is None:
            lead = pos[:ind.ndim - 1]
            tgt = tuple(int(j) % data_shape[d] for d, j in enumerate(ind[lead]))
            m[tgt + tuple(pos[ind.ndim - 1:])] = k
        else:
            tgt = list(pos)
            tgt[axis] = int(ind[pos]) % data_shape[axis]
            m[tuple(tgt)] = k
    return m


def _scatter_fn(node, ins, graph, inputs):
    fd, fu, fm = ins
    us = node.inputs[1].shape
    strides = [int(np.prod(us[d + 1:], dtype=np.int64)) for d in range(len(us))]

    def fn(idx):
        k = fm(idx)
        src = tuple((k // s) % n if s > 1 else k % n for s, n in zip(strides, us))
        return te.if_then_else(k >= 0, fu(src), fd(idx))
    return [fn]


def _ref_scatter(n, data, upd, mp):
    flat = upd.reshape(-1)
    return np.where(mp >= 0, flat[np.maximum(mp, 0)], data)


def _scatter_dtype(a, ins):
    if ins[0][1] != ins[1][1]:
        raise _err(f"data and updates dtypes differ ({ins[0][1]}, {ins[1][1]})")
    if ins[2][1] != "int64" or tuple(ins[2][0]) != tuple(ins[0][0]):
        raise _err("the scatter map is not int64 of the data's shape", "malformed")
    return ins[0][1]


# ------------------------------------------------------------------ one_hot
def _one_hot_shape(a, ins):
    s = tuple(ins[0][0])
    return s[:a["axis"]] + (a["depth"],) + s[a["axis"]:]


def _one_hot_fn(node, ins, graph, inputs):
    fi, fv = ins
    ax, depth = node.attr("axis"), node.attr("depth")

    def fn(idx):
        j = _as_index(fi(tuple(idx[:ax]) + tuple(idx[ax + 1:])), depth)
        return te.if_then_else(te.equal(j, idx[ax]), fv((1,)), fv((0,)))
    return [fn]


def _ref_one_hot(n, ind, values):
    ax, depth = n.attr("axis"), n.attr("depth")
    j = ind.astype(np.int64)
    j = np.where(j < 0, j + depth, j)
    pos = np.arange(depth).reshape((-1,) + (1,) * (ind.ndim - ax))
    return np.where(np.expand_dims(j, ax) == pos, values[1], values[0])


def _one_hot_dtype(a, ins):
    if ins[0][1] not in NUMERIC:
        raise _err(f"indices are {ins[0][1]}")
    return ins[1][1]


# ------------------------------------------------------------------ topk
def _topk_types(a, ins):
    s, dt = ins[0]
    if dt not in NUMERIC:
        raise _err(f"x is {dt}")
    out = tuple(a["k"] if d == a["axis"] else n for d, n in enumerate(s))
    return [(out, dt), (out, "int64")]


def _topk_fn(node, ins, graph, inputs):
    """Per element i of the axis its rank (how many come before it: larger, or equal with a
    smaller index; smaller when not `largest`); output p is the element of rank p."""
    f, a = ins[0], node.attr_dict
    ax, n = a["axis"], node.inputs[0].shape[a["axis"]]
    check_unroll(node, n * n)
    dt = node.outputs[0].dtype

    def at(idx, j):
        return f(tuple(j if d == ax else i for d, i in enumerate(idx)))

    def ranks(idx):
        xs = [at(idx, j) for j in range(n)]
        out = []
        for i in range(n):
            r = None
            for j in range(n):
                if j == i:
                    continue
                ahead = xs[j] > xs[i] if a["largest"] else xs[j] < xs[i]
                if j < i:
                    ahead = ahead | te.equal(xs[j], xs[i])
                t = te.if_then_else(ahead, const(1, INDEX), const(0, INDEX))
                r = t if r is None else r + t
            out.append(const(0, INDEX) if r is None else r)
        return xs, out

    def pick(values: bool):
        def fn(idx):
            xs, rk = ranks(idx)
            acc = None
            for i in range(n):
                v = xs[i] if values else const(i, INDEX)
                t = te.if_then_else(te.equal(rk[i], idx[ax]), v, const(0, dt if values else INDEX))
                acc = t if acc is None else acc + t
            return acc
        return fn
    return [pick(True), pick(False)]


def _ref_topk(n, x):
    ax, k = n.attr("axis"), n.attr("k")
    key = -x if n.attr("largest") else x
    order = np.argsort(key, axis=ax, kind="stable")
    ind = np.take(order, range(k), axis=ax)
    return np.take_along_axis(x, ind, axis=ax), ind.astype(np.int64)


INDEX_OPS: Mapping[str, OpDef] = {
    "gather_elements": OpDef("injective", lambda a, ins: ins[1][0], _index_dtype,
                             _ref_gather_elements, _gather_elements_fn),
    "gather_nd": OpDef("injective", _gather_nd_shape, _index_dtype, _ref_gather_nd,
                       _gather_nd_fn),
    "scatter": OpDef("injective", lambda a, ins: ins[0][0], _scatter_dtype, _ref_scatter,
                     _scatter_fn),
    "topk": OpDef("injective", None, None, _ref_topk, _topk_fn, _topk_types),
    "one_hot": OpDef("injective", _one_hot_shape, _one_hot_dtype, _ref_one_hot, _one_hot_fn),
}
