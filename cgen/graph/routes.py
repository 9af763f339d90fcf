"""Template routes: how a fused group becomes a template's kernel.

Where a group's anchor has an operator template (cgen.ops: conv2d, depthwise, pooling,
softmax, reductions, dense / matmul, qconv2d / qdense for the integer ops of folded QDQ
models), the kernel is the template's compute and schedule for the group's workload.
`ROUTES` maps (group kind, anchor op) to the function that makes its `Route`: the
template, its workload, the kernel's arguments, and the weights packed at compile time
into the template's layout (numpy).  A route raises _NoTemplate when the op has no
template, _NotCovered (a reported fallback) when its template family does not cover
the group.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import te
from .graph_ir import Graph, Node, Value
from .fuse import FusedGraph, Group
from .kernels import Arg, Route, _NoTemplate, _NotCovered
from .opset import OP_PATTERNS, REDUCTION
from .te_anchors import _bias_node
from .te_ops import _clip, _f
from .te_schedule import lanes_of, simple_schedule
from ..ops.conv.workload import out_size

EPILOGUE_BLOCK_BYTES = 16 * 1024   # a GEMM conv's accumulator block before its epilogue


def _templates():
    from ..ops.registry import templates
    return templates()


def _conv_route(group: Group, graph: Graph, target) -> Route:
    n = group.nodes[0]
    x, wv = n.inputs[0], n.inputs[1]
    w = graph.constants.get(wv.name)
    if w is None or (len(n.inputs) > 2 and n.inputs[2].name not in graph.constants):
        raise _NotCovered("weights computed at run time")
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    G = n.attr("groups")
    geo = dict(stride=list(n.attr("strides")), pad=list(n.attr("pads")),
               dilation=list(n.attr("dilations")))
    table = _templates()
    epi = tuple(group.nodes[1:])
    if len(n.inputs) > 2:       # the bias becomes the first epilogue step
        epi = (_bias_node(n),) + epi
    if G == C > 1 and Cg == 1 and "depthwise_conv2d" in table:
        tm = table["depthwise_conv2d"]
        wl = tm.workload(N, C, H, W, KH, KW, multiplier=F // C, **geo)
        return Route(tm, wl, [Arg("value", x.name), Arg("const", wv.name)],
                     lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg), epilogue=epi,
                     flops=tm.flops(wl))
    if (KH, KW) == (1, 1) and G == 1 and (H, W) == (1, 1) == conv_out_hw(n) \
            and not x.layout and "dense" in table:
        return _pointwise_as_dense(n, w, table["dense"], epi, target)
    tm, wl = conv_template(n, target)
    packed = _pack_conv_weights(tm.name, wl, w)
    if packed is None:
        raise _NotCovered(f"no weight packing for template {tm.name}")
    suffix, arr = packed
    pname = f"{wv.name}__{suffix}"
    hint = None
    if tm.name in ("conv2d_1x1", "conv2d_im2col"):
        def hint(cfg, tgt):
            return gemm_epilogue_blocks(cfg, wl, lanes_of(tgt))
    return Route(tm, wl, [Arg("value", x.name), Arg("const", pname)],
                 lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg, {1: arr.shape}),
                 {pname: arr}, epi, hint, flops=tm.flops(wl))


def gemm_epilogue_blocks(cfg, wl: dict, lanes: int):
    """Blocks of a GEMM conv's epilogue (wrap_output's block hint), None without one.

    One register tile where the depth is one block, B is the input itself (col "direct")
    and the tiles are whole (no row, column or block tails, and the epilogue's vectors
    divide a tile): the tile's sum is still in L1 when the epilogue reads it, the workspace
    is one tile, and the tile starts from zero (cgen.lower.passes.tensorize).  The tiles
    go row panel by row panel over the pixel block, so the output is written as a few
    rows at a time.  Measured on x86-avx2 (AMD Zen 3), MobileNetV2's 1x1 convs + epilogue
    alone, interleaved, best of 40, two runs, against the row blocks below: 16 -> 96 at
    112x112 885-933 -> 593-607 us, 24 -> 144 at 56x56 356-378 -> 288-291, 144 -> 24
    318-347 -> 294-302, 32 -> 144 at 28x28 145 -> 118, 96 -> 576 at 14x14 unchanged.
    Otherwise the GEMM's pixel block, then rows of micro-tiles whose accumulator block
    stays near L1 size (EPILOGUE_BLOCK_BYTES).  An unfolded (im2col) pixel block is rebuilt
    for every block of rows, so there the rows are all the output channels (a 3->32 stem at
    224 built it 8 times)."""
    if "nc" not in cfg or "mr" not in cfg:
        return None
    P = int(np.prod(out_size(wl)))
    nc, mr, nr = min(cfg["nc"], P), cfg["mr"], cfg.get("nr", 0)
    if wl["op"] == "conv2d_im2col":
        return [(3, cfg["nc"]), (2, wl["F"])]
    vec = 2 * lanes if nr >= 2 * lanes else lanes
    if cfg.get("col") == "direct" and cfg.get("micro") != "off" \
            and cfg.get("kc", 0) >= wl["C"] // wl["groups"] \
            and nr and P % nc == 0 and nc % nr == 0 and nr % vec == 0 \
            and (wl["F"] // wl["groups"]) % mr == 0:
        return [(3, nc), (2, mr), (3, nr)]
    rows = (EPILOGUE_BLOCK_BYTES // (4 * nc)) // mr * mr
    rows = max(mr, min(cfg.get("mc", 1) * mr, rows))
    return [(3, cfg["nc"]), (2, rows)]


def _pointwise_as_dense(n: Node, w: np.ndarray, tm, epi: tuple, target) -> Route:
    """A 1x1 convolution of a 1x1 image (MobileNetV3's head, squeeze-excite) is a matrix
    times a vector: the dense template's GEMV, on the same memory (N x C x 1 x 1 is N x C)."""
    from ..ops.gemm import pack_b
    x, wv = n.inputs[0], n.inputs[1]
    N, C = x.shape[:2]
    F = w.shape[0]
    bb = tm.panel_columns(target)
    wl = tm.workload(N, F, C, epilogue=(), weights="packed", b_block=bb)
    arr = pack_b(np.ascontiguousarray(w.reshape(F, C).T, np.float32), bb)
    pname = f"{wv.name}__panels{bb}"
    return Route(tm, wl, [Arg("value", x.name), Arg("const", pname)],
                 lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg, {1: arr.shape}), {pname: arr},
                 epi, portable_build=lambda tgt, cfg: _dense_te(wl, tgt), flops=tm.flops(wl))


