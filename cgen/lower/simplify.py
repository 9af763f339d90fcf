"""Simplifier: constant folding, index arithmetic in canonical linear form,
and facts proved from loop-variable ranges.

Rules never introduce overflow: integer folds are kept only when the result
fits the dtype, and linear rewriting only regroups terms of index (int64)
expressions.  Floor division and modulo keep Python semantics.
"""
from __future__ import annotations

import math

import numpy as np

from ..te.expr import (Binary, Cast, Compare, Const, Expr, Logic, Not, Select, Var,
                       INDEX, is_float, is_int)
from ..te.visit import map_children
from .ir import (Allocate, Evaluate, For, IfThenElse, Let, Seq, Stmt, Store, seq)

Range = tuple  # (lo | None, hi | None), inclusive


# ----------------------------------------------------------------------------
# integer ranges
# ----------------------------------------------------------------------------

def irange(e: Expr, ranges: dict) -> Range:
    """An inclusive integer interval holding e, None where unbounded."""
    if isinstance(e, Const):
        if isinstance(e.value, bool) or not isinstance(e.value, int):
            return (None, None)
        return (e.value, e.value)
    if isinstance(e, Var):
        return ranges.get(e, (None, None))
    if isinstance(e, Cast) and is_int(e.dtype) and is_int(e.value.dtype):
        lo, hi = irange(e.value, ranges)
        info = np.iinfo(e.dtype)
        if lo is not None and hi is not None and info.min <= lo and hi <= info.max:
            return (lo, hi)
        return (int(info.min), int(info.max))
    if isinstance(e, Binary) and is_int(e.dtype):
        a = irange(e.a, ranges)
        b = irange(e.b, ranges)
        op = e.op
        if op == "+":
            return (_add(a[0], b[0]), _add(a[1], b[1]))
        if op == "-":
            return (_sub(a[0], b[1]), _sub(a[1], b[0]))
        if op == "*":
            if None in a or None in b:
                if b[0] is not None and b[0] == b[1] and b[0] >= 0:
                    return (_mul(a[0], b[0]), _mul(a[1], b[0]))
                return (None, None)
            ps = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
            return (min(ps), max(ps))
        if op == "//" and b[0] is not None and b[0] == b[1] and b[0] > 0:
            c = b[0]
            return (None if a[0] is None else a[0] // c, None if a[1] is None else a[1] // c)
        if op == "%" and b[0] is not None and b[0] == b[1] and b[0] > 0:
            c = b[0]
            if a[0] is not None and a[1] is not None and a[0] // c == a[1] // c:
                return (a[0] % c, a[1] % c)
            return (0, c - 1)
        if op == "min":
            return (_opt(min, a[0], b[0], none_wins=True), _opt(min, a[1], b[1]))
        if op == "max":
            return (_opt(max, a[0], b[0]), _opt(max, a[1], b[1], none_wins=True))
    if isinstance(e, Select) and is_int(e.dtype):
        t, f = irange(e.t, ranges), irange(e.f, ranges)
        return (_opt(min, t[0], f[0], none_wins=True), _opt(max, t[1], f[1], none_wins=True))
    return (None, None)


def _add(x, y):
    return None if x is None or y is None else x + y


def _sub(x, y):
    return None if x is None or y is None else x - y


def _mul(x, c):
    return None if x is None else x * c


def _opt(f, x, y, none_wins=False):
    if x is None or y is None:
        if none_wins:
            return None
        return y if x is None else x
    return f(x, y)


# ----------------------------------------------------------------------------
# linear form of index expressions
# ----------------------------------------------------------------------------

def linear(e: Expr):
    """e as ({atom: coef}, const) with atoms in first-appearance order."""
    terms: dict = {}
    c0 = 0

    def add(x, k):
        nonlocal c0
        if isinstance(x, Const):
            c0 += k * x.value
        elif isinstance(x, Binary) and x.op == "+":
            add(x.a, k)
            add(x.b, k)
        elif isinstance(x, Binary) and x.op == "-":
            add(x.a, k)
            add(x.b, -k)
        elif isinstance(x, Binary) and x.op == "*" and isinstance(x.b, Const):
            add(x.a, k * x.b.value)
        elif isinstance(x, Binary) and x.op == "*" and isinstance(x.a, Const):
            add(x.b, k * x.a.value)
        else:
            terms[x] = terms.get(x, 0) + k
    add(e, 1)
    return {a: c for a, c in terms.items() if c != 0}, c0


def _merge_divmod(terms: dict, c0: int) -> tuple:
    """(x // c) * c * k + (x % c) * k -> x * k in a linear form (true for floor and for
    truncating division alike): a flat index split into a row and a column and put back
    together, as a window over a padded plane read along its flattened rows, is the
    flat index again, so its loads stay contiguous vectors."""
    for t, k in list(terms.items()):
        if not (isinstance(t, Binary) and t.op == "%" and isinstance(t.b, Const)):
            continue
        q = Binary("//", t.a, t.b, t.dtype)
        if t not in terms or terms.get(q) != k * t.b.value:
            continue
        del terms[t], terms[q]
        inner, i0 = linear(t.a)
        for a, c in inner.items():
            terms[a] = terms.get(a, 0) + c * k
        c0 += i0 * k
    return {a: c for a, c in terms.items() if c != 0}, c0


def from_linear(terms: dict, c0: int, dtype: str = INDEX) -> Expr:
    out = None
    items = [(a, c) for a, c in terms.items() if c != 0]
    if items and items[0][1] < 0 and c0 > 0:
        # lead with the constant rather than a negation: 100 - x, not (0 - x) + 100
        out, c0 = Const(c0, dtype), 0
    for atom, c in items:
        if c == 0:
            continue
        mag = abs(c)
        t = atom if mag == 1 else Binary("*", atom, Const(mag, dtype), dtype)
        if out is None:
            out = t if c > 0 else Binary("-", Const(0, dtype), t, dtype)
        else:
            out = Binary("+" if c > 0 else "-", out, t, dtype)
    if out is None:
        return Const(c0, dtype)
    if c0 > 0:
        out = Binary("+", out, Const(c0, dtype), dtype)
    elif c0 < 0:
        out = Binary("-", out, Const(-c0, dtype), dtype)
    return out


def _linear_range(terms: dict, c0: int, ranges: dict) -> Range:
    lo = hi = c0
    for atom, c in terms.items():
        a = irange(atom, ranges)
        if c > 0:
            lo, hi = _add(lo, _mul(a[0], c)), _add(hi, _mul(a[1], c))
        else:
            lo, hi = _add(lo, _mul(a[1], c)), _add(hi, _mul(a[0], c))
    return lo, hi


# ----------------------------------------------------------------------------
# expressions
# ----------------------------------------------------------------------------

def _fits(v: int, dtype: str) -> bool:
    info = np.iinfo(dtype)
    return info.min <= v <= info.max


def _fold_binary(op, a, b, dtype):
    x, y = a.value, b.value
    if is_float(dtype):
        fx, fy = np.float32(x), np.float32(y)
        with np.errstate(all="ignore"):
            r = {"+": fx + fy, "-": fx - fy, "*": fx * fy, "/": fx / fy if fy != 0 else None,
                 "min": fx if fx <= fy else fy, "max": fx if fx >= fy else fy}.get(op)
        if r is None or not np.isfinite(r):
            return None
        return Const(float(r), dtype)
    if op in ("//", "%") and y == 0:
        return None
    r = {"+": lambda: x + y, "-": lambda: x - y, "*": lambda: x * y, "//": lambda: x // y,
         "%": lambda: x % y, "min": lambda: min(x, y), "max": lambda: max(x, y)}[op]()
    return Const(r, dtype) if _fits(r, dtype) else None


def _prove(cmp_op, lo_hi_diff: Range):
    """Truth of (d cmp_op 0) given a range of d, or None when unknown."""
    lo, hi = lo_hi_diff
    if cmp_op == "<":
        if hi is not None and hi < 0:
            return True
        if lo is not None and lo >= 0:
            return False
    elif cmp_op == "<=":
        if hi is not None and hi <= 0:
            return True
        if lo is not None and lo > 0:
            return False
    elif cmp_op == ">":
        return _prove("<", (None if hi is None else -hi, None if lo is None else -lo))
    elif cmp_op == ">=":
        return _prove("<=", (None if hi is None else -hi, None if lo is None else -lo))
    elif cmp_op == "==":
        if lo is not None and lo == hi == 0:
            return True
        if (lo is not None and lo > 0) or (hi is not None and hi < 0):
            return False
    elif cmp_op == "!=":
        r = _prove("==", lo_hi_diff)
        return None if r is None else not r
    return None


def simplify_expr(e: Expr, ranges: dict | None = None) -> Expr:
    ranges = ranges or {}
    memo: dict = {}

    def rec(x):
        if not isinstance(x, Expr):
            return x
        key = id(x)
        if key in memo:
            return memo[key][1]
        r = _simp(map_children(x, rec), ranges)
        memo[key] = (x, r)  # keep x alive so its id stays unique
        return r
    return rec(e)


def _simp(e: Expr, ranges: dict) -> Expr:
    if isinstance(e, Binary):
        a, b, op, dt = e.a, e.b, e.op, e.dtype
        if isinstance(a, Const) and isinstance(b, Const):
            r = _fold_binary(op, a, b, dt)
            if r is not None:
                return r
        if dt == INDEX and op in ("+", "-", "*"):
            terms, c0 = _merge_divmod(*linear(e))
            if not (_fits(c0, dt) and all(_fits(k, dt) for k in terms.values())):
                return e  # regrouped, a constant would not fit int64 (x + 2**62 + 2**62)
            mm = [t for t, k in terms.items() if isinstance(t, Binary) and t.op in ("min", "max")
                  and abs(k) == 1]
            if len(mm) == 1 and (len(terms) > 1 or c0 != 0):
                # min(a, b) + r -> min(a + r, b + r); -min(a, b) + r -> max(r - a, r - b)
                t = mm[0]
                k = terms.pop(t)
                rest = from_linear(terms, c0)
                if k == 1:
                    a, b, o = Binary("+", t.a, rest, dt), Binary("+", t.b, rest, dt), t.op
                else:
                    a, b = Binary("-", rest, t.a, dt), Binary("-", rest, t.b, dt)
                    o = "max" if t.op == "min" else "min"
                return _simp(Binary(o, _simp(a, ranges), _simp(b, ranges), dt), ranges)
            return from_linear(terms, c0)
        if dt == INDEX and op in ("//", "%") and isinstance(b, Const) and b.value > 0:
            return _simp_divmod(op, a, b.value, ranges)
        if op in ("min", "max") and dt == INDEX:
            return _simp_minmax(op, a, b, ranges)
        if op == "*":
            if _is(b, 1):
                return a
            if _is(a, 1):
                return b
            if is_int(dt) and (_is(a, 0) or _is(b, 0)):
                return Const(0, dt)
        if op in ("+", "-") and _is(b, 0) and is_int(dt):
            return a
        if op == "+" and _is(a, 0) and is_int(dt):
            return b
        if op == "/" and _is(b, 1):
            return a
        return e
    if isinstance(e, Compare):
        a, b = e.a, e.b
        if isinstance(a, Const) and isinstance(b, Const):
            x, y = a.value, b.value
            return Const({"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y,
                          "==": x == y, "!=": x != y}[e.op], "bool")
        if a.dtype == INDEX:
            d = _linear_range(*linear(_simp(Binary("-", a, b, INDEX), {})), ranges)
            r = _prove(e.op, d)
            if r is not None:
                return Const(r, "bool")
        return e
    if isinstance(e, Logic):
        a, b = e.a, e.b
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Const):
                if e.op == "&&":
                    return y if x.value else Const(False, "bool")
                return Const(True, "bool") if x.value else y
        return e
    if isinstance(e, Not):
        if isinstance(e.a, Const):
            return Const(not e.a.value, "bool")
        return e
    if isinstance(e, Select):
        if isinstance(e.cond, Const):
            return e.t if e.cond.value else e.f
        return e
    if isinstance(e, Cast):
        v = e.value
        if isinstance(v, Const) and v.dtype != "bool":
            if is_float(e.dtype):
                return Const(float(np.float32(v.value)), e.dtype)
            if is_int(v.dtype):
                r = int(np.array(v.value, dtype=v.dtype).astype(e.dtype))
                return Const(r, e.dtype)
            if math.isfinite(v.value):
                t = math.trunc(v.value)
                if _fits(t, e.dtype):
                    return Const(t, e.dtype)
        if isinstance(v, Cast) and is_int(e.dtype) and is_int(v.dtype) and is_int(v.value.dtype):
            # widening chain int->wider->wider is one widening cast
            if np.iinfo(v.dtype).bits >= np.iinfo(v.value.dtype).bits and \
               np.iinfo(e.dtype).bits >= np.iinfo(v.dtype).bits and \
               np.issubdtype(np.dtype(v.value.dtype), np.signedinteger) == \
               np.issubdtype(np.dtype(v.dtype), np.signedinteger):
                return Cast(e.dtype, v.value) if v.value.dtype != e.dtype else v.value
        return e
    return e


