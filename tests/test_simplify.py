"""The simplifier, checked structurally (TVM's assert_structural_equal) and by evaluation.

Expression nodes compare with == structurally; Vars compare by identity, so
every expected tree below is built from the same Var objects as the input.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

import cgen
from cgen import te
from cgen.te.expr import (Binary, Cast, Compare, Const, Logic, Not, Select, Var, INDEX)
from cgen.te.visit import walk
from cgen.lower.ir import Buffer, For, IfThenElse, Seq, Store
from cgen.lower.simplify import simplify, simplify_expr


def c(v, dtype=INDEX):
    return Const(v, dtype)


def B(op, a, b, dtype=INDEX):
    return Binary(op, a, b, dtype)


i, j, k = Var("i"), Var("j"), Var("k")


# ---------------------------------------------------------------------------
# division and modulo by constants, with ranges
# ---------------------------------------------------------------------------

def test_div_drops_a_remainder_inside_one_period():
    assert simplify_expr((i * 8 + j) // 4, {j: (0, 3)}) == i * 2


def test_div_keeps_a_remainder_that_spans_periods():
    assert simplify_expr((i * 8 + j) // 4, {j: (0, 7)}) == i * 2 + j // 4
    assert simplify_expr((i * 8 + j) // 4) == i * 2 + j // 4


def test_div_of_a_remainder_in_one_known_period():
    assert simplify_expr((j + 4) // 4, {j: (0, 3)}) == c(1)
    assert simplify_expr((j - 4) // 4, {j: (0, 3)}) == c(-1)   # floor, not truncation
    assert simplify_expr((i * 4 + j) // 4, {j: (4, 7)}) == i + 1


def test_floormod_with_ranges():
    assert simplify_expr((i * 8 + j) % 4, {j: (0, 3)}) == j
    assert simplify_expr((i * 8 + j + 5) % 4, {j: (0, 2)}) == j + 1
    assert simplify_expr((j - 4) % 4, {j: (0, 3)}) == j        # floor semantics
    assert simplify_expr((i * 4 + j) % 4, {j: (4, 7)}) == j - 4


def test_floormod_without_ranges_keeps_the_modulo():
    assert simplify_expr((i * 8 + j) % 4) == j % 4
    assert simplify_expr((i * 8 + j + 5) % 4) == (j + 1) % 4


def test_div_and_mod_by_one():
    assert simplify_expr(i // 1) == i
    assert simplify_expr(i % 1) == c(0)


def test_loop_ranges_reach_the_body():
    buf = Buffer("out", "float32", (8,))
    loop = For(i, c(0), c(8), "serial", Store(buf, i // 8 + i % 8, Const(1.0, "float32")))
    assert simplify(loop) == For(i, c(0), c(8), "serial", Store(buf, i, Const(1.0, "float32")))


# ---------------------------------------------------------------------------
# min / max
# ---------------------------------------------------------------------------

def test_min_max_proved_by_ranges():
    r = {i: (0, 7), j: (0, 7)}
    assert simplify_expr(te.min(i, 10), r) == i
    assert simplify_expr(te.max(i, 10), r) == c(10)
    assert simplify_expr(te.max(i, j + 8), r) == j + 8
    assert simplify_expr(te.min(i, j + 8), r) == i


def test_min_max_proved_when_the_bound_is_attained():
    r = {j: (0, 6)}
    assert simplify_expr(te.min(j, 0), r) == c(0)
    assert simplify_expr(te.max(0, j - 6), r) == c(0)


def test_min_max_proved_without_ranges():
    assert simplify_expr(te.min(i + 1, i)) == i
    assert simplify_expr(te.max(i - 3, i)) == i


def test_min_max_kept_when_unknown():
    r = {i: (0, 7), j: (0, 7)}
    assert simplify_expr(te.min(i, j), r) == B("min", i, j)
    assert simplify_expr(te.max(i, 4), r) == B("max", i, c(4))


def test_min_of_constants_folds():
    assert simplify_expr(B("min", c(3), c(-2))) == c(-2)
    assert simplify_expr(B("max", c(3), c(-2))) == c(3)


# ---------------------------------------------------------------------------
# constant folding and the linear form
# ---------------------------------------------------------------------------

def test_constant_folding():
    assert simplify_expr(B("+", c(3), c(4))) == c(7)
    assert simplify_expr(B("*", c(-3), c(4))) == c(-12)
    assert simplify_expr(B("//", c(-7), c(2))) == c(-4)
    assert simplify_expr(B("%", c(-7), c(2))) == c(1)
    assert simplify_expr(B("*", c(6, "int32"), c(7, "int32"), "int32")) == c(42, "int32")
    assert simplify_expr(B("//", c(-7, "int32"), c(2, "int32"), "int32")) == c(-4, "int32")
    assert simplify_expr(B("*", Const(1.5, "float32"), Const(2.0, "float32"), "float32")) \
        == Const(3.0, "float32")
    assert simplify_expr(Compare("<", c(3), c(4))) == Const(True, "bool")
    assert simplify_expr(Cast("int32", c(5))) == c(5, "int32")


def test_linear_regrouping():
    assert simplify_expr((i + 3) + 4) == i + 7
    assert simplify_expr((i * 2) * 3) == i * 6
    assert simplify_expr(i - i) == c(0)
    assert simplify_expr(i * 1) == i
    assert simplify_expr(i + 0) == i
    assert simplify_expr((i + j) - (j - 2)) == i + 2
    assert simplify_expr(c(100) - (i - 1)) == c(101) - i


def test_identities_on_data_types():
    x = Var("x", "int32")
    assert simplify_expr(B("*", x, c(1, "int32"), "int32")) == x
    assert simplify_expr(B("+", x, c(0, "int32"), "int32")) == x
    assert simplify_expr(B("*", x, c(0, "int32"), "int32")) == c(0, "int32")


def test_compare_and_select_proved():
    r = {i: (0, 7)}
    assert simplify_expr(i < i + 1) == Const(True, "bool")
    assert simplify_expr(i < 8, r) == Const(True, "bool")
    assert simplify_expr(i >= 8, r) == Const(False, "bool")
    assert simplify_expr(i < 4, r) == Compare("<", i, c(4))
    sel = Select(Compare("<", i, c(8)), j, k, INDEX)
    assert simplify_expr(sel, r) == j
    both = Logic("&&", Compare("<", i, c(8)), Compare("<", j, c(3)))
    assert simplify_expr(both, r) == Compare("<", j, c(3))
    assert simplify_expr(Not(Compare("<", i, c(8))), r) == Const(False, "bool")


@pytest.mark.parametrize("dtype, a, b, op", [
    ("int32", 2**31 - 1, 1, "+"),
    ("int32", -2**31, 1, "-"),
    ("int32", 65536, 65536, "*"),
    ("int8", 100, 100, "+"),
    ("int16", 300, 300, "*"),
    ("uint8", 3, 5, "-"),
    ("int64", 2**62, 2**62, "+"),
    ("int64", -2**63 + 1, 2, "-"),
    ("int64", 2**32, 2**32, "*"),
])
def test_folding_that_would_overflow_is_not_done(dtype, a, b, op):
    e = B(op, c(a, dtype), c(b, dtype), dtype)
    assert simplify_expr(e) == e


def test_regrouping_does_not_make_an_unrepresentable_constant():
    """x + 2**62 + 2**62 is fine for negative x; x + 2**63 cannot be written in int64."""
    e = (i + 2**62) + 2**62
    out = simplify_expr(e)
    found = []
    walk(out, lambda x: found.append(x.value) if isinstance(x, Const) else None)
    assert all(-2**63 <= v < 2**63 for v in found), out
    assert evaluate(out, {i: -2**62}) == 2**62


def test_float_folds_that_overflow_or_divide_by_zero_are_kept():
    big = B("*", Const(3e38, "float32"), Const(10.0, "float32"), "float32")
    assert simplify_expr(big) == big
    zero = B("/", Const(1.0, "float32"), Const(0.0, "float32"), "float32")
    assert simplify_expr(zero) == zero
    idiv = B("//", c(1), c(0))
    assert simplify_expr(idiv) == idiv


# ---------------------------------------------------------------------------
# statements: guards and trivial loops
# ---------------------------------------------------------------------------

OUT = Buffer("out", "float32", (32,))
ONE = Const(1.0, "float32")


def split_nest(outer_ext, inner_ext, limit):
    io, ii = Var("io"), Var("ii")
    idx = io * inner_ext + ii
    guard = IfThenElse(Compare("<", idx, c(limit)), Store(OUT, idx, ONE))
    return io, ii, For(io, c(0), c(outer_ext), "serial", For(ii, c(0), c(inner_ext), "serial", guard))


def test_guard_removed_when_the_split_divides():
    io, ii, nest = split_nest(4, 4, 16)
    assert simplify(nest) == For(io, c(0), c(4), "serial",
                                 For(ii, c(0), c(4), "serial", Store(OUT, io * 4 + ii, ONE)))


def test_guard_kept_when_the_split_does_not_divide():
    io, ii, nest = split_nest(5, 4, 18)
    guard = IfThenElse(Compare("<", io * 4 + ii, c(18)), Store(OUT, io * 4 + ii, ONE))
    assert simplify(nest) == For(io, c(0), c(5), "serial", For(ii, c(0), c(4), "serial", guard))


def test_guard_refines_ranges_of_its_body():
    body = Store(OUT, B("min", i, c(6)), ONE)
    guarded = For(i, c(0), c(8), "serial", IfThenElse(Compare("<", i, c(5)), body))
    assert simplify(guarded) == For(i, c(0), c(8), "serial",
                                    IfThenElse(Compare("<", i, c(5)), Store(OUT, i, ONE)))
    unguarded = For(i, c(0), c(8), "serial", body)
    assert simplify(unguarded) == unguarded


def test_trivial_loops_removed():
    store = Store(OUT, i + 1, ONE)
    assert simplify(For(i, c(0), c(1), "serial", store)) == Store(OUT, c(1), ONE)
    assert simplify(For(i, c(3), c(1), "serial", store)) == Store(OUT, c(4), ONE)
    assert simplify(For(i, c(0), c(0), "serial", store)) is None
    kept = Store(OUT, c(0), ONE)
    assert simplify(Seq((For(i, c(0), c(0), "serial", store), kept))) == kept


def test_dead_branches_removed():
    store = Store(OUT, i, ONE)
    loop = For(i, c(0), c(8), "serial", IfThenElse(Compare(">=", i, c(8)), store))
    assert simplify(loop) is None


def _nodes(stmt, cls):
    found = []
    walk(stmt, lambda x: found.append(x) if isinstance(x, cls) else None)
    return found


def _split_program(n, factor):
    A = te.placeholder((n,), "float32", name="A")
    Bt = te.compute((n,), lambda x: A[x] * 2.0, name="B")
    s = te.create_schedule(Bt)
    s[Bt].split(s[Bt].op.axis[0], factor=factor)
    return cgen.lower(s, [A, Bt], "k")


def test_lowered_divisible_split_has_no_guard_or_min():
    f = _split_program(16, 4)
    assert not _nodes(f.body, IfThenElse)
    assert all(isinstance(x.extent, Const) for x in _nodes(f.body, For))
    assert not [x for x in _nodes(f.body, Binary) if x.op in ("min", "max")]


def test_lowered_ragged_split_keeps_a_bound():
    f = _split_program(18, 4)
    loops = _nodes(f.body, For)
    # the tail is a guard or a loop bound: either way, it is not simplified away
    assert _nodes(f.body, IfThenElse) or not all(isinstance(x.extent, Const) for x in loops)


# ---------------------------------------------------------------------------
# property: simplification preserves the value (floor semantics)
# ---------------------------------------------------------------------------

def evaluate(e, env):
    """Python-int value of an index/boolean expression (// and % floor, like Python)."""
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Var):
        return env[e]
    if isinstance(e, Binary):
        a, b = evaluate(e.a, env), evaluate(e.b, env)
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                "//": lambda: a // b, "%": lambda: a % b,
                "min": lambda: min(a, b), "max": lambda: max(a, b)}[e.op]()
    if isinstance(e, Compare):
        a, b = evaluate(e.a, env), evaluate(e.b, env)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[e.op]
    if isinstance(e, Logic):
        a, b = evaluate(e.a, env), evaluate(e.b, env)
        return (a and b) if e.op == "&&" else (a or b)
    if isinstance(e, Not):
        return not evaluate(e.a, env)
    if isinstance(e, Select):
        return evaluate(e.t, env) if evaluate(e.cond, env) else evaluate(e.f, env)
    if isinstance(e, Cast) and e.dtype == INDEX:
        return evaluate(e.value, env)
    raise TypeError(f"evaluate: unexpected {e!r}")


