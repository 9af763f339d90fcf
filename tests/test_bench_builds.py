"""`cgen bench --tuning-log`: the default and the tuned build are timed in the same
interleaved rounds as one onnxruntime peer (cgen.graph.model.bench_builds), so their ratio
is not two runs under different machine load (it was two separate benches: on a busy
machine a build compared with itself came out 1.02x "faster")."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from cgen.graph import model as model_mod  # noqa: E402
from cgen.graph import ort_peer  # noqa: E402
from tests.test_tune_cli import tiny_model  # noqa: E402,F401  (the fixture)


@pytest.mark.isa("avx2")
def test_builds_share_one_peer_and_its_rounds(tiny_model, monkeypatch):  # noqa: F811
    """x86-avx2: two builds, one onnxruntime child; every result carries the peer's
    figures, each build its own times and error."""
    path, model, feeds = tiny_model
    started = []
    real = ort_peer.OrtPeer.__init__

    def counting(self, *a, **k):
        started.append(1)
        real(self, *a, **k)
    monkeypatch.setattr(ort_peer.OrtPeer, "__init__", counting)
    builds = [model_mod.compile_model(model, "x86-avx2", name="tiny"),
              model_mod.compile_model(model, "x86-avx2", name="tiny")]
    a, b = model_mod.bench_builds(model, builds, feeds, repeat=2, rounds=2)
    assert len(started) == 1
    assert (a.ort_s, a.ort_median_s, a.peer_isa) == (b.ort_s, b.ort_median_s, b.peer_isa)
    assert a.cgen_s > 0 and b.cgen_s > 0 and a.max_rel_err < 1e-4 and b.max_rel_err < 1e-4


@pytest.mark.slow
@pytest.mark.isa("avx2")
def test_cli_bench_with_a_tuning_log_times_both_builds_together(tiny_model, tmp_path,  # noqa: F811
                                                                  capsys):
    from cgen.cli import main
    path, _, _ = tiny_model
    log = tmp_path / "tiny.jsonl"
    assert main(["tune", str(path), "--target", "x86-avx2", "--trials", "4", "--log", str(log),
                 "--no-model-check"]) == 0
    capsys.readouterr()
    assert main(["bench", str(path), "--target", "x86-avx2", "--tuning-log", str(log),
                 "--json", "--rounds", "2", "--repeat", "2"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["tuned"] is True
    assert row["untuned_ratio"] == pytest.approx(row["peer_s"] / row["untuned_cgen_s"])
    assert row["ratio"] == pytest.approx(row["peer_s"] / row["cgen_s"])
    assert np.isfinite(row["median_speedup"]) and row["median_speedup"] > 0
