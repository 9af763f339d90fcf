"""`python -m bench gemm --json` prints one well-formed JSON record per size."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"suite", "case", "ratio", "unit", "cgen_s", "peer", "peer_s", "gflops",
            "peak_fraction", "schedule"}


def run_bench(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gemm_records():
    proc = run_bench("gemm", "--json", "--sizes", "64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no output; stderr:\n{proc.stderr[-3000:]}"
    return [json.loads(ln) for ln in lines]  # every line must be JSON


def test_one_record_per_size_with_required_keys(gemm_records):
    assert len(gemm_records) == 1
    r = gemm_records[0]
    assert REQUIRED <= set(r), REQUIRED - set(r)
    assert r["suite"] == "gemm" and r["case"] == "gemm-64"
    assert r["unit"] == "s" and r["peer"] == "numpy"


def test_ratio_is_peer_over_cgen_and_times_are_positive(gemm_records):
    for r in gemm_records:
        for key in ("ratio", "cgen_s", "peer_s", "gflops"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        assert r["ratio"] == pytest.approx(r["peer_s"] / r["cgen_s"], rel=1e-9)
        assert r["gflops"] == pytest.approx(2 * 64 ** 3 / r["cgen_s"] / 1e9, rel=1e-9)


def test_record_describes_schedule_blas_and_timing(gemm_records):
    r = gemm_records[0]
    assert isinstance(r["schedule"], list) and all("prim" in rec for rec in r["schedule"])
    assert r["schedule_name"] in [c["name"] for c in r["candidates"]]
    assert r["blas"]["num_threads"] == 1
    assert r["timing"]["stat"] == "median" and r["timing"]["threads"] == 1
    assert len(r["timing"]["cgen_times"]) == r["timing"]["repeats"] >= 1
    if r["peak_fraction"] is not None:
        assert r["peak_fraction"] == pytest.approx(r["gflops"] / r["peak_gflops"])


def test_peak_option_and_table_output():
    proc = run_bench("gemm", "--sizes", "32", "--repeats", "1", "--min-repeat-ms", "1",
                     "--peak-gflops", "50", "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "cgen GFLOP/s" in out and "numpy GFLOP/s" in out and "ratio" in out
    assert "threads=1" in out and "median" in out and "peak: 50 GFLOP/s" in out
    assert proc.stderr == ""


def test_unknown_suite_and_bad_sizes_are_usage_errors():
    proc = run_bench("nosuch")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = run_bench("gemm", "--sizes", "0")
    assert proc.returncode == 2 and "positive integers" in proc.stderr


@pytest.mark.parametrize("n", [128, 100])
def test_gemm_schedule_families_are_correct(n):
    """Every schedule family the bench tries computes A @ B (also when tiles do not divide n)."""
    import numpy as np

    import cgen
    from bench import gemm
    from tests.util import assert_matches

    makers = {"ikj": gemm.loop_ikj, "regtile": gemm.register_tile(8, 32),
              "regtile-nc": gemm.register_tile(4, 16, 64), "kblock": gemm.k_blocked(8, 32, 32, 64, 64)}
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    for name, make in makers.items():
        s, args = make(n)
        mod = cgen.build(s, args, target="host", name=f"gemm_{name.replace('-', '_')}")
        c = np.full((n, n), np.nan, dtype=np.float32)
        mod(a, b, c)
        assert_matches(c, a @ b)


def test_gemm_candidates_are_named_uniquely_and_fit_the_size():
    from bench import gemm
    for n in (64, 256, 512, 1024):
        names = [c.name for c in gemm.candidates(n)]
        assert len(names) == len(set(names)) and names[0] == "ikj-vec"
    assert any(name.startswith("kblock") for name in (c.name for c in gemm.candidates(1024)))


def test_peer_environment_follows_the_target_isa(monkeypatch):
    """x86-avx2 rows compare with OpenBLAS's AVX2 (Haswell) kernel; other rows with the
    kernel OpenBLAS picks itself (stale OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed)."""
    from bench import gemm
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Sandybridge")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "262144")
    avx2, avx512 = gemm.peer_env("x86-avx2"), gemm.peer_env("x86-avx512")
    assert avx2["OPENBLAS_CORETYPE"] == "Haswell" and "OPENBLAS_L2_SIZE" not in avx2
    assert "OPENBLAS_CORETYPE" not in avx512 and "OPENBLAS_L2_SIZE" not in avx512


def test_avx2_target_row_runs_the_default_against_the_avx2_kernel():
    from targets.target import _cpu_flags
    if not {"avx2", "fma"} <= _cpu_flags():
        pytest.skip("this machine cannot run x86-avx2 code")
    proc = run_bench("gemm", "--json", "--sizes", "64", "--threads", "1", "--target", "x86-avx2",
                     "--repeats", "1", "--min-repeat-ms", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip()]
    assert r["case"] == "gemm-64-x86-avx2" and r["target"] == "x86-avx2" and r["isa"] == "avx2"
    assert r["blas"]["coretype"] == "Haswell" and r["blas"]["architecture"].lower() == "haswell"
    assert r["schedules"] == "default" and r["schedule_name"].startswith("default-MR")
    assert r["ratio"] == pytest.approx(r["peer_s"] / r["cgen_s"], rel=1e-9)


def test_cpu_clock_rows_say_so():
    proc = run_bench("gemm", "--json", "--sizes", "48", "--threads", "1", "--clock", "cpu",
                     "--repeats", "2", "--min-repeat-ms", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip()]
    assert r["timing"]["clock"] == "cpu" and len(r["timing"]["cgen_times"]) == 2
    assert r["cgen_s"] > 0 and r["peer_s"] > 0
    assert r["ratio"] == pytest.approx(r["peer_s"] / r["cgen_s"], rel=1e-9)


def test_calibrate_grows_by_bounded_steps_from_a_zero_reading():
    """A CPU clock reads 0 for short runs: the count must not jump to min_repeat / 1e-9."""
    from bench import common

    class Clock:  # a 4 ms tick: anything shorter reads as zero
        asked = []

        def per_call(self, number):
            self.asked.append(number)
            return (number * 2e-6 // 4e-3) * 4e-3 / number

    n = common.calibrate(Clock(), 0.2)
    steps = Clock.asked
    assert all(b <= 100 * a for a, b in zip(steps, steps[1:])), steps
    assert max(steps) <= common.MAX_CALLS
    assert n * 2e-6 >= 0.2 or n == common.MAX_CALLS