VARS = (Var("x"), Var("y"), Var("z"))

leaves = st.one_of(st.sampled_from(VARS), st.integers(-12, 12).map(c))


def _grow(children):
    arith = st.tuples(st.sampled_from(["+", "-", "*", "min", "max"]), children, children) \
        .map(lambda t: B(*t))
    by_const = st.tuples(st.sampled_from(["//", "%"]), children, st.integers(1, 9)) \
        .map(lambda t: B(t[0], t[1], c(t[2])))
    scaled = st.tuples(children, st.integers(-6, 6)).map(lambda t: B("*", t[0], c(t[1])))
    select = st.tuples(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), children, children,
                       children, children) \
        .map(lambda t: Select(Compare(t[0], t[1], t[2]), t[3], t[4], INDEX))
    return st.one_of(arith, by_const, by_const, scaled, select)


exprs = st.recursive(leaves, _grow, max_leaves=14)


@st.composite
def ranges_and_points(draw):
    ranges = {}
    for v in VARS:
        lo = draw(st.integers(-20, 20))
        ranges[v] = (lo, lo + draw(st.integers(0, 25)))
    points = draw(st.lists(st.fixed_dictionaries(
        {v: st.integers(*ranges[v]) for v in VARS}), min_size=1, max_size=8))
    return ranges, points


