"""Patch-based inference for the first stages (MCUNetV2): a graph pass, Graph -> Graph.

The high-resolution first layers of a MobileNet-like network hold the activation peak.
This pass runs them patch by patch: the output of a chosen cut value is split into an
n x n grid of spatial tiles; for each tile the region every earlier value must cover
(its receptive field, with the overlapping halo recomputed) is computed into small
per-patch values, by the same ops at patch shapes (convolutions with the padding of the
image border only where the patch touches it); the tiles are then joined into the cut
value (one concat per row of tiles, then one over the rows), and the rest of the network
runs per layer as before.  Everything downstream of the pass -- fusion, templates,
memory plan, the one C printer -- sees an ordinary graph.

    plan = plan_patches(graph, n=None, budget_ram=None)   # PatchPlan | None
    graph = apply_patches(graph, plan)                     # the rewritten Graph

`plan_patches(graph, n, budget_ram)` takes an optimised graph (`optimize_graph`, NCHW):
  n           an int forces an n x n grid (the cut is still chosen, for the lowest peak);
              None chooses both;
  budget_ram  with a budget, the plan with the fewest extra MACs whose estimated peak
              fits it, else the plan with the lowest peak; without one, the lowest peak
              among plans recomputing at most MAX_EXTRA of the network's MACs (MCUNetV2
              trades ~10% MACs for its peak; finer grids keep lowering the peak at a steep
              price in halos);
and returns None when the graph has no patchable first stage (from the one graph input:
convolutions, int8 convolutions, pools and elementwise ops) or, with n=None, when no plan
lowers the peak.  A PatchPlan says the grid, the cut value, the stage's nodes, the peak of
live activations with and without patches (one estimate for both: values live from their
fused kernel to their last reader, graph inputs and outputs excluded, no scratch) and the
extra MACs: every convolution's MACs summed over the patches, minus its MACs per layer --
exact, from the halo sizes.  The join holds the tiles and the cut value at once (twice
the cut value at its end); the planner counts it, and a cut at a small value keeps it
small.  `cgen compile --patches N|auto|off` reaches this through `prepare_patched`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fuse import fuse
from .graph_ir import Graph, ModelError, Node, Value
from .opset import BROADCAST, ELEMWISE, OP_PATTERNS

GRIDS = (2, 3, 4, 5, 6, 8)          # the grids plan_patches tries when n is None
# windowed ops: the input window of an output window follows kernel, strides, pads and
# dilations; the value is the index of the weights among the inputs (None: a pool, whose
# window is its `kernel` attribute and which has no MACs)
WINDOWED = {"conv2d": 1, "qlinear_conv2d": 3, "max_pool2d": None, "avg_pool2d": None}
MAX_EXTRA = 0.25        # with no budget, recompute at most this share of the network's MACs
SCRATCH_SHARE = 0.2     # of a RAM budget, left by compile to the kernels' scratch and alignment


@dataclass(frozen=True)
class PatchPlan:
    n: int                  # n x n tiles of the cut value
    cut: str                # the value the patches write (the stage's one output)
    nodes: tuple            # names of the stage's nodes, in graph order
    peak_before: int        # bytes of live activations, per layer
    peak_after: int         # bytes of live activations, with patches
    macs: int               # MACs of the stage's convolutions, per layer
    extra_macs: int         # MACs recomputed in the halos

    def to_json(self) -> dict:
        return {"grid": [self.n, self.n], "cut": self.cut, "stage_nodes": len(self.nodes),
                "peak_before": self.peak_before, "peak_after": self.peak_after,
                "stage_macs": self.macs, "extra_macs": self.extra_macs}

    def line(self) -> str:
        return (f"patches {self.n}x{self.n} up to {self.cut}: peak of live activations "
                f"{self.peak_after} bytes (per layer {self.peak_before}), "
                f"{self.extra_macs} extra MACs ({100.0 * self.extra_macs / max(self.macs, 1):.1f}% "
                f"of the stage's {self.macs})")


# ====================================================================== the stage
def _spatial(v: Value) -> bool:
    return len(v.shape) == 4 and not v.layout


def _patchable(n: Node, graph: Graph) -> bool:
    """A node the pass can run on a spatial window: a convolution or pool (constant
    weights, no ceil mode), or an elementwise op whose constants carry no spatial extent."""
    out = n.outputs[0]
    if len(n.outputs) != 1 or not _spatial(out):
        return False
    if n.op in WINDOWED:
        return (_spatial(n.inputs[0]) and not n.attr("ceil_mode", 0)
                and all(v.name in graph.constants for v in n.inputs[1:]))
    if OP_PATTERNS.get(n.op) not in (ELEMWISE, BROADCAST):
        return False
    for v in n.inputs:
        if v.name in graph.constants:
            if not _no_spatial_extent(n, v):
                return False
        elif tuple(v.shape) != tuple(out.shape):
            return False
    return True


def _no_spatial_extent(n: Node, v: Value) -> bool:
    """A constant operand that is the same at every pixel (numpy broadcasting aligns a
    vector with W, quantize / dequantize with their axis)."""
    if n.op in ("quantize", "dequantize"):
        return v.size == 1 or n.attr("axis", 1) in (0, 1)
    shape = (1,) * (4 - len(v.shape)) + tuple(v.shape)
    return len(shape) == 4 and shape[2] == shape[3] == 1


def _cuts(graph: Graph) -> list:
    """(cut value, stage node names): every prefix of the patchable leading nodes that reads
    only the one graph input and whose only value read later is its last node's output."""
    if len(graph.inputs) != 1 or not _spatial(graph.inputs[0]):
        return []
    x = graph.inputs[0].name
    consumers = graph.consumers()
    outs = {v.name for v in graph.outputs}
    prefix, defined, res = [], {x}, []
    for n in graph.nodes:
        if not _patchable(n, graph) or any(v.name not in defined and v.name not in graph.constants
                                           for v in n.inputs):
            break
        prefix.append(n)
        defined.update(n.output_names)
        names = {m.name for m in prefix}
        escaping = {v.name for m in prefix for v in m.outputs
                    if v.name in outs
                    or any(c.name not in names for c in consumers.get(v.name, ()))}
        cut = n.outputs[0].name
        if escaping == {cut} and cut not in outs and any(m.op in WINDOWED for m in prefix):
            res.append((cut, tuple(m.name for m in prefix)))
    return res


