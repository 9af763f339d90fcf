"""Resize (opsets 11-19; opset 10's Resize and Upsample arrive here through
onnx.version_converter) -> the canonical `resize` op, every attribute explicit and full
rank (see cgen.graph.resize_geometry).  Scales, sizes and roi must be known at import."""
from __future__ import annotations

import math

import numpy as np

from .onnx_import import _axis, _inp, _refuse
from .resize_geometry import COORDS, MODES, NEAREST_MODES, all_taps


def _choice(imp, a, key: str, default: str, allowed) -> str:
    v = a.get(key, default)
    if v not in allowed:
        _refuse(imp, f"{key}={v!r} (cgen handles {', '.join(allowed)})")
    return v


def _sizes_and_scales(imp, n, a, shape, axes):
    """Full-rank output sizes and per-axis scales from the scales or sizes operand."""
    r = len(shape)
    scales_in, sizes_in = _inp(n, 2), _inp(n, 3)
    scales = imp.const(scales_in, "scales").reshape(-1) if scales_in else np.zeros(0)
    sizes = imp.const(sizes_in, "sizes").reshape(-1) if sizes_in else np.zeros(0)
    if (scales.size == 0) == (sizes.size == 0):
        _refuse(imp, "exactly one of scales and sizes must be given", "shape")
    given = scales if scales.size else sizes
    if given.size != len(axes):
        _refuse(imp, f"{'scales' if scales.size else 'sizes'} has {given.size} entries for "
                     f"{len(axes)} axes", "shape")
    out, sc = list(shape), [1.0] * r
    if scales.size:
        if np.any(scales <= 0):
            _refuse(imp, f"scales {scales.tolist()} must be positive", "shape")
        for d, s in zip(axes, scales.astype(np.float64)):
            sc[d], out[d] = float(s), int(math.floor(shape[d] * float(s)))
        return out, sc
    if np.any(sizes <= 0):
        _refuse(imp, f"sizes {sizes.tolist()} must be positive", "shape")
    policy = _choice(imp, a, "keep_aspect_ratio_policy", "stretch",
                     ("stretch", "not_larger", "not_smaller"))
    ratios = [int(s) / shape[d] for d, s in zip(axes, sizes)]
    if policy == "stretch":
        for d, s, q in zip(axes, sizes, ratios):
            sc[d], out[d] = q, int(s)
        return out, sc
    q = min(ratios) if policy == "not_larger" else max(ratios)
    for d in axes:
        sc[d], out[d] = q, int(math.floor(q * shape[d] + 0.5))
    return out, sc


def convert_resize(imp, n, a):
    x = n.input[0]
    xv = imp.v(x)
    shape = xv.shape
    r = len(shape)
    mode = _choice(imp, a, "mode", "nearest", MODES + ("bilinear",))
    mode = "linear" if mode == "bilinear" else mode
    coords = COORDS if imp.opset == 11 else tuple(c for c in COORDS if c != "tf_half_pixel_for_nn")
    coord = _choice(imp, a, "coordinate_transformation_mode", "half_pixel", coords)
    nearest = _choice(imp, a, "nearest_mode", "round_prefer_floor",
                      NEAREST_MODES + (("simple",) if coord == "asymmetric" else ()))
    antialias = int(a.get("antialias", 0))
    if antialias and mode == "nearest":
        _refuse(imp, "antialias with mode='nearest'")
    axes = [_axis(imp, int(d), r, "axes") for d in a.get("axes", range(r))]
    if len(set(axes)) != len(axes):
        _refuse(imp, f"axes {a['axes']} repeat an axis", "shape")
    out, scales = _sizes_and_scales(imp, n, a, shape, axes)
    roi = ()
    if coord == "tf_crop_and_resize":
        given = imp.const(_inp(n, 1), "roi").reshape(-1).astype(np.float64) if _inp(n, 1) \
            else np.zeros(0)
        if given.size != 2 * len(axes):
            _refuse(imp, f"roi has {given.size} entries, tf_crop_and_resize needs "
                         f"{2 * len(axes)}", "shape")
        full = [0.0] * r + [1.0] * r
        for i, d in enumerate(axes):
            full[d], full[r + d] = float(given[i]), float(given[len(axes) + i])
        roi = tuple(full)
    if mode != "nearest" and xv.dtype not in ("float32", "uint8", "int8", "int16", "int32"):
        _refuse(imp, f"{mode} resize of {xv.dtype}", "unsupported_dtype")
    attrs = {"mode": mode, "coord": coord, "nearest_mode": nearest,
             "cubic_a": float(a.get("cubic_coeff_a", -0.75)),
             "exclude_outside": int(a.get("exclude_outside", 0)), "antialias": antialias,
             "extrapolation_value": float(a.get("extrapolation_value", 0.0)),
             "scales": tuple(scales), "sizes": tuple(out), "roi": roi}
    if 0 not in out and all(t is None for t in all_taps(attrs, shape)):
        imp.alias[n.output[0]] = imp.resolve(x)
        return
    imp.emit("resize", [x], attrs, outputs=[n.output[0]])



# ====================================================================== before opset 11
# Upsample (opsets 7-9) and Resize-10 map coordinates asymmetrically (x / scale), as
# onnxruntime runs them; onnx.version_converter turns them into Resize-11 nodes without
# saying so, which would read as half_pixel.  The importer notes their outputs before the
# conversion and marks the converted nodes after it: asymmetric, and nearest_mode "simple"
# (cgen's name for their rounding: floor when an axis grows, ceil when it shrinks).
def legacy_resize_outputs(proto) -> set:
    return {n.output[0] for n in proto.graph.node
            if n.op_type in ("Upsample", "Resize") and n.domain in ("", "ai.onnx")}


def mark_legacy_resizes(proto, outputs: set) -> None:
    import onnx
    for n in proto.graph.node:
        if n.op_type == "Resize" and n.output[0] in outputs:
            keep = [a for a in n.attribute if a.name not in ("coordinate_transformation_mode",
                                                             "nearest_mode")]
            del n.attribute[:]
            n.attribute.extend(keep + [
                onnx.helper.make_attribute("coordinate_transformation_mode", "asymmetric"),
                onnx.helper.make_attribute("nearest_mode", "simple")])


def convert_upsample(imp, n, a):
    """Upsample in a model that declares opset >= 11 (the checker lets a deprecated op
    through for some producers): X and scales, asymmetric coordinates, "simple" rounding."""
    x = n.input[0]
    scales = a.get("scales")
    if scales is None:
        scales = imp.const(n.input[1], "scales").reshape(-1)
    shape = imp.v(x).shape
    mode = _choice(imp, a, "mode", "nearest", ("nearest", "linear", "bilinear"))
    out = [int(math.floor(d * float(s))) for d, s in zip(shape, np.asarray(scales, np.float64))]
    if len(out) != len(shape):
        _refuse(imp, f"scales has {len(out)} entries for rank {len(shape)}", "shape")
    attrs = {"mode": "linear" if mode == "bilinear" else mode, "coord": "asymmetric",
             "nearest_mode": "simple", "cubic_a": -0.75, "exclude_outside": 0, "antialias": 0,
             "extrapolation_value": 0.0, "scales": tuple(float(s) for s in scales),
             "sizes": tuple(out), "roi": ()}
    imp.emit("resize", [x], attrs, outputs=[n.output[0]])