@settings(max_examples=400)
@given(e=exprs, rp=ranges_and_points(), use_ranges=st.booleans())
def test_simplify_preserves_value(e, rp, use_ranges):
    ranges, points = rp
    out = simplify_expr(e, ranges if use_ranges else None)
    for env in points:
        assert evaluate(out, env) == evaluate(e, env), (e, out, env)


@settings(max_examples=150)
@given(e=exprs, rp=ranges_and_points())
def test_simplify_statement_keeps_stored_values(e, rp):
    """Loops over the ranges: the simplified nest stores the same index at each point."""
    ranges, points = rp
    buf = Buffer("out", "int64", (1,))
    body = Store(buf, c(0), e)
    nest = body
    for v in reversed(VARS):
        lo, hi = ranges[v]
        nest = For(v, c(lo), c(hi - lo + 1), "serial", nest)
    out = simplify(nest)

    def store_value(s, env):
        """The stored value at env (loops of extent 1 are gone, their variable substituted)."""
        while isinstance(s, For):
            s = s.body
        assert isinstance(s, Store)
        return evaluate(s.value, env)
    for env in points:
        assert store_value(out, env) == store_value(nest, env)


# ---------------------------------------------------------------------------
# work: nested tail extents (a masked tile's column count, split again and again)
# ---------------------------------------------------------------------------

