"""The canonical `resize` as a te index function: a gather over each resized axis through the
taps of `resize_geometry` (input positions and weights per output position, constants made
at compile time), summed over the taps.  An index column that is plain arithmetic of the
output index (i, i // q, i * q + c) is written as that arithmetic, not a table read, and a
nearest axis reads no weights at all."""
from __future__ import annotations

import itertools

import numpy as np

from .. import te
from ..te.expr import const
from .resize_geometry import all_taps


def _arith(col: np.ndarray):
    """idx -> expression when the column is i * q + c or i // q, else None."""
    i = np.arange(col.size)
    q, c = (int(col[1] - col[0]), int(col[0])) if col.size > 1 else (0, int(col[0]))
    if np.array_equal(col, i * q + c):
        def affine(e):
            e = e * q if q not in (0, 1) else (e if q == 1 else const(0, "int64"))
            return e + c if c else e
        return affine
    for q in range(2, 65):
        if np.array_equal(col, i // q):
            return lambda e, q=q: e // q
    return None


def _column(inputs, name: str, table: np.ndarray, k: int):
    """out index -> the tap-k entry of `table` (arithmetic when it has that form)."""
    col = table[:, k]
    if table.dtype.kind == "i":
        f = _arith(col)
        if f is not None:
            return f
    if np.all(col == col[0]):
        v = col[0].item()
        return lambda e: const(v, "int64" if table.dtype.kind == "i" else "float32")
    t = inputs.derived(f"{name}_{k}", np.ascontiguousarray(
        col.astype(np.int64 if table.dtype.kind == "i" else np.float32)))
    return lambda e: t[(e,)]


def resize_fn(f, node, inputs):
    """idx -> expression of the resized value (f reads the input)."""
    a = node.attr_dict
    x = node.inputs[0]
    dtype = node.outputs[0].dtype
    taps = all_taps(a, x.shape)
    axes = []                    # (axis, [(index fn, weight fn | None)], valid)
    for d, t in enumerate(taps):
        if t is None:
            continue
        base = f"{node.name}__resize{d}"
        cols = []
        for k in range(t.idx.shape[1]):
            fi = _column(inputs, f"{base}_idx", t.idx, k)
            fw = None if t.nearest else _column(inputs, f"{base}_w", t.w, k)
            cols.append((fi, fw))
        axes.append((d, cols, t.valid))
    floating = te.is_float(dtype)

    def fn(idx):
        total = None
        for combo in itertools.product(*(cols for _, cols, _ in axes)):
            src, w = list(idx), None
            for (d, _, _), (fi, fw) in zip(axes, combo):
                src[d] = fi(idx[d])
                if fw is not None:
                    w = fw(idx[d]) if w is None else w * fw(idx[d])
            v = f(tuple(src))
            if w is None:
                term = v
            else:
                term = (v if floating else te.cast("float32", v)) * w
            total = term if total is None else total + term
        if not floating and any(fw is not None for _, cols, _ in axes for _, fw in cols):
            info = np.iinfo(dtype)
            hi, lo = const(float(info.max), "float32"), const(float(info.min), "float32")
            total = te.maximum(te.minimum(te.round_half_even(total), hi), lo)
            total = te.cast(dtype, total)
        conds = []
        for d, _, valid in axes:
            if valid is not None:
                conds += [idx[d] >= valid[0], idx[d] < valid[1]]
        if conds:
            total = te.if_then_else(te.all(*conds), total,
                                    const(a["extrapolation_value"] if floating
                                          else int(a["extrapolation_value"]), dtype))
        return total
    return fn
