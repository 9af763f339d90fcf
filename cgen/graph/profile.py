"""Where a compiled model spends its time, kernel by kernel, beside onnxruntime's own
profile of the same nodes.

cgen's side comes from CompiledModel.profile (a profiling build of NAME_run that repeats
and times each kernel call).  onnxruntime's side comes from its profiler: each node's
kernel time, matched to a cgen kernel by the ONNX node names the kernel's fused group
came from.  A kernel whose nodes onnxruntime fused differently (or renamed) has no peer
figure rather than a wrong one.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class ProfileRow:
    kernel: str             # C function name
    ops: str                # the fused ops, "Conv -> Relu"
    template: str           # template name, "te" or "alias"
    config: dict | None
    seconds: float          # per call of NAME_run
    flops: int
    share: float            # of the summed kernel time
    peer_seconds: float | None = None   # onnxruntime's time for the same ONNX nodes

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"kernel": self.kernel, "ops": self.ops, "template": self.template,
                "config": self.config, "us": self.seconds * 1e6, "gflops": self.gflops,
                "share": self.share, "flops": self.flops,
                "peer_us": None if self.peer_seconds is None else self.peer_seconds * 1e6}


def _onnx_names(kernel, exact: bool) -> list:
    """The ONNX node names a kernel's group was built from: as they are (exact), or with
    the import's suffixes stripped ("/pad", "_1" for a second node made from one node)."""
    out = []
    for n in kernel.group.nodes:
        name = n.name
        if not exact:
            name = name.split("/")[0]
            head, _, tail = name.rpartition("_")
            name = head if head and tail.isdigit() else name
        if name and name not in out:
            out.append(name)
    return out


def profile_rows(compiled, feeds, number: int = 50, peer: dict | None = None) -> list:
    """One ProfileRow per kernel of `compiled`, in NAME_run's order; `peer`: ONNX node
    name -> onnxruntime seconds (ort_node_seconds).  Each onnxruntime node goes beside one
    kernel only (a kernel holding the node itself before one holding a node made from
    it), so no time is counted twice."""
    times = dict(compiled.profile(feeds, number=number))
    kernels = [k for k in compiled.kernels if not k.is_alias and k.name in times]
    total = sum(times[k.name] for k in kernels) or 1.0
    unclaimed = dict(peer or {})
    hits = {k.name: [] for k in kernels}
    for exact in (True, False):
        for k in kernels:
            hits[k.name] += [unclaimed.pop(n) for n in _onnx_names(k, exact) if n in unclaimed]
    return [ProfileRow(k.name, k.describe(), k.template, k.config, times[k.name], k.flops,
                       times[k.name] / total, sum(hits[k.name]) if hits[k.name] else None)
            for k in kernels]


def ort_node_seconds(model, feeds: dict, runs: int = 20) -> dict:
    """ONNX node name -> median seconds of its kernel in onnxruntime (one thread, its
    profiler), over `runs` runs after one warm-up."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="cgen-ortprof-") as d:
        so.profile_file_prefix = os.path.join(d, "ort")
        data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
        producer = _producers(data)
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
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


def _producers(data) -> dict:
    """ONNX value name -> the name of the node producing it."""
    import onnx
    graph = onnx.load_from_string(data).graph if isinstance(data, bytes) else onnx.load(data).graph
    return {out: n.name for n in graph.node for out in n.output if n.name}


def table(rows: list) -> str:
    total = sum(r.seconds for r in rows)
    peer = any(r.peer_seconds is not None for r in rows)
    head = f"{'kernel':<28} {'ops':<34} {'template':<18} {'us':>9} {'GFLOP/s':>8} {'share':>6}"
    lines = [head + ("  ort us   ratio" if peer else ""), "-" * (len(head) + (16 if peer else 0))]
    for r in rows:
        line = (f"{r.kernel[:28]:<28} {r.ops[:34]:<34} {r.template[:18]:<18} "
                f"{r.seconds * 1e6:>9.1f} {r.gflops:>8.2f} {r.share:>6.1%}")
        if r.peer_seconds is not None:
            line += f" {r.peer_seconds * 1e6:>8.1f} {r.peer_seconds / r.seconds:>6.2f}"
        lines.append(line)
    lines.append(f"total {total * 1e6:.1f} us over {len(rows)} kernels")
    return "\n".join(lines)