def _conv_direct_route(group: Group, graph: Graph, target) -> Route:
    """The RAM objective's convolution: direct on NCHW (grouped or not, any kernel size and
    dilation), the padding read in place and the weights as ONNX stores them: no im2col,
    no packed copy of the input or the output, so no scratch.  Depthwise convolutions keep
    their template (it has no scratch with its RAM knobs)."""
    n = group.nodes[0]
    x, wv = n.inputs[0], n.inputs[1]
    N, C, H, W = x.shape
    F, Cg, KH, KW = wv.shape
    G = n.attr("groups")
    table = _templates()
    if (G == C > 1 and Cg == 1) or "conv2d_nchw" not in table \
            or wv.name not in graph.constants or (len(n.inputs) > 2
                                                  and n.inputs[2].name not in graph.constants):
        return _conv_route(group, graph, target)
    tm = table["conv2d_nchw"]
    wl = tm.workload(N, C, H, W, F, KH, KW, stride=list(n.attr("strides")),
                     pad=list(n.attr("pads")), dilation=list(n.attr("dilations")), groups=G)
    epi = tuple(group.nodes[1:])
    if len(n.inputs) > 2:
        epi = (_bias_node(n),) + epi

    def hint(cfg, tgt):
        """The epilogue per block of one output row and a register tile of channels, so
        the accumulator block is rows x OW floats, not the whole output."""
        return [(1, cfg.get("rows", 1)), (2, 1)]
    return Route(tm, wl, [Arg("value", x.name), Arg("const", wv.name)],
                 lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg), epilogue=epi,
                 block_hint=hint, flops=tm.flops(wl))


