"""Helpers every operator template shares: configs as dicts, workload checks,
window geometry (convolution and pooling output sizes), numpy broadcasting of
shapes, the NCHW <-> NCHW[x]c activation layout, and the knob choices of
vectorized and unrolled axes.

The bottom of cgen.ops (numpy, the config space and targets only), imported by
nn.py and by every template module, importing none of them.
"""
from __future__ import annotations

import numpy as np

from .space import ConfigSpace, Knob, split_choices
from targets import resolve


# ---------------------------------------------------------------- configs and workloads
def config_dict(config) -> dict:
    """A Config (or a plain dict of knob values) as a dict."""
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def pick(space: ConfigSpace, want: dict):
    """The config of `space` closest to `want` (ConfigSpace.nearest)."""
    return space.nearest(want)


def check_op(wl: dict, op: str) -> None:
    if wl.get("op") != op:
        raise ValueError(f"{op}: workload is for {wl.get('op')!r}")


def positive_shape(op: str, shape, what: str = "shape") -> list:
    shape = list(shape)
    if not shape or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                            for n in shape):
        raise ValueError(f"{op}: {what} must be a non-empty list of positive ints, got {shape}")
    return [int(n) for n in shape]


def parallel_knobs(target) -> list:
    """[the "parallel" knob] when the target may run threads, else []."""
    return [Knob("parallel", (False, True))] if resolve(target).can_thread else []


def vec_choices(extent: int, lanes: int, limit: int = 64) -> tuple:
    """Split factors for a vectorized innermost axis: divisors and powers of two up to
    `limit`, plus multiples of the vector width (full vectors; a tail is masked or
    scalar)."""
    limit = max(1, min(limit, extent))
    out = set(split_choices(extent, limit))
    out.update(m for m in range(lanes, limit + 1, lanes) if lanes > 1 and m <= 4 * lanes)
    return tuple(sorted(out))


# ---------------------------------------------------------------- window geometry
def conv_out(op: str, size: int, before: int, after: int, k: int, stride: int,
             dilation: int, axis: str) -> int:
    """Outputs of a convolution along one axis (floor rule); ValueError when the
    dilated window does not fit the padded input."""
    span = dilation * (k - 1) + 1
    padded = size + before + after
    if padded < span:
        raise ValueError(f"{op}: the {axis} window ({span} with dilation) is larger than the "
                         f"padded input ({padded})")
    return (padded - span) // stride + 1


def conv_out_hw(wl: dict) -> tuple:
    """(OH, OW) of a conv-like workload (H W KH KW, stride, pad (t, l, b, r), dilation)."""
    (sh, sw), (dh, dw), (t, l, b, r) = wl["stride"], wl["dilation"], wl["pad"]
    return ((wl["H"] + t + b - dh * (wl["KH"] - 1) - 1) // sh + 1,
            (wl["W"] + l + r - dw * (wl["KW"] - 1) - 1) // sw + 1)


def pool_geometry(op: str, H: int, W: int, kernel, stride, pads, dilation, ceil_mode: bool):
    """((OH, OW), full pads (top, left, bottom, right) covering every window).

    ONNX rule: out = floor|ceil((H + pt + pb - span) / s) + 1; with ceil_mode a
    window that would start past the input and its leading pad is dropped.  The
    bottom/right padding is extended so the last (ceil-mode) window fits."""
    outs, ext = [], []
    for size, k, s, d, before, after, axis in (
            (H, kernel[0], stride[0], dilation[0], pads[0], pads[2], "height"),
            (W, kernel[1], stride[1], dilation[1], pads[1], pads[3], "width")):
        if before >= k or after >= k:
            raise ValueError(f"{op}: {axis} padding ({before}, {after}) must be smaller than the "
                             f"kernel ({k})")
        span = d * (k - 1) + 1
        total = size + before + after - span
        if total < 0:
            raise ValueError(f"{op}: the {axis} window ({span} with dilation) is larger than the "
                             f"padded input ({size + before + after})")
        o = (-(-total // s) if ceil_mode else total // s) + 1
        if ceil_mode and (o - 1) * s >= size + before:
            o -= 1
        outs.append(o)
        ext.append(max(after, (o - 1) * s + span - size - before))
    return tuple(outs), (pads[0], pads[1], ext[0], ext[1])


# ---------------------------------------------------------------- shapes and layouts
def broadcast_shape(a: tuple, b: tuple, what: str = "shapes") -> tuple:
    """numpy's broadcast of two shapes (ranks aligned on the right), or ValueError."""
    nd = max(len(a), len(b))
    a = (1,) * (nd - len(a)) + tuple(a)
    b = (1,) * (nd - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            raise ValueError(f"{what} {a} and {b} do not broadcast")
        out.append(max(x, y))
    return tuple(out)


def to_nchwc_np(x: np.ndarray, bn: int) -> np.ndarray:
    """NCHW -> NCHW[bn]c: [N][C/bn][H][W][bn]."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // bn, bn, h, w).transpose(0, 1, 3, 4, 2))


def from_nchwc_np(y: np.ndarray) -> np.ndarray:
    """NCHW[bn]c -> NCHW."""
    n, cb, h, w, bn = y.shape
    return np.ascontiguousarray(y.transpose(0, 1, 4, 2, 3).reshape(n, cb * bn, h, w))
