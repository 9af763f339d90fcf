"""onnxruntime with one thread: the session and its timing loop, and the child process the
bench runs them in (cgen.graph.ort_peer starts it: `python ort_peer_child.py MODEL FEEDS
OUT [--masked]`).

Run as a script this module imports only the standard library, numpy and onnxruntime (not
cgen), so that with the CPUID mask preloaded (cpuid_mask.c) every library that reads CPUID
reads it masked.  The protocol is one JSON object per line: the child answers its start
with {"ready": ...} (the ISA it sees, checked before any timing, and the output names; the
outputs themselves go to OUT as .npz), then each request {"time": [REPEAT, MIN_REPEAT_S,
WARMUP]} with {"times": [...]} (seconds per call, perf_counter in the child), and
{"profile": RUNS} with {"nodes": {NODE: seconds}} (onnxruntime's profiler, node_seconds),
until {"quit": true} or the end of its input.  A failure is {"error": "one line"}.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def ort_session(model, threads: int = 1, profile_prefix: str | None = None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else (
        model if isinstance(model, bytes) else str(model))
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def time_ort(sess, feeds: dict, repeat: int = 7, min_repeat_s: float = 0.05,
             warmup: int = 3) -> list:
    """Seconds per call of each of `repeat` repeats, a repeat lasting about min_repeat_s."""
    for _ in range(warmup):
        sess.run(None, feeds)
    t0 = time.perf_counter()
    sess.run(None, feeds)
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, min(1_000_000, int(min_repeat_s / one)))
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            sess.run(None, feeds)
        out.append((time.perf_counter() - t0) / number)
    return out


def node_seconds(model, feeds: dict, runs: int = 20) -> dict:
    """ONNX node name -> median seconds of its kernel in onnxruntime (one thread, its
    profiler), over `runs` runs after one warm-up."""
    import onnx
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    graph = (onnx.load_from_string(data) if isinstance(data, bytes) else onnx.load(data)).graph
    producer = {out: n.name for n in graph.node for out in n.output if n.name}
    with tempfile.TemporaryDirectory(prefix="cgen-ortprof-") as d:
        sess = ort_session(data, profile_prefix=os.path.join(d, "ort"))
        for _ in range(runs + 1):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    per_node: dict = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            # onnxruntime names a node it fused "fused NAME", and a Conv its NCHWc pass
            # rewrote "VALUE_nchwc" after the output of the last node fused into it
            node = name[:-len("_kernel_time")].removeprefix("fused ")
            if node.endswith("_nchwc"):
                node = producer.get(node[:-len("_nchwc")], node)
            per_node.setdefault(node, []).append(e["dur"] * 1e-6)
    # the first run is the warm-up
    return {n: statistics.median(t[1:] or t) for n, t in per_node.items()}


def cpu_features() -> dict:
    """numpy's run-time CPU features (read from CPUID when numpy was imported)."""
    core = getattr(np, "_core", None) or np.core
    feats = core._multiarray_umath.__cpu_features__
    return {k: bool(feats.get(k)) for k in ("AVX2", "FMA3", "AVX512F", "AVX512_SKX")}


def mask_state() -> dict:
    """The preloaded mask's state: status 0 and active when it works, else the errno."""
    import ctypes
    lib = ctypes.CDLL(None)
    try:
        status = ctypes.c_int.in_dll(lib, "cpuid_mask_status").value
    except ValueError:          # the library is not loaded
        return {"status": None}
    return {"status": status, "active": bool(lib.cpuid_mask_active()),
            "traps": ctypes.c_ulong.in_dll(lib, "cpuid_mask_traps").value,
            "why": os.strerror(status) if status > 0 else ""}


def check_masked(mask: dict, feats: dict) -> str | None:
    """Why the masked child does not see an AVX2 machine, or None when it does."""
    if not mask.get("active"):
        return "the CPUID mask is not active"
    if feats["AVX512F"] or not (feats["AVX2"] and feats["FMA3"]):
        return f"numpy sees {feats} under the CPUID mask (want AVX2 and FMA3 without AVX512F)"
    return None


def serve(argv, proto) -> int:
    model, feeds_path, out_path = argv[:3]
    masked = "--masked" in argv[3:]
    say = lambda obj: (proto.write(json.dumps(obj) + "\n"), proto.flush())  # noqa: E731
    ready = {"ready": True, "features": cpu_features()}
    if masked:
        mask = mask_state()
        ready["mask"] = mask
        # faulting refused by this kernel or CPU (status > 0): the peer runs natively and
        # says so; a mask that is not there or does not work is an error
        why = ("the CPUID mask library was not preloaded" if mask["status"] is None else
               check_masked(mask, ready["features"]) if mask["status"] == 0 else None)
        if why:
            say({"error": why})
            return 1
    with np.load(feeds_path, allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    sess = ort_session(model)
    names = [o.name for o in sess.get_outputs()]
    np.savez(out_path, *[np.asarray(a) for a in sess.run(None, feeds)])
    if masked and ready["mask"]["status"] == 0:
        ready["mask"] = mask_state()            # onnxruntime's own CPUID reads were masked too
        if not ready["mask"]["active"]:
            say({"error": "the CPUID mask was replaced by another SIGSEGV handler"})
            return 1
    ready["outputs"] = names
    say(ready)
    for line in sys.stdin:
        req = json.loads(line)
        if "time" in req:
            repeat, min_repeat_s, warmup = req["time"]
            say({"times": time_ort(sess, feeds, int(repeat), float(min_repeat_s), int(warmup))})
        elif "profile" in req:
            say({"nodes": node_seconds(model, feeds, int(req["profile"]))})
        elif req.get("quit"):
            break
    return 0


def main(argv) -> int:
    # the protocol keeps the real stdout; anything a library prints goes to stderr
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        return serve(argv, proto)
    except Exception as e:      # one line to the parent, which raises it
        first = (str(e).strip().splitlines() or [""])[0]
        proto.write(json.dumps({"error": f"{type(e).__name__}: {first}"}) + "\n")
        proto.flush()
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
