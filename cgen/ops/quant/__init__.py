"""Quantized operators: QLinear-style conv2d (groups), depthwise conv2d and dense
on int8/uint8 with int32 accumulation and an explicit requantisation mode.

    acc[o] = sum (x - x_zp) * (w - w_zp[c]) + bias[c]          int32, c = output channel
    onnx:   y = saturate(rint(float(acc) * M[c]) + y_zp)       M[c] = (x_scale * w_scale[c]) / y_scale
                                                               in float32, rint ties to even
    tflite: y = saturate(MultiplyByQuantizedMultiplier(acc, qm[c], shift[c]) + y_zp)
            with (qm, shift) = QuantizeMultiplier(real scale), gemmlowp's
            SaturatingRoundingDoublingHighMul then RoundingDivideByPOT

The ONNX mode is bit-exact with onnxruntime's QLinearConv / QLinearMatMul
(MLAS requantises in float32 the same way); the TFLite mode with TFLite's
reference kernels (double-rounding MultiplyByQuantizedMultiplier).

Every scale, zero point and bias is a run-time argument, so one compiled
kernel serves any quantisation parameters; zero points are int32 arrays
(shape (1,), or (channels,) for per-channel weights).  A kernel's arguments,
in order (the `args` of a template's build):

    conv:  X, W, B, x_zp, w_zp, y_zp, <requant>, Y
    dense: A, Bm, bias, a_zp, b_zp, y_zp, <requant>, Y
    <requant> = x_scale, w_scale, y_scale (float32)    for rounding "onnx"
              = multiplier, shift (int32)              for rounding "tflite"

Algorithms (the "algo" knob):
  direct       operands widened to int16 with the zero points subtracted
               (padding becomes 0), int32 products summed in NCHW order;
  packed       operands packed with the reduction axis contiguous (conv: the
               input as NHWC-like rows [n, g, h, w*Cg], then per tile the im2col
               rows [pixel, (ry, rx, c)]; dense: B transposed), uint8 shifted
               by -128 into int8 (its zero point alike); the raw product sum is
               corrected with the zero points:
                 sum (x-xz)(w-wz) = sum x*w - wz*sum x - xz*sum w + K*xz*wz
               (sum x per window from per-pixel channel sums, sum w per channel);
  packed_dot   the same, its reduction the target's int8 dot micro-kernel
               (cgen.tensorize.int8_microkernel.dot_i8_intrin);
  packed_tile  activations in uint8, weights in int8, the reduction an MR x NR
               register tile of u8 x s8 dot products (u8s8_tile_intrin, generated
               from the int8 operations of the target's ISA row: VNNI or dotprod
               where the target's flags enable them, Armv7E-M SMLAD, else exact int16
               multiply-adds or plain C);
  packed_tile_s8 the same tile with the activations shifted into int8 like packed's
               (s8s8_tile_intrin), offered where every way of the row has it (NEON: the
               dotprod way's sdot then needs no sign flip and no sums of B in its loop).

Numpy references of both rounding modes (np_*) are written from the
definitions, with integer bit operations where gemmlowp uses them, so they
check the te formulations (floor division and modulo) independently.
"""
from .reference import (INT32_MAX, INT32_MIN, QDTYPES, ROUNDINGS, np_multiply_by_quantized_multiplier,
                        np_qconv2d_acc, np_qdense_acc, np_requantize_onnx, np_requantize_tflite,
                        np_rounding_divide_by_pot, np_srdhm, onnx_multiplier, quantize_multiplier,
                        requantize_reference, tflite_multiplier)
from .requant import (QParams, make_qparams, multiply_by_quantized_multiplier, pot_params, pow2,
                      requantize_onnx, requantize_tflite, rounding_divide_by_pot,
                      rounding_divide_by_pot_mul, srdhm)
from ...tensorize.int8_microkernel import (dot_i8_intrin, s8s8_tile_intrin, tile_mrs, tile_shape,
                                            u8s8_tile_intrin)
from .compute import DOMAINS, QOp, conv_geometry, pack_weights, qconv2d, qdense
from .conv_template import QConv2dTemplate, QDepthwiseConv2dTemplate
from .dense_template import QDenseTemplate


def quant_templates() -> tuple:
    """The quantized templates, fresh instances (for cgen.ops.registry)."""
    return (QConv2dTemplate(), QDepthwiseConv2dTemplate(), QDenseTemplate())
