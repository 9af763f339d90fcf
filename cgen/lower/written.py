"""Whether a local buffer is wholly written before anything reads it.

The C printer zero-fills a stack buffer (`= {0}`) unless this proves the fill dead: the
first statement of the allocation's body that touches the buffer is a loop nest (or a
sequence of them) of unconditional stores to it (constant bounds, affine indices, no read of the buffer) whose
indices cover every element, or a zero-start micro-kernel call standing for such a nest
(CallKernel.stores).  Anything else -- a guard, another micro-kernel call, a read first,
a non-affine index -- keeps the fill, so a consumer that relies on zeros (padding written
only inside the image, an accumulator read before its first store) still gets them.
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from ..te.expr import Const, Node, Var
from .ir import (Address, Allocate, Buffer, CallKernel, For, IfThenElse, Load, Seq, Store, Stmt,
                 VLoad, VStore, split_dtype)
from .simplify import linear

# stores enumerated at most (a bigger nest keeps its fill rather than cost compile time)
MAX_STORES = 1 << 22


def _children(n):
    for f in fields(n):
        v = getattr(n, f.name)
        if isinstance(v, Node):
            yield v
        elif isinstance(v, tuple):
            yield from (x for x in v if isinstance(x, Node))


def touches(n: Node, buf: Buffer) -> bool:
    if isinstance(n, (Load, VLoad, Store, VStore, Address)) and n.buffer is buf:
        return True
    return any(touches(c, buf) for c in _children(n))


def written_before_read(buf: Buffer, body: Stmt) -> bool:
    """True when the first statement of body touching buf stores every element of it."""
    stmts = body.stmts if isinstance(body, Seq) else (body,)
    for i, s in enumerate(stmts):
        if isinstance(s, Allocate) and s.buffer is not buf:
            if touches(s.body, buf):
                return written_before_read(buf, s.body)
            continue
        if touches(s, buf):
            return _covers(stmts[i:], buf)
    return False


def _covers(stmts, buf: Buffer) -> bool:
    """The leading statements that are trees of loops (constant bounds), sequences,
    allocations and if/else whose two branches store the same elements at every iteration
    (a row loop cut at run-time bounds by cgen.lower.partition), with unconditional affine
    stores to buf as leaves, store every element of buf."""
    seen = np.zeros(buf.size, dtype=bool)
    budget = [MAX_STORES]
    for s in stmts:
        stores = _stores(s, [], buf, budget)
        if stores is None:
            break           # a reader, a guard, a run-time bound: the prefix ends here
        for idx in stores:
            seen[idx[:, 1]] = True
        if seen.all():
            return True
    return bool(seen.all())


def _stores(x, loops, buf, budget):
    """Per leaf store, the (iteration of `loops`, element) pairs it writes as an (n, 2)
    array; None when x is not a provable store tree.  A statement that neither reads nor
    writes buf (another stage filled at the same loop) adds nothing."""
    if not touches(x, buf):
        return []
    if isinstance(x, Allocate):
        return _stores(x.body, loops, buf, budget)
    if isinstance(x, CallKernel):
        # a call that touches buf other than through the stores it stands for reads it
        if x.stores is None or not touches(x.stores, buf):
            return None
        return _stores(x.stores, loops, buf, budget)
    if isinstance(x, For):
        if not (isinstance(x.min, Const) and isinstance(x.extent, Const)):
            return None
        if x.extent.value <= 0:
            return []
        inner = _stores(x.body, loops + [(x.var, x.min.value, x.extent.value)], buf, budget)
        if inner is None:
            return None
        # the pairs keep the iteration of the loops outside x
        step = x.extent.value
        return [np.stack([a[:, 0] // step, a[:, 1]], axis=1) for a in inner]
    if isinstance(x, Seq):
        out = []
        for y in x.stmts:
            got = _stores(y, loops, buf, budget)
            if got is None:
                return None
            out.extend(got)
        return out
    if isinstance(x, IfThenElse):
        if x.else_ is None:
            return None
        a, b = _stores(x.then, loops, buf, budget), _stores(x.else_, loops, buf, budget)
        if a is None or b is None or not np.array_equal(_pairs(a), _pairs(b)):
            return None
        return a
    count = getattr(x, "count", None)
    if not (isinstance(x, (Store, VStore)) and x.buffer is buf and not touches(x.value, buf)
            and (count is None or isinstance(count, Const)) and not touches(x.index, buf)):
        return None     # a masked store writes a known number of lanes only at a constant count
    return _elements(x, loops, buf.size, budget)


def _pairs(stores) -> np.ndarray:
    if not stores:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(stores), axis=0)


def _elements(x, loops, size: int, budget):
    """[(iteration, element) pairs] of one store over its loops, or None."""
    n = int(np.prod([e for _, _, e in loops], dtype=np.int64)) if loops else 1
    budget[0] -= n
    if budget[0] < 0:
        return None
    grids = np.meshgrid(*[np.arange(lo, lo + e, dtype=np.int64) for _, lo, e in loops],
                        indexing="ij") if loops else []
    value_of = {v: g.ravel() for (v, _, _), g in zip(loops, grids)}
    terms, c0 = linear(x.index)
    if not all(isinstance(a, Var) and a in value_of for a in terms):
        return None             # an index through a Let, a division or a loaded value
    idx = np.full(n, c0, dtype=np.int64)
    for a, c in terms.items():
        idx += c * value_of[a]
    count = getattr(x, "count", None)      # a Const here: _stores refuses any other
    lanes = count.value if count is not None else (
        split_dtype(x.value.dtype)[1] if isinstance(x, VStore) else 1)
    if idx.min() < 0 or idx.max() + lanes > size:
        return None
    it = np.arange(n, dtype=np.int64)      # row-major iteration number over `loops`
    return [np.stack([it, idx + k], axis=1) for k in range(lanes)]


__all__ = ["written_before_read", "touches"]
