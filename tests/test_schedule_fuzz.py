"""Random schedules (Halide's fuzz_schedule, TVM's trace round-trip).

A legal schedule must compute what the unscheduled program computes (and what
numpy computes), replay from its JSON to the same C bytes, and build to the
same bytes twice.  An illegal request must raise ScheduleError and leave the
schedule as it was.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, event, given, settings, strategies as st

import cgen
from cgen import te
from cgen.schedule import ScheduleError
from tests.util import assert_matches


# ---------------------------------------------------------------------------
# programs: (inputs, outputs, numpy reference)
# ---------------------------------------------------------------------------

MATMUL_SHAPES = ((13, 7, 5), (17, 11, 7), (19, 13, 9), (23, 19, 11))  # M, N, K
CONV_SHAPES = ((7, 9, 1), (7, 9, 2), (8, 5, 2), (9, 7, 1))            # H, W, stride


def matmul_relu(M, N, K):
    """C = A @ B, D = max(C, 0)."""
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    D = te.compute((M, N), lambda i, j: te.max(C[i, j], 0.0), name="D")

    def ref(a, b):
        return np.maximum(a.astype(np.float64) @ b.astype(np.float64), 0).astype(np.float32)
    return [A, B], [D], ref


def conv2d_pad(H, W, stride, F=4, CI=3, R=3, pad=1):
    """NCHW conv of a zero-padded input; the padding is its own stage P."""
    X = te.placeholder((1, CI, H, W), "float32", name="X")
    Wt = te.placeholder((F, CI, R, R), "float32", name="Wt")
    HP, WP = H + 2 * pad, W + 2 * pad
    P = te.compute((1, CI, HP, WP), lambda n, c, y, x: te.if_then_else(
        te.all(y >= pad, y < H + pad, x >= pad, x < W + pad),
        X[n, c, y - pad, x - pad], 0.0), name="P")
    OH, OW = (HP - R) // stride + 1, (WP - R) // stride + 1
    rc = te.reduce_axis((0, CI), name="rc")
    ry = te.reduce_axis((0, R), name="ry")
    rx = te.reduce_axis((0, R), name="rx")
    O = te.compute((1, F, OH, OW), lambda n, f, y, x: te.sum(
        P[n, rc, y * stride + ry, x * stride + rx] * Wt[f, rc, ry, rx], axis=[rc, ry, rx]),
        name="O")

    def ref(x, w):
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        out = np.zeros((1, F, OH, OW))
        for dy in range(R):
            for dx in range(R):
                win = xp[:, :, dy:dy + stride * (OH - 1) + 1:stride, dx:dx + stride * (OW - 1) + 1:stride]
                out += np.einsum("nchw,fc->nfhw", win, w[:, :, dy, dx].astype(np.float64))
        return out.astype(np.float32)
    return [X, Wt], [O], ref


PROGRAMS = {"matmul": (matmul_relu, MATMUL_SHAPES), "conv": (conv2d_pad, CONV_SHAPES)}


def make(prog, shape):
    fn, _ = PROGRAMS[prog]
    return fn(*shape)


def input_arrays(inputs, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, size=t.shape).astype(t.dtype) for t in inputs]


def run(mod, inputs, outputs, arrays):
    outs = [np.full(t.shape, np.nan, dtype=t.dtype) for t in outputs]
    mod(*arrays, *outs)
    return outs


@functools.lru_cache(maxsize=None)
def reference(prog, shape):
    """Inputs, the unscheduled build's outputs and numpy's, for one program and shape."""
    inputs, outputs, ref = make(prog, shape)
    arrays = input_arrays(inputs)
    mod = cgen.build(te.create_schedule(outputs), inputs + outputs, name=f"{prog}_ref")
    unscheduled = run(mod, inputs, outputs, arrays)
    expected = [ref(*arrays)]
    for u, e in zip(unscheduled, expected):
        assert_matches(u, e)
    return arrays, unscheduled, expected


# ---------------------------------------------------------------------------
# drawing primitive attempts against the current schedule state
# ---------------------------------------------------------------------------

KINDS = ("split", "split", "reorder", "fuse", "unroll", "vectorize", "parallel",
         "compute_at", "compute_at", "compute_inline", "compute_root", "pragma")


def draw_attempt(data, s):
    """One primitive request drawn against s's current state: (label, thunk)."""
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    name = data.draw(st.sampled_from(list(s.stages)), label="stage")
    state = s.stages[name]
    leaves = list(state.leaves)
    stage = s[name]
    if kind == "split":
        axis = data.draw(st.sampled_from(leaves), label="axis")
        n = data.draw(st.integers(1, 24), label="n")
        if data.draw(st.booleans(), label="nparts"):
            return f"split({name}.{axis}, nparts={n})", lambda: stage.split(axis, nparts=n)
        return f"split({name}.{axis}, factor={n})", lambda: stage.split(axis, factor=n)
    if kind == "reorder":
        order = data.draw(st.permutations(leaves), label="order")
        k = data.draw(st.integers(min(2, len(order)), len(order)), label="count")
        order = order[:k]
        return f"reorder({name}, {order})", lambda: stage.reorder(*order)
    if kind == "fuse":
        if len(leaves) < 2:
            return "noop", lambda: None
        p = data.draw(st.integers(0, len(leaves) - 2), label="pos")
        a, b = leaves[p], leaves[p + 1]
        return f"fuse({name}.{a}, {b})", lambda: stage.fuse(a, b)
    if kind in ("unroll", "vectorize", "parallel"):
        if kind == "vectorize" and data.draw(st.booleans(), label="innermost"):
            axis = leaves[-1]
        else:
            axis = data.draw(st.sampled_from(leaves), label="axis")
        if kind == "parallel" and axis in state.pragmas:
            return "noop", lambda: None
        return f"{kind}({name}.{axis})", lambda: getattr(stage, kind)(axis)
    if kind == "pragma":
        # "GCC unroll" must directly precede its loop, so gcc rejects it next to
        # "omp parallel for" (either order) or a second "GCC unroll": pragma text is
        # opaque to cgen, so the fuzz keeps them apart.
        axis = data.draw(st.sampled_from(leaves), label="axis")
        if state.ann.get(axis) == "parallel" or axis in state.pragmas:
            return "noop", lambda: None
        return f"pragma({name}.{axis})", lambda: stage.pragma(axis, "GCC unroll 2")
    if kind == "compute_at":
        readers = [c for c in s.stages if name in s.reads(c)]
        target = data.draw(st.sampled_from(readers or list(s.stages)), label="target")
        taxis = data.draw(st.sampled_from(list(s.stages[target].leaves)), label="target_axis")
        return f"compute_at({name}, {target}.{taxis})", lambda: stage.compute_at(s[target], taxis)
    if kind == "compute_inline":
        return f"compute_inline({name})", stage.compute_inline
    return f"compute_root({name})", stage.compute_root