def conv_template(n: Node, target, pads=None):
    """(template, workload) of a (non-depthwise) conv2d node for the target, pre-packed
    weights: conv2d_template_for's choice, with corrections measured on this project's
    models (host AVX-512, one core) until tuning replaces them:
    - NCHWc channel blocks narrower than a vector leave its register tile scalar
      (10-100x slower on few-channel convolutions such as a network's first layer), and
      strided NCHWc convolutions ran 1.5-3x slower than the im2col GEMM (3x3 stride 2,
      16 -> 32 channels: 8.9 vs 5.5 us), and an input block narrower than a vector (a
      3-channel first layer: its NCHW <-> NCHWc copies cost more than the conv; 3 -> 16
      3x3 at 256x256: 2.9 vs 1.2 ms) go to the im2col GEMM, whose masked micro-kernels
      take any channel count;
    - the GEMM family's tile rows are the largest divisor of the output channels with a
      register-tile kernel (7 or 11 channels would otherwise get one-row tiles)."""
    try:
        from ..ops.conv import Conv2dGemmTemplate, conv2d_template_for
        from ..ops.conv.gemm import weight_depth_block
    except ImportError:
        raise _NotCovered("no conv2d templates") from None
    N, C, H, W = n.inputs[0].shape
    F, Cg, KH, KW = n.inputs[1].shape
    G = n.attr("groups")
    geo = dict(stride=list(n.attr("strides")), pad=list(n.attr("pads") if pads is None else pads),
               dilation=list(n.attr("dilations")))
    base = {"op": "conv2d", "N": N, "C": C, "H": H, "W": W, "F": F, "KH": KH, "KW": KW,
            "groups": G, "layout": "NCHW", "weights": "packed", **geo}
    tm, wl = conv2d_template_for(base, target)
    lanes = lanes_of(target)
    strided = any(st > 1 for st in n.attr("strides"))
    if tm.name == "conv2d_nchwc" and lanes > 1 and KH * KW > 1 and (
            wl["oc_bn"] % lanes or strided or wl["ic_bn"] < lanes):
        tm = _templates().get("conv2d_im2col") or Conv2dGemmTemplate("conv2d_im2col")
        wl = tm.workload(N, C, H, W, F, KH, KW, groups=G, weights="packed",
                         oc_bn=_gemm_mr(base, target), **geo)
    if tm.name in ("conv2d_1x1", "conv2d_im2col") and wl.get("oc_bn"):
        mr = _gemm_mr(base, target)
        if mr != wl["oc_bn"]:
            wl = tm.workload(N, C, H, W, F, KH, KW, groups=G, weights="packed", oc_bn=mr, **geo)
        kb = weight_depth_block(tm, wl, target)
        if kb is not None:
            wl = tm.workload(N, C, H, W, F, KH, KW, groups=G, weights="packed", oc_bn=mr,
                             k_bn=kb, **geo)
    return tm, wl


