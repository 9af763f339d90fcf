"""Fused groups -> te computes + schedules -> loop IR: one kernel per group.

    fg = legalize(fg, target)                         # groups as the backend lowers them
    kernels = lower_graph(fg, target, tuned=None)      # [GroupKernel], in group order

Every group of a `FusedGraph` becomes one kernel (a `GroupKernel`), except the
groups that only reinterpret memory (reshape / identity chains): those are
aliases, their output is their input's buffer.

Where a group's anchor has an operator template (cgen.ops: conv2d, depthwise,
pooling, softmax, reductions, dense / matmul, qconv2d / qdense for the integer ops
of folded QDQ models), the kernel is the template's
compute and schedule for the group's workload, with the config chosen by
`group_config` -- the ONE place a config is chosen, so a tuning log can
override it per group.  Weights are constants, packed at compile time into
the template's layout (numpy).  The group's elementwise epilogue (bias,
activations, residual adds ...) is fused into the template's output stage:
its body is wrapped by the epilogue expression when it is not a reduction,
else an epilogue stage is added that computes the template's output block
by block (compute_at) or whole.  The dense template's own epilogue steps are
used when the epilogue is expressible with them.

Groups without a template, and templates that fail on a workload, use plain
te computes (the index functions below, cgen.ops.nn) with a simple default
schedule: innermost axis vectorized, reductions just outside it.  Sigmoid and
tanh there are a rational function (no libm call), so their loops vectorize.

`legalize` first reshapes the fused groups for the backend: an epilogue that
broadcasts the anchor's output to a larger shape becomes a group of its own,
and an im2col convolution with many taps per pixel reads a padded copy of its
input made by a pad group.

Each kernel is lowered twice when the target has a vector ISA: for the target
(intrinsics) and portable (the same template and workload -- so the same
packed weights -- scheduled for the target without its ISA and lowered with no
target), so the model's C file compiles with no flags beyond -std=c99.
Schedules never use threads: a model is one call on one core.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import json
import math
from typing import Callable, Mapping

import numpy as np

from .. import te
from ..ops.common import config_dict
from ..te.expr import INDEX, Reduce, const
from ..te.tensor import ComputeOp, Tensor
from .graph_ir import Graph, ModelError, Node, Value
from .fuse import FusedGraph, Group
from .opset import BINARY_OPS, UNARY_OPS

ALIAS_OPS = ("reshape", "identity")
EPILOGUE_BLOCK_BYTES = 16 * 1024   # a GEMM conv's accumulator block before its epilogue


# ====================================================================== records
@dataclass(frozen=True)
class Arg:
    """One kernel parameter: a graph value (activation, graph input or output) or a constant."""
    kind: str       # "value" | "const"
    name: str       # the value's or the constant's name


@dataclass
class GroupKernel:
    """The kernel of one fused group (an alias when `func` is None)."""
    group: Group
    name: str                   # C function name
    template: str               # template name, "te" (built-in computes) or "alias"
    workload: dict | None
    config: dict | None
    inputs: tuple               # Arg, in parameter order
    outputs: tuple              # value names written, after the inputs
    func: object = None         # PrimFunc for the target
    portable: object = None     # PrimFunc without intrinsics (None when func has none)
    consts: dict = field(default_factory=dict)   # constants this kernel made (packed weights)
    flops: int = 0
    note: str = ""              # why the built-in computes were used
    fallback: str = ""          # set when a template should have built this kernel and did
                                # not: the reason (the report marks it, strict refuses it)

    @property
    def is_alias(self) -> bool:
        return self.func is None

    def describe(self) -> str:
        return " -> ".join(n.op for n in self.group.nodes)


def workload_key(workload: Mapping) -> str:
    """Canonical JSON of a workload: the key a tuning log's best configs are looked up by."""
    return json.dumps(workload, sort_keys=True, separators=(",", ":"))


def group_config(group: Group, template, workload: dict, target, tuned=None) -> dict:
    """The config a group's kernel is built with -- the one place it is chosen.

    `tuned` overrides the template's default for the target: None, a mapping
    from `workload_key(workload)` (or "TEMPLATE_NAME KEY") to a config dict, or
    a callable (group, template, workload, target) -> config dict or None.  An
    override must be a point of the template's space for the target.
    """
    cfg = None
    if callable(tuned):
        cfg = tuned(group, template, workload, target)
    elif tuned:
        key = workload_key(workload)
        cfg = tuned.get(key, tuned.get(f"{template.name} {key}"))
    if cfg is not None:
        cfg = config_dict(cfg)
        try:
            space = template.space(workload, target)
            extra = set(cfg) - set(space.names())
            if extra:
                raise KeyError(f"knobs {sorted(extra)} are not in the space")
            space.index_of(cfg)
        except (KeyError, ValueError, IndexError) as e:
            raise ModelError(f"group {group.id}: tuned config {cfg} is not a point of "
                             f"{template.name}'s space: {e}") from None
        return cfg
    return config_dict(template.default(workload, target))


# ====================================================================== index helpers
def _bcast(idx: tuple, shape: tuple, out_shape: tuple) -> tuple:
    """Indices into an operand of `shape` broadcast (numpy rules) to `out_shape`."""
    off = len(out_shape) - len(shape)
    return tuple(0 if n == 1 else idx[off + d] for d, n in enumerate(shape))


def regroup(idx: tuple, src: tuple, dst: tuple) -> tuple:
    """Indices into `dst` of the element at `idx` of `src` (same row-major memory).

    Dimensions are matched in groups of equal products, so a reshape that only
    splits or merges axes gives short expressions (c = g*Fg + f, y = p // OW)."""
    if tuple(src) == tuple(dst):
        return tuple(idx)
    s = [(d, n) for d, n in enumerate(src) if n != 1]
    t = [(d, n) for d, n in enumerate(dst) if n != 1]
    out = [0] * len(dst)
    i = j = 0
    while i < len(s) and j < len(t):
        gs, gt = [s[i]], [t[j]]
        ps, pt = s[i][1], t[j][1]
        i, j = i + 1, j + 1
        while ps != pt:
            if ps < pt:
                gs.append(s[i])
                ps *= s[i][1]
                i += 1
            else:
                gt.append(t[j])
                pt *= t[j][1]
                j += 1
        flat = None
        for d, n in gs:
            flat = idx[d] if flat is None else flat * n + idx[d]
        stride = pt
        for k, (d, n) in enumerate(gt):
            stride //= n
            v = flat if k == 0 else flat % (stride * n)
            out[d] = v // stride if stride > 1 else v
    return tuple(out)