def draw_schedule(data, outputs, cache_candidates, max_attempts=12):
    """cache_write first (each candidate maybe), then random attempts; illegal ones skipped."""
    s = te.create_schedule(outputs)
    for t in cache_candidates:
        if data.draw(st.booleans(), label=f"cache_write {t.name}"):
            s.cache_write(t, "local")
    n = data.draw(st.integers(0, max_attempts), label="attempts")
    log, illegal = [], 0
    for _ in range(n):
        label, thunk = draw_attempt(data, s)
        before = list(s.records)
        try:
            thunk()
            log.append(label)
        except ScheduleError as e:
            illegal += 1
            assert s.records == before, f"{label} raised {e} but changed the records"
            log.append(f"{label} -> illegal ({e.rule})")
    event(f"illegal attempts: {'0' if illegal == 0 else '1-3' if illegal <= 3 else '4+'}")
    return s, log


def cache_candidates(outputs):
    """The output and every compute stage it reads directly."""
    out = outputs[0]
    return [t for t in out.op.input_tensors if not isinstance(t.op, te.PlaceholderOp)] + [out]


def check_schedule(kbuild, prog, shape, data):
    inputs, outputs, _ = make(prog, shape)
    s, log = draw_schedule(data, outputs, cache_candidates(outputs))
    note = "\n".join(log)
    args = inputs + outputs
    mod = kbuild(s, args, name=f"{prog}_fuzz")
    arrays, unscheduled, expected = reference(prog, shape)
    got = run(mod, inputs, outputs, arrays)
    for g, u, e in zip(got, unscheduled, expected):
        assert_matches(g, u)
        assert_matches(g, e)
    # replaying the JSON gives the same records and byte-identical C; building
    # the same schedule again gives the same bytes (identical C hits the compile cache)
    text = s.to_json()
    s2 = cgen.Schedule.from_json(outputs, text)
    assert s2.records == s.records, note
    assert s2.to_json() == text
    assert cgen.build(s2, args, name=f"{prog}_fuzz").c_source == mod.c_source, note
    assert cgen.build(s, args, name=f"{prog}_fuzz").c_source == mod.c_source, note


