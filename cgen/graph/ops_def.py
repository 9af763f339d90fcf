"""What an op added in ops_extra.py / ops_index.py declares (OpDef), and the shape, dtype
and te helpers they share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import te
from ..te.expr import const
from .graph_ir import ModelError

UNROLL_MAX = 256     # terms of an unrolled cumsum / reduce_prod per output element


@dataclass(frozen=True)
class OpDef:
    pattern: str          # opset pattern name (elementwise, broadcast, injective)
    shape: Callable       # (attrs, [(shape, dtype)]) -> shape
    dtype: Callable       # (attrs, [(shape, dtype)]) -> dtype; ModelError for a bad input dtype
    ref: Callable         # (node, *arrays) -> array
    fn: Callable          # (node, ins, graph, inputs) -> [idx -> Expr], one per output
    outputs: Callable | None = None   # (attrs, ins) -> [(shape, dtype)] when not one output

    def types(self, a, ins) -> list:
        """(shape, dtype) of each output."""
        if self.outputs is not None:
            return [(tuple(int(d) for d in s), dt) for s, dt in self.outputs(a, ins)]
        return [(tuple(int(d) for d in self.shape(a, ins)), self.dtype(a, ins))]


def _err(msg: str, kind: str = "unsupported_dtype") -> ModelError:
    return ModelError(msg, kind)


# ====================================================================== shapes and dtypes
def _bshape(*shapes) -> tuple:
    nd = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (nd - len(s)) + tuple(s) for s in shapes]):
        big = {d for d in dims if d != 1}
        if len(big) > 1:
            raise _err(f"shapes {', '.join(str(tuple(s)) for s in shapes)} do not broadcast",
                       "shape")
        out.append(big.pop() if big else 1)
    return tuple(out)


def _same(a, ins):
    return ins[0][0]


def _bcast(a, ins):
    return _bshape(*(s for s, _ in ins))


def _takes(*dtypes, out=None):
    """dtype rule: every input in `dtypes` (and all alike); the output `out` or the input's."""
    def rule(a, ins):
        for _, dt in ins:
            if dt not in dtypes:
                raise _err(f"takes {', '.join(dtypes)}, got {dt}")
        if len({dt for _, dt in ins}) > 1:
            raise _err(f"operand dtypes differ ({', '.join(dt for _, dt in ins)})")
        return out or ins[0][1]
    return rule


FLOAT = ("float32",)
SIGNED = ("float32", "int8", "int16", "int32", "int64")
NUMERIC = SIGNED + ("uint8",)
ALL = NUMERIC + ("bool",)


# ====================================================================== te helpers
def _f(v, dtype="float32"):
    return const(v, dtype)


def exp_vec(x):
    """exp: float32 as te.exp_poly (arithmetic and bit casts, so a vectorized loop stays
    vector code; libm's expf is a scalar call), other types through libm."""
    return te.exp_poly(x) if x.dtype == "float32" else te.exp(x)


def _idx_bcast(idx, shape, oshape):
    off = len(oshape) - len(shape)
    return tuple(0 if n == 1 else idx[off + d] for d, n in enumerate(shape))


def _unary(expr: Callable):
    def fn(node, ins, graph, inputs):
        f, a = ins[0], node.attr_dict
        return [lambda idx: expr(f(idx), a)]
    return fn


def _nary(expr: Callable):
    """A broadcast op of any arity: expr(attrs, *operand exprs)."""
    def fn(node, ins, graph, inputs):
        oshape, a = node.outputs[0].shape, node.attr_dict
        shapes = [v.shape for v in node.inputs]
        return [lambda idx: expr(a, *(f(_idx_bcast(idx, s, oshape)) for f, s in zip(ins, shapes)))]
    return fn


def check_unroll(node, n: int):
    if n > UNROLL_MAX:
        raise ModelError(f"node {node.name!r} ({node.op}): {n} terms per output; cgen unrolls "
                         f"at most {UNROLL_MAX}", "unsupported_attr")


