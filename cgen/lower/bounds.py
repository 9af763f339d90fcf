"""Symbolic bounds: the interval an index expression covers while some loop
variables range over constant intervals and the others stay fixed."""
from __future__ import annotations

from ..te.expr import Binary, Cast, Const, Expr, Select, Var, INDEX
from .simplify import simplify_expr


def _b(op, a, b):
    return Binary(op, a, b, INDEX)


def sym_bound(e: Expr, ranges: dict):
    """(lo, hi) expressions, inclusive, or None when e is not an index form we bound.

    ranges maps the varying Vars to (lo, hi) integers; other Vars are fixed.
    """
    if isinstance(e, Const):
        return (e, e) if e.dtype == INDEX else None
    if isinstance(e, Var):
        if e in ranges:
            lo, hi = ranges[e]
            return Const(lo, INDEX), Const(hi, INDEX)
        return (e, e)
    if isinstance(e, Cast):
        if e.dtype == INDEX and e.value.dtype == INDEX:
            return sym_bound(e.value, ranges)
        return None
    if isinstance(e, Binary) and e.dtype == INDEX:
        a = sym_bound(e.a, ranges)
        b = sym_bound(e.b, ranges)
        if a is None or b is None:
            return None
        if e.op == "+":
            return _b("+", a[0], b[0]), _b("+", a[1], b[1])
        if e.op == "-":
            return _b("-", a[0], b[1]), _b("-", a[1], b[0])
        if e.op == "*":
            for x, y in ((a, b), (b, a)):
                c = simplify_expr(y[0])
                if isinstance(c, Const) and simplify_expr(y[1]) == c:
                    if c.value >= 0:
                        return _b("*", x[0], c), _b("*", x[1], c)
                    return _b("*", x[1], c), _b("*", x[0], c)
            return None
        if e.op == "//":
            c = simplify_expr(b[0])
            if isinstance(c, Const) and c.value > 0 and simplify_expr(b[1]) == c:
                return _b("//", a[0], c), _b("//", a[1], c)
            return None
        if e.op == "%":
            c = simplify_expr(b[0])
            if isinstance(c, Const) and c.value > 0 and simplify_expr(b[1]) == c:
                return Const(0, INDEX), Const(c.value - 1, INDEX)
            return None
        if e.op in ("min", "max"):
            return _b(e.op, a[0], b[0]), _b(e.op, a[1], b[1])
        return None
    if isinstance(e, Select) and e.dtype == INDEX:
        t, f = sym_bound(e.t, ranges), sym_bound(e.f, ranges)
        if t is None or f is None:
            return None
        return _b("min", t[0], f[0]), _b("max", t[1], f[1])
    return None
