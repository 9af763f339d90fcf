"""The canonical op set, per op: inputs; attributes (all explicit).

    elementwise   relu leaky_relu(alpha) clip(min,max: number|None) sigmoid tanh
                  hard_sigmoid(alpha,beta) hard_swish erf gelu(approximate) exp log
                  sqrt neg abs identity cast(to)                              (x)
    broadcast     add sub mul div pow max min            (a, b) numpy broadcasting
                  quantize(axis)   (x, scale, zero_point) -> zero_point's dtype
                  dequantize(axis) (x, scale, zero_point) -> float32
                  batch_norm(epsilon) (x, scale, bias, mean, var)  [gone after fold_batchnorm]
    anchor        conv2d(strides, pads=(t,l,b,r), dilations, groups)       (x, w[, bias])
                  conv2d_transpose(... , output_padding)                    (x, w[, bias])
                  matmul   (a, b) ranks >= 2, batch dims broadcast (numpy.matmul)
                  qlinear_conv2d(conv attrs) (x, xs, xz, w, ws, wz, ys, yz[, bias int32])
                  qlinear_matmul (a, as, az, b, bs, bz, ys, yz)
                  max_pool2d / avg_pool2d(kernel, strides, pads, dilations, ceil_mode
                                          [, count_include_pad])            (x)
    reduction     reduce_mean/sum/max/min(axes, keepdims) softmax(axis) log_softmax(axis)
                  layer_norm(axis, epsilon) (x, scale[, bias]): normalises axes [axis, rank)
    injective     reshape(shape) transpose(perm) concat(axis) split(axis, sizes)
                  slice(starts, ends, steps): per axis, indices range(start, end, step)
                  pad(pads=(begin..., end...), mode, value) gather(axis) (data, indices)
                  layout_transform(src, dst)
                  resize(mode, coord, nearest_mode, cubic_a, exclude_outside, antialias,
                         extrapolation_value, scales, sizes, roi)             (x)

    more          ops_extra.py / ops_index.py: comparisons, logic, where, rounding, trig,
                  activations, mod, expand, tile, trilu, cumsum, gather/scatter, topk, ...

Axes are non-negative; shapes are static; every value has a concrete dtype.
"""
from __future__ import annotations

from typing import Mapping

from .ops_extra import EXTRA_OPS

# ====================================================================== op patterns
ELEMWISE, BROADCAST, INJECTIVE, REDUCTION, ANCHOR, OPAQUE = (
    "elementwise", "broadcast", "injective", "reduction", "anchor", "opaque")

UNARY_OPS = ("relu", "leaky_relu", "clip", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "erf",
             "gelu", "exp", "log", "sqrt", "neg", "abs", "identity", "cast")
BINARY_OPS = ("add", "sub", "mul", "div", "pow", "max", "min")

OP_PATTERNS: Mapping[str, str] = {
    **{op: ELEMWISE for op in UNARY_OPS},
    **{op: BROADCAST for op in BINARY_OPS},
    "quantize": BROADCAST, "dequantize": BROADCAST, "batch_norm": BROADCAST,
    "conv2d": ANCHOR, "conv2d_transpose": ANCHOR, "matmul": ANCHOR, "qlinear_conv2d": ANCHOR,
    "qlinear_matmul": ANCHOR, "max_pool2d": ANCHOR, "avg_pool2d": ANCHOR,
    "reduce_mean": REDUCTION, "reduce_sum": REDUCTION, "reduce_max": REDUCTION,
    "reduce_min": REDUCTION, "softmax": REDUCTION, "log_softmax": REDUCTION,
    "layer_norm": REDUCTION,
    "reshape": INJECTIVE, "transpose": INJECTIVE, "concat": INJECTIVE, "split": INJECTIVE,
    "slice": INJECTIVE, "pad": INJECTIVE, "gather": INJECTIVE, "layout_transform": INJECTIVE,
    "resize": INJECTIVE,            # attributes: cgen.graph.resize_geometry
    **{op: d.pattern for op, d in EXTRA_OPS.items()},      # ops_extra.py describes them
}
CANONICAL_OPS = tuple(OP_PATTERNS)
