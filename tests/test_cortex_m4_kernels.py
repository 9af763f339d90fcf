"""Single kernels on target "cortex-m4": `cgen.build(..., target="cortex-m4")` gives a
module called like a host one, run as a bare-metal image under `qemu-system-arm -M
mps2-an386` with semihosting (targets.runner's table, targets.semihost), and timed
there (emulated times)."""
from __future__ import annotations

import importlib
import json
import tempfile

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.cli import main
from cgen.ops.nn import conv2d_nchw
from cgen.ops.registry import template
from targets import resolve
from tests.util import skip_without_system_qemu
from targets.runner import runner_for
from targets.semihost import SemihostRunner
from targets.toolchain import cache_dir

TARGET = "cortex-m4"


@pytest.fixture(autouse=True)
def need_cortex_m4():
    skip_without_system_qemu(TARGET)


def matmul(M, N, K):
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    return te.create_schedule(C), [A, B, C]


def conv2d_numpy(x, w, stride, pad):
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, f, oh, ow), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += np.einsum("nchw,fc->nfhw", patch, w[:, :, i, j])
    return out.astype(np.float32)


def test_the_runner_table_names_the_semihosting_runner():
    r = runner_for(resolve(TARGET))
    assert isinstance(r, SemihostRunner) and r.emulated and r.board.machine == "mps2-an386"


def test_matmul_te_default_schedule():
    """Odd sizes (no tile divides them); the harness opens its files itself."""
    rng = np.random.default_rng(0)
    mod = cgen.build(*matmul(13, 17, 11), target=TARGET, name="mm")
    assert "argv[a0" not in mod.harness_source()
    a, b = rng.standard_normal((13, 11), np.float32), rng.standard_normal((11, 17), np.float32)
    c = np.full((13, 17), np.nan, np.float32)
    mod(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


def test_conv2d_te_default_schedule():
    rng = np.random.default_rng(1)
    X = te.placeholder((1, 3, 9, 9), "float32", name="X")
    W = te.placeholder((4, 3, 3, 3), "float32", name="W")
    Y, _ = conv2d_nchw(X, W, stride=2, padding=1)
    mod = cgen.build(te.create_schedule(Y), [X, W, Y], target=TARGET, name="conv")
    x, w = rng.standard_normal((1, 3, 9, 9), np.float32), rng.standard_normal((4, 3, 3, 3), np.float32)
    y = np.full(tuple(Y.shape), np.nan, np.float32)
    mod(x, w, y)
    np.testing.assert_allclose(y, conv2d_numpy(x, w, 2, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,shape", [("gemm", (24, 20, 16)),
                                        ("conv2d_im2col", (1, 4, 7, 7, 6, 3, 3, 1, 1))])
def test_template_default_config(name, shape):
    """Templates from cgen/ops with their default config for cortex-m4, against their
    numpy references."""
    tmpl = template(name)
    wl = tmpl.workload(*shape)
    s, args = tmpl.build(wl, TARGET, tmpl.default(wl, TARGET))
    mod = cgen.build(s, args, target=TARGET, name=name)
    inputs = tmpl.inputs(wl, np.random.default_rng(2))
    arrays = [a.copy() for a in inputs]
    for a in arrays[len(arrays) - len(mod.func.outputs):]:
        a.fill(np.nan)
    mod(*arrays)
    want = tmpl.reference(wl, inputs)
    got = dict(zip([p.name for p in mod.params], arrays))
    assert want and set(want) <= set(got)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_benchmark_gives_positive_emulated_times():
    mod = cgen.build(*matmul(8, 8, 8), target=TARGET, name="mm_bench")
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((8, 8), np.float32), rng.standard_normal((8, 8), np.float32)
    res = mod.benchmark(a, b, np.zeros((8, 8), np.float32), repeat=3, number=2, timeout=120)
    assert res.error is None and res.emulated
    assert len(res.times) == 3 and all(t > 0 for t in res.times)
    # one call of an 8x8x8 matmul is far under the centiseconds of newlib's clock()
    assert min(res.times) < 5e-3
    np.testing.assert_allclose(res.outputs["C"], a @ b, rtol=1e-5, atol=1e-5)


def test_bad_input_is_a_value_error_as_on_the_host():
    mod = cgen.build(*matmul(4, 5, 6), target=TARGET, name="mm_bad")
    a, b = np.zeros((4, 6), np.float32), np.zeros((6, 5), np.float32)
    with pytest.raises(ValueError, match=r"argument C has shape \(5, 4\), expected \(4, 5\)"):
        mod(a, b, np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="argument A has dtype float64"):
        mod.benchmark(a.astype(np.float64), b, np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="sanitizers"):
        cgen.build(*matmul(4, 5, 6), target=TARGET, sanitize=True)


def test_start_up_object_is_shared_through_the_cache(monkeypatch, tmp_path):
    """Two kernels from an empty cache: two harness objects, one start-up object."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for n in (3, 5):
        cgen.build(*matmul(n, n, n), target=TARGET, name=f"mm{n}").executable()
    assert cache_dir().parent == tmp_path
    assert len(list(cache_dir().glob("*/extra0.o"))) == 2
    assert len(list(cache_dir().glob("*/extra1.o"))) == 1


def test_benchmark_calibrates_number_to_the_min_repeat_time(monkeypatch):
    """min_repeat_ms: probes of one call (twice), then more, until a repeat fills it."""
    build_mod = importlib.import_module("cgen.build")   # cgen.build is also the function
    calls = []

    class Spy:
        def __init__(self, runner):
            self.runner = runner

        def run(self, *args, **kw):
            calls.append((kw["repeat"], kw["number"]))
            return self.runner.run(*args, **kw)
    monkeypatch.setattr(build_mod, "runner_for", lambda t: Spy(runner_for(t)))
    mod = cgen.build(*matmul(8, 8, 8), target=TARGET, name="mm_bench")
    a = np.ones((8, 8), np.float32)
    res = mod.benchmark(a, a, np.zeros((8, 8), np.float32), repeat=2, min_repeat_ms=5.0,
                        timeout=120)
    assert res.error is None and len(res.times) == 2
    assert calls[0] == (2, 1) and len(calls) >= 2 and all(r == 2 for r, _ in calls)
    n = [n for _, n in calls]
    assert n == sorted(n) and n[-1] > 1
    assert n[-1] * min(res.times) > 1e-3     # the repeats last about min_repeat_ms, not one call


def test_cgen_tune_on_cortex_m4(tmp_path, capsys):
    """`cgen tune --target cortex-m4` with no --device: the Measurer runs the candidates
    through the target's runner; every trial measured and checked, none failed."""
    log = tmp_path / "m4.jsonl"
    assert main(["tune", "--workload", "gemm:16,16,16", "--target", TARGET, "--trials", "3",
                 "--batch", "3", "--log", str(log), "--no-progress", "--no-pretrained",
                 "--repeat", "2", "--min-repeat-ms", "2"]) == 0
    assert "3 trials (3 new, 0 errors)" in capsys.readouterr().out
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(recs) == 3 and all(r["target"] == TARGET and r["error"] is None and
                                  min(r["costs"]) > 0 for r in recs)
