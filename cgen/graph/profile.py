"""Where a compiled model spends its time, kernel by kernel, beside onnxruntime's own
profile of the same nodes.

cgen's side comes from CompiledModel.profile (a profiling build of NAME_run that times
each kernel call where the model makes it, over many runs).  onnxruntime's side comes
from its profiler: each node's kernel time, matched to a cgen kernel by the ONNX node
names the kernel's fused group came from, or else by the value the node writes.  A
kernel whose nodes onnxruntime fused differently (or renamed) has no peer figure rather
than a wrong one.
"""
from __future__ import annotations

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


def profile_rows(compiled, feeds, number: int = 50, peer: dict | None = None,
                 peer_outputs: dict | None = None) -> list:
    """One ProfileRow per kernel of `compiled`, in NAME_run's order; `peer`: ONNX node
    name -> onnxruntime seconds (ort_node_seconds); `peer_outputs`: ONNX node name -> its
    output names (onnx_node_outputs).  Each onnxruntime node goes beside one kernel only
    (a kernel holding the node itself before one holding a node made from it, and last a
    kernel writing the node's output: onnxruntime names a Conv it fused with the next
    BatchNormalization after the BatchNormalization, which cgen folded away), so no time
    is counted twice."""
    times = dict(compiled.profile(feeds, number=number))
    kernels = [k for k in compiled.kernels if not k.is_alias and k.name in times]
    total = sum(times[k.name] for k in kernels) or 1.0
    unclaimed = dict(peer or {})
    hits = {k.name: [] for k in kernels}
    for exact in (True, False):
        for k in kernels:
            hits[k.name] += [unclaimed.pop(n) for n in _onnx_names(k, exact) if n in unclaimed]
    node_outputs = peer_outputs or {}
    for k in kernels:
        writes = set(k.outputs)
        hits[k.name] += [unclaimed.pop(n) for n in list(unclaimed)
                         if writes.intersection(node_outputs.get(n, ()))]
    return [ProfileRow(k.name, k.describe(), k.template, k.config, times[k.name], k.flops,
                       times[k.name] / total, sum(hits[k.name]) if hits[k.name] else None)
            for k in kernels]


def onnx_node_outputs(model) -> dict:
    """ONNX node name -> its output names, of a model given as a path, bytes or
    ModelProto."""
    import onnx
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    elif not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {n.name: tuple(n.output) for n in model.graph.node if n.name}


def ort_node_seconds(model, feeds: dict, target, runs: int = 20) -> tuple:
    """(ONNX node name -> median seconds of its kernel in onnxruntime, over `runs` runs
    after one warm-up, the ISA onnxruntime ran with).  The peer is cgen.graph.ort_peer's
    child process, so for x86-avx2 on an AVX-512 machine its kernels are the AVX2 ones, as
    `cgen bench` times them."""
    from .ort_peer import OrtPeer
    with OrtPeer(model, feeds, target) as peer:
        return peer.node_seconds(runs), peer.isa


def table(rows: list, peer_isa: str = "") -> str:
    total = sum(r.seconds for r in rows)
    peer = any(r.peer_seconds is not None for r in rows)
    head = f"{'kernel':<28} {'ops':<34} {'template':<18} {'us':>9} {'GFLOP/s':>8} {'share':>6}"
    lines = [head + ("  ort us   ratio" if peer else ""), "-" * (len(head) + (16 if peer else 0))]
    if peer and peer_isa:
        lines.insert(0, f"onnxruntime: 1 thread, {peer_isa}")
    for r in rows:
        line = (f"{r.kernel[:28]:<28} {r.ops[:34]:<34} {r.template[:18]:<18} "
                f"{r.seconds * 1e6:>9.1f} {r.gflops:>8.2f} {r.share:>6.1%}")
        if r.peer_seconds is not None:
            line += f" {r.peer_seconds * 1e6:>8.1f} {r.peer_seconds / r.seconds:>6.2f}"
        lines.append(line)
    lines.append(f"total {total * 1e6:.1f} us over {len(rows)} kernels")
    return "\n".join(lines)
