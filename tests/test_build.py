"""cgen.build end to end: the README's example block, argument checks, compile errors,
deterministic C, and the sanitizer harness."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import numpy as np
import pytest

import cgen
from cgen import te
from targets import CompileError, compile_c, resolve
from tests.util import assert_matches

SHAPES = [(1, 1, 1), (3, 5, 7), (127, 100, 64), (17, 31, 2), (8, 16, 3), (64, 64, 64)]


def example(M, N, K):
    """The README's example block, as written (without its cache_write comment line)."""
    A = te.placeholder((M, K), "float32", name="A"); B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = te.create_schedule(C)
    i, j = s[C].op.axis
    io, ii = s[C].split(i, factor=8); jo, ji = s[C].split(j, factor=16)
    s[C].reorder(io, jo, k, ii, ji); s[C].unroll(ii); s[C].vectorize(ji)
    return s, [A, B, C]


def register_tile(M, N, K, mr=4, nr=16):
    """The same matmul with cache_write: an mr x nr accumulator tile computed at the tile loop."""
    A = te.placeholder((M, K), "float32", name="A"); B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = te.create_schedule(C)
    CL = s.cache_write(C, "local")
    i, j = s[C].op.axis
    io, ii = s[C].split(i, factor=mr); jo, ji = s[C].split(j, factor=nr)
    s[C].reorder(io, jo, ii, ji); s[C].vectorize(ji)
    s[CL].compute_at(s[C], jo)
    ci, cj = s[CL].op.axis
    (ck,) = s[CL].op.reduce_axis
    s[CL].reorder(ck, ci, cj); s[CL].unroll(ci); s[CL].vectorize(cj)
    return s, [A, B, C]


def blocked_register_tile(M, N, K, mr=4, nr=16, nc=64):
    """register_tile with columns blocked by nc first: when nc does not divide N, the
    last column block has tiles wholly past N (their local tile has a negative extent)."""
    A = te.placeholder((M, K), "float32", name="A"); B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = te.create_schedule(C)
    CL = s.cache_write(C, "local")
    i, j = s[C].op.axis
    io, ii = s[C].split(i, factor=mr)
    j1, j2 = s[C].split(j, factor=nc); jo, ji = s[C].split(j2, factor=nr)
    s[C].reorder(j1, io, jo, ii, ji); s[C].vectorize(ji)
    s[CL].compute_at(s[C], jo)
    ci, cj = s[CL].op.axis
    (ck,) = s[CL].op.reduce_axis
    s[CL].reorder(ck, ci, cj); s[CL].unroll(ci); s[CL].vectorize(cj)
    return s, [A, B, C]


