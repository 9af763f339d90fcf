"""Graph level: ONNX -> graph IR -> optimised, fused graph.

    from cgen import graph as cg
    g = cg.load_onnx("model.onnx", input_shapes={"x": (1, 3, 224, 224)})   # canonical Graph
    g = cg.optimize(g, layout_prefs={"conv2d": 8})                          # folded, laid out
    fg = cg.fuse(g)                                                         # FusedGraph
    for group in fg.groups:            # in dependency order
        group.kind, group.anchor, group.epilogue, group.inputs, group.params, group.outputs
        fg.graph.constants[p.name]     # the weights (numpy, read-only) for p in group.params
    cg.reference.run(g, {"x": x})      # numpy oracle of any graph, before or after any pass

or in one call: ``cg.prepare(model, input_shapes=None, layout_prefs=None) -> FusedGraph``.
Refusals raise `ModelError` (a ValueError) with a one-line message.
"""
from .graph_ir import DTYPES, Graph, ModelError, Node, Value, topo_sort
from .onnx_frontend import SUPPORTED_ONNX_OPS, load_onnx, parse_input_shape
from .onnx_node_tests import node_test_results, node_test_summary
from .opset import CANONICAL_OPS, OP_PATTERNS
from .shapes import infer_shapes
from .fold import fold_batchnorm, fold_constants, fold_qdq, remove_dead
from .rules import simplify
from .fuse import FusedGraph, Group, fuse
from .pipeline import optimize_graph, prepare

optimize = optimize_graph       # the package's short name for the standard pipeline
from .layout import convert_layout
from . import reference


__all__ = ["DTYPES", "Graph", "ModelError", "Node", "Value", "topo_sort", "SUPPORTED_ONNX_OPS",
           "load_onnx", "node_test_results", "node_test_summary", "parse_input_shape",
           "CANONICAL_OPS", "OP_PATTERNS", "FusedGraph", "Group", "fold_batchnorm", "fold_constants",
           "fold_qdq", "fuse", "infer_shapes", "optimize", "optimize_graph", "remove_dead", "simplify",
           "convert_layout", "reference", "prepare"]