@settings(max_examples=120)
@given(shape=st.sampled_from(MATMUL_SHAPES), data=st.data())
def test_random_schedules_matmul_relu(kbuild, shape, data):
    check_schedule(kbuild, "matmul", shape, data)


@settings(max_examples=100)
@given(shape=st.sampled_from(CONV_SHAPES), data=st.data())
def test_random_schedules_conv2d(kbuild, shape, data):
    check_schedule(kbuild, "conv", shape, data)


def test_producer_inside_a_ragged_split_builds(kbuild):
    """Found by the fuzz: the producer's store sits under an unproved region guard
    (`if (0 < min(13 - 3*i_o - i_i, 1))`) and its read outside, and gcc -O3 -Wall -Werror
    reported C (maybe-)uninitialized, so cgen.build failed on a legal schedule."""
    inputs, outputs, ref = matmul_relu(13, 7, 5)
    (D,) = outputs
    C = D.op.input_tensors[0]
    s = te.create_schedule(outputs)
    s[D].split(s[D].op.axis[0], factor=3)      # 13 = 4 * 3 + 1
    s[C].compute_at(s[D], s[D].op.axis[1])     # one C element per (i, j)
    mod = kbuild(s, inputs + outputs, name="ragged_at")
    arrays = input_arrays(inputs)
    (got,) = run(mod, inputs, outputs, arrays)
    assert_matches(got, ref(*arrays))


def test_references_agree():
    """The unscheduled builds match numpy for every shape the fuzz draws."""
    for prog, (_, shapes) in PROGRAMS.items():
        for shape in shapes:
            reference(prog, shape)


# ---------------------------------------------------------------------------
# illegal requests
# ---------------------------------------------------------------------------

def four_stage_program(M=9, N=6, K=5):
    """C = A @ B; D = relu(C); E = 2 * bias; out = D + E: stages that do not read each other."""
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    bias = te.placeholder((N,), "float32", name="bias")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    D = te.compute((M, N), lambda i, j: te.max(C[i, j], 0.0), name="D")
    E = te.compute((M, N), lambda i, j: bias[j] * 2.0, name="E")
    out = te.compute((M, N), lambda i, j: D[i, j] + E[i, j], name="out")
    return [A, B, bias], [out], [C, D, E, out]


def snapshot(s):
    return (list(s.records), s.to_json(), {
        n: (list(x.leaves), list(x.relations), dict(x.ann), dict(x.pragmas), x.attach,
            dict(x.axes))
        for n, x in s.stages.items()})


