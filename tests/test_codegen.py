"""The C printer: random integer expressions against numpy (loopy's
test_fuzz_expression_code_gen), parenthesis-sensitive shapes, byte-identical
output across processes, and strict C99 for gcc and clang."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import cgen
from cgen import te
from targets import compile_c
from tests.util import strict_compile

ROOT = Path(__file__).resolve().parents[1]
N = 48                       # elements per tensor
LIMIT = {"int32": 2**30, "int64": 2**40}   # no intermediate value exceeds this

# ---------------------------------------------------------------------------
# expression trees as tuples, turned into te expressions and numpy values
#   ("A",) ("B",): loads of data in [-30, 30]; ("D",): nonzero data in +-[1, 9]
#   ("t",): the loop index; ("c", v): a constant
#   (op, x, y) for + - * min max; ("//" | "%", x, divisor); ("neg", x)
# ---------------------------------------------------------------------------

LEAF_BOUND = {"A": 30, "B": 30, "D": 9, "t": N - 1}

divisors = st.one_of(st.integers(1, 9).map(lambda v: ("c", v)),
                     st.integers(-9, -1).map(lambda v: ("c", v)),
                     st.just(("D",)))
leaves = st.one_of(st.sampled_from([("A",), ("B",), ("D",), ("t",)]),
                   st.integers(-12, 12).map(lambda v: ("c", v)))


def _grow(children):
    return st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "min", "max"]), children, children),
        st.tuples(st.sampled_from(["//", "%"]), children, divisors),
        st.tuples(st.just("neg"), children),
    )


trees = st.recursive(leaves, _grow, max_leaves=10)


def bounded(tree, limit):
    """(tree, bound on |value|): products and sums that could pass limit are dropped."""
    kind = tree[0]
    if kind == "c":
        return tree, abs(tree[1])
    if kind in LEAF_BOUND:
        return tree, LEAF_BOUND[kind]
    if kind == "neg":
        x, b = bounded(tree[1], limit)
        return ("neg", x), b
    a, ba = bounded(tree[1], limit)
    if kind in ("//", "%"):
        d, bd = bounded(tree[2], limit)
        return (kind, a, d), (ba if kind == "//" else bd)
    b, bb = bounded(tree[2], limit)
    if kind == "*":
        if ba * bb <= limit:
            return (kind, a, b), ba * bb
        kind = "-"
    if kind in ("+", "-"):
        if ba + bb <= limit:
            return (kind, a, b), ba + bb
        return a, ba
    return (kind, a, b), max(ba, bb)


def to_te(tree, loads, t, dtype):
    kind = tree[0]
    if kind == "c":
        return te.const(tree[1], dtype)
    if kind == "t":
        return t if dtype == "int64" else t.astype(dtype)
    if kind in loads:
        return loads[kind][t]
    if kind == "neg":
        return -to_te(tree[1], loads, t, dtype)
    a, b = to_te(tree[1], loads, t, dtype), to_te(tree[2], loads, t, dtype)
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
            "//": lambda: a // b, "%": lambda: a % b,
            "min": lambda: te.min(a, b), "max": lambda: te.max(a, b)}[kind]()


def to_numpy(tree, arrays, dtype):
    kind = tree[0]
    if kind == "c":
        return np.full(N, tree[1], dtype=dtype)
    if kind == "t":
        return np.arange(N, dtype=dtype)
    if kind in arrays:
        return arrays[kind]
    if kind == "neg":
        return np.negative(to_numpy(tree[1], arrays, dtype))
    a, b = to_numpy(tree[1], arrays, dtype), to_numpy(tree[2], arrays, dtype)
    return {"+": np.add, "-": np.subtract, "*": np.multiply, "//": np.floor_divide,
            "%": np.mod, "min": np.minimum, "max": np.maximum}[kind](a, b)


def show(tree):
    kind = tree[0]
    if kind == "c":
        return str(tree[1])
    if len(tree) == 1:
        return kind if kind == "t" else f"{kind}[t]"
    if kind == "neg":
        return f"-({show(tree[1])})"
    if kind in ("min", "max"):
        return f"{kind}({show(tree[1])}, {show(tree[2])})"
    return f"({show(tree[1])} {kind} {show(tree[2])})"


def leaf_kinds(tree) -> set:
    if tree[0] == "c" or len(tree) == 1:
        return {tree[0]}
    return set().union(*(leaf_kinds(x) for x in tree[1:]))


def data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.integers(1, 10, N) * rng.choice([-1, 1], N)
    return {"A": rng.integers(-30, 31, N).astype(dtype), "B": rng.integers(-30, 31, N).astype(dtype),
            "D": d.astype(dtype)}


def check_batch(build, tree_list, dtype, name):
    """One kernel with an output per expression; each output equals numpy's."""
    tree_list = [bounded(t, LIMIT[dtype])[0] for t in tree_list]
    loads = {k: te.placeholder((N,), dtype, name=k) for k in ("A", "B", "D")}
    def body(tr):
        return lambda t: to_te(tr, loads, t, dtype)
    outs = [te.compute((N,), body(tr), name=f"out{q}") for q, tr in enumerate(tree_list)]
    s = te.create_schedule(outs)
    used = [k for k in loads if any(k in leaf_kinds(tr) for tr in tree_list)]  # only read inputs are arguments
    mod = build(s, [loads[k] for k in used] + outs, name=name)
    arrays = data(dtype)
    got = [np.zeros(N, dtype=dtype) for _ in outs]
    mod(*[arrays[k] for k in used], *got)
    for q, tr in enumerate(tree_list):
        want = to_numpy(tr, arrays, dtype)
        assert want.dtype == np.dtype(dtype)
        assert np.array_equal(got[q], want), \
            f"out{q} = {show(tr)}\nC: {mod.c_source}\ngot  {got[q]}\nwant {want}"
    return mod


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@settings(max_examples=15)
@given(batch=st.lists(trees, min_size=8, max_size=8))
def test_fuzz_integer_expressions(kbuild, dtype, batch):
    """15 kernels x 8 expressions per dtype: 240 random expressions in all."""
    check_batch(kbuild, batch, dtype, f"fuzz_{dtype}")


