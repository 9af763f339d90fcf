"""Cortex-M4 (target "cortex-m4"): bare metal under `qemu-system-arm -M mps2-an386` with
semihosting.  Models compile and run one after another from an empty cache, and the
harness moves any number of inputs and outputs of any dtype."""
from __future__ import annotations

from pathlib import Path
import subprocess
import sys
import tempfile

import numpy as np
import pytest

pytest.importorskip("onnx")

import onnx  # noqa: E402
from onnx import helper as h, numpy_helper  # noqa: E402

from cgen.graph.model import compile_model  # noqa: E402
from targets import resolve  # noqa: E402
from tests.util import skip_without_system_qemu  # noqa: E402

TARGET = "cortex-m4"
# a repeating cycle of every dtype models carry, so n inputs / outputs mix them
DTYPES = ("float32", "int8", "uint8", "int32", "int16", "int64")


def need_cortex_m4():
    skip_without_system_qemu(TARGET)


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """The toolchain's cache (and every temporary file) in a fresh directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def io_model(n_in: int, n_out: int, shape=(2, 3)):
    """y_j = cast_j(sum_k (k+1) * float(x_k) + j): every output reads every input, and
    the weights and offsets make a swapped or misplaced file visible.  Inputs hold 0..3,
    so every sum is exact and fits int8."""
    onnx_type = onnx.helper.np_dtype_to_tensor_dtype
    dt_in = [DTYPES[k % len(DTYPES)] for k in range(n_in)]
    dt_out = [DTYPES[(j + 1) % len(DTYPES)] for j in range(n_out)]
    nodes, inits, terms = [], {}, []
    for k in range(n_in):
        src = f"x{k}"
        if dt_in[k] != "float32":
            nodes.append(h.make_node("Cast", [src], [f"f{k}"], to=onnx.TensorProto.FLOAT))
            src = f"f{k}"
        inits[f"w{k}"] = np.array(k + 1, np.float32)
        nodes.append(h.make_node("Mul", [src, f"w{k}"], [f"t{k}"]))
        terms.append(f"t{k}")
    nodes.append(h.make_node("Sum", terms, ["s"]))
    for j in range(n_out):
        inits[f"c{j}"] = np.array(j, np.float32)
        dst = f"y{j}" if dt_out[j] == "float32" else f"u{j}"
        nodes.append(h.make_node("Add", ["s", f"c{j}"], [dst]))
        if dst != f"y{j}":
            nodes.append(h.make_node("Cast", [dst], [f"y{j}"],
                                     to=onnx_type(np.dtype(dt_out[j]))))
    graph = h.make_graph(
        nodes, f"io_{n_in}_{n_out}",
        [h.make_tensor_value_info(f"x{k}", onnx_type(np.dtype(d)), list(shape))
         for k, d in enumerate(dt_in)],
        [h.make_tensor_value_info(f"y{j}", onnx_type(np.dtype(d)), list(shape))
         for j, d in enumerate(dt_out)],
        initializer=[numpy_helper.from_array(a, k) for k, a in inits.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    r = np.random.default_rng(n_in * 10 + n_out)
    feeds = {f"x{k}": r.integers(0, 4, shape).astype(d) for k, d in enumerate(dt_in)}
    s = sum((k + 1) * feeds[f"x{k}"].astype(np.float64) for k in range(n_in))
    want = {f"y{j}": (s + j).astype(d) for j, d in enumerate(dt_out)}
    return model, feeds, want


def run_exact(cm, feeds, want):
    got = cm.run(feeds, timeout=120)
    assert set(got) == set(want)
    for k, a in want.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape, k
        np.testing.assert_array_equal(got[k], a, err_msg=k)


# ====================================================================== the target
def test_cortex_m4_is_a_builtin_target():
    t = resolve(TARGET)
    assert t.name == TARGET and t.bare_metal and t.arch == "armv7e-m" and not t.threads
    assert "-mcpu=cortex-m4" in t.cflags and "-mfloat-abi=hard" in t.cflags
    from targets.semihost import board_for
    assert board_for(t).machine == "mps2-an386"
    out = subprocess.run([sys.executable, "-m", "cgen.cli", "targets"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    line = next(ln for ln in out.splitlines() if ln.split()[0] == TARGET)
    assert "arm-none-eabi-gcc" in line and "qemu-system-arm" in line


# ====================================================================== cold cache, in sequence
def test_two_models_in_sequence_from_an_empty_cache(empty_cache):
    """The second model's harness and start-up code hash like the first's: the cache must
    still hold every artifact under the name it is linked by (it once named the start-up
    object after the first model, and the second link found no file)."""
    need_cortex_m4()
    pytest.importorskip("onnxruntime")
    from tests.test_graph_frontend import lenet, mlp, ort_run
    from targets.toolchain import cache_dir
    assert cache_dir().parent == empty_cache and not any(cache_dir().iterdir())
    for name, build in (("mlp", mlp), ("lenet", lenet)):
        model, feeds = build()
        cm = compile_model(model, TARGET, name=name)
        got, want = cm.run(feeds, timeout=120), ort_run(model, feeds)
        for k, a in want.items():
            np.testing.assert_allclose(got[k], a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()),
                                       err_msg=f"{name}:{k}")
    assert len(list(cache_dir().glob("*/extra1.o"))) == 1     # one start-up object, shared


def test_same_source_under_two_names_is_two_artifacts(empty_cache):
    """A cache key covers the artifact's name: the same source built as two names gives
    two files, each where its caller looks for it."""
    need_cortex_m4()
    from targets import compile_c
    t = resolve(TARGET)
    a = compile_c("int cg_one(void) { return 1; }\n", t, "object", name="first")
    b = compile_c("int cg_one(void) { return 1; }\n", t, "object", name="second")
    assert a.name == "first.o" and b.name == "second.o" and a.exists() and b.exists()


# ====================================================================== any number of files
QUICK_IO = [(1, 1), (2, 4), (1, 6), (8, 8)]
SLOW_IO = [(1, 5), (2, 6), (3, 7), (4, 2), (5, 5), (6, 1), (7, 3), (8, 1), (1, 8), (6, 8)]


@pytest.mark.parametrize("n_in,n_out", QUICK_IO + [pytest.param(*io, marks=pytest.mark.slow)
                                                   for io in SLOW_IO])
def test_inputs_and_outputs_of_mixed_dtypes(n_in, n_out):
    """1..8 inputs and outputs cycling through every dtype, exact; beyond a handful of
    files their names no longer fit newlib's 256-byte semihosting command line."""
    need_cortex_m4()
    model, feeds, want = io_model(n_in, n_out)
    cm = compile_model(model, TARGET, name=f"io_{n_in}_{n_out}")
    assert "argv[a0" not in cm.harness_source()     # no file name travels on the command line
    run_exact(cm, feeds, want)


def test_timing_with_many_files():
    """--time REPEAT NUMBER still reaches main beside 16 parameter files."""
    need_cortex_m4()
    model, feeds, want = io_model(8, 8)
    cm = compile_model(model, TARGET, name="io_8_8")
    times = cm.time(feeds, repeat=2, min_repeat_s=0.001, timeout=120)
    assert len(times) == 2 and all(t > 0 for t in times)
    run_exact(cm, feeds, want)
