"""The bench's onnxruntime peer runs at the target's ISA (cgen.graph.ort_peer): for target
x86-avx2 on an AVX-512 machine, cpuid_mask.c (preloaded, CPUID faulting) hides AVX-512 from
the child, which keeps AVX2 and FMA and still computes correctly; for x86-avx512 the peer is
native.  Where this machine refuses CPUID faulting the masked cases are skipped, and the
label that the bench row then carries is checked on its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from targets import resolve

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FEATURES = ("import json, numpy as np; core = getattr(np, '_core', None) or np.core; "
            "f = core._multiarray_umath.__cpu_features__; "
            "print(json.dumps({k: bool(f[k]) for k in ('AVX2', 'FMA3', 'AVX512F')}))")


def numpy_features(preload=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONFAULTHANDLER")}
    if preload:
        env["LD_PRELOAD"] = str(preload)
    proc = subprocess.run([sys.executable, "-c", FEATURES], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def matmul_model(m=64, k=96, n=80, seed=0):
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                          [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.standard_normal((m, k)).astype(np.float32)}, w


@pytest.fixture(scope="module")
def masked_peer():
    """An OrtPeer for target x86-avx2 on this AVX-512 machine, with its model and weights;
    skipped when the machine refuses CPUID faulting (the peer then says so)."""
    from cgen.graph.ort_peer import OrtPeer
    model, feeds, w = matmul_model()
    peer = OrtPeer(model, feeds, resolve("x86-avx2"))
    if "cpuid faulting unavailable" in peer.isa:
        peer.close()
        pytest.skip(peer.note)
    yield peer, feeds, w
    peer.close()


@pytest.mark.isa("avx512")
def test_mask_hides_avx512_keeps_avx2(masked_peer):
    """Target x86-avx2: numpy under the preloaded mask sees AVX2 + FMA3 and no AVX512F,
    where it sees AVX512F without the mask."""
    from cgen.graph.ort_peer import build_mask
    assert numpy_features()["AVX512F"]
    assert numpy_features(build_mask()) == {"AVX2": True, "FMA3": True, "AVX512F": False}


@pytest.mark.isa("avx512")
def test_masked_onnxruntime_matmul(masked_peer):
    """Target x86-avx2: the masked child's MatMul matches numpy's; its timings come back."""
    peer, feeds, w = masked_peer
    assert peer.isa == "avx2 (cpuid-masked)" and peer.note == ""
    want = feeds["x"].astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(peer.outputs["y"], want, rtol=1e-4, atol=1e-4)
    times = peer.time(3, 0.001, warmup=1)
    assert len(times) == 3 and all(t > 0 for t in times)


@pytest.mark.isa("avx512")
def test_x86_avx512_peer_is_native():
    """Target x86-avx512: no mask; the peer reports the machine's AVX-512."""
    from cgen.graph.ort_peer import OrtPeer
    model, feeds, w = matmul_model(8, 16, 8)
    with OrtPeer(model, feeds, resolve("x86-avx512")) as peer:
        assert peer.isa == "native avx512" and peer.note == ""
        np.testing.assert_allclose(peer.outputs["y"], feeds["x"] @ w, rtol=1e-4, atol=1e-4)


def test_labels_say_when_the_mask_is_unavailable():
    """x86-avx2 on an AVX-512 machine without CPUID faulting: the row's peer_isa and the
    stderr note both say the peer ran natively and why; natively there is no note."""
    from cgen.graph.ort_peer import peer_label
    why = "cpuid faulting unavailable: arch_prctl(ARCH_SET_CPUID): No such device"
    isa, note = peer_label("avx512", "avx2", why)
    assert isa == f"native avx512 ({why})"
    assert note.startswith("onnxruntime runs with this machine's avx512, not avx2") and why in note
    assert peer_label("avx512", "avx2") == ("avx2 (cpuid-masked)", "")
    assert peer_label("avx512", None) == ("native avx512", "")


def test_child_refuses_a_mask_that_did_not_take():
    """The child's check before timing: AVX512F still visible, or the mask inactive, is
    an error (never a silent AVX-512 peer)."""
    from cgen.graph.ort_peer_child import check_masked
    ok = {"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512_SKX": False}
    assert check_masked({"active": True}, ok) is None
    assert "AVX512F" in check_masked({"active": True}, {**ok, "AVX512F": True})
    assert check_masked({"active": False}, ok) == "the CPUID mask is not active"