def test_bounded_keeps_values_in_range():
    tree = ("*", ("*", ("A",), ("B",)), ("*", ("A",), ("*", ("B",), ("A",))))
    _, b = bounded(tree, LIMIT["int32"])
    assert b <= LIMIT["int32"]
    arrays = {k: np.full(N, 30, dtype=np.int64) for k in ("A", "B")}
    assert abs(int(to_numpy(bounded(tree, LIMIT["int32"])[0], arrays, "int64")[0])) <= b


# ---------------------------------------------------------------------------
# shapes that a printer with ad-hoc parentheses gets wrong
# ---------------------------------------------------------------------------

SHAPES = {
    "a - (b - c)": ("-", ("A",), ("-", ("B",), ("D",))),
    "a - (b + c)": ("-", ("A",), ("+", ("B",), ("D",))),
    "(a - b) - c": ("-", ("-", ("A",), ("B",)), ("D",)),
    "a * (b + c)": ("*", ("A",), ("+", ("B",), ("D",))),
    "(a + b) * c": ("*", ("+", ("A",), ("B",)), ("D",)),
    "a * (b - c)": ("*", ("A",), ("-", ("B",), ("D",))),
    "5 * (t % 2)": ("*", ("c", 5), ("%", ("t",), ("c", 2))),
    "5 * (a % 2)": ("*", ("c", 5), ("%", ("A",), ("c", 2))),
    "(5 * a) % 7": ("%", ("*", ("c", 5), ("A",)), ("c", 7)),
    "a % d * 5": ("*", ("%", ("A",), ("D",)), ("c", 5)),
    "a // (d) * 3": ("*", ("//", ("A",), ("D",)), ("c", 3)),
    "(a * b) // d": ("//", ("*", ("A",), ("B",)), ("D",)),
    "a // -3": ("//", ("A",), ("c", -3)),
    "a % -3": ("%", ("A",), ("c", -3)),
    "-a // 4": ("//", ("neg", ("A",)), ("c", 4)),
    "-(a // 4)": ("neg", ("//", ("A",), ("c", 4))),
    "a - -3": ("-", ("A",), ("c", -3)),
    "a + -3": ("+", ("A",), ("c", -3)),
    "a - -b": ("-", ("A",), ("neg", ("B",))),
    "-(a - b)": ("neg", ("-", ("A",), ("B",))),
    "-a * -b": ("*", ("neg", ("A",)), ("neg", ("B",))),
    "0 - (-3)": ("-", ("c", 0), ("c", -3)),
    "min(a, b) - max(b, d)": ("-", ("min", ("A",), ("B",)), ("max", ("B",), ("D",))),
    "a // 3 * 3 + a % 3": ("+", ("*", ("//", ("A",), ("c", 3)), ("c", 3)), ("%", ("A",), ("c", 3))),
    "t - (t - a)": ("-", ("t",), ("-", ("t",), ("A",))),
    "(t + 1) % 5 - t // 5": ("-", ("%", ("+", ("t",), ("c", 1)), ("c", 5)), ("//", ("t",), ("c", 5))),
    "max(min(a, 3), -3) * (b - d)": ("*", ("max", ("min", ("A",), ("c", 3)), ("c", -3)),
                                     ("-", ("B",), ("D",))),
}


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_parenthesis_sensitive_shapes(kbuild, dtype):
    check_batch(kbuild, list(SHAPES.values()), dtype, f"shapes_{dtype}")


