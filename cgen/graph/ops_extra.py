"""Canonical ops added for the wider ONNX op set (issue 12), each described once: its
fusion pattern, output shape and dtype, numpy reference and te index function.  The
shared tables (opset.OP_PATTERNS, shapes.output_types, reference.IMPLS, te_ops.node_fns)
read `EXTRA_OPS`, so an op here is folded, interpreted, fused and lowered like the core
ones.

    elementwise   floor ceil round sign sin cos elu(alpha) selu(alpha, gamma) softplus
                  softsign mish thresholded_relu(alpha) celu(alpha) shrink(bias, lambd)
                  not isnan isinf(detect_positive, detect_negative) swish(alpha)
                  tan asin acos atan sinh cosh asinh acosh atanh              (x)
    broadcast     less greater equal less_equal greater_equal -> bool          (a, b)
                  and or xor (bool)   mod(fmod)   prelu (x, slope)
                  where (cond, a, b)
    injective     expand(shape) tile(repeats) trilu(upper, k)
                  cumsum / cumprod(axis, exclusive, reverse)  reduce_prod(axes, keepdims)
                  (the last three unrolled over the reduced axis: at most UNROLL_MAX terms)
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from .. import te
from ..te.expr import const
from .graph_ir import ModelError
from .ops_def import (ALL, FLOAT, NUMERIC, SIGNED, UNROLL_MAX, OpDef, _bcast, _bshape, _err,
                      _f, _idx_bcast, _nary, _same, _takes, _unary, check_unroll, exp_vec)
from .ops_index import INDEX_OPS
from .ops_integer import INTEGER_OPS

def _where_dtype(a, ins):
    if ins[0][1] != "bool":
        raise _err(f"condition is {ins[0][1]}, not bool")
    if ins[1][1] != ins[2][1]:
        raise _err(f"operand dtypes differ ({ins[1][1]}, {ins[2][1]})")
    return ins[1][1]


def _reduced(a, ins):
    s = ins[0][0]
    if a["keepdims"]:
        return tuple(1 if d in a["axes"] else n for d, n in enumerate(s))
    return tuple(n for d, n in enumerate(s) if d not in a["axes"])


def _ceil(x):
    return _f(0.0) - te.floor(_f(0.0) - x)


def _expm1(x):
    """exp(x) - 1 (libm's expf kept Elu's loop scalar)."""
    return exp_vec(x) - _f(1.0, x.dtype)


def _softplus(x):
    # max(x, 0) + log(1 + exp(-|x|)): no overflow for large x
    return te.maximum(x, _f(0.0)) + te.log(_f(1.0) + te.exp(_f(0.0) - te.abs(x)))


def _sign(x):
    z = const(0, x.dtype)
    if x.dtype == "uint8":
        return te.if_then_else(x > z, const(1, x.dtype), z)
    return te.if_then_else(x > z, const(1, x.dtype), te.if_then_else(x < z, const(-1, x.dtype), z))


def _mod(a, x, y):
    if te.is_float(x.dtype):     # fmod: the sign of the dividend; else the divisor's
        r = te.fmod(x, y)
        if a["fmod"]:
            return r
        flip = te.all(te.not_equal(r, _f(0.0)), te.not_equal(r < _f(0.0), y < _f(0.0)))
        return te.if_then_else(flip, r + y, r)
    safe = te.if_then_else(te.equal(y, 0), const(1, y.dtype), y)
    r = x % safe                                   # te's % floors: the sign of the divisor
    if a["fmod"] and x.dtype != "uint8":           # C's %: the sign of the dividend
        r = te.if_then_else(te.all(te.not_equal(r, 0), te.not_equal(r < 0, x < 0)), r - safe, r)
    return te.if_then_else(te.equal(y, 0), const(0, x.dtype), r)


def _isinf(x, a):
    pos = te.equal(x, _f(math.inf)) if a["detect_positive"] else None
    neg = te.equal(x, _f(-math.inf)) if a["detect_negative"] else None
    if pos is not None and neg is not None:
        return pos | neg
    return pos if pos is not None else neg if neg is not None else const(False, "bool")


def _expand_fn(node, ins, graph, inputs):
    f, s, o = ins[0], node.inputs[0].shape, node.outputs[0].shape
    return [lambda idx: f(_idx_bcast(idx, s, o))]


def _tile_fn(node, ins, graph, inputs):
    f, s = ins[0], node.inputs[0].shape
    return [lambda idx: f(tuple(i if n == r else i % n
                                for i, n, r in zip(idx, s, node.outputs[0].shape)))]


def _trilu_fn(node, ins, graph, inputs):
    f, a, dt = ins[0], node.attr_dict, node.outputs[0].dtype

    def fn(idx):
        d = idx[-1] - idx[-2]
        keep = d >= a["k"] if a["upper"] else d <= a["k"]
        return te.if_then_else(keep, f(idx), const(0, dt))
    return [fn]


def _cumulative_fn(node, ins, graph, inputs):
    """cumsum / cumprod: per element, the terms of its prefix (suffix) combined, the others
    replaced by the identity."""
    f, a, dt = ins[0], node.attr_dict, node.outputs[0].dtype
    ax, n = a["axis"], node.inputs[0].shape[a["axis"]]
    check_unroll(node, n)
    prod = node.op == "cumprod"
    ident = const(1 if prod else 0, dt)

    def fn(idx):
        acc = None
        for k in range(n):
            src = tuple(k if d == ax else i for d, i in enumerate(idx))
            if a["reverse"]:
                keep = idx[ax] < k if a["exclusive"] else idx[ax] <= k
            else:
                keep = idx[ax] > k if a["exclusive"] else idx[ax] >= k
            term = te.if_then_else(keep, f(src), ident)
            acc = term if acc is None else (acc * term if prod else acc + term)
        return acc
    return [fn]


def _reduce_prod_fn(node, ins, graph, inputs):
    f, a, dt = ins[0], node.attr_dict, node.outputs[0].dtype
    s, axes = node.inputs[0].shape, a["axes"]
    ext = [s[d] for d in axes]
    check_unroll(node, int(np.prod(ext, dtype=np.int64)))

    def fn(idx):
        kept = [i for d, i in enumerate(idx) if not a["keepdims"] or d not in axes]
        acc = const(1, dt)
        for ks in np.ndindex(*ext):
            it, src = iter(kept), []
            red = dict(zip(axes, ks))
            for d in range(len(s)):
                src.append(red[d] if d in red else next(it))
            acc = acc * f(tuple(src))
        return acc
    return [fn]


# ====================================================================== references
def _ff(fn: Callable) -> Callable:
    """A float op: computed in float64, returned in the input's dtype."""
    return lambda n, x: fn(n.attr_dict, x.astype(np.float64)).astype(x.dtype)


