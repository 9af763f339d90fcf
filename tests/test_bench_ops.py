"""`python -m bench ops`: a tiny run (one GEMM case, a 2-config sweep) prints one JSON
record per case with the agreed schema, and appends its sweep to a tuning log."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cgen.autotune.log import read_log

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"suite", "case", "ratio", "unit", "cgen_s", "peer", "peer_s", "default_s", "gflops",
            "peak_fraction", "config", "default_config", "timing", "blas", "default_over_best"}


def run_bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "bench", "ops", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    log = tmp_path_factory.mktemp("ops") / "log.jsonl"
    proc = run_bench("--json", "--cases", "gemm-256", "--sweep", "2", "--repeats", "3",
                     "--min-repeat-ms", "5", "--log", str(log))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines], log, proc.stderr


def test_one_record_with_the_schema(tiny):
    records, _, _ = tiny
    assert [r["case"] for r in records] == ["gemm-256"]
    r = records[0]
    assert REQUIRED <= set(r), REQUIRED - set(r)
    assert r["suite"] == "ops" and r["unit"] == "s" and r["peer"] == "numpy"
    for key in ("ratio", "cgen_s", "peer_s", "default_s", "gflops", "default_over_best"):
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert r["ratio"] == pytest.approx(r["peer_s"] / r["cgen_s"], rel=1e-9)
    assert r["gflops"] == pytest.approx(2 * 256 ** 3 / r["cgen_s"] / 1e9, rel=1e-9)
    assert r["default_over_best"] == pytest.approx(r["cgen_s"] / r["default_s"], rel=1e-9)
    assert set(r["config"]) == {"index", "knobs"} and "MR" in r["config"]["knobs"]
    assert r["timing"]["stat"] == "median" and r["timing"]["threads"] == 1
    assert len(r["timing"]["cgen_times"]) == r["timing"]["repeats"] == 3
    assert r["blas"]["num_threads"] == 1
    if r["peak_fraction"] is not None:
        assert r["peak_fraction"] == pytest.approx(r["gflops"] / r["peak_gflops"])


def test_sweep_records_are_logged(tiny):
    records, log, _ = tiny
    recs = read_log(log)
    assert len(recs) == 2
    assert all(rec.workload == records[0]["workload"] for rec in recs)
    assert all(rec.ok and rec.cost_unit == "s" and rec.target.startswith("host-") for rec in recs)
    assert recs[0].config == records[0]["default_config"]


def test_missing_case_module_is_not_available(monkeypatch):
    from bench import ops
    monkeypatch.setattr(ops, "CASE_MODULES", ("bench.ops_dense", "bench.ops_nosuch"))
    cases, missing = ops.load_cases("host", ["gemm-256"])
    assert [c["name"] for c in cases] == ["gemm-256"]
    assert [m for m, _ in missing] == ["bench.ops_nosuch"] and "not available" in missing[0][1]


def test_sweep_starts_with_the_default_and_is_seeded():
    from bench.ops import sweep_configs
    from cgen.ops.gemm_template import GemmTemplate
    t = GemmTemplate()
    wl = t.workload(256, 256, 256)
    a = sweep_configs(t, wl, "host", 8, seed=3)
    b = sweep_configs(t, wl, "host", 8, seed=3)
    assert a == b and a[0] == t.default(wl, "host")
    assert len({c.index for c in a}) == len(a) >= 4


def test_table_mode_prints_how_it_was_measured(tmp_path):
    proc = run_bench("--cases", "gemm-256", "--sweep", "1", "--repeats", "1", "--min-repeat-ms", "1",
                     "--log", str(tmp_path / "log.jsonl"), "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for text in ("gemm-256", "default/best", "ratio", "threads=1", "median", "numpy BLAS"):
        assert text in out, text
