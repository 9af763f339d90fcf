"""`python -m bench tuner`: a tiny pool (gemm 64x64x64, 40 configs) is measured once into
a cached log, then replayed with no measurement at all; the JSON rows carry the agreed
fields.  Not timed, and the 1/3 goal is not asserted (a 40-config pool says nothing)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import bench.__main__ as bench_main
import bench.tuner as bt
from cgen.autotune.log import read_log
from cgen.autotune.task import parse_workload

SPEC = "gemm:64,64,64"
POOL = 40
REQUIRED = {"suite", "case", "ratio", "unit", "rank_accuracy", "reg_accuracy", "seed", "trials",
            "random_trials", "model_trials", "reg_trials", "ratio_reg", "predict_rate", "pool",
            "pool_best_gflops", "threshold", "batch_size", "target", "workload", "pool_at_threshold",
            "random_expected", "pass_agreement"}


def parse(*argv):
    import argparse
    from bench import common
    p = argparse.ArgumentParser()
    common.add_common_arguments(p)
    bt.add_arguments(p)
    return p.parse_args(argv)


def run_bench(capsys, *args) -> list:
    rc = bench_main.main(["tuner", "--json", "-q", *args])
    assert rc == 0
    out = capsys.readouterr().out
    return [json.loads(ln) for ln in out.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tuner-pool")


@pytest.fixture(scope="module")
def measured(pool_dir):
    """The pool measured once, through the bench's own code (no replay)."""
    args = parse("--workloads", SPEC, "--pool-size", str(POOL), "--pool-log", str(pool_dir),
                 "--reuse-log", "/nonexistent", "--pool-passes", "1", "--pool-repeats", "1",
                 "--pool-min-repeat-ms", "1", "-q")
    (case,) = bt.load_pools(args, bt.select_workloads(SPEC))
    return case["task"], case["pool"], case["records"]


def test_pool_is_measured_once_and_logged(measured, pool_dir):
    task, pool, recs = measured
    assert len(pool) == POOL == len(set(pool))
    assert set(recs) == set(pool)
    logged = [r for p in pool_dir.glob("*.jsonl") for r in read_log(p)]
    assert len(logged) == POOL and all(task.matches(r) for r in logged)
    assert sum(r.ok for r in recs.values()) >= POOL // 2


def test_replay_never_measures(measured, pool_dir, capsys, monkeypatch):
    task, pool, recs = measured

    def no_measuring(*a, **k):
        raise AssertionError("the replay must not measure")
    monkeypatch.setattr("cgen.autotune.measure.Measurer.measure", no_measuring)
    monkeypatch.setattr("cgen.autotune.measure.measure_config", no_measuring)
    rows = run_bench(capsys, "--workloads", SPEC, "--pool-size", str(POOL), "--pool-log",
                     str(pool_dir), "--reuse-log", "/nonexistent", "--pool-passes", "1", "--seeds", "2",
                     "--batch-size", "4")
    assert [r["seed"] for r in rows] == [0, 1]
    for r in rows:
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert r["suite"] == "tuner" and r["case"] == SPEC and r["unit"] == "trials"
        assert r["pool"] == POOL and r["batch_size"] == 4 and r["threshold"] == 0.95
        assert r["target"].startswith("host-")
        for m in ("random", "rank", "reg"):
            assert 1 <= r["trials"][m] <= POOL
        assert r["random_trials"] == r["trials"]["random"]
        assert r["model_trials"] == r["trials"]["rank"]
        assert r["ratio"] == pytest.approx(r["trials"]["random"] / r["trials"]["rank"])
        assert r["ratio_reg"] == pytest.approx(r["trials"]["random"] / r["trials"]["reg"])
        assert 0.0 <= r["rank_accuracy"] <= 1.0 and 0.0 <= r["reg_accuracy"] <= 1.0
        assert math.isfinite(r["predict_rate"]) and r["predict_rate"] > 0
    # the log is untouched by the replay
    assert sum(len(read_log(p)) for p in pool_dir.glob("*.jsonl")) == POOL


