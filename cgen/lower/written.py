"""Whether a local buffer is wholly written before anything reads it.

The C printer zero-fills a stack buffer (`= {0}`) unless this proves the fill dead: the
first statement of the allocation's body that touches the buffer is a loop nest of
unconditional stores to it (constant bounds, affine indices, no read of the buffer) whose
indices cover every element.  Anything else -- a guard, a micro-kernel call, a read first,
a non-affine index -- keeps the fill, so a consumer that relies on zeros (padding written
only inside the image, an accumulator read before its first store) still gets them.
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from ..te.expr import Const, Node, Var
from .ir import (Address, Allocate, Buffer, For, Load, Seq, Store, Stmt, VLoad, VStore,
                 split_dtype)
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
    for s in (body.stmts if isinstance(body, Seq) else (body,)):
        if isinstance(s, Allocate) and s.buffer is not buf:
            if touches(s.body, buf):
                return written_before_read(buf, s.body)
            continue
        if touches(s, buf):
            return _covers(s, buf)
    return False


def _covers(s: Stmt, buf: Buffer) -> bool:
    loops = []
    while isinstance(s, For):
        if not (isinstance(s.min, Const) and isinstance(s.extent, Const)):
            return False
        loops.append((s.var, s.min.value, s.extent.value))
        s = s.body
    stores = s.stmts if isinstance(s, Seq) else (s,)
    if not all(isinstance(x, (Store, VStore)) and x.buffer is buf and not touches(x.value, buf)
               and getattr(x, "count", None) is None and not touches(x.index, buf) for x in stores):
        return False
    n = int(np.prod([e for _, _, e in loops], dtype=np.int64)) if loops else 1
    if n * len(stores) > MAX_STORES or n <= 0:
        return False
    grids = np.meshgrid(*[np.arange(lo, lo + e, dtype=np.int64) for _, lo, e in loops],
                        indexing="ij") if loops else []
    value_of = {v: g.ravel() for (v, _, _), g in zip(loops, grids)}
    seen = np.zeros(buf.size, dtype=bool)
    for x in stores:
        terms, c0 = linear(x.index)
        if not all(isinstance(a, Var) and a in value_of for a in terms):
            return False            # an index through a Let, a division or a loaded value
        idx = np.full(n, c0, dtype=np.int64)
        for a, c in terms.items():
            idx += c * value_of[a]
        lanes = split_dtype(x.value.dtype)[1] if isinstance(x, VStore) else 1
        if idx.min() < 0 or idx.max() + lanes > buf.size:
            return False
        for k in range(lanes):
            seen[idx + k] = True
    return bool(seen.all())


__all__ = ["written_before_read", "touches"]