def inputs(M, N, K, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    return a, b


def strict_compile_for(mod) -> None:
    """The module's C builds as an object with gcc and clang, target flags plus -Werror -pedantic."""
    for cc in ("gcc", "clang"):
        compile_c(mod.c_source, mod.target.with_cc(cc), "object", strict=True, name=mod.name)


@pytest.fixture(scope="module")
def mm():
    """A built 127 x 100 x 64 example module."""
    s, args = example(127, 100, 64)
    return cgen.build(s, args, target="host", name="matmul")


# ------------------------------------------------------------------ correct results
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_example_block_matches_numpy(M, N, K):
    s, args = example(M, N, K)
    mod = cgen.build(s, args, target="host", name="matmul")
    a, b = inputs(M, N, K)
    c = np.full((M, N), np.nan, dtype=np.float32)
    mod(a, b, c)
    assert_matches(c, a @ b)


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_register_tile_matches_numpy(M, N, K):
    s, args = register_tile(M, N, K)
    mod = cgen.build(s, args, target="host", name="matmul")
    a, b = inputs(M, N, K, seed=1)
    c = np.full((M, N), np.nan, dtype=np.float32)
    mod(a, b, c)
    assert_matches(c, a @ b)


@pytest.mark.parametrize("M,N,K", [(100, 100, 100), (9, 70, 5), (4, 17, 3)])
def test_blocked_register_tile_past_the_end_matches_numpy(M, N, K):
    # Regression: the vectorized local tile of a column block wholly past N wrote
    # out of bounds (the tail mask came from a negative extent).
    s, args = blocked_register_tile(M, N, K)
    mod = cgen.build(s, args, target="host", name="matmul")
    a, b = inputs(M, N, K, seed=2)
    c = np.full((M, N), np.nan, dtype=np.float32)
    mod(a, b, c)
    assert_matches(c, a @ b)


@pytest.mark.parametrize("make", [example, register_tile], ids=["example", "register_tile"])
def test_c_is_strict_c99_for_gcc_and_clang(make):
    s, args = make(17, 31, 2)
    strict_compile_for(cgen.build(s, args, target="host", name="matmul"))


def test_module_can_be_called_again_on_new_data(mm):
    for seed in (1, 2):
        a, b = inputs(127, 100, 64, seed)
        c = np.zeros((127, 100), dtype=np.float32)
        mm(a, b, c)
        assert_matches(c, a @ b)


# ------------------------------------------------------------------ argument checks
def _args():
    a, b = inputs(127, 100, 64)
    return a, b, np.zeros((127, 100), dtype=np.float32)


def test_shape_mismatch_raises(mm):
    a, b, c = _args()
    with pytest.raises(ValueError, match=r"argument A has shape \(64, 127\), expected \(127, 64\)"):
        mm(np.ascontiguousarray(a.T), b, c)
    with pytest.raises(ValueError, match=r"argument C has shape \(127, 101\)"):
        mm(a, b, np.zeros((127, 101), np.float32))


def test_dtype_mismatch_raises(mm):
    a, b, c = _args()
    with pytest.raises(ValueError, match="argument B has dtype float64, expected float32"):
        mm(a, b.astype(np.float64), c)
    with pytest.raises(ValueError, match="argument C has dtype int32, expected float32"):
        mm(a, b, c.astype(np.int32))


def test_non_contiguous_raises(mm):
    a, b, c = _args()
    wide = np.zeros((127, 128), np.float32)
    with pytest.raises(ValueError, match="argument A must be C-contiguous"):
        mm(wide[:, :64], b, c)
    with pytest.raises(ValueError, match="argument C must be C-contiguous"):
        mm(a, b, np.zeros((100, 127), np.float32).T)


def test_wrong_count_raises(mm):
    a, b, c = _args()
    with pytest.raises(ValueError, match=r"takes 3 arrays \(A, B, C\), got 2"):
        mm(a, b)
    with pytest.raises(ValueError, match=r"takes 3 arrays \(A, B, C\), got 4"):
        mm(a, b, c, c)


def test_non_array_and_read_only_output_raise(mm):
    a, b, c = _args()
    with pytest.raises(ValueError, match="argument A must be a numpy array, got list"):
        mm(a.tolist(), b, c)
    c.flags.writeable = False
    with pytest.raises(ValueError, match="output C is read-only"):
        mm(a, b, c)


def test_argument_missing_from_build_args_raises():
    s, (A, B, C) = example(8, 8, 8)
    with pytest.raises(ValueError, match="input B is read but missing from the build arguments"):
        cgen.build(s, [A, C], target="host", name="matmul")
    s, (A, B, C) = example(8, 8, 8)
    with pytest.raises(ValueError, match="output C is missing from the build arguments"):
        cgen.build(s, [A, B], target="host", name="matmul")


def test_bad_module_name_raises():
    s, args = example(8, 8, 8)
    with pytest.raises(ValueError, match="must be a C identifier"):
        cgen.build(s, args, target="host", name="mat-mul")


# ------------------------------------------------------------------ compile errors
def test_compile_failure_raises_compile_error_with_message_and_c_file():
    s, args = example(8, 8, 8)
    bad = dataclasses.replace(resolve("host"), cflags=resolve("host").cflags + ("-fcgen-no-such-flag",))
    with pytest.raises(CompileError) as info:
        cgen.build(s, args, target=bad, name="matmul")
    err = info.value
    assert "-fcgen-no-such-flag" in err.message          # the compiler's own complaint
    assert "-fcgen-no-such-flag" in str(err) and err.c_path in str(err)
    path = Path(err.c_path)
    assert path.is_file() and path.suffix == ".c"
    assert "int matmul(" in path.read_text()


def test_compile_failure_of_broken_c_names_the_line(monkeypatch):
    build_mod = importlib.import_module("cgen.build")  # `cgen.build` is also the function's name
    real = build_mod.emit_c

    def broken(*a, **kw):
        src, proto = real(*a, **kw)
        return src + "\nint cgen_broken(void) { return undeclared_symbol_xyz; }\n", proto
    monkeypatch.setattr(build_mod, "emit_c", broken)
    s, args = example(4, 4, 4)
    with pytest.raises(CompileError) as info:
        cgen.build(s, args, target="host", name="matmul")
    assert "undeclared_symbol_xyz" in info.value.message
    assert Path(info.value.c_path).is_file()


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("make", [example, register_tile], ids=["example", "register_tile"])
def test_same_schedule_gives_byte_identical_c(make):
    s, args = make(127, 100, 64)
    first = cgen.build(s, args, target="host", name="matmul").c_source
    again = cgen.build(s, args, target="host", name="matmul").c_source
    assert first == again
    s2, args2 = make(127, 100, 64)  # rebuilt from scratch: fresh tensors, same records
    assert cgen.build(s2, args2, target="host", name="matmul").c_source == first
    replay = cgen.Schedule.from_json(args2[2], s.to_json())
    assert cgen.build(replay, args2, target="host", name="matmul").c_source == first


# ------------------------------------------------------------------ sanitizers
@pytest.mark.sanitize
@pytest.mark.parametrize("make,shape", [(example, (127, 100, 64)), (example, (3, 5, 7)),
                                        (register_tile, (17, 31, 2)),
                                        (blocked_register_tile, (100, 100, 100))],
                         ids=["example-127x100x64", "example-3x5x7", "register_tile-17x31x2",
                              "blocked_register_tile-100"])
def test_sanitized_harness_matches_numpy(make, shape):
    M, N, K = shape
    s, args = make(M, N, K)
    mod = cgen.build(s, args, target="host", name="matmul", sanitize=True)
    exe = mod.executable()
    assert exe.is_file()
    a, b = inputs(M, N, K, seed=3)
    c = np.full((M, N), np.nan, dtype=np.float32)
    mod(a, b, c)  # runs the ASan/UBSan harness executable in a child process
    assert_matches(c, a @ b)


def test_gcc_loop_if_conversion_workaround():
    """GCC 12 -O3 with AVX miscompiles this guarded copy (two-iteration inner loop) unless
    loop if-conversion is off: the toolchain driver turns it off for every GCC."""
    import numpy as np
    import cgen
    from cgen import te
    X = te.placeholder((1, 9, 18, 2), name="X")
    P = te.compute((1, 12, 21, 2), lambda n, y, x, i: te.if_then_else(
        te.all(y >= 1, y < 10, x >= 1, x < 19), X[n, y - 1, x - 1, i], 0.0), name="P")
    mod = cgen.build(te.create_schedule(P), [X, P], target="host", name="padcopy")
    x = np.arange(1, 1 + 9 * 18 * 2, dtype=np.float32).reshape(1, 9, 18, 2)
    p = np.full((1, 12, 21, 2), np.nan, np.float32)
    mod(x, p)
    ref = np.zeros_like(p)
    ref[:, 1:10, 1:19, :] = x
    np.testing.assert_array_equal(p, ref)
