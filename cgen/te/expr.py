"""Expression nodes of the tensor-expression language.

Nodes are frozen dataclasses compared structurally, except `Var`, `IterVar`
and tensors, which are identities: two loops both named ``i`` are different
loops.  Python operators build nodes; ``==`` keeps its Python meaning
(structural equality) and `equal` builds a comparison node instead.
"""
from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

FLOAT_TYPES = ("float32",)
INT_TYPES = ("int8", "uint8", "int16", "int32", "int64")
DTYPES = FLOAT_TYPES + INT_TYPES + ("bool",)
INDEX = "int64"


def check_dtype(dtype: str) -> str:
    dtype = str(np.dtype(dtype)) if dtype != "bool" else "bool"
    if dtype not in DTYPES:
        raise TypeError(f"unsupported dtype {dtype!r}; cgen supports {', '.join(DTYPES)}")
    return dtype


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_TYPES


def is_int(dtype: str) -> bool:
    return dtype in INT_TYPES


class Node:
    """Base of IR nodes: children are the fields holding Nodes or tuples of them."""

    __slots__ = ()


class Expr(Node):
    """Base of every expression; operators build new nodes."""

    __slots__ = ()
    dtype: str

    def __add__(self, o): return binary("+", self, o)
    def __radd__(self, o): return binary("+", o, self)
    def __sub__(self, o): return binary("-", self, o)
    def __rsub__(self, o): return binary("-", o, self)
    def __mul__(self, o): return binary("*", self, o)
    def __rmul__(self, o): return binary("*", o, self)
    def __truediv__(self, o): return binary("/", self, o)
    def __rtruediv__(self, o): return binary("/", o, self)
    def __floordiv__(self, o): return binary("//", self, o)
    def __rfloordiv__(self, o): return binary("//", o, self)
    def __mod__(self, o): return binary("%", self, o)
    def __rmod__(self, o): return binary("%", o, self)
    def __neg__(self): return binary("-", const(0, self.dtype), self)
    def __lt__(self, o): return compare("<", self, o)
    def __le__(self, o): return compare("<=", self, o)
    def __gt__(self, o): return compare(">", self, o)
    def __ge__(self, o): return compare(">=", self, o)
    def __and__(self, o): return logic("&&", self, o)
    def __or__(self, o): return logic("||", self, o)
    def __invert__(self): return Not(as_expr(self, "bool"))

    def __bool__(self):
        raise TypeError("a cgen expression has no truth value; use te.if_then_else / te.all")

    def astype(self, dtype: str) -> "Expr":
        return cast(dtype, self)


@dataclass(frozen=True, slots=True)
class Const(Expr):
    value: int | float
    dtype: str


@dataclass(frozen=True, slots=True, eq=False)
class Var(Expr):
    name: str
    dtype: str = INDEX

    def __repr__(self):
        return f"Var({self.name})"


@dataclass(frozen=True, slots=True)
class Binary(Expr):
    """op is one of + - * / // % min max; // and % floor (Python semantics)."""
    op: str
    a: Expr
    b: Expr
    dtype: str


@dataclass(frozen=True, slots=True)
class Compare(Expr):
    op: str  # < <= > >= == !=
    a: Expr
    b: Expr
    dtype: str = "bool"


@dataclass(frozen=True, slots=True)
class Logic(Expr):
    op: str  # && ||
    a: Expr
    b: Expr
    dtype: str = "bool"


@dataclass(frozen=True, slots=True)
class Not(Expr):
    a: Expr
    dtype: str = "bool"


@dataclass(frozen=True, slots=True)
class Select(Expr):
    cond: Expr
    t: Expr
    f: Expr
    dtype: str


@dataclass(frozen=True, slots=True)
class Cast(Expr):
    dtype: str
    value: Expr


@dataclass(frozen=True, slots=True)
class Reinterpret(Expr):
    """The bits of a float32 read as an int32, or back (a bit cast, not a conversion):
    exp's 2^n is an exponent field built with integer operations."""
    dtype: str
    value: Expr


REINTERPRET = {"float32": "int32", "int32": "float32"}


def reinterpret(dtype: str, value) -> Expr:
    value = as_expr(value)
    if REINTERPRET.get(value.dtype) != dtype:
        raise TypeError(f"reinterpret: only float32 <-> int32 bit casts, not "
                        f"{value.dtype} -> {dtype}")
    return Reinterpret(dtype, value)


@dataclass(frozen=True, slots=True)
class Call(Expr):
    """A math intrinsic: exp log sqrt tanh sigmoid erf floor rint abs."""
    name: str
    args: tuple
    dtype: str


