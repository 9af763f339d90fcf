"""exp with arithmetic and bit operations only (no libm call), so a loop evaluating it
vectorizes: exp(x) = 2^n * p(r), n = round(x * log2(e)), r = x - n * ln2.

- n is rounded by adding 1.5 * 2^23 + 127: the sum's float32 mantissa then holds
  n + 127 in its low bits (ties to even), and the sum minus the constant is n exactly;
- r = x - n * ln2 in two steps (Cody-Waite): ln2's high part has 9 significant bits, so
  n * ln2_hi is exact for |n| < 2^15; r lies in [-ln2/2, ln2/2];
- p is a degree-6 polynomial, p(r) = 1 + r + c2 r^2 + ... + c6 r^6, weighted least squares
  (Lawson-reweighted towards minimax) on relative error, fitted for cgen; its own error is
  below 4e-9, float32 evaluation (Horner, fused multiply-adds) gives about 1 ulp;
- 2^n is the sum's bits shifted left by 23: the bits above n + 127 fall off the top and
  n + 127 lands in the exponent field.

x is clamped to [-88, 88.376]: below, n + 127 is 0 and the result is +0 (exp(-inf) = 0,
as softmax's exp(x - max) needs; the true values there are float32 subnormals, below
1.2e-38); above, n would be 128, so exp saturates at 2.4e38 instead of overflowing.
"""
from __future__ import annotations

from .expr import Call, Const, Expr, as_expr, binary, reinterpret

_LOG2E = 1.4426950408889634
_ROUND = 12582912.0 + 127.0           # 1.5 * 2^23 + the exponent bias
_LN2_HI = 0.693359375                 # 355 / 512
_LN2_LO = -2.1219444005469057e-4      # ln2 - _LN2_HI, rounded to float32
_P = (0.49999993663503417, 0.16666519973218324, 0.0416683318037979,
      0.008368791057277714, 0.0013818029097724344)   # c2 .. c6
EXP_LO, EXP_HI = -88.0, 88.3762626647949


def _f(v: float) -> Const:
    return as_expr(float(v))


def exp_poly(x) -> Expr:
    """exp of a float32 expression: max relative error about 1e-7 on [-87.3, 88.3]."""
    x = as_expr(x, "float32")
    if x.dtype != "float32":
        raise TypeError(f"exp_poly takes float32, got {x.dtype}")
    x = binary("min", binary("max", x, _f(EXP_LO)), _f(EXP_HI))
    # written as a + b * c everywhere: the printer makes each one fused multiply-add
    j = x * _f(_LOG2E) + _f(_ROUND)
    n = j - _f(_ROUND)
    r = x + n * _f(-_LN2_HI)
    r = r + n * _f(-_LN2_LO)
    acc = _f(_P[-1])
    for c in reversed(_P[:-1]):
        acc = acc * r + _f(c)
    acc = acc * r + _f(1.0)
    acc = acc * r + _f(1.0)
    scale = reinterpret("float32", Call("shl", (reinterpret("int32", j), as_expr(23, "int32")),
                                        "int32"))
    return acc * scale
