"""GEMM and dense cases of the `ops` suite (bench/ops.py).

`cases(target)` gives dicts

    name       "gemm-256", "gemm-512", "gemm-1024", "dense-1x1024x1000"
    template   cgen.ops.gemm_template.GemmTemplate / cgen.ops.dense.DenseTemplate
    workload   square float32 GEMM; dense y = x @ W^T + bias with W pre-packed in panels
               of the target's micro-tile width, as the model compiler packs them (weights
               are constants of a compiled model; onnxruntime also packs a constant Gemm B
               once, when the session is created)
    peer_name  "numpy" (GEMM: np.matmul(a, b, out=c)) / "onnxruntime" (dense: a one-node
               Gemm, transB=1, W and bias initializers, 1 intra/inter-op thread,
               sequential execution, all graph optimisations)
    peer_fn    () -> the peer's median seconds per call, one thread (threadpool_limits(1))
    peer_call  () -> None, one call (for timing interleaved with cgen)
    extra_peers  dense: [("numpy", fn)]: x @ W.T + bias, fn -> median seconds per call
    flops      2 * M * N * K
"""
from __future__ import annotations

import numpy as np

GEMM_SIZES = (256, 512, 1024)
DENSE = (1, 1000, 1024)   # M, N, K: a classifier layer 1x1024 -> 1000


def _median_s(call, repeats: int = 7, min_repeat_s: float = 0.02) -> float:
    from bench import common
    with common.single_thread():
        return common.measure(call, repeats=repeats, min_repeat_s=min_repeat_s).median


def numpy_gemm_peer(n: int, seed: int = 0):
    """(peer_fn, peer_call): np.matmul(a, b, out=c) on n x n float32 operands."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)

    def call():
        np.matmul(a, b, out=c)
    return (lambda: _median_s(call)), call


def ort_gemm_session(w: np.ndarray, bias: np.ndarray, M: int):
    """A one-node ONNX Gemm (transB=1) y = x @ W^T + bias, W and bias initializers, one thread."""
    from onnx import TensorProto, helper, numpy_helper
    N, K = w.shape
    node = helper.make_node("Gemm", ["x", "W", "bias"], ["y"], transB=1)
    graph = helper.make_graph(
        [node], "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    from bench import common
    return common.ort_session(model)


def dense_peers(M: int, N: int, K: int, seed: int = 0):
    """(ort peer_fn, ort peer_call, numpy peer_fn, check) for y = x @ W^T + bias."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32)
    state = {}

    def session():  # made on first use: loading the case list stays cheap
        if "s" not in state:
            state["s"] = ort_gemm_session(w, bias, M)
        return state["s"]

    def ort_call():
        session().run(None, {"x": x})

    def np_call():
        return x @ w.T + bias

    def check() -> float:
        """Relative max error of onnxruntime and numpy against float64 (sanity)."""
        ref = x.astype(np.float64) @ w.T.astype(np.float64) + bias
        got = [session().run(None, {"x": x})[0], np_call()]
        return max(float(np.max(np.abs(g - ref)) / np.max(np.abs(ref))) for g in got)
    return (lambda: _median_s(ort_call)), ort_call, (lambda: _median_s(np_call)), check


def cases(target="host") -> list:
    from cgen.ops.dense import DenseTemplate
    from cgen.ops.gemm_template import GemmTemplate
    out = []
    gemm = GemmTemplate()
    for n in GEMM_SIZES:
        wl = gemm.workload(n, n, n)
        peer_fn, call = numpy_gemm_peer(n)
        out.append(dict(name=f"gemm-{n}", template=gemm, workload=wl, peer_name="numpy",
                        peer_fn=peer_fn, peer_call=call, flops=gemm.flops(wl)))
    dense = DenseTemplate()
    M, N, K = DENSE
    wl = dense.workload(M, N, K, epilogue=["bias"], weights="packed",
                        b_block=dense.panel_columns(target))
    ort_fn, ort_call, np_fn, _ = dense_peers(M, N, K)
    out.append(dict(name=f"dense-{M}x{K}x{N}", template=dense, workload=wl,
                    peer_name="onnxruntime", peer_fn=ort_fn, peer_call=ort_call,
                    extra_peers=[("numpy", np_fn)], flops=dense.flops(wl)))
    return out
