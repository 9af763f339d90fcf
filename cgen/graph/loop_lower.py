"""A loop node (cgen.graph.loop_op) as kernels and C: its body's kernels are built once,
and NAME_run runs them in one `for (t = 0; t < T; ++t)` loop.

    k = lower_loop(fg, group, target, tuned, name, objective, lower_group, legalize)
    k.functions()                          # the body's kernels with C functions, once each
    lay = layout(k, scratch_of, align)     # the loop's workspace region (its scratch)
    stmt = statement(k, lay, arg_pointer, const_name, base)   # the C statement

The body graph is simplified, folded, fused and legalized like a model's graph, and each
of its groups becomes a kernel by the same `lower_group` (passed in by cgen.graph.drive,
so this module sits below it).  Storage of one step, with no copy inside the loop: the
sequence inputs are read at `x + slot * stride` (slot t, or T-1-t for a reverse loop); a
body output stacked into a sequence output is written straight into its slot, and when
it is a state the next step reads it there (step 0 reads a buffer filled from the init
input, or zeros); any other state ping-pongs between two buffers of the loop's region
(step t reads buffer t & 1 and writes the other).  The body's intermediates get offsets
of their own in the region, from the same planner as the model's (cgen.graph.memory),
step by step of the body.  After the loop the final outputs are copied out of what the
last step wrote.  The region is the loop kernel's scratch in the model's plan: it lives
for the loop's one step there.  A profiling build times the whole loop as that kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

from pycparser import c_ast

from ..codegen.c import C_TYPES
from .entry import buffer, no_scratch, pointer_cast, workspace_at
from .fold import fold_constants, remove_dead
from .fuse import fuse
from .graph_ir import ModelError
from .kernels import Arg, GroupKernel
from .loop_op import LoopSpec
from .memory import ALIGN, lifetimes, plan, storage
from .rules import simplify
from .shapes import infer_shapes


@dataclass
class LoopKernel(GroupKernel):
    """A loop group's kernel: the body's kernels (built once) and the loop around them.
    `inputs` are the node's inputs (values or constants), then the constants the body's
    kernels read; `outputs` the node outputs other kernels or the graph read."""
    spec: LoopSpec | None = None
    body: tuple = ()                # GroupKernels of one step, in call order
    body_graph: object = None       # the body as lowered

    @property
    def is_alias(self) -> bool:
        return False

    def describe(self) -> str:
        ops = "; ".join(k.describe() for k in self.functions())
        return f"loop x{self.spec.trips} ({ops})"

    def functions(self) -> list:
        return [k for k in self.body if not k.is_alias]


def lower_loop(fg, group, target, tuned, name: str, objective: str, lower_group,
               legalize) -> LoopKernel:
    """The loop node of `group` -> a LoopKernel (its body lowered with `lower_group`)."""
    node = group.nodes[0]
    spec = LoopSpec.of(node)
    body = infer_shapes(remove_dead(fold_constants(simplify(spec.body))))
    bfg = legalize(fuse(body), target, objective)
    kernels = tuple(lower_group(bfg, g, target, tuned, name=f"{name}_{g.id}_{g.nodes[0].op}",
                                objective=objective) for g in bfg.groups)
    consts = {}
    for k in kernels:
        for a in k.inputs:
            if a.kind == "const" and a.name not in consts:
                arr = k.consts.get(a.name)
                consts[a.name] = bfg.graph.constants[a.name] if arr is None else arr
    args = [Arg("const" if v.name in fg.graph.constants else "value", v.name)
            for v in node.inputs] + [Arg("const", c) for c in consts]
    fallback = "; ".join(f"{k.name}: {k.fallback}" for k in kernels if k.fallback)
    return LoopKernel(group, name, "loop", None, None, tuple(args),
                      tuple(v.name for v in group.outputs), None, None, consts,
                      spec.trips * sum(k.flops for k in kernels), "", fallback,
                      spec=spec, body=kernels, body_graph=bfg.graph)


# ====================================================================== storage
@dataclass(frozen=True)
class Layout:
    """Where one step's buffers are, in bytes from the start of the loop's region."""
    total: int
    state: dict             # body input of a state -> (offset, bytes of one buffer)
    offsets: dict           # the body plan's offsets ("v:NAME", "s:KERNEL")
    root: object            # body value name -> the value owning its buffer
    out_bind: dict          # root -> index of the body output it is written into


def _aligned(n: int, align: int) -> int:
    return -(-n // align) * align


def _seq_written(k: LoopKernel) -> dict:
    """Body output -> index of the node output it is stacked into, for those read."""
    node = k.group.nodes[0]
    return {b: j for j, b in enumerate(k.spec.seq_out) if node.outputs[j].name in k.outputs}


def layout(k: LoopKernel, scratch_of: dict, align: int = ALIGN) -> Layout:
    """The loop's region: the state buffers, then the body's own plan.  A state whose
    output is stacked into a sequence output reads the previous slot there and has one
    buffer (its value before step 0); the others ping-pong between two buffers."""
    g, body = k.body_graph, list(k.body)
    values = g.values()
    values.update({v.name: v for b in body for n in b.group.nodes for v in n.outputs})
    store = storage(g, body, values)
    r, _, out_bind, copies, _ = store
    if copies:
        raise ModelError(f"{k.name}: body output {g.outputs[copies[0][0]].name!r} is not "
                         "computed by the body (cgen needs each loop output computed)")
    seq, carried = _seq_written(k), {o for _, o, _ in k.spec.state}
    stray = [v.name for v in g.outputs if v.name not in seq and v.name not in carried]
    if stray:
        raise ModelError(f"{k.name}: body output {stray[0]!r} is neither stacked nor a state")
    off, state = 0, {}
    for i, o, _ in k.spec.state:
        size = _aligned(values[i].nbytes, align)
        state[i] = (off, size)
        off += size if o in seq else 2 * size
    ivs = lifetimes(body, values, store, scratch_of)
    pl = plan(ivs, align) if ivs else None
    return Layout(off + (pl.total if pl else 0), state,
                  {n: off + o for n, o in (pl.offsets.items() if pl else ())}, r, out_bind)


def scratch_bytes(k: LoopKernel, isa, stack_limit: int, align: int = ALIGN) -> int:
    """The loop's region, with its body kernels' scratch as the printer assigns it."""
    from ..codegen.c import emit_unit
    fns = k.functions()
    sizes = emit_unit([(f.func, f.portable, isa, False, stack_limit) for f in fns], [],
                      guard_fallbacks=True)[1] if fns else []
    return layout(k, {f.name: s for f, s in zip(fns, sizes)}, align).total


# ====================================================================== C
def _int(v: int) -> c_ast.Constant:
    return c_ast.Constant("int", str(v))


def _copy(dst, src, n: int) -> c_ast.For:
    """for (i = 0; i < n; ++i) dst[i] = src[i]  (src None: zeros)."""
    i = c_ast.ID("i")
    value = _int(0) if src is None else c_ast.ArrayRef(src, i)
    return c_ast.For(c_ast.Assignment("=", i, _int(0)), c_ast.BinaryOp("<", i, _int(n)),
                     c_ast.UnaryOp("++", i), c_ast.Assignment("=", c_ast.ArrayRef(dst, i), value))


def _decl(name: str, ctype: str) -> c_ast.Decl:
    return c_ast.Decl(name, [], [], [], [], c_ast.TypeDecl(name, [], None,
                                                           c_ast.IdentifierType([ctype])),
                      None, None)


def _ws_buffer(dtype: str, offset) -> c_ast.Node:
    """(T *) ((void *) (ws + offset)), offset a C expression."""
    return pointer_cast(C_TYPES[dtype], pointer_cast("void", c_ast.BinaryOp(
        "+", c_ast.ID("ws"), offset)))


def statement(k: LoopKernel, lay: Layout, arg_pointer, const_name, base: int,
              scratch_of: dict) -> c_ast.Compound:
    """The C of the loop: states filled, T steps of the body's calls, finals copied out.
    arg_pointer(Arg, dtype) is the C expression of a node input or output (the model's
    storage); const_name(name) the C name of a constant; base the region's workspace
    offset."""
    spec, g = k.spec, k.body_graph
    node = k.group.nodes[0]
    T = spec.trips
    t = c_ast.ID("t")
    slot = c_ast.BinaryOp("-", _int(T - 1), t) if spec.reverse else t
    before = c_ast.BinaryOp("-", _int(T), t) if spec.reverse else c_ast.BinaryOp("-", t, _int(1))
    parity = c_ast.BinaryOp("&", t, _int(1))
    values = g.values()
    bvalue = {v.name: v for v in g.inputs}
    outer_in = {}
    for (role, bname), v in zip(spec.input_roles(), node.inputs):
        kind = "const" if any(a.kind == "const" and a.name == v.name for a in k.inputs) \
            else "value"
        outer_in[bname] = (role, arg_pointer(Arg(kind, v.name), v.dtype))
    seq_out = _seq_written(k)
    state_of = {o: (i, has) for i, o, has in spec.state}

    def pair(i: str, dtype: str, which):
        off, size = lay.state[i]
        at_pair = c_ast.BinaryOp("*", which, _int(size))
        return _ws_buffer(dtype, c_ast.BinaryOp("+", _int(base + off), at_pair)
                          if base + off else at_pair)

    def at(ptr, index, n: int):
        return c_ast.BinaryOp("+", ptr, c_ast.BinaryOp("*", index, _int(n)))

    def stacked(bname: str, dtype: str, index):
        ptr = arg_pointer(Arg("value", node.outputs[seq_out[bname]].name), dtype)
        return at(ptr, index, values[bname].size)

    def out_pointer(bname: str, dtype: str):
        if bname in seq_out:
            return stacked(bname, dtype, slot)
        # step t writes the buffer step t+1 reads
        return pair(state_of[bname][0], dtype, c_ast.BinaryOp("-", _int(1), parity))

    def state_pointer(i: str, o: str, dtype: str):
        if o in seq_out:        # the previous step's slot; before step 0, the buffer
            return c_ast.TernaryOp(c_ast.BinaryOp("==", t, _int(0)),
                                   buffer(dtype, base + lay.state[i][0]),
                                   stacked(o, dtype, before))
        return pair(i, dtype, parity)

    def pointer(name: str, dtype: str):
        v = lay.root(name)
        if v in lay.out_bind:
            return out_pointer(g.outputs[lay.out_bind[v]].name, dtype)
        role = outer_in.get(v, ("",))[0]
        if role == "seq":
            return at(outer_in[v][1], slot, bvalue[v].size)
        if v in lay.state:
            return state_pointer(v, next(o for i, o, _ in spec.state if i == v), dtype)
        if role:
            return outer_in[v][1]
        return buffer(dtype, base + lay.offsets[f"v:{v}"])

    step = []
    for f in k.functions():
        args = []
        for a, p in zip(f.inputs, f.func.params):
            args.append(c_ast.ID(const_name(a.name)) if a.kind == "const"
                        else pointer(a.name, p.dtype))
        for v, p in zip(f.outputs, f.func.params[len(f.inputs):]):
            args.append(pointer(v, p.dtype))
        args.append(workspace_at(lay.offsets[f"s:{f.name}"] + base) if scratch_of.get(f.name)
                    else no_scratch())
        step.append(c_ast.Assignment("|=", c_ast.ID("rc"), c_ast.FuncCall(
            c_ast.ID(f.func.name), c_ast.ExprList(args))))
    first, after = [], []
    for i, o, has in spec.state:
        v = bvalue[i]
        first.append(_copy(buffer(v.dtype, base + lay.state[i][0]),
                           outer_in[i][1] if has else None, v.size))
    for j, bname in enumerate(spec.final, len(spec.seq_out)):
        out = node.outputs[j]
        if out.name in k.outputs:       # what step T-1 wrote
            last = stacked(bname, out.dtype, _int(spec.slot(T - 1))) if bname in seq_out \
                else pair(state_of[bname][0], out.dtype, _int(T & 1))
            after.append(_copy(arg_pointer(Arg("value", out.name), out.dtype), last, out.size))
    loop = c_ast.For(c_ast.Assignment("=", t, _int(0)), c_ast.BinaryOp("<", t, _int(T)),
                     c_ast.UnaryOp("++", t), c_ast.Compound(step))
    return c_ast.Compound([_decl("i", "int64_t"), _decl("t", "int")] + first + [loop] + after)


@dataclass(frozen=True)
class LoopCall:
    """A statement of NAME_run standing for one kernel of the model (entry._call)."""
    kernel: str
    stmt: c_ast.Node


__all__ = ["LoopKernel", "LoopCall", "lower_loop", "layout", "scratch_bytes", "statement"]
