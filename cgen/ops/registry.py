"""The operator templates, by name.

`templates()` builds a fresh table each call (no global mutable registry);
callers that need one template pass it around explicitly.
"""
from __future__ import annotations


def templates() -> dict:
    """name -> template instance, for every shipped template."""
    from .gemm_template import GemmTemplate
    out = {}
    for t in (GemmTemplate(),):
        out[t.name] = t
    return out


def template(name: str):
    table = templates()
    if name not in table:
        raise ValueError(f"unknown operator template {name!r}; known: {', '.join(sorted(table))}")
    return table[name]
