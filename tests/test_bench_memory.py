"""`python -m bench memory --json` (target cortex-m4): one record per model in the bench
format, the ratio the TFLM-style plan over cgen's RAM-objective workspace."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"suite", "case", "ratio", "unit", "cgen_bytes", "peer", "peer_bytes",
        "lower_bound_bytes", "tflm_bytes", "latency_bytes", "ram_bytes", "patched_bytes",
        "weight_bytes", "code_bytes", "target"}


@pytest.fixture(scope="module")
def records():
    proc = subprocess.run([sys.executable, "-m", "bench", "memory", "--json", "--target",
                           "cortex-m4", "--models", "mlp", "kws_cnn"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert "within 1.1x the per-op bound 2 of 2" in proc.stderr      # the closing note
    return [json.loads(ln) for ln in lines]


def test_one_record_per_model(records):
    assert [r["case"] for r in records] == ["mlp", "kws_cnn"]
    for r in records:
        assert KEYS <= set(r), KEYS - set(r)
        assert r["suite"] == "memory" and r["unit"] == "bytes" and r["target"] == "cortex-m4"
        assert r["peer"] == "tflm_greedy"


def test_ratio_is_tflm_over_ram_and_kws_fits(records):
    for r in records:
        assert r["ratio"] == pytest.approx(r["tflm_bytes"] / r["ram_bytes"])
        assert r["cgen_bytes"] == r["ram_bytes"] and r["peer_bytes"] == r["tflm_bytes"]
    kws = records[1]
    # the keyword-spotting CNN: im2col and packing scratch under latency kernels, none
    # under ram: its workspace is its per-op bound (two 24x25x5 activations)
    assert kws["latency_bytes"] > 1.5 * kws["lower_bound_bytes"]
    assert kws["ram_bytes"] <= 1.1 * kws["lower_bound_bytes"]
    assert kws["lower_bound_bytes"] == 2 * 24 * 25 * 5 * 4


def test_icount_counts_one_inference_of_each_build_on_cortex_m4():
    """--icount: instructions of one inference under qemu-system-arm -icount for the
    latency and ram builds, and the same count on a second run (a count, not a clock)."""
    from bench.memory import models, row
    from bench.peers.mclass import model_instructions
    from cgen.graph.model import compile_model
    rec = row("kws_cnn", models()["kws_cnn"], "cortex-m4", icount=True)
    assert rec["latency_insns"] > 0 and rec["ram_insns"] > 0
    model, feeds = models()["kws_cnn"]()
    cm = compile_model(model, "cortex-m4", name="kws_cnn", objective="ram")
    assert model_instructions(cm, feeds) == rec["ram_insns"]
