"""The ONNX backend node test cases compiled by cgen and run: on the host in-process (the
code path of `cgen run`: compile_model, then CompiledModel.run), a subset under QEMU
(aarch64, armv7), and a subset through the `cgen run` command itself.

The cases are built in memory (onnx.backend.test.case.node.collect_testcases); inputs
feeding shape-like operands are frozen as initializers (freeze_shape_operands).  A case
is tested when cgen takes it: every op has a converter and the frontend imports it.  The
others are skipped for an unsupported op, dtype or attribute, listed with the reason in
docs/ONNX_SUPPORT.md.  Outputs must match the expected ones within
allclose(rtol=1e-3, atol=1e-5), integers and booleans exactly, with the same shape and
dtype."""
from __future__ import annotations

import hashlib
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from cgen.graph import ModelError  # noqa: E402
from cgen.graph.model import compile_model, model_target  # noqa: E402
from cgen.graph.onnx_frontend import CONVERTERS, load_onnx  # noqa: E402
from cgen.graph.onnx_node_tests import (SKIP_KINDS, _primary_op,  # noqa: E402
                                        backend_node_cases, freeze_shape_operands)

RTOL, ATOL = 1e-3, 1e-5
CASES = {c.name: c for c in backend_node_cases()}


def _taken(case) -> bool:
    """Whether cgen takes the case: its ops have converters and the frontend imports the
    model of every data set.  Any other refusal keeps the case, so its test fails."""
    if any(n.op_type not in CONVERTERS for n in case.model.graph.node):
        return False
    try:
        for inputs, _ in case.data_sets:
            load_onnx(freeze_shape_operands(case.model, list(inputs))[0])
    except ModelError as e:
        return e.kind not in SKIP_KINDS
    return True


def _rank(name: str, salt: str = "") -> str:
    """A stable pseudo-random order of the cases (the same on every run and machine)."""
    return hashlib.sha256((salt + name).encode()).hexdigest()


def _op(name: str) -> str:
    """The op a case is about (as docs/ONNX_SUPPORT.md counts it)."""
    return _primary_op(name, tuple(sorted({n.op_type for n in CASES[name].model.graph.node})))


SUPPORTED = sorted(name for name, case in CASES.items() if _taken(case))
BY_OP: dict = {}
for _name in SUPPORTED:
    BY_OP.setdefault(_op(_name), []).append(_name)
OPS = sorted(BY_OP)


def _one_per_op(ops, salt: str) -> list:
    return [min(BY_OP[op], key=lambda n: _rank(n, salt)) for op in ops]


def _spread(items: list, n: int) -> list:
    """n items spread evenly over the list (all of it when shorter)."""
    if len(items) <= n:
        return list(items)
    return [items[round(k * (len(items) - 1) / (n - 1))] for k in range(n)]


# one case per op, of ~40 ops spread over the alphabet: the quick host subset
FAST = _one_per_op(_spread(OPS, 40), "host")
# other salts: where an op has several cases, most likely another one than FAST's
QEMU = _one_per_op(_spread(OPS, 25), "qemu")
CLI = _one_per_op(_spread(OPS, 20), "cli")
# cases that failed compiled before: C that did not compile (unused input or harness
# function), int Div / Pow lowering, uint8 pooling, wrap padding, empty tensors, runtime
# quantisation parameters
REGRESSIONS = [n for n in (
    "test_shape_clip_end", "test_size", "test_constant", "test_depthtospace_example_expanded",
    "test_center_crop_pad_crop_negative_axes_hwc_expanded", "test_pow_types_int32_float32",
    "test_pow_types_int64_int64", "test_div_int32_trunc", "test_div_uint8",
    "test_maxpool_2d_uint8", "test_wrap_pad", "test_rotary_embedding_interleaved_expanded",
    "test_causal_conv_with_state_kernel_size_one_expanded", "test_constantofshape_int_shape_zero",
    "test_reduce_max_empty_set", "test_split_zero_size_splits_opset18", "test_qlinearconv")
    if n in CASES and n not in FAST]
REST = [n for n in SUPPORTED if n not in set(FAST) | set(REGRESSIONS)]


# ---------------------------------------------------------------- checking
def assert_outputs(got: dict, model, expected) -> None:
    names = [o.name for o in model.graph.output]
    assert sorted(got) == sorted(names)
    for name, want in zip(names, expected):
        want = np.asarray(want)
        out = np.asarray(got[name])
        assert out.shape == want.shape and out.dtype == want.dtype, \
            (name, out.shape, out.dtype, want.shape, want.dtype)
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL, equal_nan=True,
                                       err_msg=name)
        else:
            np.testing.assert_array_equal(out, want, err_msg=name)


