"""Generic traversal of frozen IR trees (expressions and loop statements)."""
from __future__ import annotations

import dataclasses
import functools

from .expr import Node, Var


@functools.cache
def _field_names(cls) -> tuple:
    # dataclasses.fields() builds its tuple on every call: a third of lowering's time
    return tuple(f.name for f in dataclasses.fields(cls))


def map_children(node, fn):
    """A copy of node with fn applied to each child node; the same object if none changed."""
    changes = {}
    for name in _field_names(type(node)):
        v = getattr(node, name)
        if isinstance(v, Node):
            nv = fn(v)
            if nv is not v:
                changes[name] = nv
        elif isinstance(v, tuple) and v and isinstance(v[0], Node):
            nv = tuple(fn(y) for y in v)
            if any(a is not b for a, b in zip(nv, v)):
                changes[name] = nv
    return dataclasses.replace(node, **changes) if changes else node


def children(node):
    for name in _field_names(type(node)):
        v = getattr(node, name)
        if isinstance(v, Node):
            yield v
        elif isinstance(v, tuple):
            for y in v:
                if isinstance(y, Node):
                    yield y


def walk(node, visit):
    """Pre-order visit of node and every descendant."""
    visit(node)
    for c in children(node):
        walk(c, visit)


def substitute(node, mapping: dict):
    """Replace Vars (by identity) with expressions."""
    if not mapping:
        return node

    def rec(x):
        if isinstance(x, Var):
            return mapping.get(x, x)
        return map_children(x, rec)
    return rec(node)


def free_vars(node) -> set:
    out = set()

    def visit(x):
        if isinstance(x, Var):
            out.add(x)
    walk(node, visit)
    return out