ILLEGAL = ("unknown_axis", "split_non_leaf", "vectorize_reduce", "vectorize_not_innermost",
           "parallel_reduce", "fuse_non_adjacent", "fuse_reduce_with_data",
           "compute_at_non_reader", "compute_at_output", "inline_reduction",
           "reorder_twice", "fuse_three_partly_illegal")


def draw_illegal(data, s):
    """An illegal request against s's current state.

    Returns (category, stage, axis or None, thunk, rule text).  A category
    with no candidate in this state is discarded (assume).
    """
    cat = data.draw(st.sampled_from(ILLEGAL), label="category")
    names = list(s.stages)

    def pick(xs, label):
        assume(xs)  # no candidate for this category in this state
        return data.draw(st.sampled_from(xs), label=label)

    def handle(name, axis):
        """The axis as its name or as its IterVar, as users pass either."""
        return s.stages[name].axes[axis] if data.draw(st.booleans(), label="handle") else axis

    if cat == "unknown_axis":
        name = pick(names, "stage")
        stage, other = s[name], s.stages[name].leaves[0]
        axis = pick(["x", "nope", "i_o9", "k_1"], "axis")
        axis = axis if axis not in s.stages[name].axes else axis + "_zz"
        prim = pick(["split", "unroll", "vectorize", "parallel", "pragma", "fuse", "reorder"], "prim")
        thunk = {"split": lambda: stage.split(axis, factor=2),
                 "unroll": lambda: stage.unroll(axis),
                 "vectorize": lambda: stage.vectorize(axis),
                 "parallel": lambda: stage.parallel(axis),
                 "pragma": lambda: stage.pragma(axis, "GCC unroll 2"),
                 "fuse": lambda: stage.fuse(other, axis),
                 "reorder": lambda: stage.reorder(axis, other)}[prim]
        return cat, name, axis, thunk, "unknown axis"
    if cat == "split_non_leaf":
        inner = [(n, a) for n, x in s.stages.items() for a in x.axes if a not in x.leaves]
        if not inner or data.draw(st.booleans(), label="split first"):
            cands = [(n, a) for n, x in s.stages.items() for a in x.leaves
                     if a not in x.ann and not s._attached_at(n, a)]
            name, axis = pick(cands, "leaf to split")
            s[name].split(axis, factor=2)  # legal: axis stops being a leaf
        else:
            name, axis = pick(inner, "inner axis")
        stage, leaf = s[name], s.stages[name].leaves[0]
        ax = handle(name, axis)
        how = pick(["split", "unroll", "vectorize", "fuse", "reorder"], "how")
        thunk = {"split": lambda: stage.split(ax, nparts=2),
                 "unroll": lambda: stage.unroll(ax),
                 "vectorize": lambda: stage.vectorize(ax),
                 "fuse": lambda: stage.fuse(ax, leaf),
                 "reorder": lambda: stage.reorder(ax, leaf)}[how]
        return cat, name, axis, thunk, "no longer a leaf"
    if cat in ("vectorize_reduce", "parallel_reduce"):
        name, axis = pick([(n, a) for n, x in s.stages.items() for a in x.leaves
                           if x.kinds[a] == "reduce"], "leaf")
        kind = cat.split("_")[0]
        ax = handle(name, axis)
        rule = "cannot vectorize a reduction" if kind == "vectorize" else "cannot parallelize a reduction"
        return cat, name, axis, lambda: getattr(s[name], kind)(ax), rule
    if cat == "vectorize_not_innermost":
        name, axis = pick([(n, a) for n, x in s.stages.items() for i, a in enumerate(x.leaves)
                           if x.kinds[a] == "data"
                           and any(x.kinds[b] == "data" for b in x.leaves[i + 1:])], "leaf")
        ax = handle(name, axis)
        return cat, name, axis, lambda: s[name].vectorize(ax), "only the innermost"
    if cat == "fuse_non_adjacent":
        name, a, b = pick([(n, a, b) for n, x in s.stages.items() for a in x.leaves for b in x.leaves
                           if a != b and x.leaves.index(b) != x.leaves.index(a) + 1], "pair")
        return cat, name, b, lambda: s[name].fuse(a, b), "adjacent"
    if cat == "fuse_reduce_with_data":
        name, a, b = pick([(n, a, b) for n, x in s.stages.items()
                           for a, b in zip(x.leaves, x.leaves[1:]) if x.kinds[a] != x.kinds[b]], "pair")
        return cat, name, b, lambda: s[name].fuse(a, b), "reduction axis with a data-parallel"
    if cat == "compute_at_non_reader":
        p, t, a = pick([(p, t, a) for p, x in s.stages.items() if not x.is_output
                        for t, y in s.stages.items() if t != p and y.attach[0] != "inline"
                        and p not in s.effective_reads(t) for a in y.leaves], "request")
        ax = handle(t, a)
        return cat, p, a, lambda: s[p].compute_at(s[t], ax), f"{t} does not read {p}"
    if cat == "compute_at_output":
        p = pick([n for n, x in s.stages.items() if x.is_output], "output")
        t = pick([n for n in names if n != p], "target")
        a = pick(list(s.stages[t].leaves), "axis")
        return cat, p, a, lambda: s[p].compute_at(s[t], a), "output stage cannot be computed"
    if cat == "inline_reduction":
        name = pick([n for n, x in s.stages.items() if not x.is_output and x.op.reduce_axis], "stage")
        return cat, name, None, s[name].compute_inline, "reduction cannot be inlined"
    if cat == "reorder_twice":
        name = pick(names, "stage")
        leaves = list(s.stages[name].leaves)
        a = pick(leaves, "axis")
        order = data.draw(st.permutations(leaves), label="order")
        order.insert(data.draw(st.integers(0, len(order)), label="at"), a)
        return cat, name, a, lambda: s[name].reorder(*order), "names an axis twice"
    # fuse(x, y, z): x and y fuse legally, then z is a reduce axis next to data
    # axes (or the other way round); the failed call must not leave x_y fused.
    name, trio = pick([(n, x.leaves[p:p + 3]) for n, x in s.stages.items()
                       for p in range(len(x.leaves) - 2)
                       if x.kinds[x.leaves[p]] == x.kinds[x.leaves[p + 1]] != x.kinds[x.leaves[p + 2]]
                       and not any(x.leaves[q] in x.ann or s._attached_at(n, x.leaves[q])
                                   for q in (p, p + 1))], "trio")
    return cat, name, trio[2], lambda: s[name].fuse(*trio), "reduction axis with a data-parallel"


@settings(max_examples=200)
@given(data=st.data())
def test_illegal_requests_raise_and_change_nothing(data):
    inputs, outputs, stages = four_stage_program()
    s = te.create_schedule(outputs)
    if data.draw(st.booleans(), label="cache_write C"):
        s.cache_write(stages[0], "local")
    # a random legal prefix, so the illegal request meets a variety of states
    for _ in range(data.draw(st.integers(0, 6), label="prefix")):
        _, thunk = draw_attempt(data, s)
        try:
            thunk()
        except ScheduleError:
            pass
    cat, stage, axis, thunk, rule = draw_illegal(data, s)
    event(cat)
    before = snapshot(s)
    with pytest.raises(ScheduleError) as info:
        thunk()
    err = info.value
    msg = str(err)
    assert isinstance(err, ValueError)
    assert rule in err.rule, (cat, msg)
    assert err.stage == stage and f"stage {stage}" in msg, (cat, msg)
    if axis is not None:
        assert err.axis == axis and f"axis {axis}" in msg, (cat, msg)
    assert snapshot(s) == before, f"{cat}: {msg}, but the schedule changed"
    # the schedule is still whole: it lowers
    cgen.lower(s, inputs + outputs, "after_illegal")