def _simp_minmax(op: str, a: Expr, b: Expr, ranges: dict) -> Expr:
    """Flatten nested min (or max), fold constants, drop provably dominated operands."""
    items = []

    def flat(x):
        if isinstance(x, Binary) and x.op == op:
            flat(x.a)
            flat(x.b)
        else:
            items.append(x)
    flat(a)
    flat(b)
    consts = [x.value for x in items if isinstance(x, Const)]
    rest = [x for x in items if not isinstance(x, Const)]
    if consts:
        rest.append(Const(min(consts) if op == "min" else max(consts), INDEX))
    keep = []
    for i, x in enumerate(rest):
        dominated = False
        for j, y in enumerate(rest):
            if i == j:
                continue
            # x and y are simplified already: only their difference is new (simplifying
            # them again redid every min/max nested in them, exponential in the nesting)
            d = _linear_range(*linear(_simp(Binary("-", x, y, INDEX), {})), ranges)
            # for min, x is useless when x >= y always (ties: keep the earlier one)
            worse = _prove(">=", d) if op == "min" else _prove("<=", d)
            strictly = _prove(">", d) if op == "min" else _prove("<", d)
            # on ties keep the earlier operand, or the constant (min(j, 0) with j >= 0 is 0)
            if worse and (strictly or j < i or (isinstance(y, Const) and not isinstance(x, Const))):
                dominated = True
                break
        if not dominated:
            keep.append(x)
    out = keep[0]
    for x in keep[1:]:
        out = Binary(op, out, x, INDEX)
    return out