def split_conv_padding(fg: FusedGraph, target, objective: str = "latency") -> FusedGraph:
    """A padded convolution that goes to the im2col GEMM with many taps per input pixel
    (KH*KW > 4*stride^2) reads a zero-padded copy of its input made by a pad kernel just
    before it: the unfolded block is then plain vector copies instead of one bounds test
    per element and tap (LeNet's 5x5 first layer: 24.5 -> 5.0 us; the pad kernel itself
    tests every element once, which does not pay for 3x3 stride 2)."""
    graph = fg.graph
    if objective == "ram":      # its convolutions are direct: no padded copy
        return fg
    taken = set(graph.values())
    groups = []
    for g in fg.groups:
        n = g.nodes[0]
        if g.kind != "anchor" or n.op != "conv2d" or not any(n.attr("pads")) \
                or n.inputs[1].name not in graph.constants:
            groups.append(g)
            continue
        x = n.inputs[0]
        F, Cg, KH, KW = n.inputs[1].shape
        sh, sw = n.attr("strides")
        if (n.attr("groups") == x.shape[1] > 1 and Cg == 1) or KH * KW <= 4 * sh * sw:
            groups.append(g)
            continue
        try:
            tm, _ = conv_template(n, target, pads=(0, 0, 0, 0))
        except Exception:  # noqa: BLE001 - the lowering reports it
            groups.append(g)
            continue
        if tm.name != "conv2d_im2col":
            groups.append(g)
            continue
        t, l, b, r = n.attr("pads")
        N, C, H, W = x.shape
        name = f"{x.name}__pad{t}_{l}_{b}_{r}"
        while name in taken:
            name += "_"
        taken.add(name)
        xp = Value(name, (N, C, H + t + b, W + l + r), x.dtype)
        pad = Node.make("pad", (x,), (xp,), {"pads": (0, 0, t, l, 0, 0, b, r),
                                             "mode": "constant", "value": 0.0}, f"{n.name}/pad")
        conv = Node.make("conv2d", (xp,) + n.inputs[1:], n.outputs,
                         {**n.attr_dict, "pads": (0, 0, 0, 0)}, n.name)
        reads_x = any(x.name in m.input_names for m in g.nodes[1:])
        groups.append(Group(0, "injective", (pad,), (x,), (), (xp,)))
        groups.append(replace(g, nodes=(conv,) + g.nodes[1:],
                              inputs=(xp,) + tuple(v for v in g.inputs
                                                   if v.name != x.name or reads_x)))
    return FusedGraph(graph, tuple(replace(g, id=i) for i, g in enumerate(groups)))


def _gemm_mr(base: dict, target) -> int:
    """Rows of a GEMM conv's register tile: the family's default, or a larger divisor of
    the output channels per group that still has a register-tile kernel (7 or 11 output
    channels would otherwise get one-row tiles).  When no divisor of at least 4 rows has
    one, the row count of least estimated time, leftover rows included: full tiles at the
    tile's FMAs per load (mr x v / (mr + v) for v vectors of columns), leftover rows at
    about half an FMA per load (they run outside the tile).  ShuffleNet's 58 channels got
    two-row tiles (7 GFLOP/s) before; 116 keeps its 4-row divisor, measured faster than 11
    rows with 6 left over."""
    from ..ops.conv.tile import tile_kernel_shape_ok
    from ..ops.conv.gemm import gemm_default_mr
    mr = gemm_default_mr(base, target)
    if not target.vector_registers:
        return mr
    fg = base["F"] // base["groups"]
    limit = 12 if target.vector_registers >= 32 else 6
    v = 2

    def cost(m):
        return (fg - fg % m) * (m + v) / (m * v) + (fg % m) * 2.0

    ok = [m for m in range(1, min(fg, limit) + 1)
          if m == mr or any(tile_kernel_shape_ok(target, m, k * target.lanes()) for k in (1, 2, 3))]
    best = max((m for m in ok if fg % m == 0 and m >= mr), default=mr)
    if fg % best == 0 and best >= min(4, fg):
        return best
    return min(ok, key=lambda m: (cost(m), fg % m, -m))


def conv_out_hw(n: Node) -> tuple:
    return tuple(n.outputs[0].shape[2:])


def _pack_conv_weights(tname: str, wl: dict, w: np.ndarray):
    w = np.ascontiguousarray(w, np.float32)
    if tname == "conv2d_nchwc":
        from ..ops.conv.packing import pack_weights_nchwc_np
        return f"nchwc{wl['ic_bn']}x{wl['oc_bn']}", pack_weights_nchwc_np(w, wl["ic_bn"],
                                                                          wl["oc_bn"])
    if tname in ("conv2d_1x1", "conv2d_im2col"):
        from ..ops.conv.packing import pack_weights_gemm_np
        kb = wl.get("k_bn")
        return (f"gemm{wl['oc_bn']}" + (f"k{kb}" if kb else ""),
                pack_weights_gemm_np(w, wl["groups"], wl["oc_bn"], kb))
    if tname == "conv2d_winograd":
        from ..ops.conv.winograd import winograd_weights_np
        return (f"wino{wl['tile']}x{wl['oc_bn']}",
                winograd_weights_np(w, wl["tile"], wl["oc_bn"], wl["groups"]))
    return None