def _f(v, dtype="float32"):
    return const(v, dtype)


# ====================================================================== scalar ops
def _clip(x, lo, hi):
    if lo is not None:
        x = te.maximum(x, _f(lo, x.dtype))
    if hi is not None:
        x = te.minimum(x, _f(hi, x.dtype))
    return x


def _gelu(x, approximate):
    if approximate == "tanh":
        inner = _f(math.sqrt(2 / math.pi)) * (x + _f(0.044715) * x * x * x)
        return _f(0.5) * x * (_f(1.0) + te.tanh(inner))
    return _f(0.5) * x * (_f(1.0) + te.erf(x * _f(1 / math.sqrt(2))))


# tanh(x) ~ x * P(x^2) / Q(x^2) on [-7.905, 7.905] (clamped outside, where tanh rounds to
# +-1 in float32): a weighted least-squares rational fit with a positive denominator made
# for cgen; float32 evaluation error below 3e-7 absolute and relative.
_TANH_P = (1.00000006e+00, 1.31284980e-01, 3.15403932e-03, 1.16922417e-05, -2.25174616e-08,
           6.45844031e-11, -1.17690102e-13)
_TANH_Q = (1.0, 4.64618341e-01, 2.46935060e-02, 2.61984153e-04)
_TANH_CLAMP = 7.90531110763549805


def tanh_rational(x):
    """tanh with arithmetic only, so a vectorized loop stays vectorized (libm's tanhf and
    expf are scalar calls)."""
    x = _clip(x, -_TANH_CLAMP, _TANH_CLAMP)
    x2 = x * x
    p = _f(_TANH_P[-1])
    for c in reversed(_TANH_P[:-1]):
        p = p * x2 + _f(c)
    q = _f(_TANH_Q[-1])
    for c in reversed(_TANH_Q[:-1]):
        q = q * x2 + _f(c)
    return x * p / q


def sigmoid_rational(x):
    """sigmoid(x) = (1 + tanh(x / 2)) / 2, arithmetic only (absolute error below 2e-7)."""
    return _f(0.5) + _f(0.5) * tanh_rational(x * _f(0.5))


UNARY: Mapping[str, Callable] = {
    "relu": lambda x, a: te.maximum(x, _f(0, x.dtype)),
    "leaky_relu": lambda x, a: te.if_then_else(x >= _f(0.0), x, x * _f(a["alpha"])),
    "clip": lambda x, a: _clip(x, a.get("min"), a.get("max")),
    "sigmoid": lambda x, a: sigmoid_rational(x),
    "tanh": lambda x, a: tanh_rational(x),
    "hard_sigmoid": lambda x, a: _clip(x * _f(a["alpha"]) + _f(a["beta"]), 0.0, 1.0),
    "hard_swish": lambda x, a: x * _clip(x * _f(1 / 6) + _f(0.5), 0.0, 1.0),
    "erf": lambda x, a: te.erf(x),
    "gelu": lambda x, a: _gelu(x, a.get("approximate", "none")),
    "exp": lambda x, a: te.exp(x),
    "log": lambda x, a: te.log(x),
    "sqrt": lambda x, a: te.sqrt(x),
    "neg": lambda x, a: _f(0, x.dtype) - x,
    "abs": lambda x, a: te.abs(x),
    "identity": lambda x, a: x,
    "cast": lambda x, a: x if a["to"] == x.dtype else te.cast(a["to"], x),
}


def _int_div(a, b):
    """ONNX integer Div: the quotient truncated toward zero (C's `/`), 0 where b is 0 (as the
    reference interpreter; C would be undefined).  te's `//` and `%` are floor operations:
    the floor quotient is one below the truncated one when the division is inexact and
    negative."""
    safe = te.if_then_else(te.equal(b, 0), const(1, b.dtype), b)
    q = a // safe
    if not _unsigned(a.dtype):      # (an unsigned `q < 0` is a -Wtype-limits error)
        q = te.if_then_else(te.all(te.not_equal(a % safe, 0), q < 0), q + 1, q)
    return te.if_then_else(te.equal(b, 0), const(0, a.dtype), q)


def _int_pow(a, b):
    """a ** b for an integer base; the frontend casts the exponent to the base's dtype.
    A product of `bits` factors (a where the exponent reaches j, else 1) keeps the C
    linear in size (a squaring chain would repeat its operand).  With |a| >= 2 an exponent
    above `bits` overflows the type (undefined in ONNX), so it is capped at `bits` with
    its parity kept: (-1) ** b stays exact.  A negative exponent truncates 1 / a ** -b."""
    dt = a.dtype
    bits = 8 * np.dtype(dt).itemsize
    one = const(1, dt)
    e = te.if_then_else(b > bits, const(bits, dt) - (b - bits) % 2, b)
    r = one
    for j in range(1, bits + 1):
        r = r * te.if_then_else(e >= j, a, one)
    if _unsigned(dt):
        return r
    odd = te.not_equal(b % 2, 0)
    neg = te.if_then_else(te.equal(a, 1), one, te.if_then_else(
        te.all(te.equal(a, -1), odd), const(-1, dt),
        te.if_then_else(te.equal(a, -1), one, const(0, dt))))
    return te.if_then_else(b < 0, neg, r)


def _unsigned(dtype: str) -> bool:
    return np.issubdtype(np.dtype(dtype), np.unsignedinteger)


def _div(a, b):
    return a / b if te.is_float(a.dtype) else _int_div(a, b)


def _pow(a, b, exponent):
    if not te.is_float(a.dtype):
        return _int_pow(a, b)
    if exponent is not None:
        simple = {1.0: lambda: a, 2.0: lambda: a * a, 3.0: lambda: a * a * a,
                  0.5: lambda: te.sqrt(a), -1.0: lambda: _f(1.0) / a}
        if float(exponent) in simple:
            return simple[float(exponent)]()
    return te.exp(b * te.log(a))


BINARY: Mapping[str, Callable] = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": _div, "max": te.maximum, "min": te.minimum,
}
assert set(UNARY) == set(UNARY_OPS) and set(BINARY) | {"pow"} == set(BINARY_OPS)


