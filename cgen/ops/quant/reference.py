"""numpy references of the quantized operators (written from the definitions, with integer
bit operations where gemmlowp uses them, so they check the te formulations independently),
and the random inputs the templates are tested with."""
from __future__ import annotations

import numpy as np

ROUNDINGS = ("onnx", "tflite")
QDTYPES = ("int8", "uint8")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def quantize_multiplier(real):
    """TFLite QuantizeMultiplier, elementwise: real >= 0 (double) -> (int32 multiplier, int32 shift)
    with real ~= multiplier * 2**(shift - 31), multiplier in [2**30, 2**31) or 0."""
    r = np.asarray(real, np.float64)
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError("quantize_multiplier: multipliers must be finite and non-negative")
    q, e = np.frexp(r)
    qf = np.floor(q * float(1 << 31) + 0.5).astype(np.int64)  # TfLiteRound (q >= 0)
    full = qf == (1 << 31)
    qf = np.where(full, qf // 2, qf)
    e = np.where(full, e + 1, e)
    tiny = e < -31                      # flushed to zero, as TFLite does
    qf = np.where(tiny, 0, qf)
    e = np.where(tiny, 0, e)
    return qf.astype(np.int32), e.astype(np.int32)


def np_srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 arrays."""
    a = np.asarray(a, np.int32)
    b = np.asarray(b, np.int32)
    ab = a.astype(np.int64) * b.astype(np.int64)
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    q = np.where(v >= 0, v // (1 << 31), -((-v) // (1 << 31)))  # C++ division truncates
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, INT32_MAX, q).astype(np.int32)


def np_rounding_divide_by_pot(x, exponent):
    """gemmlowp RoundingDivideByPOT: x / 2**exponent rounded half away from zero (bit operations)."""
    x = np.asarray(x, np.int32).astype(np.int64)
    e = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return ((x >> e) + (remainder > threshold)).astype(np.int32)


def np_multiply_by_quantized_multiplier(x, qm, shift):
    """TFLite MultiplyByQuantizedMultiplier (double rounding); x * 2**left_shift wraps like int32."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    xs = (np.asarray(x, np.int64) * (np.int64(1) << left)).astype(np.int32)
    return np_rounding_divide_by_pot(np_srdhm(xs, qm), right)


def onnx_multiplier(x_scale, w_scale, y_scale):
    """(x_scale * w_scale) / y_scale in float32, as onnxruntime computes it."""
    xs = np.float32(np.asarray(x_scale, np.float32).reshape(-1)[0])
    ys = np.float32(np.asarray(y_scale, np.float32).reshape(-1)[0])
    return (xs * np.asarray(w_scale, np.float32).reshape(-1)) / ys


def tflite_multiplier(x_scale, w_scale, y_scale):
    """TFLite's per-channel (multiplier, shift) from float32 scales, computed in double."""
    real = (np.float64(np.asarray(x_scale, np.float32).reshape(-1)[0])
            * np.asarray(w_scale, np.float32).reshape(-1).astype(np.float64)
            / np.float64(np.asarray(y_scale, np.float32).reshape(-1)[0]))
    return quantize_multiplier(real)


def np_requantize_onnx(acc, multiplier, y_zp, dtype):
    """saturate(rint(float32(acc) * multiplier) + y_zp); multiplier and y_zp broadcast."""
    info = np.iinfo(dtype)
    yz = np.asarray(y_zp, np.int64)
    v = np.rint(np.asarray(acc, np.int32).astype(np.float32) * np.asarray(multiplier, np.float32))
    v = np.clip(v, (info.min - yz).astype(np.float32), (info.max - yz).astype(np.float32))
    return (v.astype(np.int64) + yz).astype(dtype)


def np_requantize_tflite(acc, qm, shift, y_zp, dtype):
    """saturate(MultiplyByQuantizedMultiplier(acc, qm, shift) + y_zp)."""
    info = np.iinfo(dtype)
    v = np_multiply_by_quantized_multiplier(acc, qm, shift).astype(np.int64) + np.asarray(y_zp, np.int64)
    return np.clip(v, info.min, info.max).astype(dtype)


def np_qconv2d_acc(x, w, bias, x_zp, w_zp, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                   groups=1):
    """int32 accumulator of a quantized NCHW conv: padding holds x_zp (real zero)."""
    N, C, H, Wd = x.shape
    F, Cg, KH, KW = w.shape
    t, l, b, r = pads
    sh, sw = stride
    dh, dw = dilation
    xp = np.full((N, C, H + t + b, Wd + l + r), int(x_zp), np.int64)
    xp[:, :, t:t + H, l:l + Wd] = x
    xp -= int(x_zp)
    wz = np.broadcast_to(np.asarray(w_zp, np.int64).reshape(-1), (F,))
    wd = w.astype(np.int64) - wz[:, None, None, None]
    OH = (xp.shape[2] - dh * (KH - 1) - 1) // sh + 1
    OW = (xp.shape[3] - dw * (KW - 1) - 1) // sw + 1
    Fg = F // groups
    acc = np.zeros((N, F, OH, OW), np.int64)
    for g in range(groups):
        for ry in range(KH):
            for rx in range(KW):
                win = xp[:, g * Cg:(g + 1) * Cg, ry * dh:ry * dh + sh * (OH - 1) + 1:sh,
                         rx * dw:rx * dw + sw * (OW - 1) + 1:sw]
                acc[:, g * Fg:(g + 1) * Fg] += np.einsum("nchw,fc->nfhw", win,
                                                         wd[g * Fg:(g + 1) * Fg, :, ry, rx])
    acc += np.asarray(bias, np.int64)[None, :, None, None]
    return acc.astype(np.int32)


def np_qdense_acc(a, b, bias, a_zp, b_zp):
    """int32 accumulator of (a - a_zp) @ (b - b_zp[col]) + bias[col]."""
    bz = np.asarray(b_zp, np.int64).reshape(1, -1)
    acc = (a.astype(np.int64) - int(a_zp)) @ (b.astype(np.int64) - bz)
    return (acc + np.asarray(bias, np.int64)[None, :]).astype(np.int32)


def requantize_reference(rounding: str, acc, qargs, y_dtype, channel_axis: int):
    """numpy requantisation of an int32 accumulator given [x_zp, w_zp, y_zp, <requant>]."""
    yz = int(qargs[2][0])

    def per_channel(v):
        v = np.asarray(v).reshape(-1)
        shape = [1] * acc.ndim
        shape[channel_axis] = v.size
        return v.reshape(shape)
    if rounding == "onnx":
        return np_requantize_onnx(acc, per_channel(onnx_multiplier(*qargs[3:6])), yz, y_dtype)
    return np_requantize_tflite(acc, per_channel(qargs[3]), per_channel(qargs[4]), yz, y_dtype)


# =============================================================================
# random inputs
# =============================================================================

def qvalues(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(int(info.min), int(info.max) + 1, size=shape).astype(dtype)


def zero_points(rng, P: int, x_dtype, w_dtype) -> tuple:
    return (qvalues(rng, x_dtype, (1,)).astype(np.int32),
            qvalues(rng, w_dtype, (P,)).astype(np.int32))


def random_bias(rng, n: int, K: int):
    lim = int(8000 * np.sqrt(K))
    return rng.integers(-lim, lim + 1, size=n).astype(np.int32)


def requant_inputs(rng, rounding: str, acc, P: int, y_dtype) -> list:
    """y_zp and the requantisation arguments, drawn at random around the accumulator's
    spread: the outputs cover the output range, a few saturate."""
    info = np.iinfo(y_dtype)
    xs = np.float32(rng.uniform(0.002, 0.05))
    ws = rng.uniform(0.002, 0.05, P).astype(np.float32)
    a = acc.astype(np.float64)
    spread = max(float(a.max() - a.min()), 1.0) if a.size else 1.0
    m = 255.0 / spread * 2.0 ** rng.uniform(-1.0, 0.5)
    centre = (int(info.min) + int(info.max)) / 2 - float(np.mean(a)) * m if a.size else 0.0
    yz = int(np.clip(round(centre + rng.uniform(-32, 32)), info.min, info.max))
    ys = np.float32(xs * float(ws.mean()) / m)   # per channel the multiplier follows w_scale
    out = [np.array([yz], np.int32)]
    if rounding == "onnx":
        out += [np.array([xs], np.float32), ws, np.array([ys], np.float32)]
    else:
        qm, sh = tflite_multiplier(xs, ws, ys)
        out += [qm, sh]
    return out
