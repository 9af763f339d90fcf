"""The NCHW depthwise template's padded-input fill: zero borders and an interior plain copy.

The fill P = inside ? X[...] : 0 used to be a select and a conditional load per element
(no C compiler vectorizes that); its condition is now te.likely, and the lowering cuts
the fill loops (cgen.lower.partition) so the interior is an unconditional copy (stride 1)
or deinterleave (stride 2).  Checked here: the emitted C of x86-avx2, the loop IR of the
partition pass itself, and outputs against the numpy reference on x86-avx2, x86-avx512,
generic-c (slow tier) and aarch64/armv7 (QEMU).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.lower.ir import Buffer, For, IfThenElse, Store
from cgen.lower.lower import lower
from cgen.lower.written import written_before_read
from cgen.ops.depthwise import DepthwiseNCHWTemplate
from cgen.te.expr import Binary, Compare, Const, Select, Var
from cgen.te.visit import walk
from targets import resolve
from tests.util import assert_matches

T = DepthwiseNCHWTemplate()
# (C, H, W, stride, pad): stride 2 with even and odd widths, asymmetric pads, stride 1
WORKLOADS = [
    (3, 14, 14, 2, [1, 1, 1, 1]),
    (2, 11, 13, 2, [1, 2, 0, 1]),
    (2, 9, 21, 1, [1, 1, 1, 1]),
    (2, 7, 10, 1, [2, 0, 1, 2]),
]
PLACES = ("band", "plane", "root", "inline")


def _wl(C, H, W, stride, pad, dilation=1):
    return T.workload(1, C, H, W, 3, 3, stride, pad, dilation)


def _config(wl, target, **want):
    sp = T.space(wl, target)
    base = T.default(wl, target).to_dict()
    # the tiled form (stride-1 narrow rows default to flat rows: test_depthwise_flat.py)
    return sp.get(sp.index_of(dict(base, rows="tile", **want)))


PLAIN_COPY = re.compile(r"^\s*P\[[^;?]*\] = X\[[^;?]*\];$", re.M)
SELECT_FILL = re.compile(r"^\s*P\[[^;]*\] = [^;]*\?[^;]*;$", re.M)


@pytest.mark.parametrize("stride", [2, 1])
@pytest.mark.parametrize("pad_at", ["band", "plane"])
def test_interior_fill_is_a_plain_copy_x86_avx2(stride, pad_at):
    """x86-avx2, MobileNetV2's 96-channel layer: P's interior rows are plain copies of X
    (no select), the selects are left on border elements only."""
    wl = _wl(96, 112, 112, stride, [1, 1, 1, 1])
    s, args = T.build(wl, "x86-avx2", _config(wl, "x86-avx2", pad_at=pad_at))
    src = cgen.build(s, args, target="x86-avx2", name="dw").c_source
    copies = PLAIN_COPY.findall(src)
    assert copies, "no unconditional copy of X into the padded input"
    if stride == 2:   # both parities of a column pair in one loop body
        assert len(copies) >= 2
    # whatever select is left sits in a loop of a few border columns or rows
    for loop in re.finditer(r"for \(int64_t \w+ = ([^;]+); \w+ < ([^;]+); \+\+\w+\)\s*\{([^{}]*)\}",
                            src):
        body = loop.group(3)
        if SELECT_FILL.search(body):
            lo, hi = loop.group(1), loop.group(2)
            if lo.isdigit() and re.fullmatch(r"\(?\d+ \+ \d+\)?", hi):
                assert int(re.findall(r"\d+", hi)[-1]) <= 16, loop.group(0)[:200]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("pad_at", ["plane", "band"])
def test_partitioned_fill_needs_no_zero_fill_x86_avx2(stride, pad_at):
    """The cut fill (borders, then interior; per band a branch per row) still provably
    writes the whole stack buffer (cgen.lower.written): no dead `= {0}` memset."""
    wl = _wl(8, 28, 28, stride, [1, 1, 1, 1])
    s, args = T.build(wl, "x86-avx2", _config(wl, "x86-avx2", pad_at=pad_at))
    src = cgen.build(s, args, target="x86-avx2", name="dw").c_source
    decl = re.findall(r"float P\[\d+\][^;]*;", src)
    assert decl and all("{0}" not in d for d in decl), decl


def test_written_if_else_needs_the_same_elements_per_iteration():
    """A loop whose branches store the same element at each iteration covers the buffer;
    branches that store different ones (P[i] or P[3 - i]: {0, 1} only) do not."""
    buf = Buffer("B", "float32", (4,), "local")
    i = Var("i")
    zero, one = Const(0.0, "float32"), Const(1.0, "float32")
    cond = Compare("<", i, Const(2, "int64"))

    def loop(other_index):
        return For(i, Const(0, "int64"), Const(4, "int64"), "serial",
                   IfThenElse(cond, Store(buf, i, zero), Store(buf, other_index, one)))
    assert written_before_read(buf, loop(i))
    assert not written_before_read(buf, loop(Binary("-", Const(3, "int64"), i, "int64")))
    assert not written_before_read(buf, For(i, Const(0, "int64"), Const(4, "int64"), "serial",
                                            IfThenElse(cond, Store(buf, i, zero))))


def test_partition_pass_cuts_on_likely_only():
    """The pass splits a loop at the bounds of an affine likely condition (coefficient 2:
    ceil/floor divisions): zeros at the borders (the condition folded there), a plain
    copy inside; an unmarked select is left alone."""
    X = te.placeholder((20,), name="X")
    marked = te.compute((12,), lambda i: te.if_then_else(
        te.likely(te.all(2 * i >= 3, 2 * i < 19)), X[2 * i - 3], 0.0), name="P")
    plain = te.compute((12,), lambda i: te.if_then_else(
        te.all(2 * i >= 3, 2 * i < 19), X[2 * i - 3], 0.0), name="Q")
    for tensor, cut in ((marked, True), (plain, False)):
        s = te.create_schedule(tensor)
        f = lower(s, [X, tensor], target=resolve("generic-c"))
        loops = []
        walk(f.body, lambda n: loops.append(n) if isinstance(n, For) else None)
        if cut:
            # i in [0, 2) zeros, [2, 10) copy, [10, 12) zeros
            assert [(lp.min.value, lp.extent.value) for lp in loops] == [(0, 2), (2, 8), (10, 2)]
            assert [type(lp.body.value).__name__ for lp in loops] == ["Const", "Load", "Const"]
        else:
            assert len(loops) == 1 and isinstance(loops[0].body.value, Select)
        x = np.arange(20, dtype=np.float32) + 1
        out = np.full(12, np.nan, np.float32)
        cgen.build(s, [X, tensor], target="generic-c", name=f"cut_{tensor.name.lower()}")(x, out)
        want = np.array([x[2 * i - 3] if 3 <= 2 * i < 19 else 0.0 for i in range(12)], np.float32)
        np.testing.assert_array_equal(out, want)


def test_partition_symbolic_bounds():
    """A likely condition with a term of an outer loop: bounds computed at run time (the
    band of rows of the depthwise fill), every element still right."""
    X = te.placeholder((5, 9), name="X")
    P = te.compute((5, 11), lambda r, i: te.if_then_else(
        te.likely(te.all(i + r >= 2, i + r < 10)), X[r, i + r - 2], 0.0), name="P")
    s = te.create_schedule(P)
    src = cgen.build(s, [X, P], target="generic-c", name="sym").c_source
    assert PLAIN_COPY.search(src)
    x = np.arange(45, dtype=np.float32).reshape(5, 9) + 1
    out = np.full((5, 11), np.nan, np.float32)
    cgen.build(s, [X, P], target="generic-c", name="sym")(x, out)
    want = np.array([[x[r, i + r - 2] if 2 <= i + r < 10 else 0.0 for i in range(11)]
                     for r in range(5)], np.float32)
    np.testing.assert_array_equal(out, want)


def _check(wl, target, cfg):
    rng = np.random.default_rng(7)
    inputs = T.inputs(wl, rng)
    ref = T.reference(wl, inputs)["Y"]
    s, args = T.build(wl, target, cfg)
    arrays = [a.copy() for a in inputs]
    arrays[-1][...] = np.nan
    cgen.build(s, args, target=target, name="dw")(*arrays)
    try:
        assert_matches(arrays[-1], ref)
    except AssertionError as e:
        raise AssertionError(f"{target} {wl} {cfg.to_dict()}: {e}") from None


X86 = [pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")),
       pytest.param("x86-avx512", marks=pytest.mark.isa("avx512"))]


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("case", WORKLOADS[:3:2], ids=lambda c: f"c{c[0]}h{c[1]}w{c[2]}s{c[3]}")
def test_outputs_match_reference(target, case):
    """Stride 2 and stride 1, the fill per band of rows and per plane, against numpy."""
    wl = _wl(*case)
    for pad_at in ("band", "plane"):
        _check(wl, target, _config(wl, target, pad_at=pad_at))


@pytest.mark.slow
@pytest.mark.parametrize("target", X86 + ["generic-c"])
@pytest.mark.parametrize("case", WORKLOADS, ids=lambda c: f"c{c[0]}h{c[1]}w{c[2]}s{c[3]}")
def test_outputs_match_reference_every_placement(target, case):
    """Every pad placement and both tap forms, odd widths and asymmetric pads."""
    wl = _wl(*case)
    for pad_at in PLACES:
        for taps in ("expr", "reduce"):
            _check(wl, target, _config(wl, target, pad_at=pad_at, taps=taps))


@pytest.mark.slow
@pytest.mark.parametrize("target", X86 + ["generic-c"])
def test_dilated_stride2_matches_reference(target):
    """Stride 2 with dilation 2: the plain padded layout (not deinterleaved), partitioned."""
    wl = _wl(2, 13, 15, 2, [2, 2, 2, 1], dilation=2)
    for pad_at in ("band", "plane"):
        _check(wl, target, _config(wl, target, pad_at=pad_at))


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_outputs_match_reference_qemu(target):
    """NEON (a64 and a32) under QEMU user mode: stride 2 and 1, band and plane."""
    for case in WORKLOADS[:3]:
        wl = _wl(*case)
        for pad_at in ("band", "plane"):
            _check(wl, target, _config(wl, target, pad_at=pad_at))