# ====================================================================== regions
def _conv_window(n: Node, lo: int, hi: int, axis: int) -> tuple:
    """Input rows (unclamped) that output rows [lo, hi) of a windowed op read along axis
    0 (H) / 1 (W)."""
    w = WINDOWED[n.op]
    k = n.inputs[w].shape[2 + axis] if w is not None else n.attr("kernel")[axis]
    s, d, p = n.attr("strides")[axis], n.attr("dilations")[axis], n.attr("pads")[axis]
    return lo * s - p, (hi - 1) * s - p + (k - 1) * d + 1


def _regions(stage: list, graph: Graph, cut: str, box: tuple) -> dict:
    """value name -> (h0, h1, w0, w1): the window of each stage value one tile needs."""
    need = {cut: box}
    for n in reversed(stage):
        out = n.outputs[0].name
        if out not in need:
            continue
        h0, h1, w0, w1 = need[out]
        for v in n.inputs:
            if v.name in graph.constants:
                continue
            if n.op in WINDOWED:
                H, W = v.shape[2:]
                a, b = _conv_window(n, h0, h1, 0)
                c, d = _conv_window(n, w0, w1, 1)
                r = (max(a, 0), min(b, H), max(c, 0), min(d, W))
            else:
                r = need[out]
            if v.name in need:
                o = need[v.name]
                r = (min(o[0], r[0]), max(o[1], r[1]), min(o[2], r[2]), max(o[3], r[3]))
            need[v.name] = r
            if n.op in WINDOWED:
                break
    return need


