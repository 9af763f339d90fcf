"""The tuner: cost models, annealing, batch picks, determinism, resuming, faulty candidates."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cgen import te
from cgen.autotune import ConfigSpace, Knob, Measurer, Record, Tuner, apply_best, read_log
from cgen.autotune.costmodel import RandomModel, XGBModel, pairwise_accuracy, recall_at_k
from cgen.autotune.features import KnobFeatures
from cgen.autotune.search import Annealer, pick_batch
from cgen.autotune.task import Task, parse_workload
from cgen.autotune.tuner import throughput
from targets import resolve


# ---------------------------------------------------------------- a synthetic cost
def synthetic_cost(cfg: dict) -> float:
    """A made-up but structured cost over the GEMM knobs: an optimum in the middle of the
    space, interactions between knobs, and a little deterministic roughness."""
    c = 1.0
    c *= 1 + abs(math.log2(cfg["MC"] / 144)) * 0.3
    c *= 1 + abs(math.log2(cfg["KC"] / 256)) * 0.4
    c *= 1 + abs(math.log2(cfg["NC"] / 256)) * 0.2
    c *= {4: 1.5, 6: 1.2, 8: 1.0, 12: 1.1}.get(cfg["MR"], 1.3)
    c *= 1.0 if cfg.get("unroll", 2) == 2 else 1.15
    c *= 0.9 if (cfg.get("prefetch", 0) and cfg["KC"] >= 256) else 1.0
    c *= 1.0 if cfg["order"] == "ji" else 1.08
    c *= 0.95 if cfg.get("pack_a") else 1.0
    digest = sum(ord(ch) * (i + 1) for i, ch in enumerate(json.dumps(cfg, sort_keys=True)))
    return 1e-3 * c * (1 + 0.03 * ((digest % 97) / 97.0))


class FakeMeasurer:
    """Returns synthetic costs without building anything; counts what it measured."""

    def __init__(self, fail_every: int = 0):
        self.calls = []
        self.fail_every = fail_every

    def measure(self, task, configs):
        for c in configs:
            self.calls.append(c.index)
            base = dict(workload=task.workload, target=task.target_name,
                        toolchain={"cc": "fake"}, config=c.to_json())
            if self.fail_every and c.index % self.fail_every == 0:
                yield Record(costs=(), error={"kind": "runtime_error", "msg": "fake crash"}, **base)
            else:
                cost = synthetic_cost(c.to_dict())
                yield Record(costs=(cost, cost * 1.01), **base)


@pytest.fixture(scope="module")
def gemm_task():
    return parse_workload("gemm:512,512,512", "x86-avx512")


def proposals(task, seed, trials=40, model="rank", search="model", log=None):
    m = FakeMeasurer()
    Tuner(task, m, log=log, model=model, search=search, seed=seed, batch_size=8,
          min_train=8).tune(trials)
    return m.calls


# ---------------------------------------------------------------- cost model
def _synthetic_rows(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 6)).astype(np.float32)
    y = 1.0 / (0.2 + (X[:, 0] - 0.3) ** 2 + 0.5 * (X[:, 1] - 0.7) ** 2 + 0.1 * X[:, 2])
    return X, y


@pytest.mark.parametrize("objective", ["rank", "reg"])
def test_xgb_models_rank_held_out_configs(objective):
    X, y = _synthetic_rows(400, 0)
    m = XGBModel(objective, seed=0).fit(X[:300], y[:300])
    acc = pairwise_accuracy(m.predict(X[300:]), y[300:])
    assert acc > 0.8, acc
    assert pairwise_accuracy(RandomModel(0).predict(X[300:]), y[300:]) < 0.65


def test_xgb_training_is_deterministic():
    X, y = _synthetic_rows(200, 1)
    a = XGBModel("rank", seed=3).fit(X, y).predict(X)
    b = XGBModel("rank", seed=3).fit(X, y).predict(X)
    assert np.array_equal(a, b)


def test_pairwise_accuracy_and_recall_by_hand():
    labels = [3.0, 2.0, 1.0, 1.0]
    assert pairwise_accuracy([3, 2, 1, 0], labels) == 1.0
    assert pairwise_accuracy([0, 1, 2, 3], labels) == 0.0
    # pairs with different labels: (0,1) (0,2) (0,3) (1,2) (1,3); scores tie on (0,1)
    assert pairwise_accuracy([1, 1, 0, 0], labels) == pytest.approx(4.5 / 5)
    # groups: pairs across groups never count
    assert pairwise_accuracy([0, 1, -10, -20], [0, 1, 1, 0], groups=[0, 0, 1, 1]) == 1.0
    assert pairwise_accuracy([0, 1, -10, -20], [0, 1, 1, 0]) < 1.0
    assert recall_at_k([0.9, 0.1, 0.8, 0.2], [1.0, 0.0, 0.5, 0.6], 2) == 0.5


def test_failed_candidates_are_labelled_worst(gemm_task):
    m = FakeMeasurer(fail_every=3)
    t = Tuner(gemm_task, m, model="reg", seed=0, batch_size=16, min_train=8)
    t.tune(48)
    X, y, g = t.training_set()
    idx = sorted(t.measured)
    failed = [k for k, i in enumerate(idx) if not t.measured[i].ok]
    assert failed and all(y[k] == 0 for k in failed)
    assert all(y[k] > 0 for k in range(len(idx)) if k not in failed)
    assert t.best().ok


# ---------------------------------------------------------------- features
def test_knob_features_are_fixed_length_and_vectorised(gemm_task):
    space = gemm_task.space()
    f = KnobFeatures(space, gemm_task.workload)
    idx = np.arange(0, space.size, 7)
    X = f(idx)
    assert X.shape == (idx.size, f.width) and np.isfinite(X).all()
    # row by row equals the vectorised result
    for i in (0, 5, space.size - 1):
        c = space.get(i)
        row = f([i])[0]
        col = f.names.index("knob.MC")
        assert row[col] == pytest.approx(math.log2(1 + c["MC"]))
        assert row[f.names.index(f"knob.order={c['order']}")] == 1.0
        assert np.array_equal(row, X[list(idx).index(i)]) if i in idx else True
    assert len(set(map(bytes, X[:50]))) == 50      # distinct configs, distinct features


# ---------------------------------------------------------------- search
def test_annealing_finds_the_optimum_of_a_known_score():
    space = ConfigSpace(tuple(Knob(f"k{j}", tuple(range(8))) for j in range(5)))
    target = np.array([3, 6, 1, 7, 2])
    f = KnobFeatures(space)

    def score(indices):
        d = f.digits(indices)
        return -np.abs(d - target).sum(axis=1).astype(float)

    sa = Annealer(space, np.random.default_rng(0), chains=32, steps=60)
    best = sa.run(score, keep=10)
    assert best[0][1] == space.from_digits(target.tolist())
    assert [s for s, _ in best] == sorted((s for s, _ in best), reverse=True)
    # excluded configs are never returned
    again = sa.run(score, exclude={best[0][1]}, keep=10)
    assert best[0][1] not in [i for _, i in again]


def test_pick_batch_spreads_and_skips_measured():
    space = ConfigSpace((Knob("a", tuple(range(10))), Knob("b", tuple(range(10)))))
    ranked = [(100 - i, i) for i in range(100)]        # index order = score order
    rng = np.random.default_rng(0)
    batch = pick_batch(ranked, space, 8, rng, measured={0, 1}, epsilon=0.25)
    assert len(batch) == len(set(batch)) == 8
    assert not {0, 1} & set(batch)
    model_picks = batch[:6]
    for x in model_picks:
        for y in model_picks:
            if x != y:
                assert sum(p != q for p, q in zip(space.digits(x), space.digits(y))) >= 2


# ---------------------------------------------------------------- the loop
def test_same_seed_same_proposals(gemm_task):
    a = proposals(gemm_task, seed=7)
    b = proposals(gemm_task, seed=7)
    c = proposals(gemm_task, seed=8)
    assert a == b
    assert a != c
    assert len(set(a)) == len(a) == 40


def test_model_search_beats_random_on_a_structured_cost(gemm_task):
    """Median over seeds of the best cost after 48 trials (deterministic fake costs)."""
    def best_after(search, seed):
        m = FakeMeasurer()
        r = Tuner(gemm_task, m, model="rank", search=search, seed=seed, batch_size=8).tune(48)
        return r.best.mean_cost

    model = np.median([best_after("model", s) for s in range(3)])
    rand = np.median([best_after("random", s) for s in range(3)])
    assert model < rand, (model, rand)


def test_resume_after_a_torn_log_measures_nothing_twice(gemm_task, tmp_path):
    log = tmp_path / "t.jsonl"
    proposals(gemm_task, seed=1, trials=24, log=log)
    lines = log.read_text().splitlines()
    assert len(lines) == 24
    # a kill in the middle of the 13th write: 12 whole records and half of one
    log.write_text("\n".join(lines[:12]) + "\n" + lines[12][: len(lines[12]) // 2])
    m = FakeMeasurer()
    t = Tuner(gemm_task, m, log=log, seed=1, batch_size=8)
    assert t.resume() == 12
    t.records.clear(); t.measured.clear()
    res = t.tune(24)
    recs = [r for r in read_log(log) if gemm_task.matches(r)]
    assert len(recs) == 24 and res.new == 12 and len(m.calls) == 12
    idx = [r.config["index"] for r in recs]
    assert len(set(idx)) == 24
    assert log.read_text().splitlines()[:12] == lines[:12]
    assert not set(m.calls) & set(idx[:12])
    # warm start: the model was fitted on the resumed records before the first proposal
    assert t.fitted


def test_transfer_records_warm_start_a_new_task(tmp_path):
    small = parse_workload("gemm:256,256,256", "x86-avx512")
    big = parse_workload("gemm:512,512,512", "x86-avx512")
    log = tmp_path / "t.jsonl"
    proposals(small, seed=0, trials=48, log=log)
    from cgen.autotune.tuner import transfer_set
    tr = transfer_set(read_log(log), big)
    assert len(tr) == 1 and tr[0][1].size == 48
    t = Tuner(big, FakeMeasurer(), seed=0, transfer=tr)
    assert t.retrain() and t.fitted          # a model before this task has any record
    X, y, g = t.training_set()
    assert X.shape[1] == len(t.features.names) and set(g) == {1}


# ---------------------------------------------------------------- real faulty kernels
class FaultTemplate:
    """C = sum over 32 steps of A (= 32 A).  Knob `variant`: a correct kernel, one that
    crashes (reads 2^40 elements past A), one that hangs (a 2^40-step loop) and a fast
    wrong one (A, skipping the sum), which would win if outputs were not checked."""
    name = "fault_test"
    N = 256

    def workload(self):
        return {"op": self.name, "N": self.N, "dtype": "float32"}

    def space(self, wl, target):
        return ConfigSpace((Knob("variant", ("ok", "crash", "hang", "wrong")),
                            Knob("vec", (1, 8))))

    def build(self, wl, target, config):
        c = config.to_dict()
        A = te.placeholder((self.N,), "float32", name="A")
        v = c["variant"]
        if v == "wrong":
            C = te.compute((self.N,), lambda i: A[i], name="C")
        elif v == "crash":
            C = te.compute((self.N,), lambda i: A[i + (1 << 40)], name="C")
        else:
            k = te.reduce_axis((0, (1 << 40) if v == "hang" else 32), name="k")
            C = te.compute((self.N,), lambda i: te.sum(A[i], axis=k), name="C")
        s = te.create_schedule(C)
        if c["vec"] > 1:
            io, ii = s[C].split(s[C].op.axis[0], factor=c["vec"])
            if s[C].op.reduce_axis:
                s[C].reorder(io, *s[C].op.reduce_axis, ii)
            s[C].vectorize(ii)
        return s, [A, C]

    def default(self, wl, target):
        return self.space(wl, target).get(0)

    def inputs(self, wl, rng):
        return [rng.random(self.N, dtype=np.float32), np.zeros(self.N, np.float32)]

    def reference(self, wl, inputs):
        return {"C": inputs[0] * np.float32(32)}

    def flops(self, wl):
        return 32 * self.N


def test_faulty_candidates_are_logged_and_never_best(tmp_path):
    t = FaultTemplate()
    task = Task(t, t.workload(), resolve("host"))
    log = tmp_path / "faults.jsonl"
    with Measurer(timeout=3.0, repeat=2, min_repeat_ms=1.0) as m:
        res = Tuner(task, m, log=log, search="grid", batch_size=8).tune(8)
    kinds = {r.config["knobs"]["variant"]: set() for r in res.records}
    for r in res.records:
        kinds[r.config["knobs"]["variant"]].add(None if r.ok else r.error["kind"])
    assert kinds == {"ok": {None}, "crash": {"runtime_error"}, "hang": {"run_timeout"},
                     "wrong": {"wrong_answer"}}
    assert res.best.config["knobs"]["variant"] == "ok"
    assert throughput(res.best, task.flops()) > 0
    assert apply_best(log, "host")[task.key]["variant"] == "ok"
    on_disk = read_log(log)
    assert len(on_disk) == 8 and all(r.target.startswith("host-") for r in on_disk)


def test_apply_best_keys_by_target_and_prefers_seconds(tmp_path):
    wl = {"op": "custom_op", "M": 1}     # no template here: nothing to check configs against
    base = dict(workload=wl, toolchain={}, costs=(1.0,))
    recs = [Record(target="aarch64", config={"index": 0, "knobs": {"x": 1}}, **base),
            Record(target="aarch64", config={"index": 1, "knobs": {"x": 2}},
                   **{**base, "costs": (0.5,)}),
            Record(target="armv7", config={"index": 2, "knobs": {"x": 3}},
                   **{**base, "costs": (0.1,)}),
            Record(target="aarch64", config={"index": 3, "knobs": {"x": 4}}, cost_unit="icount_ticks",
                   **{**base, "costs": (0.01,)}),
            Record(target="aarch64", config={"index": 4, "knobs": {"x": 5}}, error={"kind": "runtime_error", "msg": ""},
                   **{**base, "costs": ()})]
    key = json.dumps(wl, sort_keys=True, separators=(",", ":"))
    assert apply_best(recs, "aarch64") == {key: {"x": 2}}
    assert apply_best(recs, "armv7") == {key: {"x": 3}}


def test_tuner_runs_on_loop_ir_features():
    """features="itervar": knob features followed by the loop-IR ones, cached per config."""
    from cgen.autotune.itervar import feature_length
    task = parse_workload("gemm:128,128,128", "x86-avx512")
    m = FakeMeasurer()
    t = Tuner(task, m, features="itervar", seed=0, batch_size=8, min_train=8)
    res = t.tune(16)
    assert len(set(m.calls)) == 16 and res.best.ok and t.fitted
    X = t.features(sorted(t.measured))
    assert X.shape == (16, t.features.knobs.width + feature_length())
    assert np.isfinite(X).all() and len(t.features._cache) >= 16


def test_pretrained_model_ranks_the_first_batch(gemm_task):
    """With a shipped model the first batch is the model's pick, not the random one."""
    from cgen.autotune.pretrained import load_pretrained
    pre = load_pretrained(gemm_task)
    assert pre is not None
    t = Tuner(gemm_task, FakeMeasurer(), seed=0, batch_size=8, pretrained=pre)
    first = t.propose(8)
    rand = Tuner(gemm_task, FakeMeasurer(), seed=0, batch_size=8).propose(8)
    assert len(set(first)) == 8 and first != rand
    scores = t.score(np.array(first[:7]))
    assert np.isfinite(scores).all()