def _is(x, v) -> bool:
    return isinstance(x, Const) and not isinstance(x.value, bool) and x.value == v


def _simp_divmod(op: str, a: Expr, c: int, ranges: dict) -> Expr:
    terms, c0 = linear(a)
    q_terms = {t: k // c for t, k in terms.items() if k % c == 0}
    r_terms = {t: k for t, k in terms.items() if k % c != 0}
    q0, r0 = divmod(c0, c)
    lo, hi = _linear_range(r_terms, r0, ranges)
    rest_in_period = lo is not None and hi is not None and 0 <= lo and hi < c
    if op == "//":
        if rest_in_period:
            return from_linear(q_terms, q0)
        inner = Binary("//", from_linear(r_terms, r0), Const(c, INDEX), INDEX)
        if lo is not None and hi is not None and lo // c == hi // c:
            return from_linear(q_terms, q0 + lo // c)
        if not q_terms and q0 == 0:
            return inner
        q_terms[inner] = 1
        return from_linear(q_terms, q0)
    if rest_in_period:
        return from_linear(r_terms, r0)
    if lo is not None and hi is not None and lo // c == hi // c:
        return from_linear(r_terms, r0 - (lo // c) * c)
    return Binary("%", from_linear(r_terms, r0), Const(c, INDEX), INDEX)


# ----------------------------------------------------------------------------
# statements
# ----------------------------------------------------------------------------

def simplify(s: Stmt, ranges: dict | None = None) -> Stmt | None:
    """Simplify a statement tree; None when it does nothing."""
    return _stmt(s, dict(ranges or {}))


def _stmt(s, ranges):
    if isinstance(s, Seq):
        parts = [_stmt(x, ranges) for x in s.stmts]
        parts = [p for p in parts if p is not None]
        return seq(*parts) if parts else None
    if isinstance(s, For):
        mn = simplify_expr(s.min, ranges)
        ext = simplify_expr(s.extent, ranges)
        if isinstance(ext, Const) and ext.value <= 0:
            return None
        if isinstance(ext, Const) and ext.value == 1 and s.kind != "tensorized":
            # (a tensorized loop stays until the tensorize pass: its kernel may have a role of extent 1)
            from ..te.visit import substitute
            return _stmt(substitute(s.body, {s.var: mn}), ranges)
        lo = irange(mn, ranges)[0]
        e_hi = irange(ext, ranges)[1]
        inner = dict(ranges)
        if lo is not None and e_hi is not None:
            inner[s.var] = (lo, irange(mn, ranges)[1] + e_hi - 1)
        else:
            inner[s.var] = (lo, None)
        body = _stmt(s.body, inner)
        if body is None:
            return None
        return For(s.var, mn, ext, s.kind, body, s.pragmas)
    if isinstance(s, Store):
        return Store(s.buffer, simplify_expr(s.index, ranges), simplify_expr(s.value, ranges))
    if isinstance(s, IfThenElse):
        cond = simplify_expr(s.cond, ranges)
        if isinstance(cond, Const):
            branch = s.then if cond.value else s.else_
            return None if branch is None else _stmt(branch, ranges)
        then = _stmt(s.then, _refine(cond, ranges))
        else_ = None if s.else_ is None else _stmt(s.else_, ranges)
        if then is None and else_ is None:
            return None
        if then is None:
            return IfThenElse(Not(cond), else_, None)
        return IfThenElse(cond, then, else_)
    if isinstance(s, Let):
        v = simplify_expr(s.value, ranges)
        inner = dict(ranges)
        if v.dtype == INDEX:
            inner[s.var] = irange(v, ranges)
        body = _stmt(s.body, inner)
        return None if body is None else Let(s.var, v, body)
    if isinstance(s, Allocate):
        body = _stmt(s.body, ranges)
        return None if body is None else Allocate(s.buffer, body)
    if isinstance(s, Evaluate):
        return Evaluate(simplify_expr(s.value, ranges))
    if isinstance(s, Stmt):
        # vector stores, kernel calls: simplify the expressions they hold
        return map_children(s, lambda x: simplify_expr(x, ranges) if isinstance(x, Expr) else _stmt(x, ranges))
    return s


def _refine(cond: Expr, ranges: dict) -> dict:
    """Ranges narrowed by a guard of the form var + rest < bound (linear, unit coefficient)."""
    out = dict(ranges)
    conds = []

    def split(c):
        if isinstance(c, Logic) and c.op == "&&":
            split(c.a)
            split(c.b)
        else:
            conds.append(c)
    split(cond)
    for c in conds:
        if not (isinstance(c, Compare) and c.a.dtype == INDEX and c.op in ("<", "<=", ">=", ">")):
            continue
        terms, c0 = linear(_simp(Binary("-", c.a, c.b, INDEX), {}))
        if len(terms) != 1:
            continue
        (atom, k), = terms.items()
        if not isinstance(atom, Var) or abs(k) != 1:
            continue
        lo, hi = out.get(atom, (None, None))
        # k*atom + c0 OP 0
        if c.op in ("<", "<="):
            lim = -c0 - (1 if c.op == "<" else 0)  # k*atom <= lim
            if k == 1:
                hi = lim if hi is None else min(hi, lim)
            else:
                lo = -lim if lo is None else max(lo, -lim)
        else:
            lim = -c0 + (1 if c.op == ">" else 0)  # k*atom >= lim
            if k == 1:
                lo = lim if lo is None else max(lo, lim)
            else:
                hi = -lim if hi is None else min(hi, -lim)
        out[atom] = (lo, hi)
    return out
