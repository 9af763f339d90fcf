"""Loop partitioning on `likely` conditions (te.likely), TVM's LoopPartition in small.

A producer that pads its input (`P = likely(inside) ? X[...] : 0`) pays a select and a
conditional load per element, which no C compiler vectorizes.  For a serial loop whose
body holds likely conditions affine in the loop variable (other terms fixed outside the
loop), the loop is cut in three: before, inside and after the range where every such
condition holds.  In the middle part those conditions are true (a plain copy, which the
C compiler vectorizes); the border parts keep them as ordinary conditions.  When the
bounds depend on an outer loop the loop stays whole, with a branch per iteration
between the middle and the border bodies.  Every
remaining `likely` marker is dropped, so the C printer never sees one.
"""
from __future__ import annotations

from ..te.expr import Binary, Call, Compare, Const, Logic, INDEX
from ..te.visit import free_vars, map_children
from .ir import For, IfThenElse, Let, Stmt, seq
from .simplify import from_linear, linear, simplify_expr

LIKELY = "likely"


def _is_likely(x) -> bool:
    return isinstance(x, Call) and x.name == LIKELY


def _conjuncts(c) -> list:
    if isinstance(c, Logic) and c.op == "&&":
        return _conjuncts(c.a) + _conjuncts(c.b)
    return [c]


def _and(cs):
    if not cs:
        return Const(True, "bool")
    out = cs[0]
    for c in cs[1:]:
        out = Logic("&&", out, c)
    return out


def _likely_conds(node, out: list):
    """Every conjunct of every likely condition under node."""
    if _is_likely(node):
        out.extend(_conjuncts(node.args[0]))
        return
    for f in getattr(node, "__dataclass_fields__", {}):
        v = getattr(node, f)
        if isinstance(v, tuple):
            for x in v:
                if hasattr(x, "__dataclass_fields__"):
                    _likely_conds(x, out)
        elif hasattr(v, "__dataclass_fields__"):
            _likely_conds(v, out)


def _bound(cond, var, inner: set):
    """(lower, upper) on var (either None) such that cond holds for lower <= var < upper,
    when cond is an affine comparison in var whose other terms do not depend on inner."""
    if not (isinstance(cond, Compare) and cond.op in ("<", "<=", ">", ">=")
            and cond.a.dtype == INDEX):
        return None
    terms, c0 = linear(simplify_expr(Binary("-", cond.a, cond.b, INDEX)))
    k = terms.pop(var, 0)
    if not isinstance(k, int) or k == 0:
        return None
    if any((free_vars(t) & inner) or var in free_vars(t) for t in terms):
        return None
    # cond: k*var + r OP 0 with r = rest; normalise to a*var OP' s with a > 0
    r = from_linear(terms, c0)
    op = cond.op
    if k < 0:
        k, op = -k, {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
        s = r                                          # k*var OP r
    else:
        s = Binary("-", Const(0, INDEX), r, INDEX)     # k*var OP -r
    K = Const(k, INDEX)

    def fdiv(e):
        return Binary("//", e, K, INDEX)
    if op == "<":       # var < ceil(s/k)
        return None, fdiv(Binary("+", s, Const(k - 1, INDEX), INDEX))
    if op == "<=":      # var <= floor(s/k)
        return None, Binary("+", fdiv(s), Const(1, INDEX), INDEX)
    if op == ">=":      # var >= ceil(s/k)
        return fdiv(Binary("+", s, Const(k - 1, INDEX), INDEX)), None
    return Binary("+", fdiv(s), Const(1, INDEX), INDEX), None   # var > floor(s/k)


def _replace(node, decided: dict):
    """likely conditions with the decided conjuncts replaced by True (kept marked)."""
    def rec(x):
        if _is_likely(x):
            cs = [c for c in _conjuncts(x.args[0]) if c not in decided]
            return Call(LIKELY, (_and(cs),), "bool") if cs else Const(True, "bool")
        return map_children(x, rec)
    return rec(node)


def strip_likely(node):
    """Every likely(c) replaced by c."""
    def rec(x):
        if _is_likely(x):
            return rec(x.args[0])
        return map_children(x, rec)
    return rec(node)


def _bound_vars(s) -> set:
    """The variables bound inside s (loops, lets): a bound on an outer loop cannot use them."""
    out = set()

    def rec(x):
        if isinstance(x, (For, Let)):
            out.add(x.var)
        for f in getattr(x, "__dataclass_fields__", {}):
            v = getattr(x, f)
            if isinstance(v, Stmt):
                rec(v)
            elif isinstance(v, tuple):
                for y in v:
                    if isinstance(y, Stmt):
                        rec(y)
    rec(s)
    return out


def _partition(loop: For) -> Stmt | None:
    if loop.kind not in ("serial", "vectorized"):
        return None
    conds = []
    _likely_conds(loop.body, conds)
    inner = _bound_vars(loop.body)
    lo, hi, decided = None, None, {}
    for c in conds:
        if loop.var not in free_vars(c):
            continue
        b = _bound(c, loop.var, inner)
        if b is None:
            continue
        decided[c] = True
        if b[0] is not None:
            lo = b[0] if lo is None else Binary("max", lo, b[0], INDEX)
        if b[1] is not None:
            hi = b[1] if hi is None else Binary("min", hi, b[1], INDEX)
    if not decided:
        return None
    start, end = loop.min, Binary("+", loop.min, loop.extent, INDEX)
    a = start if lo is None else simplify_expr(Binary("min", Binary("max", lo, start, INDEX), end, INDEX))
    b = end if hi is None else simplify_expr(Binary("max", Binary("min", hi, end, INDEX), a, INDEX))

    def part(mn, mx, body):
        ext = simplify_expr(Binary("-", mx, mn, INDEX))
        if isinstance(ext, Const) and ext.value <= 0:
            return None
        return For(loop.var, simplify_expr(mn), ext, loop.kind, body, loop.pragmas)
    edge = strip_likely(loop.body)
    mid = partition_likely(_replace(loop.body, decided))
    if isinstance(a, Const) and isinstance(b, Const):
        return seq(part(start, a, edge), part(a, b, mid), part(b, end, edge))
    if loop.kind == "vectorized":
        return None         # a branch per iteration would be one per lane
    # bounds known at run time only (a term of an outer loop): one loop, a branch per
    # iteration around the inner loops, whose bounds stay constant (cgen.lower.written
    # still proves such a fill complete, and the C compiler sees one loop)
    v = loop.var
    inside = Logic("&&", Compare(">=", v, a), Compare("<", v, b))
    return For(v, loop.min, loop.extent, loop.kind, IfThenElse(inside, mid, edge), loop.pragmas)


def partition_likely(s: Stmt) -> Stmt:
    """Partition serial loops on likely conditions (outermost first), then drop the markers;
    vectorized loops too where the cut is at constant bounds (each piece stays vectorized:
    the interior without the selects vectorizes, the borders fall back to plain loops)."""
    def rec(x):
        if isinstance(x, For):
            out = _partition(x)
            if out is not None:
                return out
        if isinstance(x, Stmt):
            return map_children(x, rec)
        return x
    return strip_likely(rec(s))


__all__ = ["partition_likely", "strip_likely", "LIKELY"]