# ====================================================================== kernel inputs
class Inputs:
    """The placeholders a kernel reads (graph values and constants), each once, in
    first-use order; `consts` collects arrays made at compile time."""

    def __init__(self, graph: Graph, prefix: str = "in"):
        self.graph = graph
        self.prefix = prefix
        self.args: list = []        # Arg
        self.tensors: list = []     # te placeholders, aligned with args
        self._by_key: dict = {}
        self.consts: dict = {}

    def placeholder(self, kind: str, name: str, shape, dtype: str) -> Tensor:
        key = (kind, name, tuple(shape))
        if key not in self._by_key:
            t = te.placeholder(tuple(shape) or (1,), dtype, name=f"{self.prefix}{len(self.args)}")
            self._by_key[key] = t
            self.args.append(Arg(kind, name))
            self.tensors.append(t)
        return self._by_key[key]

    def value(self, v: Value, shape=None) -> Tensor:
        kind = "const" if v.name in self.graph.constants else "value"
        return self.placeholder(kind, v.name, v.shape if shape is None else shape, v.dtype)

    def derived(self, name: str, array: np.ndarray, shape=None) -> Tensor:
        """A constant made at compile time (packed weights, normalised indices)."""
        a = np.ascontiguousarray(array)
        self.consts[name] = a
        return self.placeholder("const", name, a.shape if shape is None else shape, str(a.dtype))

    def loader(self, v: Value) -> Callable:
        """idx (into v's shape) -> the value there; one-element constants become literals."""
        c = self.graph.constants.get(v.name)
        if c is not None and c.size == 1:
            lit = const(c.reshape(()).item(), v.dtype)
            return lambda idx: lit
        def load(idx):            # the placeholder is made on first use only
            t = self.value(v)
            return t[0] if not v.shape else t[tuple(idx)]
        return load


# ====================================================================== index functions of ops
def node_fns(node: Node, ins: list, graph: Graph, inputs: Inputs) -> list:
    """Index functions (idx -> Expr) of a node's outputs from its inputs' index functions."""
    op, a = node.op, node.attr_dict
    oshape = node.outputs[0].shape
    if op in UNARY:
        f = ins[0]
        return [lambda idx: UNARY[op](f(idx), a)]
    if op in BINARY_OPS:
        (fa, fb), (va, vb) = ins, node.inputs
        fn = BINARY.get(op)
        if op == "pow":
            c = graph.constants.get(vb.name)
            e = c.reshape(()).item() if c is not None and c.size == 1 else None

            def fn(x, y):
                return _pow(x, y, e)
        return [lambda idx: fn(fa(_bcast(idx, va.shape, oshape)),
                               fb(_bcast(idx, vb.shape, oshape)))]
    if op in ("quantize", "dequantize"):
        return [_quant_fn(op, ins, node, a)]
    if op in ALIAS_OPS:
        f, src = ins[0], node.inputs[0].shape
        return [lambda idx: f(regroup(idx, oshape, src))]
    if op == "transpose":
        f, perm = ins[0], a["perm"]

        def tr(idx):
            src = [0] * len(perm)
            for d, p in enumerate(perm):
                src[p] = idx[d]
            return f(tuple(src))
        return [tr]
    if op == "slice":
        f, starts, steps = ins[0], a["starts"], a["steps"]
        return [lambda idx: f(tuple(i if (st, s0) == (1, 0) else i * st + s0
                                    for i, s0, st in zip(idx, starts, steps)))]
    if op == "concat":
        ax = a["axis"]
        offs = [int(x) for x in np.cumsum([0] + [v.shape[ax] for v in node.inputs])]

        def cat(idx):
            expr = None
            for k in range(len(ins) - 1, -1, -1):
                i2 = tuple(x - offs[k] if d == ax and offs[k] else x for d, x in enumerate(idx))
                val = ins[k](i2)
                expr = val if expr is None else te.if_then_else(idx[ax] < offs[k + 1], val, expr)
            return expr
        return [cat]
    if op == "split":
        ax, f = a["axis"], ins[0]
        offs = [int(x) for x in np.cumsum([0] + list(a["sizes"]))]

        def part(k):
            return lambda idx: f(tuple(x + offs[k] if d == ax and offs[k] else x
                                       for d, x in enumerate(idx)))
        return [part(k) for k in range(len(node.outputs))]
    if op == "pad":
        return [_pad_fn(ins[0], node, a)]
    if op == "gather":
        return [_gather_fn(ins, node, a, graph, inputs)]
    raise ModelError(f"node {node.name!r}: op {op} is not supported by the C backend",
                     "unsupported_op")


def _quant_fn(op, ins, node, a):
    """quantize: saturate(rint(x / scale) + zero_point) in the zero point's dtype;
    dequantize: (x - zero_point) * scale in float32 (per tensor, or per `axis`)."""
    (fx, fs, fz), (x, sv, zv) = ins, node.inputs
    axis = a.get("axis", 1)

    def param(f, v, idx):
        return f((idx[axis],) if v.size > 1 else (0,) * len(v.shape))

    def fn(idx):
        s, z = param(fs, sv, idx), param(fz, zv, idx)
        v = fx(idx)
        if op == "dequantize":
            return (te.cast("float32", v) - te.cast("float32", z)) * s
        info = np.iinfo(zv.dtype)
        q = te.round_half_even(v / s) + te.cast("float32", z)
        return te.cast(zv.dtype, _clip(q, float(info.min), float(info.max)))
    return fn


def _pad_fn(f, node, a):
    shape = node.inputs[0].shape
    r = len(shape)
    pads, mode = a["pads"], a.get("mode", "constant")
    begin = pads[:r]
    dtype = node.outputs[0].dtype

    def fn(idx):
        src = [x - b if b else x for x, b in zip(idx, begin)]
        if mode == "constant":
            conds = []
            for d in range(r):
                if pads[d] > 0:
                    conds.append(idx[d] >= begin[d])
                if pads[r + d] > 0:
                    conds.append(idx[d] < begin[d] + shape[d])
            val = f(tuple(src))
            if not conds:
                return val
            return te.if_then_else(te.all(*conds), val, const(a.get("value", 0) or 0, dtype))
        out = []
        for d, x in enumerate(src):
            n = shape[d]
            if pads[d] <= 0 and pads[r + d] <= 0:
                out.append(x)
            elif mode == "edge":
                out.append(te.minimum(te.maximum(x, 0), n - 1))
            elif mode == "wrap":                   # te's % is a floor modulo: -1 -> n - 1
                out.append(x % n)
            else:                                  # reflect
                x = te.if_then_else(x < 0, 0 - x, x)
                out.append(te.if_then_else(x >= n, 2 * (n - 1) - x, x))
        return f(tuple(out))
    return fn


