"""The operator templates, by name.

`templates()` builds a fresh table each call (no global mutable registry);
callers that need one template pass it around explicitly.
"""
from __future__ import annotations

import importlib

# (module, function returning that module's templates), in table order
_SOURCES = (
    ("gemm_template", "gemm_templates"),
    ("dense", "dense_templates"),
    ("batch_matmul", "batch_matmul_templates"),
    ("depthwise", "depthwise_templates"),
    ("pool", "pool_templates"),
    ("softmax_template", "softmax_templates"),
    ("elemwise", "elemwise_templates"),
    ("elemwise_reduce", "reduce_templates"),
    ("elemwise_layout", "layout_templates"),
    ("quant", "quant_templates"),
    ("conv.dispatch", "conv_templates"),
    ("conv.direct", "direct_conv_templates"),
)


def templates() -> dict:
    """name -> template instance, for every shipped template."""
    out = {}
    for module, factory in _SOURCES:
        mod = importlib.import_module(f"{__package__}.{module}")
        for t in getattr(mod, factory)():
            out[t.name] = t
    return out


def template(name: str):
    table = templates()
    if name not in table:
        raise ValueError(f"unknown operator template {name!r}; known: {', '.join(sorted(table))}")
    return table[name]
