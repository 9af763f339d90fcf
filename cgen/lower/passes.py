"""Loop-IR passes after lowering: each is a function from statement to statement."""
from __future__ import annotations

from ..te.expr import Binary, Compare, Const, Logic, INDEX
from ..te.visit import map_children, substitute, free_vars
from .ir import For, IfThenElse, Seq, Stmt, seq
from .partition import partition_likely
from .simplify import linear, from_linear, simplify, simplify_expr

MAX_UNROLL = 64


def unroll_loops(s: Stmt) -> Stmt:
    """Replace loops marked unrolled (constant extent up to MAX_UNROLL) by copies."""
    def rec(x):
        if not isinstance(x, Stmt):
            return x
        x = map_children(x, rec)
        if isinstance(x, For) and x.kind == "unrolled" and isinstance(x.extent, Const) \
                and isinstance(x.min, Const) and x.extent.value <= MAX_UNROLL:
            copies = [substitute(x.body, {x.var: Const(x.min.value + k, INDEX)})
                      for k in range(x.extent.value)]
            return seq(*copies)
        if isinstance(x, For) and x.kind == "unrolled":
            return For(x.var, x.min, x.extent, "serial", x.body, x.pragmas)
        return x
    return rec(s)


def guards_to_bounds(s: Stmt) -> Stmt:
    """for v in [0, E): if (v + rest < lim) body  ->  for v in [0, min(E, lim - rest)): body.

    Tail guards that depend on the loop variable with unit coefficient become
    the loop's bound, so the loop body stays branch-free (and vectorizable).
    """
    def rec(x):
        if not isinstance(x, Stmt):
            return x
        x = map_children(x, rec)
        if not (isinstance(x, For) and x.kind in ("serial", "vectorized", "parallel", "tensorized")
                and isinstance(x.body, IfThenElse) and x.body.else_ is None
                and _is_zero(x.min)):
            return x
        # a conjunction of guards (two split tails on one loop): each bound it can
        conds = _conjuncts(x.body.cond)
        lims = [_guard_limit(c, x.var) for c in conds]
        if all(lim is None for lim in lims):
            return x
        ext = x.extent
        for lim in lims:
            if lim is not None:
                ext = simplify_expr(Binary("min", ext, lim, INDEX))
        keep = [c for c, lim in zip(conds, lims) if lim is None]
        body = x.body.then
        if keep:
            cond = keep[0]
            for c in keep[1:]:
                cond = Logic("&&", cond, c)
            body = IfThenElse(cond, body)
        return For(x.var, x.min, ext, x.kind, body, x.pragmas)
    return rec(s)


def _conjuncts(c) -> list:
    if isinstance(c, Logic) and c.op == "&&":
        return _conjuncts(c.a) + _conjuncts(c.b)
    return [c]


def _guard_limit(cond, var):
    """lim with (cond <=> var < lim) when cond is v + rest < b with unit coefficient, else None."""
    if not (isinstance(cond, Compare) and cond.op == "<" and cond.a.dtype == INDEX):
        return None
    # linear() keeps min/max as atoms; the simplifier would distribute into them
    terms, c0 = linear(Binary("-", cond.a, cond.b, INDEX))
    if terms.get(var) != 1:
        return None
    rest = {t: k for t, k in terms.items() if t is not var}
    if any(var in free_vars(t) for t in rest):
        return None
    # v + rest + c0 < 0  <=>  v < -(rest + c0)
    return from_linear({t: -k for t, k in rest.items()}, -c0)


def _is_zero(e) -> bool:
    return isinstance(e, Const) and e.value == 0


def tensorize(s: Stmt, table: dict) -> Stmt:
    """Loops marked tensorized become micro-kernel calls (see cgen.tensorize).  A zero init
    right before one that covers exactly the tile's elements (the depth is one block) goes
    into the call: the intrinsic's zero-start kernel neither needs the zero pass nor reads
    C (MobileNetV2's 16 -> 96 1x1 at 112x112 on x86-avx2, by hand: 0.80-0.86 the time)."""
    from ..tensorize.intrin import tensorize_loop, zero_init_covers, _serial

    def one(x, init=None):
        out = tensorize_loop(x, table[x.var], init)
        return out if out is not None else seq(init, _serial(x))

    def rec(x):
        if not isinstance(x, Stmt):
            return x
        if isinstance(x, For) and x.kind == "tensorized":
            return one(x)
        if isinstance(x, Seq):
            out, items, q = [], x.stmts, 0
            while q < len(items):
                nxt = items[q + 1] if q + 1 < len(items) else None
                if isinstance(nxt, For) and nxt.kind == "tensorized" \
                        and zero_init_covers(items[q], nxt, table[nxt.var]):
                    out.append(one(nxt, items[q]))
                    q += 2
                else:
                    out.append(rec(items[q]))
                    q += 1
            return seq(*out)
        return map_children(x, rec)
    return rec(s)


def hoist_allocations(s: Stmt) -> Stmt:
    """Heap-sized local buffers move out of loops (up to the function or the
    innermost parallel loop), so a packed tile is allocated once, not per
    iteration; stack-sized ones stay where they are (registers)."""
    from .ir import Allocate
    from ..codegen.c import STACK_LIMIT

    def strip(x, found):
        if not isinstance(x, Stmt):
            return x
        if isinstance(x, For) and x.kind == "parallel":
            return hoist_into(x)
        if isinstance(x, Allocate) and x.buffer.nbytes > STACK_LIMIT["kernel"]:
            found.append(x.buffer)
            return strip(x.body, found)
        return map_children(x, lambda y: strip(y, found))

    def hoist_into(loop):
        found = []
        body = strip(loop.body, found)
        for b in reversed(found):
            body = Allocate(b, body)
        return For(loop.var, loop.min, loop.extent, loop.kind, body, loop.pragmas)

    found = []
    body = strip(s, found)
    for b in reversed(found):
        body = Allocate(b, body)
    return body


def optimize(s: Stmt, isa=None, tensorized=None) -> Stmt:
    from .vectorize import vectorize
    s = unroll_loops(s)
    s = simplify(s) or Seq(())
    s = guards_to_bounds(s)
    s = simplify(s) or Seq(())
    s = simplify(partition_likely(s)) or Seq(())
    if tensorized:
        s = tensorize(s, tensorized)
        s = simplify(s) or Seq(())
    s = hoist_allocations(s)
    s = vectorize(s, isa)
    s = unroll_loops(s)
    return simplify(s) or Seq(())