def _gather_fn(ins, node, a, graph, inputs):
    ax = a["axis"]
    data, ind = node.inputs
    n = data.shape[ax]
    c = graph.constants.get(ind.name)
    ir = len(ind.shape)
    fd = ins[0]
    if c is not None:
        norm = np.where(c < 0, c + n, c).astype(np.int64)
        if c.size == 1 and ir == 0:
            k = int(norm.reshape(()))
            return lambda idx: fd(tuple(idx[:ax]) + (k,) + tuple(idx[ax:]))
        t = inputs.derived(f"{ind.name}__idx", norm)
        return lambda idx: fd(tuple(idx[:ax]) + (t[tuple(idx[ax:ax + ir]) or (0,)],)
                              + tuple(idx[ax + ir:]))
    fi = ins[1]

    def fn(idx):
        j = fi(tuple(idx[ax:ax + ir]))
        j = te.cast(INDEX, j) if j.dtype != INDEX else j
        j = te.if_then_else(j < 0, j + n, j)
        return fd(tuple(idx[:ax]) + (j,) + tuple(idx[ax + ir:]))
    return fn


def build_fns(nodes, graph: Graph, inputs: Inputs, known: dict) -> dict:
    """Index functions of every value the nodes define; `known` holds those already
    defined (an anchor's output), the rest are read through placeholders."""
    env = dict(known)
    for n in nodes:
        ins = []
        for v in n.inputs:
            if v.name not in env:
                env[v.name] = inputs.loader(v)
            ins.append(env[v.name])
        for v, f in zip(n.outputs, node_fns(n, ins, graph, inputs)):
            env[v.name] = f
    return env


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
    their outer loops ordered as listed, and Y computed per block at the last one;
    else Y is computed whole first."""
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
    hints = [(d, f) for d, f in (block_hint or ()) if Y.shape[d] > f]
    if hints:
        split = {}
        for d, factor in hints:
            split[d] = st.split(axes[d], factor=factor)
        first = min(split)
        outer = axes[:first] + [split[d][0] for d, _ in hints]
        inner = [split[d][1] if d in split else a for d, a in enumerate(axes) if d >= first]
        *mid, last = inner
        vo, vi = st.split(last, factor=_vec_factor(min(Y.shape[-1], dict(hints).get(
            len(axes) - 1, Y.shape[-1])), lanes))
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


# ====================================================================== routes
@dataclass
class Route:
    """How a group becomes a kernel: the template (or None), its workload, the kernel's
    inputs (Arg per template input tensor), the constants made for it, and
    build(target, config) -> (schedule, tensors: inputs then outputs)."""
    template: object
    workload: dict | None
    args: list
    build: Callable
    consts: dict = field(default_factory=dict)
    epilogue: tuple = ()               # nodes still to fuse after the template's output
    block_hint: Callable | None = None  # config -> (axis, factor) for a reduction output
    portable_build: Callable | None = None   # build over the same args when the template
    flops: int = 0                           # cannot schedule the portable target


class _NoTemplate(Exception):
    """The group's op has no template: the built-in computes are its kernel."""


class _NotCovered(_NoTemplate):
    """The op has a template family, but it does not cover this group (batched matmul,
    weights computed at run time ...): the built-in computes are a fallback, reported."""


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
    tm, wl = conv_template(n, target)
    packed = _pack_conv_weights(tm.name, wl, w)
    if packed is None:
        raise _NotCovered(f"no weight packing for template {tm.name}")
    suffix, arr = packed
    pname = f"{wv.name}__{suffix}"
    hint = None
    if tm.name in ("conv2d_1x1", "conv2d_im2col"):
        P = int(np.prod(conv_out_hw(n)))

        def hint(cfg):
            """Blocks of the epilogue: the GEMM's pixel block, then rows of micro-tiles
            whose accumulator block stays near L1 size (EPILOGUE_BLOCK_BYTES)."""
            if "nc" not in cfg or "mr" not in cfg:
                return None
            nc, mr = min(cfg["nc"], P), cfg["mr"]
            rows = (EPILOGUE_BLOCK_BYTES // (4 * nc)) // mr * mr
            rows = max(mr, min(cfg.get("mc", 1) * mr, rows))
            return [(3, cfg["nc"]), (2, rows)]
    return Route(tm, wl, [Arg("value", x.name), Arg("const", pname)],
                 lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg, {1: arr.shape}),
                 {pname: arr}, epi, hint, flops=tm.flops(wl))


def conv_template(n: Node, target, pads=None):
    """(template, workload) of a (non-depthwise) conv2d node for the target, pre-packed
    weights: conv2d_template_for's choice, with corrections measured on this project's
    models (host AVX-512, one core) until tuning replaces them:
    - NCHWc channel blocks narrower than a vector leave its register tile scalar
      (10-100x slower on few-channel convolutions such as a network's first layer), and
      strided NCHWc convolutions ran 1.5-3x slower than the im2col GEMM (3x3 stride 2,
      16 -> 32 channels: 8.9 vs 5.5 us): both go to the im2col GEMM, whose masked
      micro-kernels take any channel count;
    - the GEMM family's tile rows are the largest divisor of the output channels with a
      register-tile kernel (7 or 11 channels would otherwise get one-row tiles)."""
    try:
        from ..ops.conv import Conv2dGemmTemplate, conv2d_template_for
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
    if tm.name == "conv2d_nchwc" and lanes > 1 and KH * KW > 1 and (wl["oc_bn"] % lanes or strided):
        tm = _templates().get("conv2d_im2col") or Conv2dGemmTemplate("conv2d_im2col")
        wl = tm.workload(N, C, H, W, F, KH, KW, groups=G, weights="packed",
                         oc_bn=_gemm_mr(base, target), **geo)
    if tm.name in ("conv2d_1x1", "conv2d_im2col") and wl.get("oc_bn"):
        mr = _gemm_mr(base, target)
        if mr != wl["oc_bn"]:
            wl = tm.workload(N, C, H, W, F, KH, KW, groups=G, weights="packed", oc_bn=mr, **geo)
    return tm, wl


