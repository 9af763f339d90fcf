"""ONNX -> graph IR.

    load_onnx(model, input_shapes=None) -> Graph

`model` is a path, the bytes of a model, or an `onnx.ModelProto`.  The model
is checked (`onnx.checker`), its default-domain opset must lie between 11 and
the newest the installed onnx defines (older models go through
`onnx.version_converter` first), and every graph input must have a
static shape (a symbolic dimension takes its value from `input_shapes`, e.g.
``{"x": (1, 3, 224, 224)}``, the CLI's ``--input-shape x=1,3,224,224``).

Each ONNX node becomes one or more canonical nodes (see `cgen.graph.opset`)
with every attribute explicit: pads as (top, left, bottom, right), axes
non-negative, Gemm as transposes + matmul + mul(alpha) + add(beta * C),
1-D convolutions and pools as 2-D ones between reshapes, softmax before
opset 13 as reshape + softmax + reshape.  Operands that act as attributes
(Reshape's shape, Slice's starts, Pad's pads, Clip's bounds, axes, split
sizes, Gather's indices) must be computable at import: initializers, Constant
nodes, Shape of a (static) value, or nodes over those.  Shape, Size,
ConstantOfShape and Constant become constants; Identity and Dropout vanish.  A tensor
without elements (an input or a node's output) has only one value, so it is a constant
too: no node computes it and the parts of a Concat or Split that are empty drop out.

Every refusal is a `ModelError` with a one-line message.
"""
from __future__ import annotations

from typing import Callable, Mapping

from .graph_ir import Graph, ModelError
from .onnx_import import MIN_OPSET, _Importer, _check, _first_line, _load_proto, max_opset
from .onnx_convert import (
    convert_batchnorm, convert_binary, convert_cast, convert_cast_like, convert_clip,
    convert_conv, convert_conv_transpose, convert_dequantize, convert_dropout,
    convert_gelu, convert_gemm, convert_global_pool, convert_identity, convert_layernorm,
    convert_matmul, convert_pool, convert_qlinear_conv, convert_qlinear_matmul,
    convert_quantize, convert_reciprocal, convert_reduce, convert_softmax, convert_unary,
    convert_variadic)
from .onnx_convert_index import INDEX_CONVERTERS
from .onnx_convert_integer import INTEGER_CONVERTERS
from .onnx_convert_rnn import RNN_CONVERTERS
from .onnx_convert_attention import ATTENTION_CONVERTERS
from .onnx_convert_einsum import EINSUM_CONVERTERS
from .onnx_convert_lppool_swiglu import LPPOOL_SWIGLU_CONVERTERS
from .onnx_convert_more import MORE_CONVERTERS
from .onnx_convert_resize import (convert_resize, convert_upsample, legacy_resize_outputs,
                                  mark_legacy_resizes)
from .onnx_convert_tensor import (
    convert_concat, convert_constant, convert_constant_of_shape, convert_flatten,
    convert_gather, convert_pad, convert_reshape, convert_shape, convert_size,
    convert_slice, convert_split, convert_squeeze, convert_transpose, convert_unsqueeze)