def run_compiled(case, target: str = "host") -> None:
    """Every data set of the case compiled for the target and run, checked."""
    for inputs, expected in case.data_sets:
        model, feeds = freeze_shape_operands(case.model, list(inputs))
        cm = compile_model(model, target)
        assert_outputs(cm.run(feeds), model, expected)


def need_target(target: str) -> None:
    from targets.runner import runner_for
    t = model_target(target)
    if shutil.which(t.cc) is None:
        pytest.skip(f"{t.cc} not installed")
    emulator = (runner_for(t).prefix or ("",))[0]
    if emulator and shutil.which(emulator) is None:
        pytest.skip(f"{emulator} not installed")


# ---------------------------------------------------------------- the selections
def test_the_selections_cover_many_ops():
    assert len(SUPPORTED) >= 400 and len(OPS) >= 40
    assert len(FAST) == len(set(FAST)) >= 35
    assert len({_op(n) for n in QEMU}) == len(QEMU) >= 20
    assert len(CLI) >= 18
    assert set(FAST) | set(REGRESSIONS) | set(REST) == set(SUPPORTED)


# ---------------------------------------------------------------- host, in-process
@pytest.mark.parametrize("name", FAST)
def test_case_on_host(name):
    run_compiled(CASES[name])


@pytest.mark.parametrize("name", REGRESSIONS)
def test_regression_on_host(name):
    assert name in SUPPORTED, f"{name}: the frontend refuses it"
    run_compiled(CASES[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", REST)
def test_every_other_case_on_host(name):
    run_compiled(CASES[name])


# ---------------------------------------------------------------- QEMU
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
@pytest.mark.parametrize("name", QEMU)
def test_case_under_qemu(name, target):
    need_target(target)
    run_compiled(CASES[name], target)


# ---------------------------------------------------------------- the command
def _cgen_command() -> list:
    """The installed `cgen` script beside this Python, else the same entry point."""
    script = Path(sys.executable).with_name("cgen")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cgen.cli import main; sys.exit(main())"]


@pytest.mark.parametrize("name", CLI)
def test_case_through_cgen_run(name, tmp_path):
    inputs, expected = CASES[name].data_sets[0]
    model, feeds = freeze_shape_operands(CASES[name].model, list(inputs))
    onnx.save(model, str(tmp_path / "model.onnx"))
    np.savez(tmp_path / "in.npz", **feeds)
    proc = subprocess.run(_cgen_command() + ["run", str(tmp_path / "model.onnx"), "--target",
                                             "host", "--inputs", str(tmp_path / "in.npz"),
                                             "--outputs", str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        got = {k: z[k] for k in z.files}
    assert_outputs(got, model, expected)


# ---------------------------------------------------------------- integer Div and Pow
def _binary_model(op: str, dtype, a, b):
    from onnx import helper as h
    from onnx import numpy_helper
    t = numpy_helper.from_array(np.asarray(a, dtype)).data_type
    g = h.make_graph([h.make_node(op, ["a", "b"], ["y"])], "g",
                     [h.make_tensor_value_info("a", t, a.shape),
                      h.make_tensor_value_info("b", t, b.shape)],
                     [h.make_tensor_value_info("y", t, a.shape)])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 15)])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_integer_div_truncates_toward_zero(dtype):
    rng = np.random.default_rng(3)
    lo = 0 if dtype == np.uint8 else -100
    a = rng.integers(lo, 100, (64,)).astype(dtype)
    b = rng.integers(lo, 100, (64,)).astype(dtype)
    b[b == 0] = 7
    want = np.array([int(x / y) for x, y in zip(a.tolist(), b.tolist())], dtype)   # C's `/`
    got = compile_model(_binary_model("Div", dtype, a, b)).run({"a": a, "b": b})["y"]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_integer_pow_is_exact(dtype):
    """Bases and exponents whose powers fit the type, (-1) ** b for large b, and negative
    exponents (1 / a ** -b truncated)."""
    unsigned = dtype == np.uint8
    bases = [0, 1, 2, 3, 5] + ([] if unsigned else [-1, -2, -3])
    exps = list(range(0, 6))
    pairs = [(x, e) for x in bases for e in exps if abs(x) ** e <= np.iinfo(dtype).max // 2]
    if not unsigned:
        pairs += [(-1, 100), (-1, 101), (1, -3), (-1, -3), (-1, -4), (2, -1), (3, -2)]
    a = np.array([p[0] for p in pairs], dtype)
    b = np.array([p[1] for p in pairs], dtype)
    want = np.array([int(x ** e) if e >= 0 else int(1 / x ** -e) for x, e in pairs], dtype)
    got = compile_model(_binary_model("Pow", dtype, a, b)).run({"a": a, "b": b})["y"]
    np.testing.assert_array_equal(got, want)
