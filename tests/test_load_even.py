"""Loads of every other element (the ISA row's load_even): a stride-2 depthwise layer
first copies its input into parity planes, P[p, x] = X[2x + p], and gcc vectorized that
copy on x86 with two vpermd and a blend per vector; MobileNetV2's 112 -> 56 layer spent
half its time there.  The vectorizer now makes it two loads and two shuffles per vector
(AVX2 shufps + vpermpd, AVX-512 permutex2var) that read no element past the last lane's,
ending in the last whole vector again instead of a scalar tail.  NEON rows have no entry:
gcc's own ld2 / vld2 is already the best there, and the loop stays a plain one.

Checked: the emitted C and the outputs for every extent up to 19 on x86-avx2 (the source
exactly 2n long), the same under ASan, x86-avx512, aarch64 and armv7 (QEMU); the
schedule rule that lets a loop be vectorized above an unrolled one; partition_likely
cutting a vectorized loop; a masked store of constant count proving a buffer written;
depthwise stride-2 layers (tile and flat rows) against numpy."""
from __future__ import annotations

import re

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.lower.ir import Broadcast, Buffer, Seq, VStore
from cgen.lower.written import written_before_read
from cgen.ops.depthwise import DepthwiseNCHWTemplate
from cgen.schedule import ScheduleError
from cgen.te.expr import Const, Var
from tests.util import assert_matches, skip_without_system_qemu

SHUFFLE = {"x86-avx2": "_mm256_shuffle_ps", "x86-avx512": "_mm512_permutex2var_ps"}


def _planes(n: int, target: str, sanitize: bool = False):
    """D[p, x] = A[2x + p] (p < 2, x < n), the parity unrolled inside x vectorized."""
    A = te.placeholder((2 * n,), "float32", name="A")
    D = te.compute((2, n), lambda p, x: A[2 * x + p], name="D")
    s = te.create_schedule(D)
    p, x = D.op.axis
    s[D].reorder(x, p)
    s[D].unroll(p)
    s[D].vectorize(x)
    return cgen.build(s, [A, D], target=target, name="planes", sanitize=sanitize)


def _check(mod, n: int):
    a = np.random.default_rng(n).standard_normal(2 * n).astype(np.float32)
    d = np.full((2, n), np.nan, np.float32)
    mod(a, d)
    np.testing.assert_array_equal(d, np.stack([a[0::2], a[1::2]]))


@pytest.mark.isa("avx2")
@pytest.mark.parametrize("n", range(1, 20))
def test_parity_planes_every_extent_x86_avx2(n):
    mod = _planes(n, "x86-avx2")
    body = mod.c_source[mod.c_source.index("int planes("):]
    if n >= 8:
        assert body.count("_mm256_shuffle_ps") == 2 * -(-n // 8), body
        assert "_mm256_permute4x64_pd" in body
        assert not re.search(r"\bfor\s*\(", body), body      # no scalar tail loop
    _check(mod, n)


@pytest.mark.sanitize
@pytest.mark.isa("avx2")
@pytest.mark.parametrize("n", [8, 13])
def test_parity_planes_read_nothing_past_the_source_under_asan(n):
    """The odd plane's last vector ends at A[2n - 1], the source's last element: a
    load_even reading one element further would fault here."""
    _check(_planes(n, "x86-avx2", sanitize=True), n)


@pytest.mark.isa("avx512")
@pytest.mark.parametrize("n", [16, 21, 40])
def test_parity_planes_x86_avx512(n):
    mod = _planes(n, "x86-avx512")
    assert "_mm512_permutex2var_ps" in mod.c_source
    _check(mod, n)


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_parity_planes_stay_plain_loops_on_neon(target):
    skip_without_system_qemu(target)
    mod = _planes(13, target)
    body = mod.c_source[mod.c_source.index("int planes("):]
    # one plain loop over column pairs (gcc reads both parities with one ld2), not one
    # loop per parity
    assert "vld1q_f32" not in body and len(re.findall(r"\bfor\s*\(", body)) == 1, body
    _check(mod, 13)


def _pair_stage():
    A = te.placeholder((2, 16), "float32", name="A")
    D = te.compute((2, 16), lambda p, x: A[p, x] + 1.0, name="D")
    return te.create_schedule(D), D


def test_a_loop_may_be_vectorized_above_an_unrolled_one_only():
    s, D = _pair_stage()
    p, x = D.op.axis
    s[D].reorder(x, p)
    with pytest.raises(ScheduleError, match="innermost data-parallel"):
        s[D].vectorize(x)           # p inside is a plain loop
    s[D].unroll(p)
    s[D].vectorize(x)
    # a later reorder that puts a plain loop inside the vectorized one is refused too
    s, D = _pair_stage()
    p, x = D.op.axis
    xo, xi = s[D].split(x, factor=4)
    s[D].vectorize(xi)
    with pytest.raises(ScheduleError, match="innermost data-parallel"):
        s[D].reorder(xo, xi, p)


@pytest.mark.isa("avx2")
def test_a_vectorized_padded_copy_is_cut_into_vector_interior_and_plain_borders():
    """partition_likely cuts a vectorized loop at constant bounds: the interior loads A
    as whole vectors from x = 1 on (the lanes rebased), the borders stay scalar."""
    n = 21
    A = te.placeholder((n,), "float32", name="A")
    P = te.compute((n + 2,), lambda x: te.if_then_else(
        te.likely(te.all(x >= 1, x < n + 1)), A[x - 1], 0.0), name="P")
    s = te.create_schedule(P)
    s[P].vectorize(P.op.axis[0])
    mod = cgen.build(s, [A, P], target="x86-avx2", name="pad")
    assert "_mm256_loadu_ps(&A[0])" in mod.c_source, mod.c_source
    assert "?" not in mod.c_source[mod.c_source.index("int pad("):]
    a = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    out = np.full(n + 2, np.nan, np.float32)
    mod(a, out)
    np.testing.assert_array_equal(out, np.pad(a, 1))


def test_a_masked_store_of_constant_count_covers_its_lanes():
    t = Buffer("t", "float32", (13,), "local")
    zero = Broadcast(Const(0.0, "float32"), "float32x8")

    def fill(count):
        return Seq((VStore(t, Const(0, "int64"), zero),
                    VStore(t, Const(8, "int64"), zero, count)))
    assert written_before_read(t, fill(Const(5, "int64")))
    assert not written_before_read(t, fill(Const(4, "int64")))
    assert not written_before_read(t, fill(Var("n", "int64")))     # known at run time only


T = DepthwiseNCHWTemplate()


@pytest.mark.parametrize("target", [pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")),
                                    pytest.param("x86-avx512", marks=pytest.mark.isa("avx512"))])
@pytest.mark.parametrize("rows,shape", [("tile", (6, 37, 29)), ("flat", (5, 30, 30)),
                                        ("flat", (3, 20, 20))])
def test_stride_2_depthwise_copies_with_load_even(target, rows, shape):
    C, H, W = shape
    wl = T.workload(1, C, H, W, 3, 3, 2, 1)
    sp = T.space(wl, target)
    cfg = sp.get(sp.index_of(dict(T.default(wl, target).to_dict(), rows=rows)))
    s, args = T.build(wl, target, cfg)
    mod = cgen.build(s, args, target=target, name="dw")
    assert SHUFFLE[target] in mod.c_source
    inputs = T.inputs(wl, np.random.default_rng(2))
    arrays = [x.copy() for x in inputs]
    arrays[-1][...] = np.nan
    mod(*arrays)
    assert_matches(arrays[-1], T.reference(wl, inputs)["Y"])