def _tail_chain(x, y, depth):
    """The columns left after whole vectors, taken `depth` times: each level holds the
    level below twice, as the extents of a masked tail inside a ragged block do."""
    t = B("min", B("min", c(336) - x * 333 - y * 8, c(333) - y * 8), c(16))
    for _ in range(depth):
        q = B("max", t, c(0)) // 8 * 8
        t = B("max", B("min", t - q, c(16) - q), c(0))
    return t


def test_nested_min_max_simplify_in_linear_work(monkeypatch):
    """Operands already simplified are not simplified again when min/max compares them:
    SqueezeNet's 1x1 layers (blocks of 333 pixels in tiles of 16) took 20-40 s each to
    lower, 8 minutes for the model, as each level re-simplified the ones below it."""
    from cgen.lower import simplify as simp
    calls = []
    real = simp._simp

    def counted(e, ranges):
        calls.append(1)
        return real(e, ranges)
    monkeypatch.setattr(simp, "_simp", counted)
    x, y = Var("x"), Var("y")
    ranges = {x: (0, 1), y: (0, 20)}
    work = []
    for depth in (1, 2, 3):
        calls.clear()
        e = _tail_chain(x, y, depth)
        out = simplify_expr(e, ranges)
        work.append(len(calls))
        for xv in (0, 1):
            for yv in range(21):
                env = {x: xv, y: yv}
                assert evaluate(out, env) == evaluate(e, env)
    # each level adds the same work (51, 143, 235 calls); re-simplifying took 3585,
    # 327902 and 6174235
    assert work[2] - work[1] <= 2 * (work[1] - work[0]), work
    assert work[2] < 2000, work
