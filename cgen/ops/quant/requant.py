"""Requantisation in te (both rounding modes) and the quantisation parameters of a kernel
as run-time arguments."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import te
from ...te.expr import const
from ...te.tensor import Tensor
from .reference import INT32_MAX, INT32_MIN, ROUNDINGS

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
