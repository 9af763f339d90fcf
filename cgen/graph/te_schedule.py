"""Default schedules of the built-in computes (innermost axis vectorized, reductions
just outside it) and the fusion of a group's elementwise epilogue into a template's
output stage (`wrap_output`)."""
from __future__ import annotations

from typing import Callable

from .. import te
from ..te.expr import Reduce
from ..te.tensor import ComputeOp, Tensor
from .graph_ir import Graph, ModelError
from .fuse import Group
from .te_ops import Inputs, build_fns, regroup


# ====================================================================== schedules
def lanes_of(target) -> int:
    from ..codegen.isa import isa_for
    isa = isa_for(target) if target is not None else None
    return isa.lanes if isa is not None else 1


def _vec_factor(extent: int, lanes: int) -> int:
    want = 2 * lanes if lanes > 1 else 16
    if extent >= want:
        return want
    return lanes if 1 < lanes <= extent else extent


def simple_schedule(s, target, inline: bool = True) -> None:
    """The default schedule of built-in computes: non-reduction intermediates inlined,
    every root stage with its innermost data axis split and vectorized and its
    reductions just outside that, outer data axes fused when nothing reduces."""
    lanes = lanes_of(target)
    if inline:
        for name, st in list(s.stages.items()):
            if not st.is_output and st.attach[0] == "root" and not isinstance(st.op.body, Reduce):
                s[name].compute_inline()
    for name, st in list(s.stages.items()):
        if st.attach[0] != "root":
            continue
        stage = s[name]
        *outer, last = stage.op.axis
        red = list(stage.op.reduce_axis)
        lo, li = stage.split(last, factor=_vec_factor(last.extent, lanes))
        stage.reorder(*outer, lo, *red, li)
        stage.vectorize(li)
        if len(outer) >= 2 and not red:
            stage.fuse(*outer)


def _replay(old, outputs):
    """A schedule over `outputs` with the records of `old` applied (same stage names)."""
    s = te.create_schedule(outputs)
    s.intrinsics.update(old.intrinsics)
    for rec in old.records:
        s.apply(rec)
    return s


def wrap_output(s, Y: Tensor, ep: Callable, target, block_hint=None):
    """Fuse an epilogue `ep(value, idx)` into the output Y of schedule `s`.

    A non-reduction output's body is wrapped (same stage, same loops).  A reduction
    gets an epilogue stage: with block_hint [(axis, factor), ...] those axes are split,
    their outer loops ordered as listed, and Y computed per block at the last one; an
    axis listed again splits its block again (a pixel block, then a register tile's
    columns in it); else Y is computed whole first."""
    body = Y.op.body
    if not isinstance(body, Reduce):
        new = ep(body, tuple(iv.var for iv in Y.op.axis))
        Y2 = Tensor(ComputeOp(Y.op.name, Y.op.axis, new, new.dtype))
        return _replay(s, [Y2]), Y2
    E = te.compute(Y.shape, lambda *i: ep(Y[i], i), name="epi")
    s2 = _replay(s, [E])
    st = s2[E]
    axes = list(st.op.axis)
    lanes = lanes_of(target)
    # a hinted axis whose block covers it whole stays inside the block (were it outside,
    # a 32-channel block of 32 channels would become 32 one-channel blocks)
    cur, extent, outer = list(axes), list(Y.shape), []
    for d, factor in block_hint or ():
        if extent[d] > factor:
            o, cur[d] = st.split(cur[d], factor=factor)
            outer.append(o)
            extent[d] = factor
    if outer:
        first = min(d for d, _ in block_hint)
        outer = axes[:first] + outer
        *mid, last = cur[first:]
        vo, vi = st.split(last, factor=_vec_factor(extent[-1], lanes))
        st.reorder(*outer, *mid, vo, vi)
        st.vectorize(vi)
        s2[Y].compute_at(st, outer[-1])
    else:
        last = axes[-1]
        vo, vi = st.split(last, factor=_vec_factor(last.extent, lanes))
        st.vectorize(vi)
    return s2, E


def _epilogue_fn(group: Group, graph: Graph, inputs: Inputs, nodes=None):
    """ep(value, idx, out_shape): the group's epilogue at `idx` of a kernel output of
    `out_shape` (same memory as the group output), `value` the anchor's result there."""
    anchor = group.nodes[0]
    a_out = anchor.outputs[0].name
    out = group.outputs[0]
    nodes = group.nodes[1:] if nodes is None else nodes

    def ep(value, idx, oshape):
        lidx = regroup(tuple(idx), tuple(oshape), out.shape)

        def anchor_fn(i):
            if any(n > 1 and a is not b for a, b, n in zip(i, lidx, out.shape)):
                raise ModelError(f"group {group.id}: the epilogue reads the anchor's output "
                                 "at another position", "unsupported_op")
            return value
        return build_fns(nodes, graph, inputs, {a_out: anchor_fn})[out.name](lidx)
    return ep


def epilogue_is_pointwise(group: Group) -> bool:
    """Whether every epilogue value has the anchor output's shape (no broadcast growth)."""
    if group.kind not in ("anchor", "reduction") or len(group.nodes) == 1:
        return True
    shape = group.nodes[0].outputs[0].shape
    return all(v.shape == shape for n in group.nodes[1:] for v in n.outputs)
