"""Loop IR: the scheduled program as loops over flat buffers.

Expressions are te expressions plus `Load` from a flat buffer; statements are
the small frozen nodes below.  Vector lanes are recorded on `For` nodes
(kind "vectorized"); instruction names never appear here.
"""
from __future__ import annotations

from dataclasses import dataclass
import math

from ..te.expr import Expr, Node, Var


@dataclass(frozen=True, eq=False)
class Buffer:
    """A flat row-major array.  scope: "global" (an argument) or "local"."""
    name: str
    dtype: str
    shape: tuple
    scope: str = "global"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        from numpy import dtype
        return self.size * dtype(self.dtype).itemsize

    def __repr__(self):
        return f"Buffer({self.name}, {self.dtype}, {self.shape}, {self.scope})"


@dataclass(frozen=True, slots=True)
class Load(Expr):
    buffer: Buffer
    index: Expr
    dtype: str


class Stmt(Node):
    __slots__ = ()


FOR_KINDS = ("serial", "unrolled", "vectorized", "parallel")


@dataclass(frozen=True, slots=True)
class For(Stmt):
    var: Var
    min: Expr
    extent: Expr
    kind: str
    body: Stmt
    pragmas: tuple = ()


@dataclass(frozen=True, slots=True)
class Store(Stmt):
    buffer: Buffer
    index: Expr
    value: Expr


@dataclass(frozen=True, slots=True)
class Allocate(Stmt):
    buffer: Buffer
    body: Stmt


@dataclass(frozen=True, slots=True)
class IfThenElse(Stmt):
    cond: Expr
    then: Stmt
    else_: Stmt | None = None


@dataclass(frozen=True, slots=True)
class Let(Stmt):
    var: Var
    value: Expr
    body: Stmt


@dataclass(frozen=True, slots=True)
class Evaluate(Stmt):
    value: Expr


@dataclass(frozen=True, slots=True)
class Seq(Stmt):
    stmts: tuple


def seq(*stmts) -> Stmt:
    """A flattened sequence; a single statement stands alone."""
    flat = []
    for s in stmts:
        if s is None:
            continue
        if isinstance(s, Seq):
            flat.extend(s.stmts)
        else:
            flat.append(s)
    if len(flat) == 1:
        return flat[0]
    return Seq(tuple(flat))


@dataclass(frozen=True)
class PrimFunc:
    """A lowered kernel: its arguments in call order and its body."""
    name: str
    params: tuple  # of Buffer
    outputs: tuple  # names of params that are written
    body: Stmt
    kernels: tuple = ()  # micro-kernel sources the body calls (tensorize)
    aliased: tuple = ()  # names of params that may share memory (an in-place kernel): no restrict


# ---------------------------------------------------------------------------
# Vector forms, made by the vectorize pass.  dtype "float32x8" is 8 lanes of
# float32; `count` (lanes actually touched, None for all) marks a masked tail.


def vector_dtype(scalar: str, lanes: int) -> str:
    return f"{scalar}x{lanes}"


def split_dtype(dtype: str) -> tuple:
    """("float32", 8) for "float32x8"; (dtype, 1) for a scalar."""
    if "x" in dtype:
        base, lanes = dtype.rsplit("x", 1)
        return base, int(lanes)
    return dtype, 1


@dataclass(frozen=True, slots=True)
class VLoad(Expr):
    """lanes elements buffer[index + stride * k], k < lanes: consecutive ones (stride 1),
    or every other one (stride 2: the ISA row's load_even, never masked)."""
    buffer: Buffer
    index: Expr
    dtype: str
    count: Expr | None = None
    stride: int = 1


@dataclass(frozen=True, slots=True)
class Broadcast(Expr):
    value: Expr
    dtype: str


@dataclass(frozen=True, slots=True)
class VStore(Stmt):
    buffer: Buffer
    index: Expr
    value: Expr
    count: Expr | None = None


@dataclass(frozen=True, slots=True)
class Address(Expr):
    """&buffer[index], a pointer argument for micro-kernel calls."""
    buffer: Buffer
    index: Expr
    dtype: str = "handle"


@dataclass(frozen=True, slots=True)
class CallKernel(Stmt):
    """A call of a micro-kernel (tensorize) or a builtin such as prefetch.  `stores`, never
    printed: a nest of plain stores to the elements the call writes before it reads any
    (a zero-start tile: the zero init it replaced), so analyses such as
    written_before_read see that it fills them."""
    name: str
    args: tuple
    stores: Stmt | None = None