def split_conv_padding(fg: FusedGraph, target) -> FusedGraph:
    """A padded convolution that goes to the im2col GEMM with many taps per input pixel
    (KH*KW > 4*stride^2) reads a zero-padded copy of its input made by a pad kernel just
    before it: the unfolded block is then plain vector copies instead of one bounds test
    per element and tap (LeNet's 5x5 first layer: 24.5 -> 5.0 us; the pad kernel itself
    tests every element once, which does not pay for 3x3 stride 2)."""
    graph = fg.graph
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
    channels would otherwise get one-row tiles)."""
    from ..ops.conv.tile import tile_kernel_shape_ok
    from ..ops.conv.gemm import gemm_default_mr
    mr = gemm_default_mr(base, target)
    if not target.vector_registers:
        return mr
    fg = base["F"] // base["groups"]
    limit = 12 if target.vector_registers >= 32 else 6
    for d in range(min(fg, limit), mr, -1):
        if fg % d == 0 and any(tile_kernel_shape_ok(target, d, k * target.lanes()) for k in (1, 2, 3)):
            return d
    return mr


def conv_out_hw(n: Node) -> tuple:
    return tuple(n.outputs[0].shape[2:])


def _bias_node(conv: Node) -> Node:
    """add(conv output, bias as (F, 1, 1)) -- the conv bias as an epilogue node."""
    y, b = conv.outputs[0], conv.inputs[2]
    bias = Value(b.name, (b.shape[0], 1, 1), b.dtype)
    return Node("add", (y, bias), (y,), (), f"{conv.name}/bias")


def _pack_conv_weights(tname: str, wl: dict, w: np.ndarray):
    w = np.ascontiguousarray(w, np.float32)
    if tname == "conv2d_nchwc":
        from ..ops.conv.packing import pack_weights_nchwc_np
        return f"nchwc{wl['ic_bn']}x{wl['oc_bn']}", pack_weights_nchwc_np(w, wl["ic_bn"],
                                                                          wl["oc_bn"])
    if tname in ("conv2d_1x1", "conv2d_im2col"):
        from ..ops.conv.packing import pack_weights_gemm_np
        return f"gemm{wl['oc_bn']}", pack_weights_gemm_np(w, wl["groups"], wl["oc_bn"])
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


# ---------------------------------------------------------------- built-in computes
def _te_conv(X, Wt, n: Node, out: Value):
    N, C, H, W = X.shape
    F, Cg, KH, KW = Wt.shape
    G = n.attr("groups")
    (sh, sw), (dh, dw), (t, l, b, r) = n.attr("strides"), n.attr("dilations"), n.attr("pads")
    Fg = F // G
    src = X
    if any((t, l, b, r)):
        src = te.compute((N, C, H + t + b, W + l + r), lambda i, c, y, x: te.if_then_else(
            te.all(y >= t, y < H + t, x >= l, x < W + l), X[i, c, y - t, x - l], 0.0), name="pad")
    rc = te.reduce_axis((0, Cg), name="rc")
    ry = te.reduce_axis((0, KH), name="ry")
    rx = te.reduce_axis((0, KW), name="rx")

    def ch(f):
        return rc if G == 1 else (f // Fg) * Cg + rc
    return te.compute(out.shape, lambda i, f, y, x: te.sum(
        src[i, ch(f), y * sh + ry * dh, x * sw + rx * dw] * Wt[f, rc, ry, rx], axis=(rc, ry, rx)),
        name="conv")


def _te_conv_transpose(X, Wt, n: Node, out: Value):
    """Y[n, f, y, x] = sum over the group's input channels c and taps (ky, kx) with
    y + top = iy*sh + ky*dh (and the same for x) of X[n, c, iy, ix] * W[c, f % Fg, ky, kx]."""
    N, C, H, W = X.shape
    _, Fg, KH, KW = Wt.shape
    G = n.attr("groups")
    Cg = C // G
    (sh, sw), (dh, dw), (t, l, _, _) = n.attr("strides"), n.attr("dilations"), n.attr("pads")
    rc = te.reduce_axis((0, Cg), name="rc")
    ry = te.reduce_axis((0, KH), name="ry")
    rx = te.reduce_axis((0, KW), name="rx")

    def body(i, f, y, x):
        c = rc if G == 1 else (f // Fg) * Cg + rc
        ny, nx = y + t - ry * dh, x + l - rx * dw
        conds = [ny >= 0, nx >= 0, ny < H * sh, nx < W * sw]
        if sh > 1:
            conds.append(te.equal(ny % sh, 0))
        if sw > 1:
            conds.append(te.equal(nx % sw, 0))
        iy = ny // sh if sh > 1 else ny
        ix = nx // sw if sw > 1 else nx
        v = te.if_then_else(te.all(*conds), X[i, c, iy, ix], 0.0)
        return te.sum(v * Wt[c, f % Fg if G > 1 else f, ry, rx], axis=(rc, ry, rx))
    return te.compute(out.shape, body, name="conv_transpose")


def _te_matmul(A, B, out: Value):
    K = A.shape[-1]
    oshape = out.shape
    k = te.reduce_axis((0, K), name="k")
    nb = len(oshape) - 2

    def fn(*i):
        bi = i[:nb]
        ia = _bcast(bi, A.shape[:-2], oshape[:-2]) + (i[-2], k)
        ib = _bcast(bi, B.shape[:-2], oshape[:-2]) + (k, i[-1])
        return te.sum(A[ia] * B[ib], axis=k)
    return te.compute(oshape, fn, name="matmul")


def _qparam(inputs, v: Value, idx: tuple, aligned: tuple):
    """A quantisation parameter at the element whose index into `aligned` (the shape the
    parameter broadcasts against, numpy rules) is idx: a literal when it is a one-element
    constant, else a load (it may be a graph input)."""
    load = inputs.loader(v)
    return load((0,) * len(v.shape) if v.size == 1 else _bcast(idx, v.shape, aligned))


def _requantize(acc, mult, zp, dtype: str):
    """ONNX requantisation, as the reference interpreter: rint(float32(acc) * mult) + zp,
    saturated to the output dtype."""
    info = np.iinfo(dtype)
    y = te.round_half_even(te.cast("float32", acc) * mult) + te.cast("float32", zp)
    return te.cast(dtype, _clip(y, float(info.min), float(info.max)))


def _centered(x):
    return te.cast("int32", x)


def _te_qconv(inputs, n: Node, out: Value):
    """qlinear_conv2d over its unpacked operands: int32 sums of zero-point-centred products
    (padding is the input's zero point, so 0 once centred), then requantisation.  The
    template route needs constant weights and parameters; this one takes any."""
    x, xs, xz, w, ws, wz, ys, yz = n.inputs[:8]
    X, Wt = inputs.value(x), inputs.value(w)
    N, C, H, W = X.shape
    F, Cg, KH, KW = Wt.shape
    G = n.attr("groups")
    (sh, sw), (dh, dw), (t, l, b, r) = n.attr("strides"), n.attr("dilations"), n.attr("pads")
    Fg = F // G
    zx = _centered(_qparam(inputs, xz, (), ()))
    src = te.compute((N, C, H + t + b, W + l + r), lambda i, c, y, x_: te.if_then_else(
        te.all(y >= t, y < H + t, x_ >= l, x_ < W + l),
        _centered(X[i, c, y - t, x_ - l]) - zx, const(0, "int32")), name="qpad")
    rc = te.reduce_axis((0, Cg), name="rc")
    ry = te.reduce_axis((0, KH), name="ry")
    rx = te.reduce_axis((0, KW), name="rx")

    def body(i, f, y, x_):
        c = rc if G == 1 else (f // Fg) * Cg + rc
        wv = _centered(Wt[f, rc, ry, rx]) - _centered(_qparam(inputs, wz, (f,), (F,)))
        return te.sum(src[i, c, y * sh + ry * dh, x_ * sw + rx * dw] * wv, axis=(rc, ry, rx))
    acc = te.compute(out.shape, body, name="qconv_acc")
    bias = inputs.value(n.inputs[8]) if len(n.inputs) > 8 else None

    def requant(i, f, y, x_):
        a = acc[i, f, y, x_] + bias[f] if bias is not None else acc[i, f, y, x_]
        mult = (_qparam(inputs, xs, (), ()) * _qparam(inputs, ws, (f,), (F,))
                / _qparam(inputs, ys, (), ()))
        return _requantize(a, mult, _qparam(inputs, yz, (), ()), out.dtype)
    return te.compute(out.shape, requant, name="qconv")


def _te_qmatmul(inputs, n: Node, out: Value):
    """qlinear_matmul over its operands (numpy broadcasting of the batch dimensions; A's
    parameters per row, B's per column, as the reference)."""
    a, as_, az, b, bs, bz, ys, yz = n.inputs
    A, B = inputs.value(a), inputs.value(b)
    K, oshape = A.shape[-1], out.shape
    nb = len(oshape) - 2
    arow, bcol = A.shape[:-1], B.shape[:-2] + B.shape[-1:]     # A, B without K
    k = te.reduce_axis((0, K), name="k")

    def rows(i):
        return _bcast(i[:nb], A.shape[:-2], oshape[:-2]) + (i[-2],)

    def cols(i):
        return _bcast(i[:nb], B.shape[:-2], oshape[:-2]) + (i[-1],)

    def body(*i):
        ia, ib = rows(i), cols(i)
        va = _centered(A[ia + (k,)]) - _centered(_qparam(inputs, az, ia, arow))
        vb = _centered(B[ib[:-1] + (k, ib[-1])]) - _centered(_qparam(inputs, bz, ib, bcol))
        return te.sum(va * vb, axis=k)
    acc = te.compute(oshape, body, name="qmatmul_acc")

    def requant(*i):
        mult = (_qparam(inputs, as_, rows(i), arow) * _qparam(inputs, bs, cols(i), bcol)
                / _qparam(inputs, ys, (), ()))
        return _requantize(acc[i], mult, _qparam(inputs, yz, (), ()), out.dtype)
    return te.compute(oshape, requant, name="qmatmul")


def _te_pool(X, n: Node):
    from ..ops import nn
    if any(d != 1 for d in n.attr("dilations")):
        raise ModelError(f"node {n.name!r}: dilated pooling is not supported", "unsupported_attr")
    kw = dict(kernel=n.attr("kernel"), strides=n.attr("strides"), pads=n.attr("pads"),
              ceil_mode=bool(n.attr("ceil_mode")))
    if n.op == "max_pool2d":
        return nn.max_pool2d(X, **kw)[0]
    return nn.avg_pool2d(X, count_include_pad=bool(n.attr("count_include_pad")), **kw)[0]


def _te_reduce(X, n: Node, out: Value):
    shape = X.shape
    r = len(shape)
    if n.op in ("softmax", "log_softmax"):
        from ..ops import nn
        ax = n.attr("axis")
        y, mx, ex, sm = nn.softmax(X, ax, name="softmax")
        if n.op == "softmax":
            return y

        def at0(i):
            return tuple(0 if d == ax else v for d, v in enumerate(i))
        return te.compute(shape, lambda *i: X[i] - mx[at0(i)] - te.log(sm[at0(i)]),
                          name="log_softmax")
    if n.op == "layer_norm":
        ax = n.attr("axis")
        eps = n.attr("epsilon")
        axes = tuple(range(ax, r))
        cnt = float(math.prod(shape[ax:]))
        kshape = shape[:ax] + (1,) * (r - ax)

        def rv():
            return [te.reduce_axis((0, shape[d]), name=f"r{d}") for d in axes]
        r1 = rv()
        s1 = te.compute(kshape, lambda *i: te.sum(X[i[:ax] + tuple(r1)], axis=tuple(r1)),
                        name="ln_sum")
        mean = te.compute(kshape, lambda *i: s1[i] / cnt, name="ln_mean")
        r2 = rv()

        def sq(i):
            d = X[i[:ax] + tuple(r2)] - mean[i]
            return te.sum(d * d, axis=tuple(r2))
        s2 = te.compute(kshape, lambda *i: sq(i), name="ln_var")
        zero = (0,) * (r - ax)
        return s1, mean, s2, te.compute(shape, lambda *i: (X[i] - mean[i[:ax] + zero]) / te.sqrt(
            s2[i[:ax] + zero] / cnt + eps), name="ln")
    fn = {"reduce_sum": te.sum, "reduce_mean": te.sum, "reduce_max": te.max,
          "reduce_min": te.min}[n.op]
    axes = tuple(n.attr("axes"))
    keep = bool(n.attr("keepdims"))
    rv = {d: te.reduce_axis((0, shape[d]), name=f"r{d}") for d in axes}
    kept = [d for d in range(r) if d not in axes]

    def body(*o):
        ko = {d: o[d] for d in kept} if keep else {d: o[k] for k, d in enumerate(kept)}
        return fn(X[tuple(ko[d] if d in ko else rv[d] for d in range(r))], axis=tuple(rv.values()))
    oshape = out.shape or (1,)
    red = te.compute(oshape, body, name="reduce")
    if n.op != "reduce_mean":
        return red
    cnt = float(math.prod(shape[d] for d in axes))
    return te.compute(oshape, lambda *i: red[i] / cnt, name="mean")


def _te_route(group: Group, graph: Graph, target) -> Route:
    """The group as built-in computes over its unpacked inputs."""
    def build(tgt, cfg):
        inputs = Inputs(graph)
        known = {}
        first = group.nodes[0]
        rest = group.nodes
        if group.kind in ("anchor", "reduction"):
            a_out = first.outputs[0]
            rest = group.nodes[1:]
            if first.op == "conv2d":
                A = _te_conv(inputs.value(first.inputs[0]), inputs.value(first.inputs[1]),
                             first, a_out)
                if len(first.inputs) > 2:
                    rest = (_bias_node(first),) + tuple(rest)
            elif first.op == "conv2d_transpose":
                A = _te_conv_transpose(inputs.value(first.inputs[0]),
                                       inputs.value(first.inputs[1]), first, a_out)
                if len(first.inputs) > 2:
                    rest = (_bias_node(first),) + tuple(rest)
            elif first.op == "matmul":
                A = _te_matmul(inputs.value(first.inputs[0]), inputs.value(first.inputs[1]), a_out)
            elif first.op in ("max_pool2d", "avg_pool2d"):
                A = _te_pool(inputs.value(first.inputs[0]), first)
            elif first.op == "qlinear_conv2d":
                A = _te_qconv(inputs, first, a_out)
            elif first.op == "qlinear_matmul":
                A = _te_qmatmul(inputs, first, a_out)
            elif group.kind == "reduction":
                A = _te_reduce(inputs.value(first.inputs[0]), first, a_out)
                if isinstance(A, tuple):
                    *_, A = A
                if first.op == "layer_norm":
                    rest = _layer_norm_affine(first) + tuple(rest)
            else:
                raise ModelError(f"node {first.name!r}: op {first.op} is not supported by the C "
                                 "backend", "unsupported_op")
            known[a_out.name] = (lambda T, shape: lambda idx: T[regroup(idx, shape, T.shape)])(
                A, a_out.shape)
        env = build_fns(rest, graph, inputs, known)
        outs = [te.compute(v.shape or (1,), (lambda f, v: lambda *i: f(
            regroup(i, v.shape or (1,), v.shape)))(env[v.name], v), name=f"out{k}")
            for k, v in enumerate(group.outputs)]
        s = te.create_schedule(outs)
        simple_schedule(s, tgt)
        route.args, route.consts = list(inputs.args), dict(inputs.consts)   # for _realize
        return s, inputs.tensors + outs
    route = Route(None, None, [], build)
    return route


def _layer_norm_affine(n: Node) -> tuple:
    """mul by scale (and add bias) after the normalisation, as epilogue nodes."""
    y = n.outputs[0]
    out = (Node("mul", (y, n.inputs[1]), (y,), (), f"{n.name}/scale"),)
    if len(n.inputs) > 2:
        out += (Node("add", (y, n.inputs[2]), (y,), (), f"{n.name}/bias"),)
    return out


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
        wl = tm.workload(M, Nn, K, a_dtype=x.dtype, b_dtype=w.dtype, y_dtype=y.dtype,
                         rounding="onnx", per_channel=per_channel)
        bias = np.zeros(Nn, np.int32)
        channels = Nn
    P = channels if per_channel else 1

    def vec(v, dtype, size):
        return np.ascontiguousarray(np.broadcast_to(c[v.name].reshape(-1), (size,)).astype(dtype))
    made = {f"{n.name}__bias": np.ascontiguousarray(bias, np.int32),
            f"{xz.name}__zp": vec(xz, np.int32, 1), f"{wz.name}__zp{P}": vec(wz, np.int32, P),
            f"{yz.name}__zp": vec(yz, np.int32, 1), f"{xs.name}__s": vec(xs, np.float32, 1),
            f"{ws.name}__s{P}": vec(ws, np.float32, P), f"{ys.name}__s": vec(ys, np.float32, 1)}
    args = [Arg("value", x.name), Arg("const", w.name)] + [Arg("const", k) for k in made]
    shapes = {1: wa.shape}
    shapes.update({2 + i: a.shape for i, a in enumerate(made.values())})
    return Route(tm, wl, args, lambda tgt, cfg: _tmpl_build(tm, wl, tgt, cfg, shapes), made,
                 tuple(group.nodes[1:]), flops=tm.flops(wl))


def route_for(group: Group, graph: Graph, target) -> Route:
    """The template route of a group, or _NoTemplate."""
    first = group.nodes[0]
    if group.kind == "anchor" and first.op == "conv2d":
        return _conv_route(group, graph, target)
    if group.kind == "anchor" and first.op in ("max_pool2d", "avg_pool2d"):
        return _pool_route(group, graph, target)
    if group.kind == "anchor" and first.op == "matmul":
        return _matmul_route(group, graph, target)
    if group.kind == "anchor" and first.op in ("qlinear_conv2d", "qlinear_matmul"):
        return _qlinear_route(group, graph, target)
    if group.kind == "reduction":
        return _reduction_route(group, graph, target)
    raise _NoTemplate(f"no template for {group.kind} group of {first.op}")


# ====================================================================== lowering
def kernel_target(target):
    """The target kernels are scheduled for: no threads (one call, one core)."""
    from targets import resolve
    return replace(resolve(target), threads=False)


def portable_target(target):
    """The same target without its vector ISA (the portable fallback's schedules)."""
    return replace(kernel_target(target), isa="none", vector_bits=0)


def _realize(route: Route, group: Group, graph: Graph, cfg, tgt, lower_tgt, name: str,
             portable: bool = False):
    """Build, fuse the epilogue, lower: (PrimFunc, Args of the inputs, new constants)."""
    from ..lower.lower import lower
    if portable and route.portable_build is not None and route.template is not None:
        try:
            s, tensors = route.build(tgt, cfg)
        except Exception:  # noqa: BLE001 - the template cannot schedule portable C
            s, tensors = route.portable_build(tgt, cfg)
    else:
        s, tensors = route.build(tgt, cfg)
    n_out = 1 if route.template is not None else len(group.outputs)
    args = list(route.args)
    consts = dict(route.consts)
    if route.epilogue:
        inputs = Inputs(graph, prefix="ep")
        sub = replace(group, nodes=(group.nodes[0],) + tuple(route.epilogue))
        ep = _epilogue_fn(sub, graph, inputs)
        Y = tensors[-1]
        hint = route.block_hint(cfg) if route.block_hint and cfg is not None else None
        s, out = wrap_output(s, Y, lambda v, i: ep(v, i, Y.shape), tgt, hint)
        tensors = tensors[:-1] + inputs.tensors + [out]
        args += inputs.args
        consts.update(inputs.consts)
    func = lower(s, tensors, name, lower_tgt)
    if len(func.params) != len(args) + n_out:
        raise AssertionError(f"{name}: {len(func.params)} parameters for {len(args)} inputs")
    return func, args, consts


def _uses_isa(func) -> bool:
    from ..lower.ir import Broadcast, CallKernel, VLoad, VStore
    from ..te.visit import walk
    if func.kernels:
        return True
    found = []
    walk(func.body, lambda x: found.append(1) if isinstance(x, (VLoad, VStore, Broadcast,
                                                                CallKernel)) else None)
    return bool(found)


def lower_group(fg: FusedGraph, group: Group, target, tuned=None, name: str | None = None
                ) -> GroupKernel:
    """One group -> its kernel (template route first, built-in computes otherwise)."""
    graph = fg.graph
    name = name or f"k{group.id}_{group.nodes[0].op}"
    if group.kind == "injective" and all(n.op in ALIAS_OPS for n in group.nodes) \
            and len(group.inputs) == 1 and len(group.outputs) == 1 \
            and group.inputs[0].dtype == group.outputs[0].dtype:
        return GroupKernel(group, name, "alias", None, None, (Arg("value", group.inputs[0].name),),
                           (group.outputs[0].name,))
    tgt, ptgt = kernel_target(target), portable_target(target)
    has_isa = lanes_of(tgt) > 1 or tgt.isa != "none"
    note = fallback = ""
    route = None
    if epilogue_is_pointwise(group):
        try:
            route = route_for(group, graph, tgt)
            cfg = group_config(group, route.template, route.workload, tgt, tuned)
            func, args, consts = _realize(route, group, graph, cfg, tgt, tgt, name)
            portable = None
            if has_isa and _uses_isa(func):
                try:        # the template's default for portable C (never a tuned one)
                    pcfg = group_config(group, route.template, route.workload, ptgt)
                except Exception:  # noqa: BLE001 - no portable space: the portable build
                    pcfg = cfg
                portable, pargs, _ = _realize(route, group, graph, pcfg, ptgt, None, name,
                                              portable=True)
                if pargs != args:
                    raise AssertionError(f"{name}: portable kernel takes other arguments")
            return GroupKernel(group, name, route.template.name, route.workload, cfg, tuple(args),
                               tuple(v.name for v in group.outputs), func, portable, consts,
                               route.flops)
        except _NotCovered as e:
            note = fallback = f"no template: {e}"
        except _NoTemplate as e:
            note = str(e)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - a failing template falls back, reported
            note = fallback = (
                f"template error: {route.template.name if route and route.template else 'route'}"
                f": {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    else:
        note = fallback = "no template: the epilogue broadcasts the anchor's output"
    route = _te_route(group, graph, tgt)
    func, args, consts = _realize(route, group, graph, None, tgt, tgt, name)
    portable = None
    if has_isa and _uses_isa(func):
        portable, pargs, _ = _realize(_te_route(group, graph, ptgt), group, graph, None, ptgt,
                                      None, name)
        if pargs != args:
            raise AssertionError(f"{name}: portable kernel takes other arguments")
    return GroupKernel(group, name, "te", None, None, tuple(args),
                       tuple(v.name for v in group.outputs), func, portable, consts,
                       _te_flops(group), note, fallback)


def _te_flops(group: Group) -> int:
    total = 0
    for n in group.nodes:
        out = n.outputs[0]
        size = out.size
        if n.op == "conv2d":
            w = n.inputs[1].shape
            total += 2 * size * int(np.prod(w[1:]))
        elif n.op == "matmul":
            total += 2 * size * n.inputs[0].shape[-1]
        else:
            total += size
    return total


def split_broadcast_epilogues(fg: FusedGraph) -> FusedGraph:
    """Groups whose epilogue grows the anchor's output by broadcasting are cut in two:
    the anchor alone, and the epilogue as an injective group."""
    groups = []
    for g in fg.groups:
        if epilogue_is_pointwise(g):
            groups.append(g)
            continue
        anchor = g.nodes[0]
        out = anchor.outputs[0]
        groups.append(Group(0, g.kind, (anchor,), tuple(v for v in anchor.inputs
                                                      if v.name not in fg.graph.constants),
                            tuple(v for v in anchor.inputs if v.name in fg.graph.constants),
                            (out,)))
        rest = g.nodes[1:]
        produced = {v.name for n in rest for v in n.outputs}
        ins, params = {}, {}
        for n in rest:
            for v in n.inputs:
                if v.name in fg.graph.constants:
                    params.setdefault(v.name, v)
                elif v.name not in produced:
                    ins.setdefault(v.name, v)
        groups.append(Group(0, "injective", rest, tuple(ins.values()), tuple(params.values()),
                            g.outputs))
    return FusedGraph(fg.graph, tuple(replace(g, id=i) for i, g in enumerate(groups)))


def legalize(fg: FusedGraph, target) -> FusedGraph:
    """The groups as the backend lowers them: broadcast-growing epilogues split off,
    padding of im2col convolutions made by a kernel of its own."""
    return split_conv_padding(split_broadcast_epilogues(fg), kernel_target(target))


def lower_graph(fg: FusedGraph, target, tuned=None) -> list:
    """Every group of a (legalized) fused graph -> its GroupKernel (aliases included)."""
    return [lower_group(fg, g, target, tuned) for g in fg.groups]


__all__ = ["Arg", "GroupKernel", "Route", "group_config", "workload_key", "lower_group",
           "lower_graph", "regroup", "simple_schedule", "wrap_output", "kernel_target",
           "portable_target", "split_broadcast_epilogues", "split_conv_padding", "legalize",
           "conv_template", "build_fns", "Inputs"]
