"""Dtype semantics of emitted C against numpy: narrow-integer wrap-around,
floor division and modulo, casts, math intrinsics, selects, and the type
errors te raises instead of promoting silently.

Several results share one kernel (a schedule with several outputs) to keep
the number of C compiles down; each output is checked on its own.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from cgen import te
from tests.util import assert_matches

pytestmark = pytest.mark.sanitize

SEED = 7
INT_TYPES = ["int8", "uint8", "int16", "int32"]


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


def ints(rng, shape, dtype, lo=None, hi=None):
    info = np.iinfo(dtype)
    lo = info.min if lo is None else lo
    hi = info.max if hi is None else hi
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def run(kbuild, inputs: dict, outputs: dict, name: str) -> dict:
    """One kernel computing every tensor in outputs (name -> tensor); returns name -> array."""
    tensors = list(outputs.values())
    s = te.create_schedule(tensors)
    mod = kbuild(s, list(inputs) + tensors, name=name)
    arrays = {}
    for key, t in outputs.items():
        fill = np.nan if t.dtype == "float32" else np.iinfo(t.dtype).max
        arrays[key] = np.full(t.shape, fill, dtype=t.dtype)
    mod(*inputs.values(), *arrays.values())
    return arrays


def elementwise(shape, fn, name, *tensors):
    return te.compute(shape, lambda i: fn(*(t[i] for t in tensors)), name=name)


# ------------------------------------------------------------ integer arithmetic
@pytest.mark.parametrize("dtype", INT_TYPES)
def test_int_arithmetic_wraps_like_numpy(kbuild, rng, dtype):
    n = 61
    A = te.placeholder((n,), dtype, name="A")
    B = te.placeholder((n,), dtype, name="B")
    if dtype == "int32":   # signed int32 overflow is undefined in C: stay in range
        a = ints(rng, (n,), dtype, -40000, 40000)
        b = ints(rng, (n,), dtype, -40000, 40000)
    else:                  # narrow types are computed in int and wrap when stored
        a, b = ints(rng, (n,), dtype), ints(rng, (n,), dtype)
        info = np.iinfo(dtype)
        a[:4] = [info.max, info.min, info.max, info.min]
        b[:4] = [1, info.max, info.max, info.min]
    outs = {
        "add": elementwise((n,), lambda x, y: x + y, "add", A, B),
        "sub": elementwise((n,), lambda x, y: x - y, "sub", A, B),
        "mul": elementwise((n,), lambda x, y: x * y, "mul", A, B),
        "neg": elementwise((n,), lambda x: -x, "neg", A),
        "max": elementwise((n,), te.maximum, "mx", A, B),
        "min": elementwise((n,), te.minimum, "mn", A, B),
        "abs": elementwise((n,), te.abs, "ab", A),
        "clip": elementwise((n,), lambda x: te.clip(x, 3, 100), "clp", A),
        "const": elementwise((n,), lambda x: x * 3 + 7, "cst", A),
    }
    got = run(kbuild, {A: a, B: b}, outs, f"arith_{dtype}")
    with np.errstate(over="ignore"):
        ref = {"add": a + b, "sub": a - b, "mul": a * b, "neg": (np.zeros_like(a) - a),
               "max": np.maximum(a, b), "min": np.minimum(a, b), "abs": np.abs(a),
               "clip": np.clip(a, 3, 100).astype(dtype), "const": a * dtype_const(dtype, 3)
               + dtype_const(dtype, 7)}
    for key in outs:
        assert got[key].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{dtype} {key}")


def dtype_const(dtype, v):
    return np.array(v, dtype=dtype)


def test_widen_then_multiply(kbuild, rng):
    """int8 products exceed int8 but not int32 once both operands are cast first."""
    n = 40
    A = te.placeholder((n,), "int8", name="A")
    B = te.placeholder((n,), "int8", name="B")
    a, b = ints(rng, (n,), "int8"), ints(rng, (n,), "int8")
    a[0] = b[0] = -128
    outs = {
        "wide": elementwise((n,), lambda x, y: x.astype("int32") * y.astype("int32"), "wide", A, B),
        "narrow": elementwise((n,), lambda x, y: (x * y).astype("int32"), "narrow", A, B),
        "i16": elementwise((n,), lambda x, y: x.astype("int16") * y.astype("int16"), "i16", A, B),
    }
    got = run(kbuild, {A: a, B: b}, outs, "widen")
    np.testing.assert_array_equal(got["wide"], a.astype(np.int32) * b.astype(np.int32))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got["narrow"], (a * b).astype(np.int32))
    np.testing.assert_array_equal(got["i16"], a.astype(np.int16) * b.astype(np.int16))


# ------------------------------------------------------------ casts
CAST_PAIRS = [("int32", "int8"), ("int32", "uint8"), ("int32", "int16"), ("int16", "int8"),
              ("int8", "uint8"), ("uint8", "int8"), ("int16", "uint8"), ("uint8", "int32"),
              ("int8", "int32"), ("int32", "float32"), ("int8", "float32"), ("uint8", "float32")]


@pytest.mark.parametrize("src", sorted({p[0] for p in CAST_PAIRS}))
def test_int_casts_match_numpy_astype(kbuild, rng, src):
    n = 50
    A = te.placeholder((n,), src, name="A")
    a = ints(rng, (n,), src, -70000 if src == "int32" else None, 70000 if src == "int32" else None)
    info = np.iinfo(src)
    a[:2] = [info.min, info.max]
    dsts = [d for s, d in CAST_PAIRS if s == src]
    outs = {d: elementwise((n,), lambda x, d=d: x.astype(d), f"to_{d}", A) for d in dsts}
    got = run(kbuild, {A: a}, outs, f"cast_{src}")
    for d in dsts:
        np.testing.assert_array_equal(got[d], a.astype(d), err_msg=f"{src} -> {d}")


def test_float_to_int_truncates(kbuild, rng):
    n = 64
    X = te.placeholder((n,), name="X")
    x = rng.uniform(-120.0, 120.0, n).astype(np.float32)
    x[:8] = [-2.7, -2.5, -0.5, -0.0, 0.5, 2.5, 2.7, 127.9]
    xu = np.abs(x) * 2.0   # in range of uint8
    XU = te.placeholder((n,), name="XU")
    outs = {
        "int8": elementwise((n,), lambda v: v.astype("int8"), "f_i8", X),
        "int16": elementwise((n,), lambda v: (v * 200.0).astype("int16"), "f_i16", X),
        "int32": elementwise((n,), lambda v: (v * 1e6).astype("int32"), "f_i32", X),
        "uint8": elementwise((n,), lambda v: v.astype("uint8"), "f_u8", XU),
        "floor": elementwise((n,), lambda v: te.floor(v).astype("int32"), "f_floor", X),
    }
    got = run(kbuild, {X: x, XU: xu}, outs, "f2i")
    np.testing.assert_array_equal(got["int8"], x.astype(np.int8))
    np.testing.assert_array_equal(got["int16"], (x * np.float32(200.0)).astype(np.int16))
    np.testing.assert_array_equal(got["int32"], (x * np.float32(1e6)).astype(np.int32))
    np.testing.assert_array_equal(got["uint8"], xu.astype(np.uint8))
    np.testing.assert_array_equal(got["floor"], np.floor(x).astype(np.int32))


# ------------------------------------------------------------ floor division / modulo
def _nonzero(a):
    return np.where(a == 0, 1, a).astype(a.dtype)


@pytest.mark.parametrize("dtype", ["int32", "int16", "int8"])
def test_floordiv_mod_mixed_signs(kbuild, rng, dtype):
    n = 97
    A = te.placeholder((n,), dtype, name="A")
    B = te.placeholder((n,), dtype, name="B")
    info = np.iinfo(dtype)
    a = ints(rng, (n,), dtype, info.min + 1, info.max)  # MIN // -1 overflows
    b = _nonzero(ints(rng, (n,), dtype, -9, 9))
    # every sign combination with and without a remainder
    a[:16] = [7, -7, 7, -7, 6, -6, 6, -6, 0, 0, 1, -1, info.max, info.min + 1, 3, -3]
    b[:16] = [2, 2, -2, -2, 3, 3, -3, -3, 5, -5, 7, 7, -1, -1, info.max, info.max]
    b[16:20] = [info.min + 1, info.max, -1, 1]
    outs = {
        "div": elementwise((n,), lambda x, y: x // y, "fdiv", A, B),
        "mod": elementwise((n,), lambda x, y: x % y, "fmod", A, B),
        "div_c": elementwise((n,), lambda x: x // 4, "fdiv_c", A),
        "mod_c": elementwise((n,), lambda x: x % 4, "fmod_c", A),
        "div_nc": elementwise((n,), lambda x: x // -3, "fdiv_nc", A),
        "mod_nc": elementwise((n,), lambda x: x % -3, "fmod_nc", A),
    }
    got = run(kbuild, {A: a, B: b}, outs, f"floordiv_{dtype}")
    ref = {"div": a // b, "mod": a % b, "div_c": a // dtype_const(dtype, 4),
           "mod_c": a % dtype_const(dtype, 4), "div_nc": a // dtype_const(dtype, -3),
           "mod_nc": a % dtype_const(dtype, -3)}
    for key in outs:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{dtype} {key}")
    # identity of floor semantics: a == (a // b) * b + a % b
    np.testing.assert_array_equal(got["div"].astype(np.int64) * b + got["mod"], a)


def test_floordiv_mod_python_reference(kbuild):
    """Every pair in a small signed grid against Python's own // and %."""
    vals = list(range(-9, 10))
    pairs = [(x, y) for x in vals for y in vals if y != 0]
    a = np.array([p[0] for p in pairs], dtype=np.int32)
    b = np.array([p[1] for p in pairs], dtype=np.int32)
    n = len(pairs)
    A = te.placeholder((n,), "int32", name="A")
    B = te.placeholder((n,), "int32", name="B")
    outs = {"div": elementwise((n,), lambda x, y: x // y, "fdiv", A, B),
            "mod": elementwise((n,), lambda x, y: x % y, "fmod", A, B)}
    got = run(kbuild, {A: a, B: b}, outs, "floordiv_py")
    assert got["div"].tolist() == [x // y for x, y in pairs]
    assert got["mod"].tolist() == [x % y for x, y in pairs]


def test_floordiv_mod_of_index_expressions(kbuild):
    """Floor semantics survive the simplifier on loop-index arithmetic and constants."""
    n = 23
    outs = {
        "div": te.compute((n,), lambda i: ((i - 11) // 4).astype("int32"), name="idiv"),
        "mod": te.compute((n,), lambda i: ((i - 11) % 4).astype("int32"), name="imod"),
        "div_neg": te.compute((n,), lambda i: ((11 - i * 3) // -5).astype("int32"), name="idivn"),
        "mod_neg": te.compute((n,), lambda i: ((11 - i * 3) % -5).astype("int32"), name="imodn"),
        "const": te.compute((n,), lambda i: te.const(-7, "int32") // 2 + te.const(-7, "int32") % 3
                            + i.astype("int32") * 0, name="iconst"),
    }
    got = run(kbuild, {}, outs, "index_floordiv")
    i = np.arange(n)
    np.testing.assert_array_equal(got["div"], (i - 11) // 4)
    np.testing.assert_array_equal(got["mod"], (i - 11) % 4)
    np.testing.assert_array_equal(got["div_neg"], (11 - i * 3) // -5)
    np.testing.assert_array_equal(got["mod_neg"], (11 - i * 3) % -5)
    np.testing.assert_array_equal(got["const"], np.full(n, -7 // 2 + -7 % 3))


@pytest.mark.parametrize("dtype", ["uint8", "int32"])
def test_floordiv_mod_under_split(kbuild, rng, dtype):
    """The same kernel, split with a tail and vectorized, still floors."""
    n = 37
    A = te.placeholder((n,), dtype, name="A")
    B = te.placeholder((n,), dtype, name="B")
    lo = 0 if dtype == "uint8" else -1000
    a = ints(rng, (n,), dtype, lo, 1000 if dtype == "int32" else None)
    b = _nonzero(ints(rng, (n,), dtype, 0 if dtype == "uint8" else -13, 13))
    D = elementwise((n,), lambda x, y: x // y, "fdiv", A, B)
    M = elementwise((n,), lambda x, y: x % y, "fmod", A, B)
    s = te.create_schedule([D, M])
    for T in (D, M):
        xo, xi = s[T].split(s[T].op.axis[0], factor=8)
        s[T].vectorize(xi)
    mod = kbuild(s, [A, B, D, M], name=f"floordiv_vec_{dtype}")
    d, m = np.zeros(n, dtype), np.zeros(n, dtype)
    mod(a, b, d, m)
    np.testing.assert_array_equal(d, a // b)
    np.testing.assert_array_equal(m, a % b)


# ------------------------------------------------------------ math intrinsics
erf_ref = np.vectorize(math.erf, otypes=[np.float64])


def test_math_intrinsics(kbuild, rng):
    n = 67
    X = te.placeholder((n,), name="X")
    P = te.placeholder((n,), name="P")    # positive
    x = rng.uniform(-5.0, 5.0, n).astype(np.float32)
    x[:6] = [0.0, -0.0, 1.0, -1.0, 2.5, -2.5]
    p = rng.uniform(0.01, 30.0, n).astype(np.float32)
    outs = {
        "exp": elementwise((n,), te.exp, "m_exp", X),
        "log": elementwise((n,), te.log, "m_log", P),
        "sqrt": elementwise((n,), te.sqrt, "m_sqrt", P),
        "tanh": elementwise((n,), te.tanh, "m_tanh", X),
        "sigmoid": elementwise((n,), te.sigmoid, "m_sigmoid", X),
        "erf": elementwise((n,), te.erf, "m_erf", X),
        "floor": elementwise((n,), te.floor, "m_floor", X),
        "abs": elementwise((n,), te.abs, "m_abs", X),
        "clip": elementwise((n,), lambda v: te.clip(v, -1.5, 2.0), "m_clip", X),
        "maximum": elementwise((n,), te.maximum, "m_max", X, P),
        "minimum": elementwise((n,), te.minimum, "m_min", X, P),
        "max_c": elementwise((n,), lambda v: te.max(v, 0.5), "m_maxc", X),
        "min_c": elementwise((n,), lambda v: te.min(v, 0.5), "m_minc", X),
        "chain": elementwise((n,), lambda v, q: te.sqrt(te.exp(v) + q) - te.log(q) * 0.5, "m_chain", X, P),
    }
    got = run(kbuild, {X: x, P: p}, outs, "math")
    x64, p64 = x.astype(np.float64), p.astype(np.float64)
    ref = {"exp": np.exp(x64), "log": np.log(p64), "sqrt": np.sqrt(p64), "tanh": np.tanh(x64),
           "sigmoid": 1.0 / (1.0 + np.exp(-x64)), "erf": erf_ref(x64), "floor": np.floor(x64),
           "abs": np.abs(x64), "clip": np.clip(x64, -1.5, 2.0), "maximum": np.maximum(x64, p64),
           "minimum": np.minimum(x64, p64), "max_c": np.maximum(x64, 0.5),
           "min_c": np.minimum(x64, 0.5), "chain": np.sqrt(np.exp(x64) + p64) - np.log(p64) * 0.5}
    for key in outs:
        assert got[key].dtype == np.float32
        try:
            assert_matches(got[key], ref[key].astype(np.float32))
        except AssertionError as e:
            raise AssertionError(f"{key}: {e}") from None
    np.testing.assert_array_equal(got["floor"], np.floor(x))   # exact
    np.testing.assert_array_equal(got["abs"], np.abs(x))


# ------------------------------------------------------------ selects
def test_if_then_else(kbuild, rng):
    n = 45
    A = te.placeholder((n,), name="A")
    B = te.placeholder((n,), name="B")
    I = te.placeholder((n,), "int16", name="I")
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    iv = ints(rng, (n,), "int16", -50, 50)
    outs = {
        "sel": elementwise((n,), lambda x, y: te.if_then_else(x > y, x, y * 2.0), "sel", A, B),
        "all": elementwise((n,), lambda x, y: te.if_then_else(te.all(x > 0.0, y < 0.0), x - y, 0.0),
                           "sel_all", A, B),
        "any": elementwise((n,), lambda x, y: te.if_then_else(te.any(x > 1.0, ~(y > -1.0)), 1.0, -1.0),
                           "sel_any", A, B),
        "int": elementwise((n,), lambda v: te.if_then_else(te.equal(v % 3, 0), v // 3, v * 2),
                           "sel_int", I),
        "idx": te.compute((n,), lambda i: te.if_then_else(i < 10, A[i], B[n - 1 - i]), name="sel_idx"),
    }
    got = run(kbuild, {A: a, B: b, I: iv}, outs, "select")
    np.testing.assert_array_equal(got["sel"], np.where(a > b, a, b * np.float32(2.0)))
    np.testing.assert_array_equal(got["all"], np.where((a > 0) & (b < 0), a - b, np.float32(0)))
    np.testing.assert_array_equal(got["any"], np.where((a > 1) | ~(b > -1), 1.0, -1.0).astype(np.float32))
    np.testing.assert_array_equal(got["int"], np.where(iv % 3 == 0, iv // 3, iv * 2).astype(np.int16))
    np.testing.assert_array_equal(got["idx"], np.where(np.arange(n) < 10, a, b[::-1]))


# ------------------------------------------------------------ type errors
def test_mixing_dtypes_raises():
    f = te.placeholder((4,), "float32", name="f")
    i32 = te.placeholder((4,), "int32", name="i32")
    i8 = te.placeholder((4,), "int8", name="i8")
    u8 = te.placeholder((4,), "uint8", name="u8")
    for a, b in [(f, i32), (i32, i8), (i8, u8), (f, i8)]:
        with pytest.raises(TypeError, match="cast"):
            te.compute((4,), lambda i: a[i] + b[i], name="bad")
        with pytest.raises(TypeError, match="cast"):
            te.maximum(a[0], b[0])
        with pytest.raises(TypeError):
            a[0] < b[0]
    with pytest.raises(TypeError, match="cast"):
        i32[0] + 0.5                      # a non-integral float constant with an int tensor
    with pytest.raises(TypeError):
        te.if_then_else(f[0] > 0.0, i32[0], f[0])
    with pytest.raises(TypeError, match="cast"):
        te.compute((4,), lambda i: i + i32[i], name="idx_plus_int32")   # int64 index + int32
    # explicit casts make the same expressions legal
    te.compute((4,), lambda i: f[i] + i32[i].astype("float32"), name="ok")
    te.compute((4,), lambda i: i32[i] + i8[i].astype("int32"), name="ok2")


def test_int_true_division_raises():
    i32 = te.placeholder((4,), "int32", name="i32")
    u8 = te.placeholder((4,), "uint8", name="u8")
    with pytest.raises(TypeError, match="'/'"):
        i32[0] / i32[1]
    with pytest.raises(TypeError, match="'/'"):
        te.compute((4,), lambda i: u8[i] / 2, name="bad")
    with pytest.raises(TypeError, match="'/'"):
        te.compute((4,), lambda i: 7 / i32[i], name="bad")
    f = te.placeholder((4,), name="f")
    with pytest.raises(TypeError):
        f[0] // f[1]
    with pytest.raises(TypeError):
        f[0] % 2.0


def test_other_type_errors():
    i32 = te.placeholder((4,), "int32", name="i32")
    f = te.placeholder((4,), name="f")
    with pytest.raises(TypeError, match="float32"):
        te.exp(i32[0])
    with pytest.raises(TypeError, match="condition"):
        te.if_then_else(f[0], f[0], f[1])
    with pytest.raises(OverflowError):
        te.placeholder((4,), "int8", name="i8")[0] + 300
    with pytest.raises(TypeError):
        te.placeholder((4,), "float64", name="d")
    with pytest.raises(TypeError, match="index"):
        f[f[0]]