def _ref_mod(n, x, y):
    if np.issubdtype(x.dtype, np.floating):
        return np.fmod(x, y) if n.attr("fmod") else np.mod(x, y)
    with np.errstate(all="ignore"):
        safe = np.where(y == 0, 1, y)
        r = np.fmod(x, safe) if n.attr("fmod") else np.mod(x, safe)
    return np.where(y == 0, 0, r).astype(x.dtype)


def _ref_cumulative(n, x):
    ax, prod = n.attr("axis"), n.op == "cumprod"
    y = np.flip(x, ax) if n.attr("reverse") else x
    if n.attr("exclusive"):          # shift by one, the identity first
        pad = np.ones_like(np.take(y, [0], axis=ax)) if prod else np.zeros_like(
            np.take(y, [0], axis=ax))
        y = np.concatenate([pad, np.take(y, range(y.shape[ax] - 1), axis=ax)], axis=ax)
    c = (np.cumprod if prod else np.cumsum)(y, axis=ax, dtype=x.dtype)
    return np.flip(c, ax) if n.attr("reverse") else c


def _ref_trilu(n, x):
    return np.triu(x, n.attr("k")) if n.attr("upper") else np.tril(x, n.attr("k"))


def _ref_tile(n, x):
    return np.tile(x, n.attr("repeats"))


def _ref_reduce_prod(n, x):
    return np.prod(x, axis=n.attr("axes"), keepdims=bool(n.attr("keepdims")), dtype=x.dtype)


def _ref_selu(a, x):
    return a["gamma"] * np.where(x > 0, x, a["alpha"] * np.expm1(x))


def _ref_celu(a, x):
    return np.maximum(x, 0) + np.minimum(0, a["alpha"] * np.expm1(x / a["alpha"]))


def _ref_shrink(a, x):
    lam, b = a["lambd"], a["bias"]
    return np.where(x < -lam, x + b, np.where(x > lam, x - b, 0))


def _ref_softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _ref_isinf(n, x):
    pos, neg = n.attr("detect_positive"), n.attr("detect_negative")
    return (np.isposinf(x) & bool(pos)) | (np.isneginf(x) & bool(neg))


# ====================================================================== the table
_NP_TRIG = {"tan": "tan", "asin": "arcsin", "acos": "arccos", "atan": "arctan", "sinh": "sinh",
            "cosh": "cosh", "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh"}


def _elem(dtypes, ref, expr, out=None):
    return OpDef("elementwise", _same, _takes(*dtypes, out=out), ref, _unary(expr))


def _bin(dtypes, ref, expr, out=None):
    return OpDef("broadcast", _bcast, _takes(*dtypes, out=out), ref, _nary(expr))


def _cmp(op, npfn):
    return _bin(NUMERIC, lambda n, x, y: npfn(x, y), lambda a, x, y: te.compare(op, x, y), "bool")