def test_parenthesised_index_expressions(kbuild):
    """Exo #845: x[5 * (i % 2)] printed as x[5 * i % 2]."""
    A = te.placeholder((N,), "int32", name="A")
    idx = {"5*(t%2)": lambda t: 5 * (t % 2), "(3*t)%7": lambda t: (t * 3) % 7,
           "t//2*2": lambda t: t // 2 * 2, "(N-1)-t": lambda t: (N - 1) - t,
           "t-(t-1)": lambda t: t - (t - 1), "t//6*6+(5-t%6)": lambda t: t // 6 * 6 + (5 - t % 6),
           "min(t,7)*max(t-40,0)": lambda t: te.min(t, 7) * te.max(t - 40, 0) % N}
    def body(f):
        return lambda t: A[f(t)]
    outs = [te.compute((N,), body(f), name=f"o{q}") for q, f in enumerate(idx.values())]
    mod = kbuild(te.create_schedule(outs), [A] + outs, name="index_shapes")
    a = np.arange(N, dtype=np.int32) * 3 - 7
    got = [np.zeros(N, np.int32) for _ in outs]
    mod(a, *got)
    t = np.arange(N)
    want = {"5*(t%2)": 5 * (t % 2), "(3*t)%7": (t * 3) % 7, "t//2*2": t // 2 * 2,
            "(N-1)-t": (N - 1) - t, "t-(t-1)": np.ones(N, int),
            "t//6*6+(5-t%6)": t // 6 * 6 + (5 - t % 6),
            "min(t,7)*max(t-40,0)": np.minimum(t, 7) * np.maximum(t - 40, 0) % N}
    for g, (label, w) in zip(got, want.items()):
        assert np.array_equal(g, a[w]), label


