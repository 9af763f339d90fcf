"""One test per legality rule (Halide's test/error/): the ScheduleError names the
stage, the axis and the rule, and the schedule is left as it was."""
from __future__ import annotations

import pytest

import cgen
from cgen import te
from cgen.schedule import ScheduleError


def program(M=9, N=6, K=5):
    """C = A @ B; D = relu(C); E = 2 * bias; out = D + E."""
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    bias = te.placeholder((N,), "float32", name="bias")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    D = te.compute((M, N), lambda i, j: te.max(C[i, j], 0.0), name="D")
    E = te.compute((M, N), lambda i, j: bias[j] * 2.0, name="E")
    out = te.compute((M, N), lambda i, j: D[i, j] + E[i, j], name="out")
    s = te.create_schedule(out)
    return s, (C, D, E, out), [A, B, bias, out]


@pytest.fixture
def sch():
    return program()


def expect(s, request, stage, axis, rule):
    """request() raises ScheduleError naming stage, axis and rule; nothing changes."""
    records, text = list(s.records), s.to_json()
    leaves = {n: list(x.leaves) for n, x in s.stages.items()}
    with pytest.raises(ScheduleError) as info:
        request()
    err = info.value
    msg = str(err)
    assert isinstance(err, ValueError) and isinstance(err, cgen.ScheduleError)
    assert f"stage {stage}" in msg and err.stage == stage, msg
    if axis is None:
        assert msg.startswith(f"stage {stage}: "), msg
    else:
        assert f"axis {axis}" in msg and err.axis == axis, msg
    assert rule in msg and rule in err.rule, msg
    assert s.records == records and s.to_json() == text
    assert {n: list(x.leaves) for n, x in s.stages.items()} == leaves
    return msg


def test_unknown_axis_name(sch):
    s, (C, *_), _ = sch
    msg = expect(s, lambda: s[C].split("zz", factor=2), "C", "zz", "unknown axis")
    assert "['i', 'j', 'k']" in msg  # the message lists the leaves to choose from


def test_axis_of_another_stage(sch):
    s, (C, D, *_), _ = sch
    i_of_d = s[D].op.axis[0]
    expect(s, lambda: s[C].unroll(i_of_d), "C", "i", "not an axis of this stage")


def test_split_of_a_non_leaf_axis(sch):
    s, (C, *_), _ = sch
    i = s[C].op.axis[0]
    s[C].split(i, factor=4)
    expect(s, lambda: s[C].split(i, factor=2), "C", "i", "no longer a leaf axis")


def test_vectorize_a_reduce_axis(sch):
    s, (C, *_), _ = sch
    (k,) = s[C].op.reduce_axis
    expect(s, lambda: s[C].vectorize(k), "C", "k", "cannot vectorize a reduction axis")


def test_vectorize_a_non_innermost_axis(sch):
    s, (C, D, *_), _ = sch
    i, j = s[D].op.axis
    expect(s, lambda: s[D].vectorize(i), "D", "i", "only the innermost data-parallel loop can be vectorized")


def test_reorder_that_moves_a_vectorized_axis_inward(sch):
    s, (C, D, *_), _ = sch
    i, j = s[D].op.axis
    s[D].vectorize(j)
    expect(s, lambda: s[D].reorder(j, i), "D", "j", "a vectorized axis must stay the innermost data-parallel loop")


def test_parallel_on_a_reduce_axis(sch):
    s, (C, *_), _ = sch
    (k,) = s[C].op.reduce_axis
    expect(s, lambda: s[C].parallel(k), "C", "k", "cannot parallelize a reduction axis")


def test_fuse_non_adjacent_axes(sch):
    s, (C, *_), _ = sch
    i, j = s[C].op.axis
    (k,) = s[C].op.reduce_axis
    expect(s, lambda: s[C].fuse(i, k), "C", "k", "can only fuse adjacent loops")
    expect(s, lambda: s[C].fuse(j, i), "C", "i", "can only fuse adjacent loops")


def test_fuse_a_reduce_axis_with_a_data_axis(sch):
    s, (C, *_), _ = sch
    i, j = s[C].op.axis
    (k,) = s[C].op.reduce_axis
    expect(s, lambda: s[C].fuse(j, k), "C", "k",
           "cannot fuse a reduction axis with a data-parallel axis")


