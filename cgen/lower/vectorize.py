"""Vectorize pass: loops marked vectorized become vector loads, arithmetic and
stores of the ISA's lane count, with a masked or scalar tail.

Only what maps one-to-one onto vector instructions is vectorized: float32
stores contiguous in the loop variable whose values are built from
contiguous or loop-invariant loads (or loads of every other element, where the ISA row
has load_even: a copy into parity planes) and + - * / min max, selects on a float32 comparison
(the row's compare and blend) or on a condition all lanes share (C's ?: on vectors),
and the float32 <-> int32 bit casts and int32 shift by a constant of exp
(cgen.te.fastmath).  Anything else keeps a plain loop, which the C compiler may still
vectorize.

A vectorized loop over outputs with reduction loops inside (a pooling or
convolution stage vectorized along its output width) is first turned inside
out: each lane accumulates only into its own output, so the lane loop can be
distributed over the body's statements and sunk below the reduction loops,
and a vector of outputs accumulates over the reduction.
"""
from __future__ import annotations

from ..te.expr import Binary, Call, Compare, Const, Expr, Reinterpret, Select, Var, INDEX
from ..te.visit import free_vars, map_children, substitute, walk
from .ir import (Broadcast, For, Seq, Stmt, Store, VLoad, VStore, Load, seq, split_dtype,
                 vector_dtype)
from .simplify import linear, simplify_expr

MAX_UNROLL_CHUNKS = 8


class _Bail(Exception):
    pass


def vectorize(s: Stmt, isa) -> Stmt:
    def rec(x):
        if not isinstance(x, Stmt):
            return x
        x = map_children(x, rec)
        if isinstance(x, For) and x.kind == "vectorized":
            if isa is None:
                return For(x.var, x.min, x.extent, "serial", x.body, x.pragmas)
            try:
                return _vectorize_loop(x, isa)
            except _Bail:
                pass
            try:
                pieces = [_vectorize_or_serial(p, isa) for p in _sunk(x)]
                if not any(_has_vector(p) for p in pieces):
                    # nothing gained by distributing: keep the one loop (both parities
                    # of a copy, read by one ld2 on NEON, were two loops of one each)
                    raise _Bail()
                return seq(*pieces)
            except _Bail:
                return For(x.var, x.min, x.extent, "serial", x.body, x.pragmas)
        return x
    return rec(s)


def _vectorize_or_serial(loop: For, isa) -> Stmt:
    """The innermost lane loop of one sunk nest, vectorized when it can be."""
    if isinstance(loop, For) and loop.kind == "vectorized":
        try:
            return _vectorize_loop(loop, isa)
        except _Bail:
            return For(loop.var, loop.min, loop.extent, "serial", loop.body, loop.pragmas)
    return map_children(loop, lambda c: _vectorize_or_serial(c, isa) if isinstance(c, Stmt) else c)


def _parts(body) -> list:
    return list(body.stmts) if isinstance(body, Seq) else [body]


def _sunk(loop: For) -> list:
    """`for v: S1; for r: ...; S2` as `for v: S1`, `for r: ... for v: ...`, ...: legal when
    every store is to an index with coefficient 1 in v and every load of a stored buffer
    reads the element the same statement stores (each lane touches only its own outputs),
    and no loop bound depends on v."""
    v = loop.var
    stores = []

    def collect(x):
        if isinstance(x, Store):
            stores.append(x)
        elif isinstance(x, For):
            if v in free_vars(x.min) or v in free_vars(x.extent):
                raise _Bail()
            for p in _parts(x.body):
                collect(p)
        else:
            raise _Bail()
    for p in _parts(loop.body):
        collect(p)
    written = {st.buffer for st in stores}
    for st in stores:
        if _coef(st.index, v) != 1:
            raise _Bail()
        for ld in _loads(st.value):
            if ld.buffer in written and (ld.buffer is not st.buffer or
                                         simplify_expr(ld.index) != simplify_expr(st.index)):
                raise _Bail()

    def sink(x):
        if isinstance(x, Store):
            return For(v, loop.min, loop.extent, "vectorized", x, loop.pragmas)
        inner = _parts(x.body)
        if all(isinstance(p, Store) for p in inner):
            body = For(v, loop.min, loop.extent, "vectorized", x.body, loop.pragmas)
        else:
            body = seq(*(sink(p) for p in inner))
        return For(x.var, x.min, x.extent, x.kind, body, x.pragmas)
    return [sink(p) for p in _parts(loop.body)]


