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
               (cgen.tensorize.dot_i8_intrin);
  packed_tile  activations in uint8, weights in int8, the reduction an MR x NR
               register tile of u8 x s8 dot products (u8s8_tile_intrin: AVX-512
               VNNI vpdpbusd when enabled, else exact int16 pmaddwd / NEON vmlal).

Numpy references of both rounding modes (np_*) are written from the
definitions, with integer bit operations where gemmlowp uses them, so they
check the te formulations (floor division and modulo) independently.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import te
from ..te.expr import const
from ..te.tensor import Tensor
from ..autotune.space import ConfigSpace, Knob, split_choices
from targets import resolve

ROUNDINGS = ("onnx", "tflite")
QDTYPES = ("int8", "uint8")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# =============================================================================
# numpy references
# =============================================================================

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


# =============================================================================
# te requantisation
# =============================================================================
# te has no shifts: gemmlowp's shifts by a run-time exponent become products
# with per-channel powers of two followed by a floor division by the constant
# 2**31 (which the C compiler turns into a shift).  Each value is used at most
# twice, so the expression stays small.

_2_30, _2_31 = 1 << 30, 1 << 31


def _i64(v):
    return const(v, "int64")


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul of two int32 expressions.

    trunc((a*b + nudge) / 2**31) with nudge = 2**30 or 1 - 2**30 by the sign of a*b
    equals floor((a*b + 2**30) / 2**31): one floor division by a constant."""
    q = ((a.astype("int64") * b.astype("int64") + _2_30) // _2_31).astype("int32")
    overflow = te.all(te.equal(b, INT32_MIN), te.equal(a, INT32_MIN))
    return te.if_then_else(overflow, const(INT32_MAX, "int32"), q)


def pow2(e):
    """2**e as int64 for an integer expression 0 <= e <= 31 (five selects)."""
    e = e.astype("int64")
    out = _i64(1)
    for i in range(5):
        bit = (e // (1 << i)) % 2
        out = out * te.if_then_else(te.equal(bit, 1), _i64(1 << (1 << i)), _i64(1))
    return out


def pot_params(shift) -> dict:
    """Per-channel int64 values of MultiplyByQuantizedMultiplier's shifts, from an int32 shift:
    lmul = 2**left, rmul = 2**(31 - right), rhalf / rneg the rounding terms (0 when right = 0)."""
    left = te.maximum(shift, 0)
    right = te.maximum(0 - shift, 0)
    rmul = pow2(31 - right)
    some = right >= 1
    return {"lmul": pow2(left), "rmul": rmul,
            "rhalf": te.if_then_else(some, _i64(_2_30), _i64(0)),
            "rneg": te.if_then_else(some, rmul, _i64(0))}


def rounding_divide_by_pot_mul(x, rmul, rhalf, rneg):
    """RoundingDivideByPOT(x, e) of an int32 x, with rmul = 2**(31-e), rhalf = 2**30 and
    rneg = rmul when e >= 1 (both 0 when e = 0):
      floor(x/2**e) + (x mod 2**e > (2**e - 1)/2 + (x < 0))
        = floor((x + 2**(e-1) - (x < 0)) / 2**e) = floor((x*rmul + rhalf - (x<0)*rneg) / 2**31)."""
    x = x.astype("int64")
    neg = te.if_then_else(x < 0, rneg, _i64(0))
    return ((x * rmul + rhalf - neg) // _2_31).astype("int32")


def rounding_divide_by_pot(x, exponent):
    """RoundingDivideByPOT(x, exponent) for int32 expressions, 0 <= exponent <= 31."""
    p = pot_params(0 - exponent)
    return rounding_divide_by_pot_mul(x, p["rmul"], p["rhalf"], p["rneg"])


def multiply_by_quantized_multiplier(x, qm, pots: dict):
    """TFLite MultiplyByQuantizedMultiplier(x, qm, shift) given pots = pot_params(shift)
    (expressions, or loads of per-channel stages); x * 2**left wraps to int32."""
    xs = (x.astype("int64") * pots["lmul"]).astype("int32")
    return rounding_divide_by_pot_mul(srdhm(xs, qm), pots["rmul"], pots["rhalf"], pots["rneg"])


def requantize_onnx(acc, multiplier, y_zp, dtype: str):
    """saturate(round_half_even(float32(acc) * multiplier) + y_zp) as `dtype` (int8/uint8)."""
    info = np.iinfo(dtype)
    v = te.round_half_even(acc.astype("float32") * multiplier)
    lo = (int(info.min) - y_zp).astype("float32")
    hi = (int(info.max) - y_zp).astype("float32")
    v = te.minimum(te.maximum(v, lo), hi)
    return (v.astype("int32") + y_zp).astype(dtype)


def requantize_tflite(acc, qm, pots: dict, y_zp, dtype: str):
    """saturate(MultiplyByQuantizedMultiplier(acc, qm, shift) + y_zp) as `dtype`."""
    info = np.iinfo(dtype)
    v = multiply_by_quantized_multiplier(acc, qm, pots).astype("int64") + y_zp.astype("int64")
    return te.minimum(te.maximum(v, int(info.min)), int(info.max)).astype(dtype)


# =============================================================================
# quantisation parameters as run-time arguments
# =============================================================================

@dataclass
class QParams:
    """The requantisation arguments of one kernel and the small stages derived from them."""
    rounding: str
    channels: int            # P: 1 (per tensor) or the number of output channels
    x_zp: Tensor
    w_zp: Tensor
    y_zp: Tensor
    inputs: tuple            # the rounding mode's scale arguments, in order
    stages: dict             # name -> per-channel stage (multiplier, or the shift powers)

    @property
    def args(self) -> list:
        return [self.x_zp, self.w_zp, self.y_zp, *self.inputs]

    def ch(self, c):
        """Index of output channel c in the per-channel arrays."""
        return c if self.channels > 1 else 0

    def requantize(self, acc, c, dtype):
        p = self.ch(c)
        yz = self.y_zp[0]
        if self.rounding == "onnx":
            return requantize_onnx(acc, self.stages["rq_multiplier"][p], yz, dtype)
        pots = {k: self.stages[f"rq_{k}"][p] for k in ("lmul", "rmul", "rhalf", "rneg")}
        return requantize_tflite(acc, self.inputs[0][p], pots, yz, dtype)


def make_qparams(rounding: str, channels: int, prefix=("x", "w")) -> QParams:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    P = channels
    a, b = prefix
    x_zp = te.placeholder((1,), "int32", name=f"{a}_zp")
    w_zp = te.placeholder((P,), "int32", name=f"{b}_zp")
    y_zp = te.placeholder((1,), "int32", name="y_zp")
    if rounding == "onnx":
        xs = te.placeholder((1,), "float32", name=f"{a}_scale")
        ws = te.placeholder((P,), "float32", name=f"{b}_scale")
        ys = te.placeholder((1,), "float32", name="y_scale")
        mult = te.compute((P,), lambda p: (xs[0] * ws[p]) / ys[0], name="rq_multiplier")
        return QParams(rounding, P, x_zp, w_zp, y_zp, (xs, ws, ys), {"rq_multiplier": mult})
    qm = te.placeholder((P,), "int32", name="multiplier")
    sh = te.placeholder((P,), "int32", name="shift")

    def stage(key):
        return te.compute((P,), lambda p: pot_params(sh[p])[key], name=f"rq_{key}")
    stages = {f"rq_{k}": stage(k) for k in ("lmul", "rmul", "rhalf", "rneg")}
    return QParams(rounding, P, x_zp, w_zp, y_zp, (qm, sh), stages)


def _check_qdtype(op, what, dtype):
    if dtype not in QDTYPES:
        raise TypeError(f"{op}: {what} must be int8 or uint8, got {dtype}")


def _shift(dtype) -> int:
    """Offset taking a value of `dtype` into int8 (uint8 -> -128)."""
    return 128 if dtype == "uint8" else 0


# =============================================================================
# u8 x s8 register-tile micro-kernel
# =============================================================================
# C[i, j] += sum_k int32(A[i, k]) * int32(B[j, k]) on an MR x NR tile, A (uint8) and
# B (int8) contiguous along k, any K: MR*NR dot products sharing their loads,
# reduced across lanes once per call.  The products are exact: AVX-512 VNNI
# (vpdpbusd, u8 x s8 in groups of 4 into int32) when the compiler enables it,
# else widening to int16 and pmaddwd / vmlal (no int16 saturation anywhere).

_TILE_SIG = ("(int64_t K, const uint8_t *restrict A, int64_t a_si, const int8_t *restrict B, "
             "int64_t b_sj, int32_t *restrict C, int64_t c_si, int64_t c_sj)")


def _tile_x86_512(name, MR, NR):
    """MR x NR (MR in 1, 2, 4): one loop of masked loads (the last chunk zero-filled), then per
    channel j the MR dot products reduced together (unpack / add / fold to 128 bits)."""
    L = [f"static inline void {name}{_TILE_SIG} {{", "  int64_t k;"]
    acc = [(r, j) for r in range(MR) for j in range(NR)]
    for r, j in acc:
        L.append(f"  __m512i c{r}_{j} = _mm512_setzero_si512();")

    def body(load_a, load_b, op, indent="    "):
        out = []
        for r in range(MR):
            out.append(f"{indent}__m512i a{r} = {load_a.format(p=f'A + {r} * a_si + k')};")
        for j in range(NR):
            out.append(f"{indent}__m512i b{j} = {load_b.format(p=f'B + {j} * b_sj + k')};")
        for r, j in acc:
            out.append(f"{indent}c{r}_{j} = {op.format(c=f'c{r}_{j}', a=f'a{r}', b=f'b{j}')};")
        return out
    L.append("#if defined(__AVX512VNNI__)")
    L.append("  for (k = 0; k < K; k += 64) {")
    L.append("    __mmask64 m = K - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1) << (K - k)) - 1;")
    L += body("_mm512_maskz_loadu_epi8(m, (const void *)({p}))",
              "_mm512_maskz_loadu_epi8(m, (const void *)({p}))", "_mm512_dpbusd_epi32({c}, {a}, {b})")
    L.append("  }")
    L.append("#else")
    L.append("  for (k = 0; k < K; k += 32) {")
    L.append("    __mmask32 m = K - k >= 32 ? ~(__mmask32)0 : (((__mmask32)1) << (K - k)) - 1;")
    L += body("_mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, (const void *)({p})))",
              "_mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, (const void *)({p})))",
              "_mm512_add_epi32({c}, _mm512_madd_epi16({a}, {b}))")
    L.append("  }")
    L.append("#endif")
    if MR == 1:
        L.append("  (void)c_si;")
    for j in range(NR):
        if MR == 1:
            L.append(f"  C[{j} * c_sj] += _mm512_reduce_add_epi32(c0_{j});")
            continue
        L.append("  {")
        L.append(f"    __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(c0_{j}, c1_{j}), "
                 f"_mm512_unpackhi_epi32(c0_{j}, c1_{j}));")
        if MR == 4:
            L.append(f"    __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(c2_{j}, c3_{j}), "
                     f"_mm512_unpackhi_epi32(c2_{j}, c3_{j}));")
            L.append("    __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), "
                     "_mm512_unpackhi_epi64(t0, t1));")
        else:   # lanes [a, b, a, b] per 128 bits
            L.append("    __m512i u = _mm512_add_epi32(t0, _mm512_shuffle_epi32(t0, (_MM_PERM_ENUM)0x4e));")
        L.append("    __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64(u, 1));")
        L.append("    __m128i q = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));")
        L.append(f"    int32_t *c = C + {j} * c_sj;")
        if MR == 4:
            L.append("    if (c_si == 1) {")
            L.append("      _mm_storeu_si128((__m128i *)(void *)c, _mm_add_epi32(_mm_loadu_si128("
                     "(const __m128i *)(const void *)c), q));")
            L.append("    } else {")
            L.append("      c[0] += _mm_cvtsi128_si32(q);")
            L.append("      c[c_si] += _mm_extract_epi32(q, 1);")
            L.append("      c[2 * c_si] += _mm_extract_epi32(q, 2);")
            L.append("      c[3 * c_si] += _mm_extract_epi32(q, 3);")
            L.append("    }")
        else:
            L.append("    c[0] += _mm_cvtsi128_si32(q);")
            L.append("    c[c_si] += _mm_extract_epi32(q, 1);")
        L.append("  }")
    L.append("}")
    return "\n".join(L)


def _vector_k_end(step: int) -> str:
    """The end of the vector loop over k (a multiple of `step`), declared before it.  The
    scalar tail starts there, not where the vector loop happened to stop: from the vector
    loop's exit test alone (k + step > K) gcc cannot see that k <= K, so on a 32-bit target
    it follows an infeasible path where the tail would wrap around the address space and
    fails with -Werror=aggressive-loop-optimizations ("iteration 4294967295 invokes
    undefined behavior").  From kv it sees at most step - 1 tail iterations."""
    return f"  const int64_t kv = K - K % {step};"


def _scalar_tail(MR, NR, indent="  "):
    out = [f"{indent}for (k = kv; k < K; ++k) {{"]
    for r in range(MR):
        for j in range(NR):
            out.append(f"{indent}  s{r}_{j} += (int32_t)A[{r} * a_si + k] * (int32_t)B[{j} * b_sj + k];")
    out.append(f"{indent}}}")
    return out


def _tile_avx2(name, MR, NR):
    L = [f"static inline void {name}{_TILE_SIG} {{", "  int64_t k = 0;", _vector_k_end(16),
         "  __m128i h;"]
    acc = [(r, j) for r in range(MR) for j in range(NR)]
    for r, j in acc:
        L.append(f"  __m256i c{r}_{j} = _mm256_setzero_si256();")
        L.append(f"  int32_t s{r}_{j};")
    L.append("  for (; k < kv; k += 16) {")
    for r in range(MR):
        L.append(f"    __m256i a{r} = _mm256_cvtepu8_epi16(_mm_loadu_si128("
                 f"(const __m128i *)(const void *)(A + {r} * a_si + k)));")
    for j in range(NR):
        L.append(f"    __m256i b{j} = _mm256_cvtepi8_epi16(_mm_loadu_si128("
                 f"(const __m128i *)(const void *)(B + {j} * b_sj + k)));")
    for r, j in acc:
        L.append(f"    c{r}_{j} = _mm256_add_epi32(c{r}_{j}, _mm256_madd_epi16(a{r}, b{j}));")
    L.append("  }")
    for r, j in acc:
        L.append(f"  h = _mm_add_epi32(_mm256_castsi256_si128(c{r}_{j}), _mm256_extracti128_si256(c{r}_{j}, 1));")
        L.append("  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));")
        L.append("  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));")
        L.append(f"  s{r}_{j} = _mm_cvtsi128_si32(h);")
    L += _scalar_tail(MR, NR)
    for r, j in acc:
        L.append(f"  C[{r} * c_si + {j} * c_sj] += s{r}_{j};")
    L.append("}")
    return "\n".join(L)


def _tile_neon(name, MR, NR, a64: bool):
    L = [f"static inline void {name}{_TILE_SIG} {{", "  int64_t k = 0;", _vector_k_end(8)]
    acc = [(r, j) for r in range(MR) for j in range(NR)]
    for r, j in acc:
        L.append(f"  int32x4_t c{r}_{j} = vdupq_n_s32(0);")
        L.append(f"  int32_t s{r}_{j};")
    if not a64:
        L.append("  int32x2_t h;")
    L.append("  for (; k < kv; k += 8) {")
    for r in range(MR):
        L.append(f"    int16x8_t a{r} = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(A + {r} * a_si + k)));")
    for j in range(NR):
        L.append(f"    int16x8_t b{j} = vmovl_s8(vld1_s8(B + {j} * b_sj + k));")
    for r, j in acc:
        L.append(f"    c{r}_{j} = vmlal_s16(c{r}_{j}, vget_low_s16(a{r}), vget_low_s16(b{j}));")
        if a64:
            L.append(f"    c{r}_{j} = vmlal_high_s16(c{r}_{j}, a{r}, b{j});")
        else:
            L.append(f"    c{r}_{j} = vmlal_s16(c{r}_{j}, vget_high_s16(a{r}), vget_high_s16(b{j}));")
    L.append("  }")
    for r, j in acc:
        if a64:
            L.append(f"  s{r}_{j} = vaddvq_s32(c{r}_{j});")
        else:
            L.append(f"  h = vadd_s32(vget_low_s32(c{r}_{j}), vget_high_s32(c{r}_{j}));")
            L.append(f"  s{r}_{j} = vget_lane_s32(vpadd_s32(h, h), 0);")
    L += _scalar_tail(MR, NR)
    for r, j in acc:
        L.append(f"  C[{r} * c_si + {j} * c_sj] += s{r}_{j};")
    L.append("}")
    return "\n".join(L)


# (isa, arch) -> (NR, the MRs offered, source maker (name, MR) -> C)
_TILE = {
    ("avx512", "x86_64"): (4, (1, 2, 4), lambda n, mr: _tile_x86_512(n, mr, 4)),
    ("avx2", "x86_64"): (4, (1, 2), lambda n, mr: _tile_avx2(n, mr, 4)),
    ("neon", "aarch64"): (4, (1, 2, 4), lambda n, mr: _tile_neon(n, mr, 4, True)),
    ("neon", "armv7"): (4, (1, 2), lambda n, mr: _tile_neon(n, mr, 4, False)),
}


def tile_mrs(target) -> tuple:
    """The MR (pixels / rows) of the target's u8 x s8 tile kernels; () when it has none."""
    tgt = resolve(target)
    v = _TILE.get((tgt.isa, tgt.arch))
    return () if v is None else v[1]


def tile_shape(target, mr: int | None = None):
    """(MR, NR) of the target's tile kernel with the largest offered MR <= mr (default: the
    largest), or None when the target has none."""
    tgt = resolve(target)
    v = _TILE.get((tgt.isa, tgt.arch))
    if v is None:
        return None
    mrs = [m for m in v[1] if mr is None or m <= mr] or [min(v[1])]
    return max(mrs), v[0]


def u8s8_tile_intrin(target, mr: int | None = None):
    """The TensorIntrin C[i, j] += sum_k int32(A[i, k]) * int32(B[j, k]), A uint8 and B int8
    contiguous along k, on an MR x NR tile (see tile_shape; cgen.tensorize.TensorizeError if
    the target has no such kernel)."""
    from ..tensorize import TensorizeError, KernelSource, from_compute
    tgt = resolve(target)
    key = (tgt.isa, tgt.arch)
    if key not in _TILE:
        raise TensorizeError(f"no u8 x s8 tile kernel for target {tgt.name} (isa {tgt.isa})")
    MR, NR = tile_shape(tgt, mr)
    name = f"cg_qtile_u8s8_{MR}x{NR}_{tgt.isa}_{tgt.arch}"
    A = te.placeholder((MR, 1), "uint8", name="A")
    B = te.placeholder((NR, 1), "int8", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((MR, NR), lambda i, j: te.sum(A[i, k].astype("int32") * B[j, k].astype("int32"),
                                                 axis=k), name="C")
    return from_compute(name, C, {"i": MR, "j": NR}, {("a", "k"), ("b", "k")},
                        KernelSource(name, _TILE[key][2](name, MR)))


# =============================================================================
# computes
# =============================================================================

@dataclass
class QOp:
    """A quantized operator's tensors: output, build arguments in order, named stages."""
    out: Tensor
    args: list
    stages: dict
    qp: QParams


# algo -> (activation domain, weight domain) of the packed operands
DOMAINS = {"packed": ("int8", "int8"), "packed_dot": ("int8", "int8"),
           "packed_tile": ("uint8", "int8")}


def _offset(dtype: str, domain: str) -> int:
    """What to subtract from a `dtype` value to bring it into `domain` (int8 or uint8)."""
    if dtype == domain:
        return 0
    return 128 if dtype == "uint8" else -128


def pack_weights(w):
    """OIHW conv weights -> the "packed" layout (F, KH*KW*C/groups): OHWI, flattened."""
    F = w.shape[0]
    return np.ascontiguousarray(np.asarray(w).transpose(0, 2, 3, 1).reshape(F, -1))


def conv_geometry(wl: dict) -> dict:
    N, C, H, W = wl["N"], wl["C"], wl["H"], wl["W"]
    F, KH, KW, G = wl["F"], wl["KH"], wl["KW"], wl["groups"]
    (sh, sw), (dh, dw) = wl["stride"], wl["dilation"]
    t, l, b, r = wl["pads"]
    OH = (H + t + b - dh * (KH - 1) - 1) // sh + 1
    OW = (W + l + r - dw * (KW - 1) - 1) // sw + 1
    return dict(N=N, C=C, H=H, W=W, F=F, KH=KH, KW=KW, G=G, Cg=C // G, Fg=F // G, sh=sh, sw=sw,
                dh=dh, dw=dw, t=t, l=l, b=b, r=r, OH=OH, OW=OW, Hp=H + t + b, Wp=W + l + r,
                K=KH * KW * (C // G))


def qconv2d(wl: dict, algo: str = "direct", flat_pixels: int | None = None) -> QOp:
    """The quantized conv of a workload (see QConv2dTemplate.workload), NCHW in and out; the
    weights OIHW (ONNX), or with w_layout "packed" (F, KH*KW*C/groups): OHWI flattened, as
    TFLite stores filters, which is the packed algorithms' weight row, used in place.

    direct: Xw = X - x_zp (int16, padding 0), Wd = W - w_zp (int16), acc = sum Xw * Wd.
    packed*: Xq = X in the algo's domain, NHWC-like rows [n, g, h, w*Cg] (padding x_zp);
    per output tile the im2col rows Xcol[n, g, y, x, k] (k = (ry, rx, c), contiguous) are
    gathered from Xq; Wq[f, k] the weights alike; dot = sum_k Xcol * Wq; the zero points
    enter through xsum (window sums of Xq, from per-pixel channel sums Srow) and wsum.
    With flat_pixels, Xcol and dot index pixels flat (p = y*OW + x), then one pixel of
    ones whose products are the weights' sums, padded to a multiple of flat_pixels (so a
    register tile of that many pixels never has a tail)."""
    g = conv_geometry(wl)
    N, C, H, W, F, KH, KW, G = g["N"], g["C"], g["H"], g["W"], g["F"], g["KH"], g["KW"], g["G"]
    Cg, Fg, sh, sw, dh, dw = g["Cg"], g["Fg"], g["sh"], g["sw"], g["dh"], g["dw"]
    t, l, OH, OW, Hp, Wp, K = g["t"], g["l"], g["OH"], g["OW"], g["Hp"], g["Wp"], g["K"]
    xt, wt, yt = wl["x_dtype"], wl["w_dtype"], wl["y_dtype"]
    packed_w = wl.get("w_layout", "OIHW") == "packed"
    X = te.placeholder((N, C, H, W), xt, name="X")
    Wt = te.placeholder((F, K) if packed_w else (F, Cg, KH, KW), wt, name="W")
    B = te.placeholder((F,), "int32", name="B")
    qp = make_qparams(wl["rounding"], F if wl["per_channel"] else 1)

    def w_at(f, c, ry, rx):
        return Wt[f, (ry * KW + rx) * Cg + c] if packed_w else Wt[f, c, ry, rx]
    stages = dict(qp.stages)
    padded = (t, l, g["b"], g["r"]) != (0, 0, 0, 0)

    def inside(y, x):
        return te.all(y >= t, y < H + t, x >= l, x < W + l)

    if algo == "direct":
        xz16 = qp.x_zp[0].astype("int16")

        def xw(n, c, y, x):
            v = X[n, c, y - t, x - l].astype("int16") - xz16
            return te.if_then_else(inside(y, x), v, const(0, "int16")) if padded else v
        Xw = te.compute((N, C, Hp, Wp), xw, name="Xw")
        Wd = te.compute((F, Cg, KH, KW), lambda f, c, ry, rx: w_at(f, c, ry, rx).astype("int16")
                        - qp.w_zp[qp.ch(f)].astype("int16"), name="Wd")
        rc = te.reduce_axis((0, Cg), name="rc")
        ry = te.reduce_axis((0, KH), name="ry")
        rx = te.reduce_axis((0, KW), name="rx")
        acc = te.compute((N, F, OH, OW), lambda n, f, y, x: te.sum(
            Xw[n, (f // Fg) * Cg + rc, y * sh + ry * dh, x * sw + rx * dw].astype("int32")
            * Wd[f, rc, ry, rx].astype("int32"), axis=(rc, ry, rx)), name="acc")
        Y = te.compute((N, F, OH, OW), lambda n, f, y, x: qp.requantize(acc[n, f, y, x] + B[f], f, yt),
                       name="Y")
        stages.update(Xw=Xw, Wd=Wd, acc=acc)
    elif algo in DOMAINS:
        xdom, wdom = DOMAINS[algo]
        xo, wo = _offset(xt, xdom), _offset(wt, wdom)
        xzq = qp.x_zp[0] - xo                      # zero points in the packed domains

        def xq(n, gi, y, k):
            v = X[n, gi * Cg + k % Cg, y - t, k // Cg - l].astype("int32") - xo
            v = te.if_then_else(inside(y, k // Cg), v, xzq) if padded else v
            return v.astype(xdom)
        Xq = te.compute((N, G, Hp, Wp * Cg), xq, name="Xq")
        P = OH * OW

        def gather(n, gi, y, x, k):
            return Xq[n, gi, y * sh + (k // (KW * Cg)) * dh,
                      (x * sw + ((k // Cg) % KW) * dw) * Cg + k % Cg]
        if flat_pixels:
            # pixels flattened (p = y*OW + x), then a row of ones (its products are the
            # weights' sums: the weights are read once), then zeros up to a multiple of
            # flat_pixels (never read)
            Pp = -(-(P + 1) // flat_pixels) * flat_pixels
            Xcol = te.compute((N, G, Pp, K), lambda n, gi, p, k: te.if_then_else(
                p < P, gather(n, gi, p // OW, p % OW, k),
                te.if_then_else(te.equal(p, P), const(1, xdom), const(0, xdom))), name="Xcol")
        else:
            Xcol = te.compute((N, G, OH, OW, K), gather, name="Xcol")
        if packed_w and wo == 0:
            Wq = Wt                                  # the packed weights, used in place
        elif packed_w:
            Wq = te.compute((F, K), lambda f, k: (Wt[f, k].astype("int32") - wo).astype(wdom),
                            name="Wq")
        else:
            Wq = te.compute((F, K), lambda f, k: (
                w_at(f, k % Cg, k // (KW * Cg), (k // Cg) % KW).astype("int32") - wo).astype(wdom),
                name="Wq")
        rk = te.reduce_axis((0, K), name="rk")
        # a group axis of its own (when grouped) keeps every operand index linear in the loops
        pix = (Pp,) if flat_pixels else (OH, OW)
        if G == 1:
            dot = te.compute((N, F) + pix, lambda n, f, *q: te.sum(
                Xcol[(n, 0) + q + (rk,)].astype("int32") * Wq[f, rk].astype("int32"), axis=rk),
                name="dot")
        else:
            dot = te.compute((N, G, Fg) + pix, lambda n, gi, fg, *q: te.sum(
                Xcol[(n, gi) + q + (rk,)].astype("int32") * Wq[gi * Fg + fg, rk].astype("int32"),
                axis=rk), name="dot")
        rc = te.reduce_axis((0, Cg), name="rc")
        Srow = te.compute((N, G, Hp, Wp), lambda n, gi, h, w: te.sum(
            Xq[n, gi, h, w * Cg + rc].astype("int32"), axis=rc), name="Srow")
        ry = te.reduce_axis((0, KH), name="ry")
        rx = te.reduce_axis((0, KW), name="rx")
        xsum = te.compute((N, G, OH, OW), lambda n, gi, y, x: te.sum(
            Srow[n, gi, y * sh + ry * dh, x * sw + rx * dw], axis=(ry, rx)), name="xsum")
        if flat_pixels:
            wsum = None
        else:
            rw = te.reduce_axis((0, K), name="rk")
            wsum = te.compute((F,), lambda f: te.sum(Wq[f, rw].astype("int32"), axis=rw),
                              name="wsum")

        def dot_at(n, f, q):
            return dot[(n, f) + q] if G == 1 else dot[(n, f // Fg, f % Fg) + q]

        def y_of(n, f, y, x):
            wzq = qp.w_zp[qp.ch(f)] - wo
            q = (y * OW + x,) if flat_pixels else (y, x)
            ws = dot_at(0, f, (P,)) if flat_pixels else wsum[f]
            acc = (dot_at(n, f, q) - wzq * xsum[n, f // Fg, y, x] - xzq * ws
                   + K * xzq * wzq + B[f])
            return qp.requantize(acc, f, yt)
        Y = te.compute((N, F, OH, OW), y_of, name="Y")
        stages.update(Xq=Xq, Xcol=Xcol, dot=dot, Srow=Srow, xsum=xsum)
        if wsum is not None:
            stages["wsum"] = wsum
        if Wq is not Wt:
            stages["Wq"] = Wq
    else:
        raise ValueError(f"qconv2d: unknown algo {algo!r}")
    return QOp(Y, [X, Wt, B, *qp.args, Y], stages, qp)


def qdense(wl: dict, algo: str = "direct", ones_row: bool = False) -> QOp:
    """Y[m, n] = requant(sum_k (A[m, k] - a_zp) * (B[k, n] - b_zp[n]) + bias[n]) (QLinearMatMul
    plus bias).  The weight argument Bm is B (K, N), or B transposed (N, K) when the
    workload's b_layout is "NK" (as Gemm transB=1 stores it; then int8 weights are used in
    place by the packed algorithms).  ones_row (packed algorithms): the weights' column
    sums come out of the dot itself, as its extra row M of A = 1."""
    M, N, K = wl["M"], wl["N"], wl["K"]
    at, bt, yt = wl["a_dtype"], wl["b_dtype"], wl["y_dtype"]
    nk = wl.get("b_layout", "KN") == "NK"
    A = te.placeholder((M, K), at, name="A")
    Bm = te.placeholder((N, K) if nk else (K, N), bt, name="Bm")
    bias = te.placeholder((N,), "int32", name="bias")
    qp = make_qparams(wl["rounding"], N if wl["per_channel"] else 1, prefix=("a", "b"))
    stages = dict(qp.stages)

    def b_at(k, n):
        return Bm[n, k] if nk else Bm[k, n]
    if algo == "direct":
        Aw = te.compute((M, K), lambda m, k: A[m, k].astype("int16") - qp.x_zp[0].astype("int16"),
                        name="Aw")
        Bw = te.compute((K, N), lambda k, n: b_at(k, n).astype("int16")
                        - qp.w_zp[qp.ch(n)].astype("int16"), name="Bw")
        k = te.reduce_axis((0, K), name="k")
        acc = te.compute((M, N), lambda m, n: te.sum(
            Aw[m, k].astype("int32") * Bw[k, n].astype("int32"), axis=k), name="acc")
        Y = te.compute((M, N), lambda m, n: qp.requantize(acc[m, n] + bias[n], n, yt), name="Y")
        stages.update(Aw=Aw, Bw=Bw, acc=acc)
    elif algo in DOMAINS:
        adom, bdom = DOMAINS[algo]
        ao, bo = _offset(at, adom), _offset(bt, bdom)
        azq = qp.x_zp[0] - ao
        # ones_row: a row of ones under A makes the dot's row M the weights' column sums, so
        # the weights are read once (worth it when they dominate: a few rows of A)
        Mr = M + 1 if ones_row else M

        def ap(m, k):
            v = (A[m, k].astype("int32") - ao).astype(adom)
            return te.if_then_else(m < M, v, const(1, adom)) if ones_row else v
        Ap = te.compute((Mr, K), ap, name="Ap")
        if nk and bo == 0:
            Bt = Bm                                  # already packed: weights used in place
        else:
            Bt = te.compute((N, K), lambda n, k: (b_at(k, n).astype("int32") - bo).astype(bdom),
                            name="Bt")
            stages["Bt"] = Bt
        k = te.reduce_axis((0, K), name="k")
        dot = te.compute((Mr, N), lambda m, n: te.sum(
            Ap[m, k].astype("int32") * Bt[n, k].astype("int32"), axis=k), name="dot")
        k1 = te.reduce_axis((0, K), name="k")
        asum = te.compute((M,), lambda m: te.sum(Ap[m, k1].astype("int32"), axis=k1), name="asum")
        if ones_row:
            bsum = None
        else:
            k2 = te.reduce_axis((0, K), name="k")
            bsum = te.compute((N,), lambda n: te.sum(Bt[n, k2].astype("int32"), axis=k2),
                              name="bsum")

        def y_of(m, n):
            bzq = qp.w_zp[qp.ch(n)] - bo
            colsum = dot[M, n] if ones_row else bsum[n]
            acc = dot[m, n] - bzq * asum[m] - azq * colsum + K * azq * bzq + bias[n]
            return qp.requantize(acc, n, yt)
        Y = te.compute((M, N), y_of, name="Y")
        stages.update(Ap=Ap, dot=dot, asum=asum)
        if bsum is not None:
            stages["bsum"] = bsum
    else:
        raise ValueError(f"qdense: unknown algo {algo!r}")
    return QOp(Y, [A, Bm, bias, *qp.args, Y], stages, qp)


# =============================================================================
# templates
# =============================================================================

def _has(make, tgt) -> bool:
    from ..tensorize import TensorizeError
    try:
        make(tgt)
    except TensorizeError:
        return False
    return True


def _algos(tgt) -> tuple:
    from ..tensorize import dot_i8_intrin
    out = ("direct", "packed")
    if _has(dot_i8_intrin, tgt):
        out += ("packed_dot",)
    if _has(u8s8_tile_intrin, tgt):
        out += ("packed_tile",)
    return out


def _threads(tgt) -> bool:
    return bool(tgt.threads) and not tgt.bare_metal


def _config(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _qvalues(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(int(info.min), int(info.max) + 1, size=shape).astype(dtype)


def _zero_points(rng, P: int, x_dtype, w_dtype) -> tuple:
    return (_qvalues(rng, x_dtype, (1,)).astype(np.int32),
            _qvalues(rng, w_dtype, (P,)).astype(np.int32))


def _bias(rng, n: int, K: int):
    lim = int(8000 * np.sqrt(K))
    return rng.integers(-lim, lim + 1, size=n).astype(np.int32)


def _requant_inputs(rng, rounding: str, acc, P: int, y_dtype) -> list:
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


def _check_common(op, rounding, dtypes):
    if rounding not in ROUNDINGS:
        raise ValueError(f"{op}: rounding must be one of {ROUNDINGS}, got {rounding!r}")
    for what, dt in dtypes.items():
        _check_qdtype(op, what, dt)


def _tensorize(s, stage, axis, algo, tgt, mr=None):
    if algo == "packed_dot":
        from ..tensorize import dot_i8_intrin
        s[stage].tensorize(axis, dot_i8_intrin(tgt))
    elif algo == "packed_tile":
        s[stage].tensorize(axis, u8s8_tile_intrin(tgt, mr))


class QConv2dTemplate:
    """QLinearConv-style conv2d, NCHW, any groups/stride/padding/dilation.

    Knobs, by algo (a knob an algo does not use is ignored):
      algo      direct | packed | packed_dot (int8 dot kernel) | packed_tile (u8 x s8
                register-tile kernel); the kernels where the target has them
      col_at    packed*: "tile": output-row tiles (tile_x columns x tile_f channels; grouped:
                every channel), the im2col rows gathered per tile; "root": im2col of every
                pixel once (pixels flat, padded to micro_x), the products by tile_f-channel
                blocks (their weights stay in cache over all pixels)
      tile_x    direct, packed* "tile": output columns per tile
      tile_f    output channels per tile / block
      micro_x   packed*: pixels per register block (packed_tile: the kernel's MR, the largest
                offered <= micro_x)
      micro_f   packed, packed_dot: channels per register block (packed_tile: the kernel's NR)
      order     direct: 0 channel-first / 1 window-first reduction; packed*: 0 channel blocks
                outside pixel blocks, 1 the reverse
      unroll    0 none; 1 the register block (direct: the tile's channel loop); 2 also the
                window loop (direct) / the pixel block (packed, packed_dot)
      tile_k    packed*: reduction block (0: all of K at once), outermost in a tile / block
      parallel  OpenMP over channel tiles (direct, packed* "root") or output rows ("tile")"""
    name = "qconv2d"

    def workload(self, N: int, C: int, H: int, W: int, F: int, KH: int, KW: int, stride=1,
                 pads=0, dilation=1, groups: int = 1, x_dtype="uint8", w_dtype="int8",
                 y_dtype=None, rounding="onnx", per_channel=False, w_layout="OIHW") -> dict:
        from .nn import _pads, _pair
        op = self.name
        y_dtype = y_dtype or x_dtype
        _check_common(op, rounding, {"x_dtype": x_dtype, "w_dtype": w_dtype, "y_dtype": y_dtype})
        if groups < 1 or C % groups or F % groups:
            raise ValueError(f"{op}: groups {groups} must divide C={C} and F={F}")
        wl = {"op": op, "N": int(N), "C": int(C), "H": int(H), "W": int(W), "F": int(F),
              "KH": int(KH), "KW": int(KW), "stride": list(_pair(op, "stride", stride, 1)),
              "pads": list(_pads(op, pads)), "dilation": list(_pair(op, "dilation", dilation, 1)),
              "groups": int(groups), "x_dtype": x_dtype, "w_dtype": w_dtype, "y_dtype": y_dtype,
              "rounding": rounding, "per_channel": bool(per_channel), "w_layout": w_layout}
        if w_layout not in ("OIHW", "packed"):
            raise ValueError(f"{op}: w_layout must be 'OIHW' or 'packed', got {w_layout!r}")
        g = conv_geometry(wl)
        if g["OH"] < 1 or g["OW"] < 1:
            raise ValueError(f"{op}: the window is larger than the padded input: {wl}")
        return wl

    def space(self, wl: dict, target) -> ConfigSpace:
        tgt = resolve(target)
        g = conv_geometry(wl)
        knobs = [Knob("algo", _algos(tgt)),
                 Knob("tile_x", split_choices(g["OW"], 64)),
                 Knob("tile_f", split_choices(g["F"], 64)),
                 Knob("micro_x", (1, 2, 4)),
                 Knob("micro_f", (1, 2, 4)),
                 Knob("order", (0, 1)),
                 Knob("unroll", (0, 1, 2)),
                 Knob("col_at", ("tile", "root")),
                 Knob("tile_k", (0,) + tuple(k for k in (256, 512, 1024) if k < g["K"]))]
        if _threads(tgt):
            knobs.append(Knob("parallel", (False, True)))
        return ConfigSpace(tuple(knobs))

    def build(self, wl: dict, target, config):
        tgt = resolve(target)
        c = _config(config)
        algo = c["algo"]
        if algo == "direct":
            op = qconv2d(wl, algo)
            s = te.create_schedule(op.out)
            self._direct(s, op, c, s[op.out].op.axis)
            return s, op.args
        mr, nr = tile_shape(tgt, c["micro_x"]) if algo == "packed_tile" else (c["micro_x"], c["micro_f"])
        flat = c["col_at"] == "root"
        op = qconv2d(wl, algo, flat_pixels=mr if flat else None)
        s = te.create_schedule(op.out)
        (self._packed_flat if flat else self._packed)(s, op, c, wl, tgt, mr, nr)
        return s, op.args

    @staticmethod
    def _direct(s, op, c, axes):
        n, f, y, x = axes
        Y, acc = op.out, op.stages["acc"]
        fo, fi = s[Y].split(f, c["tile_f"])
        xo, xi = s[Y].split(x, c["tile_x"])
        # channel tiles outermost (not fused with the batch: a fused loop's // and % would
        # hide the tile's extent from bound inference)
        s[Y].reorder(fo, n, y, xo, fi, xi)
        if c.get("parallel"):
            s[Y].parallel(fo)
        s[acc].compute_at(s[Y], xo)
        an, af, ay, ax = s[acc].op.axis
        rc, ry, rx = s[acc].op.reduce_axis
        red = (rc, ry, rx) if c["order"] == 0 else (ry, rx, rc)
        s[acc].reorder(an, ay, *red, af, ax)
        if c["unroll"] >= 1:
            s[acc].unroll(af)
        if c["unroll"] >= 2:
            s[acc].unroll(rx)

    @staticmethod
    def _register_block(s, dot, algo, c, tgt, head, outer_f, pix, mr, nr, f_extent, K):
        """Inside a dot tile: (nr channels x mr pixels) register blocks, the kernel call.

        f_extent: channels of the tile (the loop split by nr).  The tile kernel needs all of
        its loops (a loop of extent 1 is simplified away): with fewer channels than nr, or
        K = 1, the block stays plain loops."""
        (rk,) = s[dot].op.reduce_axis
        fo2, fi2 = s[dot].split(outer_f, nr)
        po2, pi2 = s[dot].split(pix, mr)
        outer = (fo2, po2) if c["order"] == 0 else (po2, fo2)
        # K blocks outermost (tile_k, 0: one block): a block of the operands stays in L1
        # over the register blocks; the reduction loop outside the register tile also puts
        # the tile's zeroing there, so the tile's (pixel, channel, k) nest is perfect
        tk = c.get("tile_k", 0)
        rko, rk = s[dot].split(rk, tk) if tk and tk < K else s[dot].split(rk, nparts=1)
        if algo == "packed_tile":
            s[dot].reorder(*head, rko, *outer, pi2, fi2, rk)
            if f_extent >= nr and K > 1:
                _tensorize(s, dot, pi2, algo, tgt, mr)
        else:
            s[dot].reorder(*head, rko, *outer, pi2, fi2, rk)
            _tensorize(s, dot, rk, algo, tgt)
            if c["unroll"] >= 1:
                s[dot].unroll(fi2)
            if c["unroll"] >= 2:
                s[dot].unroll(pi2)

    def _packed(self, s, op, c, wl, tgt, mr, nr):
        """Output-row tiles: im2col rows gathered per (row, tile_x columns, tile_f channels)
        tile, the dot tile right before its requantisation."""
        g = conv_geometry(wl)
        Y, dot, Xcol = op.out, op.stages["dot"], op.stages["Xcol"]
        n, f, y, x = s[Y].op.axis
        xo, xi = s[Y].split(x, c["tile_x"])
        if g["G"] == 1:
            fo, fi = s[Y].split(f, c["tile_f"])
            s[Y].reorder(n, y, xo, fo, fi, xi)
            s[dot].compute_at(s[Y], fo)
            an, af, ay, ax = s[dot].op.axis
            head = (an, ay)
        else:   # grouped: a tile holds every channel
            s[Y].reorder(n, y, xo, f, xi)
            s[dot].compute_at(s[Y], xo)
            an, ag, af, ay, ax = s[dot].op.axis
            head = (an, ay, ag)
        if c.get("parallel"):
            s[Y].parallel(y)
        f_ext = min(c["tile_f"], g["F"]) if g["G"] == 1 else g["Fg"]
        self._register_block(s, dot, c["algo"], c, tgt, head, af, ax, mr, nr, f_ext, g["K"])
        s[Xcol].compute_at(s[dot], ay)
        self._pack_loops(s, op, wl, (Xcol.op.axis[-1],))

    def _packed_flat(self, s, op, c, wl, tgt, mr, nr):
        """im2col of every pixel at root (flat, padded to the register tile), then the dot
        by channel tiles of tile_f (their weights stay in cache over all pixels), then the
        requantisation."""
        g = conv_geometry(wl)
        Y, dot, Xcol = op.out, op.stages["dot"], op.stages["Xcol"]
        if g["G"] == 1:
            an, af, ap = s[dot].op.axis
            fo, fi = s[dot].split(af, c["tile_f"])
            head = (an, fo)
        else:
            an, ag, af, ap = s[dot].op.axis
            fo, fi = s[dot].split(af, c["tile_f"])
            head = (an, ag, fo)
        if c.get("parallel"):
            s[dot].parallel(fo)
            s[Y].parallel(s[Y].op.axis[1])
        self._register_block(s, dot, c["algo"], c, tgt, head, fi, ap, mr, nr,
                             min(c["tile_f"], g["Fg"]), g["K"])
        # the gather: pixels split into rows and columns, so p // OW and p % OW simplify
        s[Xcol].split(s[Xcol].op.axis[2], g["OW"])
        self._pack_loops(s, op, wl, (Xcol.op.axis[-1],))

    @staticmethod
    def _pack_loops(s, op, wl, xcol_k):
        g = conv_geometry(wl)
        # the packing loops: k split into (ry, rx, c) so the gathers index without division
        Xcol = op.stages["Xcol"]
        todo = [(Xcol, xcol_k[0])]
        if "Wq" in op.stages and wl.get("w_layout", "OIHW") != "packed":
            todo.append((op.stages["Wq"], op.stages["Wq"].op.axis[-1]))
        for stage, k in todo:
            ko, kc = s[stage].split(k, g["Cg"])
            s[stage].split(ko, g["KW"])
        xq = op.stages["Xq"]
        s[xq].split(s[xq].op.axis[-1], g["Cg"])

    def default(self, wl: dict, target):
        tgt = resolve(target)
        g = conv_geometry(wl)
        sp = self.space(wl, tgt)
        algos = _algos(tgt)
        algo = "packed_tile" if "packed_tile" in algos and g["K"] >= 16 else \
            "packed_dot" if "packed_dot" in algos and g["K"] >= 16 else "direct"
        OW = g["OW"]
        mrs = tile_mrs(tgt) or (1, 2, 4)
        tk = 0
        if algo == "direct":
            tx, mx, tf, col_at = min(OW, 32), 1, 8, "tile"
        else:
            # row tiles (a whole row when it fits) holding every channel, while the widest
            # register tile divides the row and the weights fit in about 256 KB; otherwise
            # im2col at root (pixels flat, padded to the register tile) by channel tiles,
            # and with a long reduction, K blocks of 512 (32 channels' block: 16 KB)
            tx = OW if OW <= 64 else max(d for d in split_choices(OW, 64) if OW % d == 0)
            tk = 512 if g["K"] > 1024 else 0
            tf = 32 if tk else max(4, min(g["F"], 64, (1 << 18) // max(g["K"], 1)))
            row_ok = tx % max(mrs) == 0 and tf >= g["F"] and not tk
            col_at = "tile" if row_ok else "root"
            mx = max(mrs)
        want = {"algo": algo, "tile_x": tx, "tile_f": tf, "micro_x": mx, "micro_f": 4,
                "order": 1 if algo == "direct" else 0, "unroll": 1, "col_at": col_at,
                "tile_k": tk, "parallel": False}
        return sp.nearest(want, larger_on_tie=True)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list for a quick sweep: the default, then variations of its blocking."""
        tgt = resolve(target)
        sp = self.space(wl, tgt)
        d = self.default(wl, tgt)
        g = conv_geometry(wl)
        out = [d]
        base = d.to_dict()
        for change in ({"col_at": "root"}, {"col_at": "tile"}, {"col_at": "root", "tile_f": 16},
                       {"col_at": "root", "tile_f": 32}, {"col_at": "tile", "micro_x": 2},
                       {"order": 1}, {"algo": "packed_dot"}, {"algo": "packed"},
                       {"tile_f": g["F"], "col_at": "tile"}, {"col_at": "root", "tile_k": 512},
                       {"col_at": "root", "tile_k": 256, "tile_f": 64}):
            want = {**base, **change}
            c = sp.nearest(want, larger_on_tie=True)
            if c.index not in {o.index for o in out}:
                out.append(c)
        return out

    def inputs(self, wl: dict, rng) -> list:
        g = conv_geometry(wl)
        P = g["F"] if wl["per_channel"] else 1
        x = _qvalues(rng, wl["x_dtype"], (g["N"], g["C"], g["H"], g["W"]))
        w = _qvalues(rng, wl["w_dtype"], (g["F"], g["Cg"], g["KH"], g["KW"]))
        bias = _bias(rng, g["F"], g["K"])
        xz, wz = _zero_points(rng, P, wl["x_dtype"], wl["w_dtype"])
        acc = np_qconv2d_acc(x, w, bias, int(xz[0]), wz, wl["stride"], wl["pads"], wl["dilation"],
                             wl["groups"])
        rq = _requant_inputs(rng, wl["rounding"], acc, P, wl["y_dtype"])
        y = np.zeros((g["N"], g["F"], g["OH"], g["OW"]), wl["y_dtype"])
        if wl.get("w_layout", "OIHW") == "packed":
            w = pack_weights(w)
        return [x, w, bias, xz, wz, *rq, y]

    def reference(self, wl: dict, inputs) -> dict:
        x, w, bias, xz, wz = inputs[:5]
        if wl.get("w_layout", "OIHW") == "packed":
            g = conv_geometry(wl)
            w = w.reshape(g["F"], g["KH"], g["KW"], g["Cg"]).transpose(0, 3, 1, 2)
        acc = np_qconv2d_acc(x, w, bias, int(xz[0]), wz, wl["stride"], wl["pads"], wl["dilation"],
                             wl["groups"])
        return {"Y": requantize_reference(wl["rounding"], acc, inputs[3:-1], wl["y_dtype"], 1)}

    def flops(self, wl: dict) -> int:
        g = conv_geometry(wl)
        return 2 * g["N"] * g["F"] * g["OH"] * g["OW"] * g["K"]


class QDepthwiseConv2dTemplate(QConv2dTemplate):
    """Depthwise QLinearConv (groups = C, channel multiplier m: F = C*m), NCHW, direct.

    Per output channel: the zero-point-free input plane (Xw, int16, padded with 0) is made
    at root or per channel ("pad_at"), the accumulator plane is computed in tile_y x tile_x
    tiles with the window loops outside the tile (unroll: 0 none, 1 rx, 2 ry and rx), then
    requantised; parallel over channels."""
    name = "qdepthwise_conv2d"

    def workload(self, N: int, C: int, H: int, W: int, KH: int, KW: int, stride=1, pads=0,
                 dilation=1, multiplier: int = 1, x_dtype="uint8", w_dtype="int8", y_dtype=None,
                 rounding="onnx", per_channel=False, w_layout="OIHW") -> dict:
        wl = super().workload(N, C, H, W, C * multiplier, KH, KW, stride, pads, dilation, C,
                              x_dtype, w_dtype, y_dtype, rounding, per_channel, w_layout)
        wl["op"] = self.name
        return wl

    def space(self, wl: dict, target) -> ConfigSpace:
        tgt = resolve(target)
        g = conv_geometry(wl)
        knobs = [Knob("tile_y", split_choices(g["OH"], 16)),
                 Knob("tile_x", split_choices(g["OW"], 64)),
                 Knob("unroll", (0, 1, 2)),
                 Knob("pad_at", ("root", "channel"))]
        if _threads(tgt):
            knobs.append(Knob("parallel", (False, True)))
        return ConfigSpace(tuple(knobs))

    def build(self, wl: dict, target, config):
        c = _config(config)
        op = qconv2d(wl, "direct")
        s = te.create_schedule(op.out)
        Y, acc, Xw = op.out, op.stages["acc"], op.stages["Xw"]
        n, f, y, x = s[Y].op.axis
        s[Y].reorder(f, n, y, x)
        if c.get("parallel"):
            s[Y].parallel(f)
        s[acc].compute_at(s[Y], n)
        an, af, ay, ax = s[acc].op.axis
        rc, ry, rx = s[acc].op.reduce_axis
        yo, yi = s[acc].split(ay, c["tile_y"])
        xo, xi = s[acc].split(ax, c["tile_x"])
        s[acc].reorder(an, af, yo, xo, rc, ry, rx, yi, xi)
        if c["unroll"] >= 1:
            s[acc].unroll(rx)
        if c["unroll"] >= 2:
            s[acc].unroll(ry)
        if c["pad_at"] == "channel":
            s[Xw].compute_at(s[acc], af)
        return s, op.args

    def default(self, wl: dict, target):
        g = conv_geometry(wl)
        sp = self.space(wl, target)
        return sp.nearest({"tile_y": 8, "tile_x": min(g["OW"], 64), "unroll": 2,
                          "pad_at": "channel", "parallel": False}, larger_on_tie=True)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list for a quick sweep: the default, then variations of its tiles."""
        sp = self.space(wl, target)
        d = self.default(wl, target)
        out = [d]
        for change in ({"pad_at": "root"}, {"tile_y": 4}, {"tile_y": 16}, {"tile_x": 32},
                       {"unroll": 1}, {"unroll": 0}):
            c = sp.nearest({**d.to_dict(), **change}, larger_on_tie=True)
            if c.index not in {o.index for o in out}:
                out.append(c)
        return out


class QDenseTemplate:
    """Quantized dense / QLinearMatMul with bias: A (M, K) x B -> Y (M, N), B given as (K, N)
    or, with b_layout "NK", transposed (N, K); scales per tensor or per column.

    Knobs: algo (as for qconv2d), tile_m / tile_n (accumulator tile), micro_m / micro_n
    (packed, packed_dot: register block inside the tile; packed_tile: the kernel's MR x NR),
    unroll (the register block's loops; direct: the tile's row loop), parallel (OpenMP over
    column tiles)."""
    name = "qdense"

    def workload(self, M: int, N: int, K: int, a_dtype="uint8", b_dtype="int8", y_dtype=None,
                 rounding="onnx", per_channel=False, b_layout="KN") -> dict:
        y_dtype = y_dtype or a_dtype
        _check_common(self.name, rounding, {"a_dtype": a_dtype, "b_dtype": b_dtype, "y_dtype": y_dtype})
        for v, nm in ((M, "M"), (N, "N"), (K, "K")):
            if int(v) < 1:
                raise ValueError(f"{self.name}: {nm} must be positive, got {v}")
        if b_layout not in ("KN", "NK"):
            raise ValueError(f"{self.name}: b_layout must be 'KN' or 'NK', got {b_layout!r}")
        return {"op": self.name, "M": int(M), "N": int(N), "K": int(K), "a_dtype": a_dtype,
                "b_dtype": b_dtype, "y_dtype": y_dtype, "rounding": rounding,
                "per_channel": bool(per_channel), "b_layout": b_layout}

    def space(self, wl: dict, target) -> ConfigSpace:
        tgt = resolve(target)
        knobs = [Knob("algo", _algos(tgt)),
                 Knob("tile_m", split_choices(wl["M"], 16)),
                 Knob("tile_n", split_choices(wl["N"], 64)),
                 Knob("micro_m", (1, 2, 4)),
                 Knob("micro_n", (1, 2, 4)),
                 Knob("unroll", (False, True))]
        if _threads(tgt):
            knobs.append(Knob("parallel", (False, True)))
        return ConfigSpace(tuple(knobs))

    def build(self, wl: dict, target, config):
        tgt = resolve(target)
        c = _config(config)
        algo = c["algo"]
        # one tile of rows: the column sums ride in the tile kernel as an extra row of A
        ones_row = algo == "packed_tile" and c["tile_m"] >= wl["M"]
        op = qdense(wl, algo, ones_row)
        s = te.create_schedule(op.out)
        Y = op.out
        m, n = s[Y].op.axis
        mo, mi = s[Y].split(m, c["tile_m"])
        no, ni = s[Y].split(n, c["tile_n"])
        s[Y].reorder(no, mo, mi, ni)
        if c.get("parallel"):
            s[Y].parallel(no)
        acc = op.stages["acc" if algo == "direct" else "dot"]
        s[acc].compute_at(s[Y], mo)
        am, an = s[acc].op.axis
        (k,) = s[acc].op.reduce_axis
        if algo == "direct":
            s[acc].reorder(k, am, an)
            if c["unroll"]:
                s[acc].unroll(am)
            return s, op.args
        mr, nr = tile_shape(tgt, c["micro_m"]) if algo == "packed_tile" else (c["micro_m"], c["micro_n"])
        amo, ami = s[acc].split(am, mr)
        ano, ani = s[acc].split(an, nr)
        if algo == "packed_tile":
            ko, k = s[acc].split(k, nparts=1)       # the tile's zeroing outside its nest
            s[acc].reorder(amo, ano, ko, ami, ani, k)
        else:
            s[acc].reorder(amo, ano, ami, ani, k)
        if algo == "packed_tile":
            # every loop of the kernel's nest must survive (see QConv2dTemplate._register_block)
            if min(c["tile_n"], wl["N"]) >= nr and wl["K"] > 1:
                _tensorize(s, acc, ami, algo, tgt, mr)
        else:
            _tensorize(s, acc, k, algo, tgt)
            if c["unroll"]:
                s[acc].unroll(ani)
                s[acc].unroll(ami)
        return s, op.args

    def default(self, wl: dict, target):
        tgt = resolve(target)
        sp = self.space(wl, tgt)
        algos = _algos(tgt)
        algo = "packed_tile" if "packed_tile" in algos and wl["K"] >= 16 else \
            "packed_dot" if "packed_dot" in algos and wl["K"] >= 16 else "direct"
        tm = min(wl["M"], 16)
        rows = tm + 1 if algo == "packed_tile" and tm >= wl["M"] else tm   # + the ones row
        mm = max([m for m in (tile_mrs(tgt) or (1, 2, 4)) if rows % m == 0] or [1])
        return sp.nearest({"algo": algo, "tile_m": tm, "tile_n": 32, "micro_m": mm, "micro_n": 4,
                          "unroll": True, "parallel": False}, larger_on_tie=True)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list for a quick sweep: the default, then variations of its tiles."""
        sp = self.space(wl, target)
        d = self.default(wl, target)
        out = [d]
        for change in ({"tile_n": 64}, {"tile_n": 16}, {"tile_m": 4}, {"algo": "packed_dot"},
                       {"algo": "packed", "micro_m": 2, "micro_n": 4}):
            c = sp.nearest({**d.to_dict(), **change}, larger_on_tie=True)
            if c.index not in {o.index for o in out}:
                out.append(c)
        return out

    def inputs(self, wl: dict, rng) -> list:
        M, N, K = wl["M"], wl["N"], wl["K"]
        P = N if wl["per_channel"] else 1
        a = _qvalues(rng, wl["a_dtype"], (M, K))
        b = _qvalues(rng, wl["b_dtype"], (K, N))
        bias = _bias(rng, N, K)
        az, bz = _zero_points(rng, P, wl["a_dtype"], wl["b_dtype"])
        rq = _requant_inputs(rng, wl["rounding"], np_qdense_acc(a, b, bias, int(az[0]), bz), P,
                             wl["y_dtype"])
        bm = np.ascontiguousarray(b.T) if wl.get("b_layout", "KN") == "NK" else b
        return [a, bm, bias, az, bz, *rq, np.zeros((M, N), wl["y_dtype"])]

    def reference(self, wl: dict, inputs) -> dict:
        a, bm, bias, az, bz = inputs[:5]
        b = bm.T if wl.get("b_layout", "KN") == "NK" else bm
        acc = np_qdense_acc(a, b, bias, int(az[0]), bz)
        return {"Y": requantize_reference(wl["rounding"], acc, inputs[3:-1], wl["y_dtype"], 1)}

    def flops(self, wl: dict) -> int:
        return 2 * wl["M"] * wl["N"] * wl["K"]


def quant_templates() -> tuple:
    """The quantized templates, fresh instances (for cgen.ops.registry)."""
    return (QConv2dTemplate(), QDepthwiseConv2dTemplate(), QDenseTemplate())