# ---------------------------------------------------------------------------
# determinism and strict C99
# ---------------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import cgen
    from cgen import te
    M, N, K = 19, 13, 9
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    D = te.compute((M, N), lambda i, j: te.max(C[i, j], 0.0), name="D")
    s = te.create_schedule(D)
    CL = s.cache_write(D, "local")
    i, j = s[D].op.axis
    io, ii = s[D].split(i, factor=4)
    jo, ji = s[D].split(j, factor=8)
    s[D].reorder(io, jo, ii, ji)
    s[D].parallel(io)
    s[D].vectorize(ji)
    s[CL].compute_at(s[D], jo)
    s[C].compute_at(s[CL], s[CL].op.axis[0])
    ci, cj = s[CL].op.axis
    s[CL].unroll(ci)
    X = te.placeholder((2, 11), "int32", name="X")
    Y = te.compute((2, 11), lambda a, b: (X[a, b] - (X[a, b] // -3)) % 7 * te.min(X[a, b], 5),
                   name="Y")
    s2 = te.create_schedule(Y)
    s2[Y].split(s2[Y].op.axis[1], nparts=3)
    for target in ("host", "generic-c"):
        print(cgen.build(s, [A, B, D], target=target, name="mm").c_source)
        print(cgen.build(s2, [X, Y], target=target, name="ints").c_source)
    print(s.to_json())
""")


def test_same_c_bytes_in_fresh_processes(tmp_path):
    script = tmp_path / "emit.py"
    script.write_text(SCRIPT)
    outs = []
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=seed)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert outs[0] == outs[1]
    assert "int mm(" in outs[0] and "int ints(" in outs[0]


def test_integer_kernels_are_strict_c99(kbuild):
    mod = check_batch(kbuild, list(SHAPES.values()), "int32", "strict_ints")
    strict_compile(mod.c_source)


def _matmul_schedule(vectorize: bool, parallel: bool, unroll: bool = True):
    M, N_, K = 17, 13, 7
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N_), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N_), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    D = te.compute((M, N_), lambda i, j: te.max(C[i, j], 0.0), name="D")
    s = te.create_schedule(D)
    i, j = s[D].op.axis
    io, ii = s[D].split(i, factor=4)
    jo, ji = s[D].split(j, factor=8)
    s[D].reorder(io, jo, ii, ji)
    s[C].compute_at(s[D], jo)
    if unroll:
        s[C].unroll(s[C].op.axis[0])
    if vectorize:
        s[D].vectorize(ji)
    if parallel:
        s[D].parallel(io)
    return s, [A, B, D]


def _conv_schedule():
    X = te.placeholder((1, 3, 7, 9), "float32", name="X")
    W = te.placeholder((4, 3, 3, 3), "float32", name="W")
    P = te.compute((1, 3, 9, 11), lambda n, c, y, x: te.if_then_else(
        te.all(y >= 1, y < 8, x >= 1, x < 10), X[n, c, y - 1, x - 1], 0.0), name="P")
    rc, ry, rx = (te.reduce_axis((0, 3), name=nm) for nm in ("rc", "ry", "rx"))
    O = te.compute((1, 4, 4, 5), lambda n, f, y, x: te.sum(
        P[n, rc, y * 2 + ry, x * 2 + rx] * W[f, rc, ry, rx], axis=[rc, ry, rx]), name="O")
    s = te.create_schedule(O)
    s[P].compute_at(s[O], s[O].op.axis[2])
    return s, [X, W, O]


@pytest.mark.parametrize("make", [
    lambda: _matmul_schedule(True, False, unroll=False),
    # regression: gcc -O3 -Wall -Werror once reported "C may be used uninitialized" when a
    # producer at a ragged tile had its rows unrolled into guarded copies
    lambda: _matmul_schedule(True, False, unroll=True),
    _conv_schedule], ids=["matmul", "matmul-unrolled-producer", "conv"])
def test_portable_c_is_strict_c99_for_gcc_and_clang(make):
    """Without target flags (tests.util.strict_compile): the portable target's C."""
    s, args = make()
    strict_compile(cgen.build(s, args, target="generic-c", name="portable").c_source)


def test_host_c_is_strict_c99_for_gcc_and_clang():
    """The host's C (intrinsics, OpenMP) under its own target flags plus the strict ones."""
    s, args = _matmul_schedule(True, True)
    mod = cgen.build(s, args, target="host", name="hostc")
    for cc in ("gcc", "clang"):
        compile_c(mod.c_source, mod.target.with_cc(cc), "object", strict=True,
                  extra_flags=mod.extra_flags, name=mod.name)
