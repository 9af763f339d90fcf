"""Vectorizing an output axis with reduction loops inside it (TVM accepts this): the lanes
are sunk below the reductions, so a vector of outputs accumulates over them."""
from __future__ import annotations

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.lower.ir import For, VStore
from cgen.lower.lower import lower
from targets import resolve

TARGETS = [pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")),
           pytest.param("x86-avx512", marks=pytest.mark.isa("avx512")),
           "aarch64", "armv7"]


def _conv1d(W_out=37, R=5, S=3):
    """Y[n, x] = sum_{r, s} X[n, x + r, s] * K[r, s]: output width 37 (a vector tail)."""
    X = te.placeholder((2, W_out + R - 1, S), name="X")
    K = te.placeholder((R, S), name="K")
    r = te.reduce_axis((0, R), name="r")
    q = te.reduce_axis((0, S), name="q")
    Y = te.compute((2, W_out), lambda n, x: te.sum(X[n, x + r, q] * K[r, q], axis=[r, q]), name="Y")
    s = te.create_schedule(Y)
    n, x = s[Y].op.axis
    xo, xi = s[Y].split(x, factor=8)
    s[Y].reorder(n, xo, xi, r, q)
    s[Y].vectorize(xi)
    return s, [X, K, Y]


def _maxpool(W_out=20, R=3):
    X = te.placeholder((4, 2 * W_out + R), name="X")
    r = te.reduce_axis((0, R), name="r")
    Y = te.compute((4, W_out), lambda c, x: te.max(X[c, 2 * x + r], axis=[r]), name="Y")
    s = te.create_schedule(Y)
    c, x = s[Y].op.axis
    s[Y].vectorize(x)       # r sits inside x
    return s, [X, Y]


def _children(x):
    for f in getattr(x, "__dataclass_fields__", {}):
        v = getattr(x, f)
        for c in (v if isinstance(v, tuple) else (v,)):
            if hasattr(c, "__dataclass_fields__"):
                yield c


def _loops(stmt) -> list:
    out = [stmt] if isinstance(stmt, For) else []
    for c in _children(stmt):
        out += _loops(c)
    return out


def _vector_stores(func) -> int:
    n = 0

    def rec(x):
        nonlocal n
        if isinstance(x, VStore):
            n += 1
        for c in _children(x):
            rec(c)
    rec(func.body)
    return n


@pytest.mark.parametrize("target", TARGETS)
def test_conv_row_vectorized_over_its_reduction(target):
    s, args = _conv1d()
    func = lower(s, args, "c1", resolve(target))
    assert _vector_stores(func) > 0, "the lanes were not vectorized"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 41, 3)).astype(np.float32)
    k = rng.standard_normal((5, 3)).astype(np.float32)
    y = np.zeros((2, 37), np.float32)
    cgen.build(s, args, target=target, name="c1")(x, k, y)
    ref = sum(x[:, r:r + 37, q] * k[r, q] for r in range(5) for q in range(3))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_strided_max_pool_vectorized_over_its_window(target):
    """A strided read (2x + r) is not a vector load: the lanes stay a plain loop below the
    window loop, still correct (the ISA has no gather here)."""
    s, args = _maxpool()
    func = lower(s, args, "mp", resolve(target))
    # the lane loop now sits below the window loop
    loops = _loops(func.body)
    r = next(f for f in loops if f.var.name == "r")
    assert any(f.var.name == "x" for f in _loops(r.body))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 43)).astype(np.float32)
    y = np.zeros((4, 20), np.float32)
    cgen.build(s, args, target=target, name="mp")(x, y)
    ref = np.max(np.stack([x[:, r:r + 40:2] for r in range(3)]), axis=0)
    np.testing.assert_array_equal(y, ref)


def test_a_lane_reading_another_lanes_output_stays_serial():
    """Y[x] += Y[x - 1]-style reads would change meaning if the lanes were sunk: such a body
    is not vectorized (checked on the loop IR, target named)."""
    from cgen.lower.vectorize import _Bail, _sunk
    from cgen.lower.ir import Buffer, Load, Store
    from cgen.te.expr import Binary, Const, Var, INDEX
    b = Buffer("Y", "float32", (16,))
    v, r = Var("x"), Var("r")
    shifted = Binary("-", v, Const(1, INDEX), INDEX)
    body = For(r, Const(0, INDEX), Const(3, INDEX), "serial",
               Store(b, v, Binary("+", Load(b, v, "float32"), Load(b, shifted, "float32"), "float32")))
    with pytest.raises(_Bail):
        _sunk(For(v, Const(1, INDEX), Const(15, INDEX), "vectorized", body))
