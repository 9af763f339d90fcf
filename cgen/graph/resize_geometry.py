"""The geometry of the canonical `resize` op: for each resized axis, which input positions
each output position reads and with what weights (`axis_taps`), computed once at compile
time from the static shapes, scales and sizes.  Both the reference interpreter
(`resize_reference`) and the te index function (`te_resize`) read these taps, so the two
share one definition of the coordinate modes; the ONNX backend node tests check it against
onnx's own implementation.

Attributes of `resize` (all explicit, full rank):
    mode              nearest | linear | cubic
    coord             half_pixel | half_pixel_symmetric | pytorch_half_pixel | align_corners
                      | asymmetric | tf_half_pixel_for_nn | tf_crop_and_resize
    nearest_mode      round_prefer_floor | round_prefer_ceil | floor | ceil | simple (the
                      rule before opset 11, as onnxruntime runs it: floor on an axis that
                      grows, ceil on one that shrinks)
    cubic_a, exclude_outside, antialias, extrapolation_value
    scales            per axis, the scale the coordinates are mapped with
    sizes             the output shape
    roi               (start..., end...) per axis, normalised; () when not cropping
"""
from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

MODES = ("nearest", "linear", "cubic")
COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
          "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclass(frozen=True)
class AxisTaps:
    """Output position i along the axis reads input positions idx[i, k] with weights w[i, k]
    (k < taps); positions outside [valid[0], valid[1]) take the extrapolation value."""
    idx: np.ndarray          # int64 (out, taps), clamped into the input
    w: np.ndarray            # float64 (out, taps)
    valid: tuple | None      # (lo, hi) when some outputs extrapolate (tf_crop_and_resize)

    @property
    def nearest(self) -> bool:
        return self.idx.shape[1] == 1


def _source_coords(coord: str, n_in: int, n_out: int, scale: float, roi) -> np.ndarray:
    """The input coordinate each output position maps to (float64).  The length of the
    resized axis is scale * n_in, not rounded (as onnx's reference computes it)."""
    y = np.arange(n_out, dtype=np.float64)
    length = scale * n_in
    if coord == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if coord == "half_pixel_symmetric":
        return n_in / 2 * (1 - n_out / length) + (y + 0.5) / scale - 0.5
    if coord == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if length != 1 else np.full(n_out, -0.5)
    if coord == "align_corners":
        return y * (n_in - 1) / (length - 1) if length != 1 else np.zeros(n_out)
    if coord == "asymmetric":
        return y / scale
    if coord == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    if coord == "tf_crop_and_resize":
        start, end = roi
        if length == 1:
            return np.full(n_out, (start + end) / 2 * (n_in - 1))
        return start * (n_in - 1) + y * (end - start) * (n_in - 1) / (length - 1)
    raise ValueError(f"coordinate_transformation_mode {coord!r}")


def _nearest(x: np.ndarray, mode: str, scale: float) -> np.ndarray:
    if mode == "simple":
        mode = "floor" if scale >= 1 else "ceil"
    lo = np.floor(x)
    frac = x - lo
    up = {"round_prefer_floor": frac > 0.5, "round_prefer_ceil": frac >= 0.5,
          "floor": np.zeros_like(x, dtype=bool), "ceil": frac > 0}[mode]
    return (lo + up).astype(np.int64)


def _cubic_kernel(a: float):
    def k(d):
        d = np.abs(d)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, np.where(d < 2, far, 0.0))
    return k


def _linear_kernel(d):
    return np.maximum(0.0, 1.0 - np.abs(d))


def axis_taps(attrs, axis: int, n_in: int) -> AxisTaps | None:
    """The taps of one axis, or None when the axis is not resized (every output position
    reads its own input position with weight 1)."""
    n_out = int(attrs["sizes"][axis])
    scale = float(attrs["scales"][axis])
    roi = attrs.get("roi") or ()
    r = len(attrs["sizes"])
    ax_roi = (roi[axis], roi[r + axis]) if roi else (0.0, 1.0)
    coord, mode = attrs["coord"], attrs["mode"]
    x = _source_coords(coord, n_in, n_out, scale, ax_roi)
    valid = None
    if coord == "tf_crop_and_resize":
        inside = np.flatnonzero((x >= 0) & (x <= n_in - 1))
        lo, hi = (int(inside[0]), int(inside[-1]) + 1) if inside.size else (0, 0)
        if inside.size != hi - lo:
            raise ValueError("the positions inside the crop are not contiguous")
        valid = (lo, hi) if (lo, hi) != (0, n_out) else None
    if mode == "nearest":
        idx = np.clip(_nearest(x, attrs["nearest_mode"], scale), 0, n_in - 1)[:, None]
        w = np.ones_like(idx, dtype=np.float64)
    else:
        support = 1 if mode == "linear" else 2
        kern = _linear_kernel if mode == "linear" else _cubic_kernel(float(attrs["cubic_a"]))
        stretch = min(scale, 1.0) if attrs.get("antialias") else 1.0
        taps = 2 * support if stretch == 1.0 else 2 - 2 * (math.floor(-support / stretch) + 1)
        base = np.floor(x).astype(np.int64)
        # an integer coordinate is the right end of its window (ONNX prefers the left pixel)
        start = np.where(x == base, base - taps // 2, base - taps // 2 + 1)
        idx = start[:, None] + np.arange(taps)[None, :]
        w = kern(stretch * (idx - x[:, None]))
        if attrs.get("antialias"):
            w = w / w.sum(axis=1, keepdims=True)
        if attrs.get("exclude_outside"):
            w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
            s = w.sum(axis=1, keepdims=True)
            w = w / np.where(s == 0, 1.0, s)
        idx = np.clip(idx, 0, n_in - 1)
        keep = np.any(w != 0, axis=0)          # a tap column no output uses is dropped
        idx, w = idx[:, keep], w[:, keep]
    if valid is None and n_out == n_in and _is_identity(idx, w):
        return None
    return AxisTaps(idx, w, valid)


def _is_identity(idx: np.ndarray, w: np.ndarray) -> bool:
    ar = np.arange(idx.shape[0])
    return bool(np.all(np.where(w != 0, idx == ar[:, None], True))
                and np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)
                and np.all((w == 0) | (idx == ar[:, None])))


def all_taps(attrs, in_shape) -> list:
    return [axis_taps(attrs, d, n) for d, n in enumerate(in_shape)]


def resize_reference(attrs, x: np.ndarray) -> np.ndarray:
    """numpy resize, one axis at a time in float64, cast back like ONNX (integers rounded
    half to even and saturated)."""
    y = x.astype(np.float64)
    for d, t in enumerate(all_taps(attrs, x.shape)):
        if t is None:
            continue
        g = np.take(y, t.idx, axis=d)                        # (..., out, taps, ...)
        shape = [1] * y.ndim
        shape[d:d + 1] = list(t.w.shape)
        y = (g * t.w.reshape(shape)).sum(axis=d + 1)
        if t.valid is not None:
            keep = np.zeros(y.shape[d], dtype=bool)
            keep[t.valid[0]:t.valid[1]] = True
            mshape = [1] * y.ndim
            mshape[d] = -1
            y = np.where(keep.reshape(mshape), y, float(attrs["extrapolation_value"]))
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        y = np.clip(np.round(y), info.min, info.max)
    return y.astype(x.dtype)