def test_fuse_of_three_fails_whole(sch):
    """fuse(i, j, k): i and j would fuse, then k is a reduce axis; i_j must not stay fused."""
    s, (C, *_), _ = sch
    i, j = s[C].op.axis
    (k,) = s[C].op.reduce_axis
    expect(s, lambda: s[C].fuse(i, j, k), "C", "k",
           "cannot fuse a reduction axis with a data-parallel axis")
    assert s.stages["C"].relations == []
    s[C].fuse(i, j)  # and the same names are free to fuse afterwards
    assert s.stages["C"].leaves == ["i_j_f", "k"]


def test_compute_at_a_stage_that_does_not_read_the_producer(sch):
    s, (C, D, E, out), _ = sch
    ei = s[E].op.axis[0]
    expect(s, lambda: s[C].compute_at(s[E], ei), "C", "i",
           "compute_at to a non-enclosing loop: E does not read C")
    expect(s, lambda: s[C].compute_at(s[out], s[out].op.axis[1]), "C", "j",
           "out does not read C")


def test_compute_at_of_an_output(sch):
    s, (C, D, E, out), _ = sch
    di = s[D].op.axis[0]
    expect(s, lambda: s[out].compute_at(s[D], di), "out", "i",
           "an output stage cannot be computed inside another")


def test_compute_at_into_itself(sch):
    s, (C, D, *_), _ = sch
    expect(s, lambda: s[D].compute_at(s[D], s[D].op.axis[0]), "D", "i", "compute_at into itself")


def test_compute_at_a_vectorized_loop(sch):
    s, (C, D, *_), _ = sch
    j = s[D].op.axis[1]
    s[D].vectorize(j)
    expect(s, lambda: s[C].compute_at(s[D], j), "C", "j", "cannot compute inside a vectorized loop")


def test_inline_a_reduction(sch):
    s, (C, *_), _ = sch
    expect(s, lambda: s[C].compute_inline(), "C", None, "a reduction cannot be inlined")


def test_inline_an_output(sch):
    s, (*_, out), _ = sch
    expect(s, lambda: s[out].compute_inline(), "out", None, "an output stage cannot be inlined")


def test_reorder_naming_an_axis_twice(sch):
    s, (C, *_), _ = sch
    i, j = s[C].op.axis
    expect(s, lambda: s[C].reorder(i, j, i), "C", "i", "reorder names an axis twice")


def test_split_factor_must_be_positive(sch):
    s, (C, *_), _ = sch
    i = s[C].op.axis[0]
    expect(s, lambda: s[C].split(i, factor=0), "C", "i", "must be a positive integer")
    expect(s, lambda: s[C].split(i, factor=2, nparts=2), "C", "i", "exactly one of factor and nparts")


def test_split_of_an_annotated_axis(sch):
    s, (C, D, *_), _ = sch
    j = s[D].op.axis[1]
    s[D].vectorize(j)
    expect(s, lambda: s[D].split(j, factor=2), "D", "j", "cannot split an axis annotated vectorize")


def test_split_of_an_axis_others_are_computed_at(sch):
    s, (C, D, *_), _ = sch
    i = s[D].op.axis[0]
    s[C].compute_at(s[D], i)
    expect(s, lambda: s[D].split(i, factor=2), "D", "i", "split before compute_at")
    expect(s, lambda: s[D].fuse(i, s[D].op.axis[1]), "D", "i", "fuse before compute_at")


def test_vectorize_a_loop_others_are_computed_in(sch):
    s, (C, D, *_), _ = sch
    j = s[D].op.axis[1]
    s[C].compute_at(s[D], j)
    expect(s, lambda: s[D].vectorize(j), "D", "j", "cannot vectorize a loop that other stages are computed in")


def test_cache_write_after_other_primitives(sch):
    s, (C, D, *_), _ = sch
    s[D].split(s[D].op.axis[0], factor=2)
    expect(s, lambda: s.cache_write(D, "local"), "D", None, "cache_write must come before")


def test_errors_are_value_errors_with_readable_text(sch):
    s, (C, *_), _ = sch
    with pytest.raises(ValueError, match=r"^stage C, axis k: cannot vectorize a reduction axis"):
        s[C].vectorize(s[C].op.reduce_axis[0])