def _loads(e) -> list:
    out = []

    def rec(x):
        if isinstance(x, Load):
            out.append(x)
        return map_children(x, rec) if isinstance(x, Expr) else x
    rec(e)
    return out


def _stores(body) -> list:
    if isinstance(body, Store):
        return [body]
    if isinstance(body, Seq) and all(isinstance(b, Store) for b in body.stmts):
        return list(body.stmts)
    raise _Bail()


def _coef(index: Expr, v: Var) -> int:
    terms, _ = linear(simplify_expr(index))
    if any(v in free_vars(t) for t, _ in terms.items() if t is not v):
        raise _Bail()
    return terms.get(v, 0)


def _mentioning(e, v: Var) -> set:
    """ids of the nodes of e whose subtree mentions v, found in one walk (asking
    free_vars at every node of a deep tree is quadratic: nested activations took
    seconds per kernel)."""
    hit, seen = set(), {}

    def rec(x) -> bool:
        k = id(x)
        if k in seen:
            return seen[k]
        if isinstance(x, Var):
            r = x == v
        else:
            r = False
            for f in getattr(x, "__dataclass_fields__", ()):
                c = getattr(x, f)
                for y in (c if isinstance(c, tuple) else (c,)):
                    if hasattr(y, "__dataclass_fields__") and rec(y):
                        r = True
        seen[k] = r
        if r:
            hit.add(k)
        return r
    rec(e)
    return hit


def _vec_expr(e: Expr, v: Var, isa, lanes_dtype: str, hit: set | None = None):
    """(is_vector, expr) for e with v the lane variable at its chunk base."""
    hit = _mentioning(e, v) if hit is None else hit
    if id(e) not in hit:
        return False, e
    if isinstance(e, Load):
        stride = _coef(e.index, v) if e.dtype == "float32" else 0
        if stride == 2 and isa.load_even:
            return True, VLoad(e.buffer, e.index, lanes_dtype, stride=2)
        if stride != 1:
            raise _Bail()
        return True, VLoad(e.buffer, e.index, lanes_dtype)
    if isinstance(e, Binary) and e.dtype == "float32" and e.op in isa.binary:
        a, b = (_lanes(y, v, isa, lanes_dtype, hit) for y in (e.a, e.b))
        return True, Binary(e.op, a, b, lanes_dtype)
    lanes = split_dtype(lanes_dtype)[1]
    if isinstance(e, Reinterpret) and (isa.as_int if e.dtype == "int32" else isa.as_float):
        # a bit cast of a vector; the float32 side is the one the loop's loads make
        va, a = _vec_expr(e.value, v, isa, lanes_dtype, hit)
        return True, Reinterpret(vector_dtype(e.dtype, lanes), a)
    if (isinstance(e, Call) and e.name == "shl" and e.dtype == "int32" and isa.int_shl
            and isinstance(e.args[1], Const) and 0 <= e.args[1].value < 32):
        va, a = _vec_expr(e.args[0], v, isa, lanes_dtype, hit)
        return True, Call("shl", (a, e.args[1]), vector_dtype("int32", lanes))
    if (isinstance(e, Select) and e.dtype == "float32" and isinstance(e.cond, Compare)
            and e.cond.op in isa.select and e.cond.a.dtype == e.cond.b.dtype == "float32"):
        # a float comparison choosing between floats: one compare and one blend
        a, b, t, f = (_lanes(y, v, isa, lanes_dtype, hit) for y in (e.cond.a, e.cond.b, e.t, e.f))
        return True, Select(Compare(e.cond.op, a, b), t, f, lanes_dtype)
    if isinstance(e, Select) and e.dtype == "float32" and id(e.cond) not in hit:
        # a condition the lanes share (which input a concat's row comes from): C's ?: on
        # the two vectors, so only the chosen side is loaded, as in the scalar code
        t, f = (_lanes(y, v, isa, lanes_dtype, hit) for y in (e.t, e.f))
        return True, Select(e.cond, t, f, lanes_dtype)
    raise _Bail()


def _lanes(e: Expr, v: Var, isa, lanes_dtype: str, hit: set):
    """e as a vector operand: vectorized where it varies with v, else broadcast."""
    is_vec, x = _vec_expr(e, v, isa, lanes_dtype, hit)
    return x if is_vec else Broadcast(x, lanes_dtype)