def _tiles(size: int, n: int) -> list:
    """n nearly equal [lo, hi) ranges covering range(size)."""
    edges = [size * i // n for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _conv_macs(n: Node, out_h: int, out_w: int) -> int:
    if WINDOWED.get(n.op) is None:
        return 0
    F, Cg, KH, KW = n.inputs[WINDOWED[n.op]].shape
    return int(n.outputs[0].shape[0]) * F * out_h * out_w * Cg * KH * KW


# ====================================================================== the rewrite
def apply_patches(graph: Graph, plan: PatchPlan) -> Graph:
    """The graph with its first stage (plan.nodes) run tile by tile into plan.cut."""
    names = set(plan.nodes)
    stage = [n for n in graph.nodes if n.name in names]
    rest = [n for n in graph.nodes if n.name not in names]
    cutv = stage[-1].outputs[0]
    N, C, H, W = cutv.shape
    rows, cols = _tiles(H, plan.n), _tiles(W, plan.n)
    new, row_vals = [], []
    for i, (h0, h1) in enumerate(rows):
        tiles = []
        for j, (w0, w1) in enumerate(cols):
            need = _regions(stage, graph, cutv.name, (h0, h1, w0, w1))
            tiles.append(_patch_nodes(stage, graph, need, f"p{i}_{j}", new))
        row = Value(f"{cutv.name}__row{i}", (N, C, h1 - h0, W), cutv.dtype)
        new.append(Node.make("concat", tiles, (row,), {"axis": 3}, f"{cutv.name}/row{i}"))
        row_vals.append(row)
    new.append(Node.make("concat", row_vals, (cutv,), {"axis": 2}, f"{cutv.name}/rows"))
    return graph.replace(nodes=tuple(new) + tuple(rest)).validate()


def _patch_nodes(stage: list, graph: Graph, need: dict, tag: str, out: list) -> Value:
    """Append one patch's nodes to `out`; return the patch's tile of the cut value."""
    local = {}      # value name -> (Value at patch shape, its window)
    made = set()

    def window(v: Value, want: tuple) -> Value:
        """v's patch value cropped to `want` (a slice when the patch computed more)."""
        if v.name not in local:     # the graph input: read its window
            pv, have = v, (0, v.shape[2], 0, v.shape[3])
        else:
            pv, have = local[v.name]
        if have == want:
            return pv
        h0, h1, w0, w1 = want
        cropped = Value(f"{v.name}__{tag}_{h0}_{w0}_{h1 - h0}x{w1 - w0}",
                        pv.shape[:2] + (h1 - h0, w1 - w0), v.dtype)
        if cropped.name not in made:
            made.add(cropped.name)
            out.append(Node.make("slice", (pv,), (cropped,), {
                "starts": (0, 0, h0 - have[0], w0 - have[2]),
                "ends": (pv.shape[0], pv.shape[1], h1 - have[0], w1 - have[2]),
                "steps": (1, 1, 1, 1)}, f"{v.name}/{tag}/crop"))
        return cropped

    for n in stage:
        v = n.outputs[0]
        if v.name not in need:
            continue
        h0, h1, w0, w1 = need[v.name]
        attrs = n.attr_dict
        if n.op in WINDOWED:
            x = n.inputs[0]
            a, b = _conv_window(n, h0, h1, 0)
            c, d = _conv_window(n, w0, w1, 1)
            H, W = x.shape[2:]
            ins = (window(x, (max(a, 0), min(b, H), max(c, 0), min(d, W))),) + n.inputs[1:]
            # padding only where the window passes the image border
            attrs["pads"] = (max(-a, 0), max(-c, 0), max(b - H, 0), max(d - W, 0))
        else:
            ins = tuple(u if u.name in graph.constants else window(u, need[v.name])
                        for u in n.inputs)
        pv = Value(f"{v.name}__{tag}", v.shape[:2] + (h1 - h0, w1 - w0), v.dtype)
        out.append(Node.make(n.op, ins, (pv,), attrs, f"{n.name}/{tag}"))
        local[v.name] = (pv, need[v.name])
    return local[stage[-1].outputs[0].name][0]


# ====================================================================== costs
def stage_macs(graph: Graph, plan_nodes, cut: str, n: int) -> tuple:
    """(MACs of the stage's convolutions per layer, with n x n patches)."""
    names = set(plan_nodes)
    stage = [m for m in graph.nodes if m.name in names]
    base = sum(_conv_macs(m, *m.outputs[0].shape[2:]) for m in stage if m.op in WINDOWED)
    H, W = graph.value(cut).shape[2:]
    total = 0
    for h0, h1 in _tiles(H, n):
        for w0, w1 in _tiles(W, n):
            need = _regions(stage, graph, cut, (h0, h1, w0, w1))
            total += sum(_conv_macs(m, need[m.outputs[0].name][1] - need[m.outputs[0].name][0],
                                    need[m.outputs[0].name][3] - need[m.outputs[0].name][2])
                         for m in stage if m.op in WINDOWED and m.outputs[0].name in need)
    return base, total


def peak_activations(graph: Graph) -> int:
    """Peak bytes of live values with the graph fused as compiled: each group's outputs live
    from its step to their last reader; graph inputs and outputs are the caller's."""
    fg = fuse(graph)
    io = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    last, size, born = {}, {}, {}
    for step, g in enumerate(fg.groups):
        for v in g.inputs:
            last[v.name] = step
        for v in g.outputs:
            if v.name not in io:
                born[v.name], size[v.name] = step, v.nbytes
    delta = np.zeros(len(fg.groups) + 1, np.int64)
    for k, s in size.items():
        delta[born[k]] += s
        delta[max(born[k], last.get(k, born[k])) + 1] -= s
    return int(np.cumsum(delta).max(initial=0))


# ====================================================================== the planner
def plan_patches(graph: Graph, n: int | None = None, budget_ram: int | None = None
                 ) -> PatchPlan | None:
    """The patch plan for an optimised graph (see the module docstring), or None."""
    cuts = _cuts(graph)
    if not cuts:
        return None
    before = peak_activations(graph)
    costs = []          # (extra MACs, stage MACs, grid, cut, nodes): cheap to know exactly
    for cut, nodes in cuts:
        H, W = graph.value(cut).shape[2:]
        for k in ((n,) if n is not None else GRIDS):
            if 2 <= k <= min(H, W):
                base, total = stage_macs(graph, nodes, cut, k)
                costs.append((total - base, base, k, cut, nodes))
    costs.sort(key=lambda c: (c[0], c[2]))
    if budget_ram is None and n is None and costs:
        limit = MAX_EXTRA * network_macs(graph)
        costs = [c for c in costs if c[0] <= limit] or costs[:1]
    plans = []
    for extra, base, k, cut, nodes in costs:     # the peak needs the rewritten graph
        trial = PatchPlan(k, cut, nodes, before, 0, base, extra)
        plan = PatchPlan(k, cut, nodes, before, peak_activations(apply_patches(graph, trial)),
                         base, extra)
        if budget_ram is not None and plan.peak_after <= budget_ram:
            return plan                             # the fewest extra MACs that fit
        plans.append(plan)
    if not plans:
        return None
    best = min(plans, key=lambda p: (p.peak_after, p.extra_macs, p.n))
    return None if n is None and best.peak_after >= before else best

def patch_graph(graph: Graph, patches, budget_ram: int | None = None) -> tuple:
    """(graph, PatchPlan | None) as `cgen compile --patches` asks: patches is None or
    "off" (none), "auto" (plan_patches chooses, under budget_ram when given) or a grid
    size n >= 2 (forced: a model without a patchable first stage is refused)."""
    if patches is None or patches == "off":
        return graph, None
    if patches != "auto":
        try:
            n = int(patches)
        except (TypeError, ValueError):
            n = 0
        if n < 2:
            raise ModelError("patches must be 'auto', 'off' or a grid size >= 2, got "
                             f"{patches!r}", "bad_input")
    plan = plan_patches(graph, None if patches == "auto" else n, budget_ram)
    if plan is None and patches != "auto":
        raise ModelError(f"--patches {patches}: the model has no first stage that patches can "
                         "run (convolutions and elementwise ops from its one 4-D input)",
                         "unsupported_attr")
    return (graph, None) if plan is None else (apply_patches(graph, plan), plan)


def prepare_patched(model, input_shapes=None, patches=None, budget_ram: int | None = None,
                    objective: str | None = None) -> tuple:
    """(FusedGraph, PatchPlan | None): pipeline.prepare with this pass between the graph
    passes and fusion.  With patches None they are planned ("auto") when the objective is
    "ram", or when the live activations per layer alone exceed budget_ram (then every
    per-layer workspace does).  The plan's activations must then fit the budget less
    SCRATCH_SHARE: the kernels' scratch is known only once they are lowered."""
    from .onnx_frontend import load_onnx
    from .pipeline import optimize_graph
    graph = optimize_graph(load_onnx(model, input_shapes))     # "off": never
    if patches is None and (objective == "ram" or (
            budget_ram is not None and peak_activations(graph) > budget_ram)):
        patches = "auto"
    room = None if budget_ram is None else int(budget_ram * (1 - SCRATCH_SHARE))
    graph, plan = patch_graph(graph, patches, room)
    return fuse(graph), plan


def network_macs(graph: Graph) -> int:
    """MACs of the graph's convolutions and matrix products."""
    total = 0
    for m in graph.nodes:
        if m.op in WINDOWED:
            total += _conv_macs(m, *m.outputs[0].shape[2:])
        elif m.op == "matmul":
            total += m.outputs[0].size * m.inputs[0].shape[-1]
    return total


def per_op_lower_bound(graph: Graph, fused: bool = True) -> int:
    """The per-operator activation lower bound (plan_tflm.op_lower_bound), of fused
    kernels by default."""
    from .plan_tflm import op_lower_bound
    return op_lower_bound(graph, fused)


__all__ = ["PatchPlan", "plan_patches", "apply_patches", "patch_graph", "prepare_patched",
           "peak_activations", "stage_macs", "per_op_lower_bound", "network_macs"]
