"""`python -m bench models --json` (target x86-avx2): one record per zoo model in the bench
format, the ratio onnxruntime's seconds over cgen's; here the keyword-spotting DS-CNN.  The
record names the ISA onnxruntime ran with: AVX2 (CPUID-masked) on an AVX-512 machine."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"suite", "case", "ratio", "unit", "cgen_s", "peer", "peer_isa", "peer_s", "target",
        "scale", "params", "input_shapes", "max_rel_err"}


def bench_models(*args):
    return subprocess.run([sys.executable, "-m", "bench", "models", "--json", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.isa("x86-avx2")
def test_ds_cnn_record():
    proc = bench_models("--target", "x86-avx2", "--models", "ds_cnn", "--rounds", "2",
                        "--repeats", "2", "--min-repeat-ms", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip()]
    assert [r["case"] for r in recs] == ["ds_cnn"]
    r = recs[0]
    assert KEYS <= set(r), KEYS - set(r)
    assert r["suite"] == "models" and r["unit"] == "s" and r["target"] == "x86-avx2"
    assert r["scale"] == "full" and r["peer"] == "onnxruntime-1thread"
    assert r["input_shapes"] == {"mfcc": [1, 1, 49, 10]} and r["params"] > 20000
    assert r["ratio"] == pytest.approx(r["peer_s"] / r["cgen_s"])
    assert r["max_rel_err"] < 1e-4
    # x86-avx2's peer: AVX2 by the CPUID mask on an AVX-512 machine (or native, saying why
    # where CPUID faulting is unavailable), natively AVX2 on an AVX2 machine
    from cgen.graph.ort_peer import host_isa, masked_isa, peer_label
    from targets import resolve
    want = peer_label(host_isa(), masked_isa(resolve("x86-avx2")))[0]
    assert r["peer_isa"] == want or "cpuid faulting unavailable" in r["peer_isa"], r["peer_isa"]
    assert f"models on x86-avx2 (onnxruntime: {r['peer_isa']}): 1 of 1 measured" in proc.stderr


def test_unknown_model_is_one_line():
    proc = bench_models("--models", "lenet5")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "unknown model(s): lenet5; one of " + ", ".join(__import__("zoo").ZOO)]