def _with_count(e, count):
    if count is None:
        return e

    def rec(x):
        if isinstance(x, VLoad):
            return VLoad(x.buffer, x.index, x.dtype, count)
        return map_children(x, rec)
    return rec(e)


def _vectorize_loop(loop: For, isa) -> Stmt:
    W = isa.lanes
    v = loop.var
    stores = _stores(loop.body)
    for st in stores:
        if st.value.dtype != "float32" or _coef(st.index, v) != 1:
            raise _Bail()
        _vec_expr(st.value, v, isa, vector_dtype("float32", W))  # check only
    if not (isinstance(loop.min, Const) and loop.min.value == 0):
        # lanes from 0: a loop cut by partition_likely starts where its border ends
        shifted = Binary("+", v, loop.min, INDEX)
        stores = [Store(st.buffer, simplify_expr(substitute(st.index, {v: shifted})),
                        substitute(st.value, {v: shifted})) for st in stores]
        loop = For(v, Const(0, INDEX), loop.extent, loop.kind, seq(*stores), loop.pragmas)
    dt = vector_dtype("float32", W)
    E = loop.extent
    const_E = E.value if isinstance(E, Const) else None
    if const_E is not None and const_E < W and not isa.masked:
        raise _Bail()
    vo = Var(f"{v.name}_v")
    from .simplify import irange
    lo_E, hi_E = irange(E, {})
    if lo_E is None or lo_E < 0:
        # A loop runs zero times when its extent is negative (a tile wholly past
        # the tensor's end); chunk and tail arithmetic below need E >= 0.
        E = simplify_expr(Binary("max", E, Const(0, INDEX), INDEX))
    if hi_E is not None and hi_E < W:
        if not isa.masked:
            raise _Bail()
        n_chunks = Const(0, INDEX)
    else:
        n_chunks = simplify_expr(Binary("//", E, Const(W, INDEX), INDEX))
    base = Binary("*", vo, Const(W, INDEX), INDEX)
    body = _vector_body_at(stores, v, base, isa, dt)
    kind = "unrolled" if isinstance(n_chunks, Const) and n_chunks.value <= MAX_UNROLL_CHUNKS else "serial"
    main = For(vo, Const(0, INDEX), n_chunks, kind, body, loop.pragmas) if not _is_zero(n_chunks) else None
    done = simplify_expr(Binary("*", n_chunks, Const(W, INDEX), INDEX))
    rem = simplify_expr(Binary("-", E, done, INDEX))
    if isinstance(rem, Const) and rem.value == 0:
        return main if main is not None else seq()
    strided = _strided(body)
    if strided and isinstance(E, Const) and E.value >= W and _idempotent(stores):
        # load_even has no masked form: the last whole vector again, ending at E (the
        # lanes it shares with the main loop get the same values once more)
        tail = _vector_body_at(stores, v, Const(E.value - W, INDEX), isa, dt)
    elif isa.masked and not strided:
        tail = _vector_body_at(stores, v, done, isa, dt, count=rem)
        if not isinstance(rem, Const):
            from .ir import IfThenElse
            from ..te.expr import Compare
            tail = IfThenElse(Compare(">", rem, Const(0, INDEX)), tail)
    else:
        tail = For(v, done, rem, "serial", loop.body, ())
    return seq(main, tail)


def _any(body, pred) -> bool:
    found = []
    walk(body, lambda x: found.append(1) if pred(x) else None)
    return bool(found)


def _has_vector(body) -> bool:
    return _any(body, lambda x: isinstance(x, VStore))


def _strided(body) -> bool:
    """Whether a vector body reads every other element somewhere (load_even has no
    masked form)."""
    return _any(body, lambda x: isinstance(x, VLoad) and x.stride != 1)


def _idempotent(stores) -> bool:
    """Whether running some iterations twice leaves the same result: no store reads a
    buffer the loop writes."""
    written = {st.buffer for st in stores}
    return not any(ld.buffer in written for st in stores for ld in _loads(st.value))


def _is_zero(e) -> bool:
    return isinstance(e, Const) and e.value == 0


def _vector_body_at(stores, v, base, isa, dt, count=None):
    """Vector statements for lanes base .. base+W-1 of the loop variable v."""
    out = []
    for st in stores:
        is_vec, val = _vec_expr(st.value, v, isa, dt)
        if not is_vec:
            val = Broadcast(val, dt)
        val = substitute(_with_count(val, count), {v: base})
        out.append(VStore(st.buffer, simplify_expr(substitute(st.index, {v: base})), val, count))
    return seq(*out)
