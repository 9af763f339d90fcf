"""The canonical op set as te index functions: per node, a function from an output
index to a te expression of its inputs' (`node_fns`), chained over a group's nodes
(`build_fns`), with the group's inputs as placeholders made on first use (`Inputs`).
Sigmoid and tanh are rational functions and exp a polynomial times 2^n (te.exp_poly): no
libm call, so their loops vectorize.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from .. import te
from ..te.expr import INDEX, const
from ..te.tensor import Tensor
from .graph_ir import Graph, ModelError, Node, Value
from .opset import BINARY_OPS, UNARY_OPS
from .ops_def import exp_vec
from .ops_extra import EXTRA_OPS
from .kernels import ALIAS_OPS, Arg
from .te_resize import resize_fn


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
        return _f(0.5) * x * (_f(1.0) + tanh_rational(inner))
    return _f(0.5) * x * (_f(1.0) + erf_rational(x * _f(1 / math.sqrt(2))))


def _odd_rational(x, clamp, P, Q):
    """x * P(x^2) / Q(x^2) on x clamped to [-clamp, clamp] (Horner, arithmetic only)."""
    x = _clip(x, -clamp, clamp)
    x2 = x * x

    def horner(coefs):
        acc = _f(coefs[-1])
        for c in reversed(coefs[:-1]):
            acc = acc * x2 + _f(c)
        return acc
    return x * horner(P) / horner(Q)


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
    return _odd_rational(x, _TANH_CLAMP, _TANH_P, _TANH_Q)


# erf(x) ~ x * P(x^2) / Q(x^2) on [-4, 4] (clamped outside, where erf rounds to +-1 in
# float32): the same kind of weighted least-squares rational fit, made for cgen; float32
# evaluation error below 3e-7 absolute.
_ERF_P = (1.1283791611589022, 0.18576315075054703, 0.05216523735636249, 0.003578850505233659,
          0.00028271134284118393, 2.1090641908794944e-06)
_ERF_Q = (1.0, 0.49796143734194204, 0.11221860387819196, 0.01458845806385696,
          0.0011213748711819977, 3.859755354795761e-05)
_ERF_CLAMP = 4.0


def erf_rational(x):
    """erf with arithmetic only (exported GELU's erf kept a transformer's widest matmul
    epilogue scalar: 61% of the encoder's time)."""
    return _odd_rational(x, _ERF_CLAMP, _ERF_P, _ERF_Q)


def sigmoid_rational(x):
    """sigmoid(x) = (1 + tanh(x / 2)) / 2, arithmetic only (absolute error below 2e-7)."""
    return _f(0.5) + _f(0.5) * tanh_rational(x * _f(0.5))


UNARY: Mapping[str, Callable] = {
    "relu": lambda x, a: te.maximum(x, _f(0, x.dtype)),
    # max(x, 0) + alpha * min(x, 0): no compare and blend (the select form, when the
    # vectorizer had no select, kept a YOLO conv's epilogue scalar, dearer than the conv)
    "leaky_relu": lambda x, a: (te.maximum(x, _f(0.0)) + te.minimum(x, _f(0.0)) * _f(a["alpha"])),
    "clip": lambda x, a: _clip(x, a.get("min"), a.get("max")),
    "sigmoid": lambda x, a: sigmoid_rational(x),
    "tanh": lambda x, a: tanh_rational(x),
    "hard_sigmoid": lambda x, a: _clip(x * _f(a["alpha"]) + _f(a["beta"]), 0.0, 1.0),
    "hard_swish": lambda x, a: x * _clip(x * _f(1 / 6) + _f(0.5), 0.0, 1.0),
    "erf": lambda x, a: erf_rational(x) if x.dtype == "float32" else te.erf(x),
    "gelu": lambda x, a: _gelu(x, a.get("approximate", "none")),
    "exp": lambda x, a: exp_vec(x),
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
    if op == "resize":
        return [resize_fn(ins[0], node, inputs)]
    if op in EXTRA_OPS:
        return EXTRA_OPS[op].fn(node, ins, graph, inputs)
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
