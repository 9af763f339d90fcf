"""Tuning keeps the default unless a candidate beats it beyond the noise (target x86-avx2).

A fake measurer stands in for the machine: each config has a true cost, every sample
gets a few percent of noise, and optionally a config's first sample is a lucky burst
(another tenant went idle), the case where a log's plain fastest record misleads."""
from __future__ import annotations

import numpy as np
import pytest

from cgen.autotune import Measurer, Record, apply_best, read_log
from cgen.autotune.baseline import select
from cgen.autotune.model_tasks import ModelTask, default_index, tune_model
from cgen.autotune.task import parse_workload

TARGET = "x86-avx2"


class NoisyMeasurer:
    """true(index) x uniform noise of +-noise; with `lucky`, the first sample of every
    non-default config is 0.7x its true cost.  Remembers every index it measured."""

    def __init__(self, true, default, noise=0.03, lucky=False, seed=0):
        self.true, self.default, self.noise, self.lucky = true, default, noise, lucky
        self.rng = np.random.default_rng(seed)
        self.calls, self.seen = [], set()

    def measure(self, task, configs):
        for c in configs:
            self.calls.append(c.index)
            cost = self.true(c.index) * (1 + self.noise * (2 * self.rng.random() - 1))
            if self.lucky and c.index != self.default and c.index not in self.seen:
                cost = 0.7 * self.true(c.index)
            self.seen.add(c.index)
            yield Record(workload=task.workload, target=task.target_name,
                         toolchain={"cc": "fake"}, config=c.to_json(), costs=(cost,))


@pytest.fixture()
def task():
    return parse_workload("gemm:64,64,64", TARGET)


def run(task, measurer, log, trials=12):
    mt = ModelTask(task, 1, ("k0",))
    (row,) = tune_model([mt], measurer, log, trials, search="random", model="random",
                        batch_size=4)
    return mt, row


def chosen_index(task, log):
    knobs = apply_best(read_log(log), TARGET)[task.key]
    return task.space().index_of(knobs)


def test_a_candidate_faster_only_by_noise_leaves_the_default(task, tmp_path):
    d = default_index(task)
    # every other config is truly 2% slower; each was once measured 30% faster by luck
    m = NoisyMeasurer(lambda i: 1.0 if i == d else 1.02, d, lucky=True)
    log = tmp_path / "t.jsonl"
    mt, row = run(task, m, log)
    plain = min((r for r in read_log(log) if r.selection is None), key=lambda r: r.mean_cost)
    assert task.space().index_of(plain.config["knobs"]) != d     # the trap is set
    assert chosen_index(task, log) == d
    assert row.selection.chosen == "default"
    sel = [r for r in read_log(log) if r.selection is not None]
    assert len(sel) == 1 and sel[0].selection["chosen"] == "default"
    assert "only" in sel[0].selection["reason"]
    assert len(sel[0].selection["compared"]) == 4          # the default and the top 3


def test_a_small_true_gain_below_the_margin_keeps_the_default(task, tmp_path):
    d = default_index(task)
    m = NoisyMeasurer(lambda i: 1.0 if i == d else 0.985, d, noise=0.005)
    log = tmp_path / "t.jsonl"
    run(task, m, log)
    assert chosen_index(task, log) == d


def test_a_clearly_faster_candidate_is_chosen(task, tmp_path):
    d = default_index(task)

    def true(i):
        return 1.0 if i == d else (0.6 + 0.001 * (i % 5) if i % 3 == 1 else 1.05)
    m = NoisyMeasurer(true, d)
    log = tmp_path / "t.jsonl"
    mt, row = run(task, m, log)
    i = chosen_index(task, log)
    assert i != d and i % 3 == 1
    assert row.selection.chosen == "tuned" and row.selection.speedup > 1.5


def test_the_default_is_measured_again_on_every_run(task, tmp_path):
    d = default_index(task)
    m = NoisyMeasurer(lambda i: 1.0 if i == d else 1.02, d)
    log = tmp_path / "t.jsonl"
    run(task, m, log)
    before = len(m.calls)
    run(task, m, log)       # resumed: every trial is in the log already
    again = m.calls[before:]
    assert again.count(d) >= 5 and len(set(again)) == 4    # rounds of the default and top 3
    sel = [r for r in read_log(log) if r.selection is not None]
    assert len(sel) == 2 and chosen_index(task, log) == d


def test_apply_best_follows_the_last_selection_over_a_faster_record(task, tmp_path):
    space = task.space()
    d = default_index(task)
    other = (d + 1) % space.size
    base = dict(workload=task.workload, target=task.target_name, toolchain={})
    recs = [Record(config=space.get(other).to_json(), costs=(0.5,), **base),
            Record(config=space.get(d).to_json(), costs=(1.0,), **base,
                   selection={"chosen": "default", "reason": "test"})]
    assert space.index_of(apply_best(recs, TARGET)[task.key]) == d
    assert space.index_of(apply_best(recs[:1], TARGET)[task.key]) == other