def test_replay_measurer_refuses_configs_outside_the_pool(measured):
    task, pool, recs = measured
    m = bt.ReplayMeasurer({i: recs[i] for i in pool[:5]})
    space = task.space()
    assert [r.config["index"] for r in m.measure(task, [space.get(i) for i in pool[:5]])] \
        == pool[:5]
    outside = next(i for i in range(space.size) if i not in pool)
    with pytest.raises(AssertionError):
        list(m.measure(task, [space.get(outside)]))


def test_trials_to_threshold(measured):
    task, pool, recs = measured
    idx, thr = bt.pool_throughputs(task, recs, pool)
    best = float(thr.max())
    for method in ("random", "rank"):
        r = bt.replay(task, {int(i): recs[int(i)] for i in idx}, method, 0, 4, 0.95 * best)
        assert 1 <= r["trials"] <= len(idx)
    unreachable = bt.replay(task, {int(i): recs[int(i)] for i in idx}, "random", 0, 4, 2 * best)
    assert unreachable["trials"] == len(idx)


def test_pool_is_deterministic_and_a_prefix():
    task = parse_workload("gemm:512,512,512", "host")
    a = bt.pool_indices(task, 300)
    assert a == bt.pool_indices(task, 300)
    assert bt.pool_indices(task, 100) == a[:100]
    assert a[0] == task.template.default(task.workload, task.target).index
    dense = parse_workload("dense:1,1000,1024", "host")
    assert sorted(bt.pool_indices(dense, 2000)) == list(range(dense.space().size))


def test_workload_selection():
    assert bt.select_workloads("") == list(bt.WORKLOADS)
    assert bt.select_workloads("gemm-512,gemm:64,64,64,dense-1024x1000") == [
        ("gemm-512", "gemm:512,512,512"), ("gemm:64,64,64", "gemm:64,64,64"),
        ("dense-1024x1000", "dense:1,1000,1024")]
    with pytest.raises(SystemExit):
        bt.select_workloads("nonsense")


def test_passes_resume_and_keep_the_fastest(tmp_path, monkeypatch):
    """Pass 2 measures every config again in its own order; a second run measures nothing;
    a config's pool record is its fastest correct measurement (fake measurer)."""
    from cgen.autotune.measure import measure_input
    from cgen.autotune.log import MeasureResult, Record
    task = parse_workload(SPEC, "host")
    calls = []

    class FakeMeasurer:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def measure(self, task, configs):
            for c in configs:
                calls.append(c.index)
                slow = 2.0 if calls.count(c.index) == 1 else 1.0     # pass 2 is faster
                yield Record.of(measure_input(task.workload, task.target, c, {}),
                                MeasureResult((slow * (1 + c.index % 7),), "s"))
    monkeypatch.setattr("cgen.autotune.measure.Measurer", FakeMeasurer)
    args = parse("--workloads", SPEC, "--pool-size", "12", "--pool-log", str(tmp_path),
                 "--reuse-log", "/nonexistent", "--pool-passes", "2", "-q")
    (case,) = bt.load_pools(args, bt.select_workloads(SPEC))
    pool, recs = case["pool"], case["records"]
    assert sorted(calls) == sorted(pool + pool) and calls[:12] == pool and calls[12:] != pool
    assert all(recs[i].costs == (1.0 * (1 + i % 7),) for i in pool)
    calls.clear()
    again = bt.load_pools(args, bt.select_workloads(SPEC))[0]["records"]
    assert calls == [] and {i: r.costs for i, r in again.items()} == \
        {i: r.costs for i, r in recs.items()}
    args.pool_passes = 3
    bt.load_pools(args, bt.select_workloads(SPEC))
    assert sorted(calls) == sorted(pool)