@dataclass(frozen=True, slots=True, eq=False)
class IterVar:
    """A loop variable with its domain [lo, lo+extent) and kind."""
    var: Var
    lo: int
    extent: int
    kind: str  # "data" or "reduce"

    @property
    def name(self) -> str:
        return self.var.name

    def __repr__(self):
        return f"IterVar({self.name}, {self.lo}, {self.extent}, {self.kind})"

    # An IterVar is used inside expressions as its variable.
    def _e(self):
        return self.var

    def __add__(self, o): return self.var + o
    def __radd__(self, o): return o + self.var
    def __sub__(self, o): return self.var - o
    def __rsub__(self, o): return o - self.var
    def __mul__(self, o): return self.var * o
    def __rmul__(self, o): return o * self.var
    def __floordiv__(self, o): return self.var // o
    def __mod__(self, o): return self.var % o
    def __lt__(self, o): return self.var < o
    def __le__(self, o): return self.var <= o
    def __gt__(self, o): return self.var > o
    def __ge__(self, o): return self.var >= o

    def astype(self, dtype):
        return cast(dtype, self.var)


@dataclass(frozen=True, slots=True)
class TensorLoad(Expr):
    tensor: object  # te.tensor.Tensor
    indices: tuple
    dtype: str


@dataclass(frozen=True, slots=True)
class Reduce(Expr):
    combiner: str  # sum max min
    source: Expr
    axes: tuple  # of IterVar
    condition: Expr | None
    dtype: str


def reduce_identity(combiner: str, dtype: str) -> "Const":
    if combiner == "sum":
        return const(0, dtype)
    if is_float(dtype):
        return const(-math.inf if combiner == "max" else math.inf, dtype)
    info = np.iinfo(dtype)
    return const(int(info.min if combiner == "max" else info.max), dtype)


def const(value, dtype: str) -> Const:
    dtype = check_dtype(dtype)
    if dtype == "bool":
        return Const(bool(value), "bool")
    if is_float(dtype):
        return Const(float(np.float32(value)), dtype)
    if isinstance(value, float) and not value.is_integer():
        raise TypeError(f"{value!r} is not an integer and cannot be a {dtype} constant")
    v = int(value)
    info = np.iinfo(dtype)
    if not info.min <= v <= info.max:
        raise OverflowError(f"constant {v} does not fit {dtype}")
    return Const(v, dtype)


def as_expr(x, dtype_hint: str | None = None) -> Expr:
    """Turn Python numbers and IterVars into expressions."""
    if isinstance(x, Expr):
        return x
    if isinstance(x, IterVar):
        return x.var
    if isinstance(x, (bool, np.bool_)):
        return Const(bool(x), "bool")
    if isinstance(x, (int, np.integer)):
        return const(int(x), dtype_hint if dtype_hint and dtype_hint != "bool" else INDEX)
    if isinstance(x, (float, np.floating)):
        if dtype_hint and is_int(dtype_hint):
            if float(x).is_integer():
                return const(int(x), dtype_hint)
            raise TypeError(f"float constant {x!r} mixed with {dtype_hint} operand; cast explicitly")
        return const(float(x), "float32")
    raise TypeError(f"cannot use {type(x).__name__} {x!r} in a tensor expression")


def _unify(a, b) -> tuple[Expr, Expr]:
    """Python numbers take the dtype of the other side; two expressions must agree."""
    a_is = isinstance(a, (Expr, IterVar))
    b_is = isinstance(b, (Expr, IterVar))
    if a_is and not b_is:
        a = as_expr(a)
        return a, as_expr(b, a.dtype)
    if b_is and not a_is:
        b = as_expr(b)
        return as_expr(a, b.dtype), b
    a, b = as_expr(a), as_expr(b)
    if a.dtype != b.dtype:
        raise TypeError(f"operands of different dtypes ({a.dtype}, {b.dtype}); "
                        "cast one with .astype() — cgen never promotes silently")
    return a, b


def binary(op: str, a, b) -> Expr:
    a, b = _unify(a, b)
    if a.dtype == "bool":
        raise TypeError(f"arithmetic {op!r} on a boolean; cast it first")
    if op == "/" and not is_float(a.dtype):
        raise TypeError("'/' on integers is ambiguous; use '//' (floor division) or cast to float32")
    if op in ("//", "%") and is_float(a.dtype):
        raise TypeError(f"{op!r} is defined on integers only")
    return Binary(op, a, b, a.dtype)


def compare(op: str, a, b) -> Expr:
    a, b = _unify(a, b)
    return Compare(op, a, b)


def logic(op: str, a, b) -> Expr:
    a, b = as_expr(a), as_expr(b)
    if a.dtype != "bool" or b.dtype != "bool":
        raise TypeError(f"{op} takes boolean operands")
    return Logic(op, a, b)


def cast(dtype: str, value) -> Expr:
    dtype = check_dtype(dtype)
    value = as_expr(value)
    if value.dtype == dtype:
        return value
    return Cast(dtype, value)


def is_const(e, value=None) -> bool:
    return isinstance(e, Const) and (value is None or e.value == value)
