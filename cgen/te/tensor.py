"""Tensors and the operations that produce them."""
from __future__ import annotations

from dataclasses import dataclass
import inspect

from .visit import walk
from .expr import (Expr, IterVar, Reduce, TensorLoad, Var, as_expr, check_dtype, INDEX)


@dataclass(frozen=True, eq=False)
class PlaceholderOp:
    name: str
    shape: tuple
    dtype: str

    @property
    def input_tensors(self) -> tuple:
        return ()


@dataclass(frozen=True, eq=False)
class ComputeOp:
    """out[axis...] = body; body may be a single top-level Reduce."""
    name: str
    axis: tuple  # IterVar, kind "data"
    body: Expr
    dtype: str

    @property
    def shape(self) -> tuple:
        return tuple(iv.extent for iv in self.axis)

    @property
    def reduce_axis(self) -> tuple:
        return self.body.axes if isinstance(self.body, Reduce) else ()

    @property
    def input_tensors(self) -> tuple:
        return tuple(dict.fromkeys(t for t in tensors_in(self.body)))


@dataclass(frozen=True, eq=False)
class Tensor:
    op: object  # PlaceholderOp | ComputeOp

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def shape(self) -> tuple:
        return self.op.shape

    @property
    def dtype(self) -> str:
        return self.op.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, idx) -> TensorLoad:
        if not isinstance(idx, tuple):
            idx = (idx,)
        if len(idx) != self.ndim:
            raise IndexError(f"{self.name} has {self.ndim} dimensions, indexed with {len(idx)}")
        indices = []
        for x in idx:
            e = as_expr(x)
            if e.dtype not in ("int64", "int32", "int16", "int8", "uint8"):
                raise TypeError(f"index of {self.name} must be an integer, not {e.dtype}")
            if e.dtype != INDEX:
                from .expr import cast
                e = cast(INDEX, e)
            indices.append(e)
        return TensorLoad(self, tuple(indices), self.dtype)

    def __repr__(self):
        return f"Tensor({self.name}, {self.shape}, {self.dtype})"


def tensors_in(e) -> list:
    """Tensors read by an expression, in first-use order."""
    out = []

    def visit(x):
        if isinstance(x, TensorLoad):
            out.append(x.tensor)
    walk(e, visit)
    return out


def _check_shape(shape) -> tuple:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ValueError(f"shape {shape} must hold positive integers")
    return shape


def placeholder(shape, dtype="float32", name="placeholder") -> Tensor:
    return Tensor(PlaceholderOp(name, _check_shape(shape), check_dtype(dtype)))


def compute(shape, fn, name="compute") -> Tensor:
    """out[i, j, ...] = fn(i, j, ...); loop variables take fn's parameter names."""
    shape = _check_shape(shape)
    params = list(inspect.signature(fn).parameters)
    if len(params) != len(shape) and not any(
            p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values()):
        raise ValueError(f"compute {name}: fn takes {len(params)} indices, shape has {len(shape)}")
    names = params if len(params) == len(shape) else [f"i{d}" for d in range(len(shape))]
    axis = tuple(IterVar(Var(n), 0, ext, "data") for n, ext in zip(names, shape))
    body = as_expr(fn(*[iv.var for iv in axis]))
    if isinstance(body, Reduce):
        pass
    elif _has_reduce(body):
        raise ValueError(f"compute {name}: a reduction must be the whole body (te.sum(...)), "
                         "not part of a larger expression; split it into two computes")
    return Tensor(ComputeOp(name, axis, body, body.dtype))


def _has_reduce(e) -> bool:
    found = []
    walk(e, lambda x: found.append(x) if isinstance(x, Reduce) else None)
    return bool(found)


def reduce_axis(dom, name="rv") -> IterVar:
    lo, hi = dom
    if not (isinstance(lo, int) and isinstance(hi, int)) or hi <= lo:
        raise ValueError(f"reduce_axis {name}: domain {dom} must be (lo, hi) integers with hi > lo")
    return IterVar(Var(name), lo, hi - lo, "reduce")