CONVERTERS: Mapping[str, Callable] = {
    "Conv": convert_conv, "ConvTranspose": convert_conv_transpose, "Gemm": convert_gemm, "MatMul": convert_matmul,
    "Add": convert_binary("add"), "Sub": convert_binary("sub"), "Mul": convert_binary("mul"),
    "Div": convert_binary("div"), "Pow": convert_binary("pow"),
    "Max": convert_variadic("max"), "Min": convert_variadic("min"), "Sum": convert_variadic("add"),
    "Mean": convert_variadic("add", mean=True),
    "Relu": convert_unary("relu"), "LeakyRelu": convert_unary("leaky_relu", alpha=0.01),
    "Clip": convert_clip, "Sigmoid": convert_unary("sigmoid"), "Tanh": convert_unary("tanh"),
    "HardSigmoid": convert_unary("hard_sigmoid", alpha=0.2, beta=0.5),
    "HardSwish": convert_unary("hard_swish"), "Erf": convert_unary("erf"), "Gelu": convert_gelu,
    "Exp": convert_unary("exp"), "Log": convert_unary("log"), "Sqrt": convert_unary("sqrt"),
    "Neg": convert_unary("neg"), "Abs": convert_unary("abs"), "Reciprocal": convert_reciprocal,
    "Softmax": convert_softmax("softmax"), "LogSoftmax": convert_softmax("log_softmax"),
    "BatchNormalization": convert_batchnorm, "LayerNormalization": convert_layernorm,
    "MaxPool": convert_pool("max"), "AveragePool": convert_pool("avg"),
    "GlobalAveragePool": convert_global_pool("reduce_mean"),
    "GlobalMaxPool": convert_global_pool("reduce_max"),
    "ReduceMean": convert_reduce("reduce_mean", 18), "ReduceSum": convert_reduce("reduce_sum", 13),
    "ReduceMax": convert_reduce("reduce_max", 18), "ReduceMin": convert_reduce("reduce_min", 18),
    "Flatten": convert_flatten, "Reshape": convert_reshape, "Transpose": convert_transpose, "Concat": convert_concat,
    "Split": convert_split, "Slice": convert_slice, "Squeeze": convert_squeeze, "Unsqueeze": convert_unsqueeze,
    "Pad": convert_pad, "Gather": convert_gather, "Shape": convert_shape, "Size": convert_size,
    "ConstantOfShape": convert_constant_of_shape, "Constant": convert_constant, "Identity": convert_identity,
    "Dropout": convert_dropout, "Cast": convert_cast, "CastLike": convert_cast_like,
    "QuantizeLinear": convert_quantize, "DequantizeLinear": convert_dequantize,
    "QLinearConv": convert_qlinear_conv, "QLinearMatMul": convert_qlinear_matmul,
    "Resize": convert_resize, "Upsample": convert_upsample,     # onnx_convert_resize.py
    **MORE_CONVERTERS, **INDEX_CONVERTERS, **INTEGER_CONVERTERS,
    **RNN_CONVERTERS, **EINSUM_CONVERTERS, **LPPOOL_SWIGLU_CONVERTERS,
    **ATTENTION_CONVERTERS,
}

SUPPORTED_ONNX_OPS = tuple(sorted(CONVERTERS))


def load_onnx(model, input_shapes: Mapping | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) as a canonical Graph (see module doc)."""
    proto, where = _load_proto(model)
    opset = _check(proto, where)
    if opset < MIN_OPSET:
        try:     # older models are upgraded by onnx's own converter, or refused
            from onnx import version_converter
            legacy = legacy_resize_outputs(proto)
            proto = version_converter.convert_version(proto, MIN_OPSET)
            mark_legacy_resizes(proto, legacy)
            opset = _check(proto, where)
        except ModelError as e:
            raise ModelError(f"ONNX model {where} uses opset {opset}; after conversion to opset "
                             f"{MIN_OPSET}: {e}", "unsupported_attr") from None
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"ONNX model {where} uses opset {opset}; cgen supports opsets "
                             f"{MIN_OPSET} to {max_opset()} and onnx.version_converter cannot "
                             f"upgrade it ({_first_line(e)})", "unsupported_attr") from None
    if len(proto.functions):
        try:
            from onnx import inliner
            proto = inliner.inline_local_functions(proto)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"cannot inline the model's local functions: {_first_line(e)}") from None
    return _Importer(proto, opset, input_shapes, where).run(CONVERTERS)


def parse_input_shape(text: str) -> tuple:
    """'name=1,3,224,224' -> ('name', (1, 3, 224, 224)) (the CLI's --input-shape)."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(",") if d.strip())
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise ModelError(f"--input-shape {text!r}: expected NAME=D0,D1,... with positive sizes",
                         "bad_input")
    return name, shape