EXTRA_OPS: Mapping[str, OpDef] = {
    "floor": _elem(FLOAT, lambda n, x: np.floor(x), lambda x, a: te.floor(x)),
    "ceil": _elem(FLOAT, lambda n, x: np.ceil(x), lambda x, a: _ceil(x)),
    "round": _elem(FLOAT, lambda n, x: np.round(x), lambda x, a: te.round_half_even(x)),
    "sign": _elem(NUMERIC, lambda n, x: np.sign(x), lambda x, a: _sign(x)),
    "sin": _elem(FLOAT, _ff(lambda a, x: np.sin(x)), lambda x, a: te.sin(x)),
    "cos": _elem(FLOAT, _ff(lambda a, x: np.cos(x)), lambda x, a: te.cos(x)),
    "elu": _elem(FLOAT, _ff(lambda a, x: np.where(x > 0, x, a["alpha"] * np.expm1(x))),
                 lambda x, a: te.if_then_else(x > _f(0.0), x, _f(a["alpha"]) * _expm1(x))),
    "selu": _elem(FLOAT, _ff(_ref_selu), lambda x, a: _f(a["gamma"]) * te.if_then_else(
        x > _f(0.0), x, _f(a["alpha"]) * _expm1(x))),
    "softplus": _elem(FLOAT, _ff(lambda a, x: _ref_softplus(x)), lambda x, a: _softplus(x)),
    "softsign": _elem(FLOAT, _ff(lambda a, x: x / (1 + np.abs(x))),
                      lambda x, a: x / (_f(1.0) + te.abs(x))),
    "mish": _elem(FLOAT, _ff(lambda a, x: x * np.tanh(_ref_softplus(x))),
                  lambda x, a: x * te.tanh(_softplus(x))),
    "thresholded_relu": _elem(FLOAT, _ff(lambda a, x: np.where(x > a["alpha"], x, 0)),
                              lambda x, a: te.if_then_else(x > _f(a["alpha"]), x, _f(0.0))),
    "celu": _elem(FLOAT, _ff(_ref_celu), lambda x, a: te.maximum(x, _f(0.0)) + te.minimum(
        _f(0.0), _f(a["alpha"]) * _expm1(x / _f(a["alpha"])))),
    "shrink": _elem(FLOAT, _ff(_ref_shrink), lambda x, a: te.if_then_else(
        x < _f(-a["lambd"]), x + _f(a["bias"]),
        te.if_then_else(x > _f(a["lambd"]), x - _f(a["bias"]), _f(0.0)))),
    "not": _elem(("bool",), lambda n, x: np.logical_not(x), lambda x, a: ~x),
    "isnan": _elem(FLOAT, lambda n, x: np.isnan(x), lambda x, a: te.not_equal(x, x), "bool"),
    "isinf": _elem(FLOAT, _ref_isinf, _isinf, "bool"),
    "less": _cmp("<", np.less), "greater": _cmp(">", np.greater), "equal": _cmp("==", np.equal),
    "less_equal": _cmp("<=", np.less_equal), "greater_equal": _cmp(">=", np.greater_equal),
    "and": _bin(("bool",), lambda n, x, y: x & y, lambda a, x, y: x & y),
    "or": _bin(("bool",), lambda n, x, y: x | y, lambda a, x, y: x | y),
    "xor": _bin(("bool",), lambda n, x, y: x ^ y,
                lambda a, x, y: te.not_equal(x, y)),
    "mod": _bin(NUMERIC, _ref_mod, _mod),
    "prelu": _bin(SIGNED, lambda n, x, s: np.where(x < 0, x * s, x),
                  lambda a, x, s: te.if_then_else(x < const(0, x.dtype), x * s, x)),
    "where": OpDef("broadcast", _bcast, _where_dtype, lambda n, c, x, y: np.where(c, x, y),
                   _nary(lambda a, c, x, y: te.if_then_else(c, x, y))),
    "expand": OpDef("injective", lambda a, ins: _bshape(ins[0][0], a["shape"]), _takes(*ALL),
                    lambda n, x: np.broadcast_to(x, _bshape(x.shape, n.attr("shape"))).copy(),
                    _expand_fn),
    "tile": OpDef("injective", lambda a, ins: tuple(n * r for n, r in zip(ins[0][0], a["repeats"])),
                  _takes(*ALL), _ref_tile, _tile_fn),
    "trilu": OpDef("injective", _same, _takes(*ALL), _ref_trilu, _trilu_fn),
    "cumsum": OpDef("injective", _same, _takes(*NUMERIC), _ref_cumulative, _cumulative_fn),
    "cumprod": OpDef("injective", _same, _takes(*NUMERIC), _ref_cumulative, _cumulative_fn),
    **{op: _elem(FLOAT, _ff(lambda a, x, op=op: getattr(np, _NP_TRIG[op])(x)),
                 lambda x, a, op=op: getattr(te, op)(x)) for op in _NP_TRIG},
    "swish": _elem(FLOAT, _ff(lambda a, x: x / (1 + np.exp(-a["alpha"] * x))),
                   lambda x, a: x * te.sigmoid(x * _f(a["alpha"]))),
    "reduce_prod": OpDef("injective", _reduced, _takes(*NUMERIC), _ref_reduce_prod,
                         _reduce_prod_fn),
    **INDEX_OPS,
    **INTEGER_OPS,
}