def _tmpl_build(tm, wl, tgt, cfg, shapes=None):
    s, tensors = tm.build(wl, tgt, cfg)
    for k, shape in (shapes or {}).items():
        if tuple(tensors[k].shape) != tuple(shape):
            raise ValueError(f"{tm.name}: argument {k} has shape {tensors[k].shape}, "
                             f"expected {shape}")
    return s, list(tensors)


def _pool_route(group: Group, graph: Graph, target) -> Route:
    n = group.nodes[0]
    x = n.inputs[0]
    tm = _templates().get(n.op)
    if tm is None:
        raise _NotCovered(f"no {n.op} template")
    N, C, H, W = x.shape
    if x.dtype != "float32":        # the pool templates are float32; te pools any dtype
        raise _NotCovered(f"{n.op} template takes float32, not {x.dtype}")
    extra = {"count_include_pad": bool(n.attr("count_include_pad"))} if n.op == "avg_pool2d" else {}
    wl = tm.workload(N, C, H, W, list(n.attr("kernel")), list(n.attr("strides")),
                     list(n.attr("pads")), list(n.attr("dilations")), bool(n.attr("ceil_mode")),
                     **extra)
    return Route(tm, wl, [Arg("value", x.name)], lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg),
                 epilogue=tuple(group.nodes[1:]), flops=tm.flops(wl))


_DENSE_ACTS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}


def _dense_steps(group: Group, graph: Graph, N: int):
    """The epilogue as dense template steps: (steps, clip, extra Args) or None."""
    cur = group.nodes[0].outputs[0].name
    steps, extra, clip = [], [], None
    for n in group.nodes[1:]:
        if cur not in n.input_names or n.outputs[0].shape != group.nodes[0].outputs[0].shape:
            return None
        if n.op in _DENSE_ACTS:
            steps.append(_DENSE_ACTS[n.op])
        elif n.op == "clip" and clip is None:
            lo, hi = n.attr("min"), n.attr("max")
            if lo is None or hi is None:
                return None
            if (lo, hi) == (0.0, 6.0):
                steps.append("relu6")
            else:
                steps.append("clip")
                clip = [float(lo), float(hi)]
        elif n.op == "add":
            other = n.inputs[1] if n.inputs[0].name == cur else n.inputs[0]
            if other.name == cur:
                return None
            c = graph.constants.get(other.name)
            if c is not None and "bias" not in steps and c.size == N and other.shape[-1] == N:
                steps.append("bias")
                extra.append(("bias", other))
            elif c is None and other.shape == n.outputs[0].shape and "residual" not in steps:
                steps.append("residual")
                extra.append(("residual", other))
            else:
                return None
        else:
            return None
        cur = n.outputs[0].name
    # the template reads bias before residual
    order = sorted(extra, key=lambda e: e[0] != "bias")
    return steps, clip, [Arg("const" if k == "bias" else "value", v.name) for k, v in order]


def _matmul_route(group: Group, graph: Graph, target) -> Route:
    n = group.nodes[0]
    a, b = n.inputs
    bc = graph.constants.get(b.name)
    table = _templates()
    if bc is None or len(b.shape) != 2 or a.name in graph.constants or "dense" not in table:
        return _batch_matmul_route(group, graph, table)
    K, N = b.shape
    M = int(np.prod(a.shape[:-1], dtype=np.int64))
    tm = table["dense"]
    conv = _dense_steps(group, graph, N)
    steps, clip, extra = conv if conv is not None else ((), None, [])
    from ..ops.gemm import pack_b
    bb = tm.panel_columns(target)   # one contiguous weight stream per micro-tile
    wl = tm.workload(M, N, K, epilogue=tuple(steps), weights="packed", b_block=bb, clip=clip)
    arr = pack_b(np.ascontiguousarray(bc, np.float32), bb)
    pname = f"{b.name}__panels{bb}"

    def portable(tgt, cfg):
        return _dense_te(wl, tgt)
    return Route(tm, wl, [Arg("value", a.name), Arg("const", pname)] + extra,
                 lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg, {1: arr.shape}), {pname: arr},
                 () if conv is not None else tuple(group.nodes[1:]), portable_build=portable,
                 flops=tm.flops(wl))


