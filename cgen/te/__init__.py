"""Tensor expressions: the algorithm, written once, separate from its schedule."""
from __future__ import annotations

import builtins

from .expr import (Expr, Const, Var, IterVar, Binary, Compare, Logic, Not, Select, Cast,
                   Call, Reinterpret, TensorLoad, Reduce, as_expr, cast, const, binary, compare,
                   logic, is_float, is_int, reduce_identity, reinterpret, _unify)
from .tensor import Tensor, PlaceholderOp, ComputeOp, placeholder, compute, reduce_axis
from .fastmath import exp_poly

UNARY_FLOAT = ("exp", "log", "sqrt", "tanh", "sigmoid", "erf", "floor", "rint", "sin", "cos",
               "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh")


def _float_call(name):
    def fn(x):
        x = as_expr(x, "float32")
        if not is_float(x.dtype):
            raise TypeError(f"te.{name} takes float32, got {x.dtype}; cast first")
        return Call(name, (x,), x.dtype)
    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name} of a float32 expression."
    return fn


exp = _float_call("exp")
log = _float_call("log")
sqrt = _float_call("sqrt")
tanh = _float_call("tanh")
sigmoid = _float_call("sigmoid")
erf = _float_call("erf")
floor = _float_call("floor")
sin = _float_call("sin")
cos = _float_call("cos")
tan = _float_call("tan")
asin = _float_call("asin")
acos = _float_call("acos")
atan = _float_call("atan")
sinh = _float_call("sinh")
cosh = _float_call("cosh")
asinh = _float_call("asinh")
acosh = _float_call("acosh")
atanh = _float_call("atanh")
# round to nearest, ties to even: C rintf under the default rounding mode (ONNX requantisation)
round_half_even = _float_call("rint")
round_half_even.__name__ = "round_half_even"
round_half_even.__doc__ = "Round a float32 expression to the nearest integer, ties to even (C rintf)."


def fmod(x, y):
    """C fmodf: x - y * trunc(x / y), computed exactly (the sign of x)."""
    x, y = _unify(x, y)
    if not is_float(x.dtype):
        raise TypeError(f"te.fmod takes float32, got {x.dtype}")
    return Call("fmod", (x, y), x.dtype)


BITWISE = ("bitand", "bitor", "bitxor", "bitnot", "shl", "shr")


def bitwise(op: str, x, y=None):
    """Integer bit operations, C helpers with ONNX semantics: bitand, bitor, bitxor,
    bitnot (one operand), shl and shr (a count outside [0, width) shifts every bit out:
    0, or the sign for shr of a negative value; shl wraps)."""
    if op not in BITWISE:
        raise ValueError(f"te.bitwise: unknown op {op!r}")
    args = (as_expr(x),) if op == "bitnot" else _unify(x, y)
    if not is_int(args[0].dtype):
        raise TypeError(f"te.bitwise({op!r}) takes integers, got {args[0].dtype}")
    return Call(op, tuple(args), args[0].dtype)


def abs(x):  # noqa: A001 - te namespace mirrors numpy
    x = as_expr(x)
    return Call("abs", (x,), x.dtype)


def _reduce(combiner, expr, axis, where):
    if isinstance(axis, IterVar):
        axis = (axis,)
    axis = tuple(axis)
    if not axis or not builtins.all(isinstance(a, IterVar) and a.kind == "reduce" for a in axis):
        raise TypeError(f"te.{combiner}: axis must be te.reduce_axis(...) iteration variables")
    src = as_expr(expr)
    cond = None if where is None else as_expr(where)
    return Reduce(combiner, src, axis, cond, src.dtype)


def _is_axis(x) -> bool:
    return isinstance(x, IterVar) or (isinstance(x, (list, tuple)) and x
                                      and builtins.all(isinstance(a, IterVar) for a in x))


def sum(expr, axis, where=None):  # noqa: A001
    """Sum reduction over reduce axes (identity 0)."""
    return _reduce("sum", expr, axis, where)


def max(a, b=None, axis=None, where=None):  # noqa: A001
    """te.max(expr, axis=k) reduces (identity -inf); te.max(a, b) is elementwise."""
    if axis is None and b is not None and _is_axis(b):
        axis, b = b, None
    if axis is not None:
        return _reduce("max", a, axis, where)
    return maximum(a, b)


def min(a, b=None, axis=None, where=None):  # noqa: A001
    """te.min(expr, axis=k) reduces (identity +inf); te.min(a, b) is elementwise."""
    if axis is None and b is not None and _is_axis(b):
        axis, b = b, None
    if axis is not None:
        return _reduce("min", a, axis, where)
    return minimum(a, b)


def maximum(a, b):
    return binary("max", a, b)


def minimum(a, b):
    return binary("min", a, b)


def clip(x, lo, hi):
    return minimum(maximum(x, lo), hi)


def if_then_else(cond, t, f):
    cond = as_expr(cond)
    if cond.dtype != "bool":
        raise TypeError("if_then_else: condition must be a comparison")
    t, f = _unify(t, f)
    return Select(cond, t, f, t.dtype)


select = if_then_else


def likely(cond):
    """cond, marked as true on most of the domain: lowering cuts a loop the condition is
    affine in into border parts and an interior where it holds (cgen.lower.partition)."""
    cond = as_expr(cond)
    if cond.dtype != "bool":
        raise TypeError("likely: the argument must be a condition")
    return Call("likely", (cond,), "bool")


def equal(a, b):
    return compare("==", a, b)


def not_equal(a, b):
    return compare("!=", a, b)


def all(*conds):  # noqa: A001
    out = as_expr(conds[0])
    for c in conds[1:]:
        out = logic("&&", out, c)
    return out


def any(*conds):  # noqa: A001
    out = as_expr(conds[0])
    for c in conds[1:]:
        out = logic("||", out, c)
    return out


def create_schedule(outputs):
    from ..schedule import Schedule
    return Schedule(outputs)