def test_interleaved_measurement_builds_once_and_samples_each_round(task, tmp_path):
    """The real measurer on this machine (it runs x86-avx2 code): two configs, rounds
    samples each, the verdict logged with its reason."""
    small = parse_workload("gemm:16,16,16", TARGET)
    space = small.space()
    d = default_index(small)
    other = next(i for i in range(space.size) if i != d)
    fake = Record(workload=small.workload, target=small.target_name, toolchain={},
                  config=space.get(other).to_json(), costs=(1e-9,))
    log = tmp_path / "t.jsonl"
    with Measurer(repeat=1, min_repeat_ms=1.0) as m:
        sel = select(small, m, [fake], d, log, rounds=3)
    assert sel.chosen in ("default", "tuned") and sel.default_median > 0
    (rec,) = read_log(log)
    assert len(rec.costs) == 3 and rec.selection["compared"][0][0] == d
    assert [i for i, _ in rec.selection["compared"]] == [d, other]


# ---------------------------------------------------------------- the in-model check
def _model_rows(tmp_path):
    """Two tasks whose verdicts chose a tuned config, logged; rows as tune_model gives."""
    from cgen.autotune.baseline import Selection
    from cgen.autotune.log import LogWriter
    from cgen.autotune.model_tasks import ModelTuneRow
    log = tmp_path / "m.jsonl"
    rows = []
    with LogWriter(log) as w:
        for k, spec in enumerate(("gemm:64,64,64", "gemm:32,64,128")):
            t = parse_workload(spec, TARGET)
            d = default_index(t)
            base = dict(workload=t.workload, target=t.target_name, toolchain={})
            dr = Record(config=t.space().get(d).to_json(), costs=(1.0,), **base)
            tr = Record(config=t.space().get((d + 1) % t.space().size).to_json(), costs=(0.8,),
                        selection={"chosen": "tuned", "reason": "test"}, **base)
            w.write(dr)
            w.write(tr)
            mt = ModelTask(t, 1, (f"k{k}",), d, dr)
            rows.append(ModelTuneRow(mt, 2, None, Selection(tr, "tuned", "test")))
    return rows, log


def _fake_machine(monkeypatch, model_times, kernels):
    """check_model's builds and timings replaced: each call of time_interleaved returns the
    next (default, tuned) pair of (median, best) seconds; kernel_times returns `kernels`."""
    import cgen.graph.model as gm
    from cgen.autotune import model_check
    calls = iter(model_times)
    monkeypatch.setattr(model_check, "_build", lambda *a: type("CM", (), {"graph": None})())
    monkeypatch.setattr(gm, "random_feeds", lambda graph: {})
    monkeypatch.setattr(model_check, "time_interleaved", lambda models, feeds, rounds: next(calls))
    monkeypatch.setattr(model_check, "kernel_times", lambda models, feeds: kernels)


def _chosen(row, log):
    t = row.mtask.task
    return t.space().index_of(apply_best(read_log(log), TARGET)[t.key])


def test_model_check_sends_back_the_task_slower_in_the_model(tmp_path, monkeypatch):
    from cgen.autotune.model_check import check_model
    rows, log = _model_rows(tmp_path)
    # the tuned model is slower; in the profile k0's tuned kernel is slower, k1's faster;
    # without k0's config the tuned model is faster
    _fake_machine(monkeypatch, [[(1.0, 0.9), (1.1, 1.0)], [(1.0, 0.9), (0.9, 0.8)]],
                  [{"k0": 1.0, "k1": 1.0}, {"k0": 1.2, "k1": 0.7}])
    chk = check_model("m.onnx", TARGET, rows, log)
    assert chk.reverted == (rows[0].mtask.task.describe(),)
    assert _chosen(rows[0], log) == rows[0].mtask.default_index
    assert _chosen(rows[1], log) != rows[1].mtask.default_index


def test_model_check_falls_back_entirely_when_still_not_faster(tmp_path, monkeypatch):
    from cgen.autotune.model_check import check_model
    rows, log = _model_rows(tmp_path)
    _fake_machine(monkeypatch, [[(1.0, 0.9), (1.1, 1.0)], [(1.0, 0.9), (1.05, 0.95)]],
                  [{"k0": 1.0, "k1": 1.0}, {"k0": 1.2, "k1": 0.7}])
    chk = check_model("m.onnx", TARGET, rows, log)
    assert len(chk.reverted) == 2 and "sent back" in chk.line
    assert all(_chosen(r, log) == r.mtask.default_index for r in rows)


def test_model_check_keeps_a_faster_tuned_model(tmp_path, monkeypatch):
    from cgen.autotune.model_check import check_model
    rows, log = _model_rows(tmp_path)
    _fake_machine(monkeypatch, [[(1.0, 0.9), (0.8, 0.7)]], [])
    chk = check_model("m.onnx", TARGET, rows, log)
    assert chk.reverted == () and all(_chosen(r, log) != r.mtask.default_index for r in rows)


def test_a_kill_mid_verdict_loses_no_trial_and_a_rerun_completes_it(task, tmp_path):
    d = default_index(task)
    m = NoisyMeasurer(lambda i: 1.0 if i == d else 1.02, d, lucky=True)
    log = tmp_path / "t.jsonl"
    run(task, m, log)
    text = log.read_text()
    assert text.rstrip("\n").splitlines()[-1].find('"selection"') > 0
    log.write_text(text[: len(text) - 40])          # killed while writing the verdict
    assert [r.selection for r in read_log(log)] == [None] * 12
    before = len(m.calls)
    run(task, m, log)
    assert len(set(m.calls[before:])) == 4          # no trial again: only the comparison
    assert chosen_index(task, log) == d and len(read_log(log)) == 13