def _batch_matmul_route(group: Group, graph: Graph, table) -> Route:
    """MatMul of two activations, or with batch dimensions (attention's Q.K^T, P.V)."""
    n = group.nodes[0]
    a, b = n.inputs
    if len(a.shape) < 2 or len(b.shape) < 2 or "batch_matmul" not in table:
        raise _NotCovered("matmul of a vector")
    tm = table["batch_matmul"]
    conv = _dense_steps(group, graph, b.shape[-1])
    steps, clip, extra = conv if conv is not None else ((), None, [])
    wl = tm.workload(a.shape, b.shape, epilogue=tuple(steps), clip=clip)
    args = [Arg("const" if v.name in graph.constants else "value", v.name) for v in (a, b)]
    return Route(tm, wl, args + extra, lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg),
                 epilogue=() if conv is not None else tuple(group.nodes[1:]), flops=tm.flops(wl))


def _dense_te(wl: dict, target):
    """The dense template's arguments (A, packed B panels, [bias], [R], C) computed by a
    plain te compute: the portable C of a dense kernel."""
    M, N, K, bb = wl["M"], wl["N"], wl["K"], wl["b_block"]
    steps = list(wl["epilogue"])
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((-(-N // bb), K, bb), "float32", name="B")
    ins = [A, B]
    bias = te.placeholder((N,), "float32", name="bias") if "bias" in steps else None
    R = te.placeholder((M, N), "float32", name="R") if "residual" in steps else None
    ins += [t for t in (bias, R) if t is not None]
    k = te.reduce_axis((0, K), name="k")
    acc = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[j // bb, k, j % bb], axis=k),
                     name="acc")
    lo, hi = wl.get("clip") or (0.0, 6.0)

    def ep(i, j):
        v = acc[i, j]
        for st in steps:
            if st == "bias":
                v = v + bias[j]
            elif st == "residual":
                v = v + R[i, j]
            elif st == "relu":
                v = te.maximum(v, _f(0.0))
            elif st == "relu6":
                v = _clip(v, 0.0, 6.0)
            elif st == "clip":
                v = _clip(v, lo, hi)
            elif st == "sigmoid":
                v = te.sigmoid(v)
            elif st == "tanh":
                v = te.tanh(v)
            else:
                raise ValueError(f"dense epilogue step {st!r}")
        return v
    C = te.compute((M, N), ep, name="C") if steps else acc
    s = te.create_schedule(C)
    simple_schedule(s, target)
    return s, ins + [C]


def _reduction_route(group: Group, graph: Graph, target) -> Route:
    n = group.nodes[0]
    x = n.inputs[0]
    table = _templates()
    if n.op in ("softmax", "log_softmax") and n.op in table:
        tm = table[n.op]
        wl = tm.workload(list(x.shape), n.attr("axis"))
    elif n.op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min"):
        axes, keep = tuple(n.attr("axes")), bool(n.attr("keepdims"))
        if n.op == "reduce_mean" and len(x.shape) == 4 and axes == (2, 3) \
                and "global_avg_pool2d" in table:
            tm = table["global_avg_pool2d"]
            wl = tm.workload(*x.shape)
        elif "reduce" in table and axes:
            tm = table["reduce"]
            wl = tm.workload(n.op.split("_")[1], list(x.shape), list(axes), keep)
        else:
            raise _NotCovered("no reduce template")
    elif n.op in ("softmax", "log_softmax"):
        raise _NotCovered(f"no {n.op} template")
    else:
        raise _NoTemplate(f"no {n.op} template")
    return Route(tm, wl, [Arg("value", x.name)], lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg),
                 epilogue=tuple(group.nodes[1:]), flops=tm.flops(wl))


def _qlinear_route(group: Group, graph: Graph, target) -> Route:
    """qlinear_conv2d / qlinear_matmul (from folded QDQ) -> the qconv2d / qdense templates
    with ONNX rounding: weights, zero points, scales and the int32 bias as constants."""
    n = group.nodes[0]
    table = _templates()
    c = graph.constants
    ins = n.inputs
    if any(v.name not in c for v in ins[1:]):
        raise _NotCovered("quantisation parameters computed at run time")
    if n.op == "qlinear_conv2d":
        x, xs, xz, w, ws, wz, ys, yz = ins[:8]
        tname = "qconv2d"
    else:
        x, xs, xz, w, ws, wz, ys, yz = ins
        tname = "qdense"
    tm = table.get(tname)
    if tm is None:
        raise _NotCovered(f"no {tname} template")
    wa = c[w.name]
    per_channel = c[ws.name].size > 1
    y = n.outputs[0]
    if n.op == "qlinear_conv2d":
        N, C, H, W = x.shape
        F, Cg, KH, KW = wa.shape
        wl = tm.workload(N, C, H, W, F, KH, KW, stride=list(n.attr("strides")),
                         pads=list(n.attr("pads")), dilation=list(n.attr("dilations")),
                         groups=n.attr("groups"), x_dtype=x.dtype, w_dtype=w.dtype,
                         y_dtype=y.dtype, rounding="onnx", per_channel=per_channel)
        bias = c[ins[8].name] if len(ins) > 8 else np.zeros(F, np.int32)
        channels = F
    else:
        K, Nn = wa.shape
        M = int(np.prod(x.shape[:-1], dtype=np.int64))
        # the constant weights go in transposed (N, K): the packed kernels read them in
        # place instead of transposing K x N bytes on every call
        wl = tm.workload(M, Nn, K, a_dtype=x.dtype, b_dtype=w.dtype, y_dtype=y.dtype,
                         rounding="onnx", per_channel=per_channel, b_layout="NK")
        bias = np.zeros(Nn, np.int32)
        channels = Nn
    P = channels if per_channel else 1

    def vec(v, dtype, size):
        return np.ascontiguousarray(np.broadcast_to(c[v.name].reshape(-1), (size,)).astype(dtype))
    made = {f"{n.name}__bias": np.ascontiguousarray(bias, np.int32),
            f"{xz.name}__zp": vec(xz, np.int32, 1), f"{wz.name}__zp{P}": vec(wz, np.int32, P),
            f"{yz.name}__zp": vec(yz, np.int32, 1), f"{xs.name}__s": vec(xs, np.float32, 1),
            f"{ws.name}__s{P}": vec(ws, np.float32, P), f"{ys.name}__s": vec(ys, np.float32, 1)}
    wname, wshape, packed = w.name, wa.shape, {}
    if n.op != "qlinear_conv2d":            # b_layout "NK" above
        wname, wshape = f"{w.name}__nk", wa.shape[::-1]
        packed = {wname: np.ascontiguousarray(wa.T)}
    args = [Arg("value", x.name), Arg("const", wname)] + [Arg("const", k) for k in made]
    shapes = {1: wshape}
    shapes.update({2 + i: a.shape for i, a in enumerate(made.values())})
    return Route(tm, wl, args, lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg, shapes),
                 {**packed, **made}, tuple(group.nodes[1:]), flops=tm.flops(wl))


ROUTES = {
    ("anchor", "conv2d"): _conv_route,
    ("anchor", "max_pool2d"): _pool_route, ("anchor", "avg_pool2d"): _pool_route,
    ("anchor", "matmul"): _matmul_route,
    ("anchor", "qlinear_conv2d"): _qlinear_route, ("anchor", "qlinear_matmul"): _qlinear_route,
    **{("reduction", op): _reduction_route for op, p in OP_PATTERNS.items() if p == REDUCTION},
}


# the routes the RAM objective takes instead (no scratch); others as ROUTES
RAM_ROUTES = {("anchor", "conv2d"): _conv_direct_route}
OBJECTIVE_ROUTES = {"latency": ROUTES, "ram": {**ROUTES, **RAM_ROUTES}}


def route_for(group: Group, graph: Graph, target, objective: str = "latency") -> Route:
    """The template route of a group (ROUTES, or RAM_ROUTES for the RAM objective), or
    _NoTemplate."""
    first = group.nodes[0]
    build = OBJECTIVE_ROUTES[objective].get((group.kind, first.op))
    if build is None:
        raise _NoTemplate(f"no template for {group.kind} group of {first.op}")
    return build(group, graph, target)
