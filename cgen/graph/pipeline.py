"""The graph passes in their standard order (each a function Graph -> Graph,
fuse: Graph -> FusedGraph; they live in shapes, rules, fold and fuse).

    infer_shapes     recompute every node's output shapes and dtypes (checks the graph)
    simplify         local rewrites from a table of rules (identities, reshape chains, ...)
    fold_constants   evaluate nodes whose inputs are all constants (reference interpreter)
    fold_batchnorm   batch_norm -> per-channel mul/add, folded into conv/matmul weights
    fold_qdq         dequantize -> conv/matmul -> quantize  ==>  qlinear_conv2d/qlinear_matmul
    remove_dead      drop nodes and constants that no graph output depends on
    fuse             group nodes by op pattern: anchor (conv/dense/pool) + elementwise
                     epilogue, reduction + elementwise epilogue, injective chains
    optimize_graph   the standard pipeline, in order
"""
from __future__ import annotations

from typing import Mapping

from .fold import fold_batchnorm, fold_constants, fold_qdq, remove_dead
from .fuse import FusedGraph, fuse
from .graph_ir import Graph
from .layout import convert_layout
from .onnx_frontend import load_onnx
from .rules import simplify
from .shapes import infer_shapes


# ====================================================================== pipeline
def optimize_graph(graph: Graph, layout_prefs: Mapping | None = None) -> Graph:
    """The standard pass order: simplify, fold_qdq, fold_constants, fold_batchnorm,
    fold_constants, simplify, remove_dead, then blocked layouts when asked, infer_shapes."""
    graph = simplify(graph)
    graph = fold_qdq(graph)
    graph = fold_constants(graph)
    graph = fold_batchnorm(graph)
    graph = fold_constants(graph)
    graph = simplify(graph)
    graph = remove_dead(graph)
    if layout_prefs:
        graph = simplify(convert_layout(graph, layout_prefs))
    return infer_shapes(graph)


def prepare(model, input_shapes=None, layout_prefs=None) -> FusedGraph:
    """ONNX model (path, bytes or ModelProto) -> optimised graph -> fused groups."""
    return fuse(optimize_graph(load_onnx(model, input_shapes), layout_prefs))
