"""Per-op converters for shape and data movement: Flatten, Reshape, Transpose, Concat,
Split, Slice, Squeeze/Unsqueeze, Pad, Gather, and the ops that fold to constants at
import (Shape, Size, ConstantOfShape, Constant)."""
from __future__ import annotations


import numpy as np

from .onnx_import import _axis, _inp, _refuse


def convert_flatten(imp, n, a):
    s = imp.v(n.input[0]).shape
    ax = a.get("axis", 1)
    ax = ax + len(s) if ax < 0 else ax
    if not 0 <= ax <= len(s):
        _refuse(imp, f"axis {a.get('axis')} out of range", "shape")
    shape = (int(np.prod(s[:ax], dtype=np.int64)), int(np.prod(s[ax:], dtype=np.int64)))
    imp.reshape(n.input[0], shape, out=n.output[0])


def convert_reshape(imp, n, a):
    s = imp.v(n.input[0]).shape
    want = [int(d) for d in imp.const(n.input[1], "shape").reshape(-1)]
    allowzero = a.get("allowzero", 0)
    out = []
    for i, d in enumerate(want):
        if d == 0 and not allowzero:
            if i >= len(s):
                _refuse(imp, f"shape {want}: 0 at {i} has no input dimension to copy", "shape")
            out.append(s[i])
        else:
            out.append(d)
    if out.count(-1) > 1:
        _refuse(imp, f"shape {want} has more than one -1", "shape")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        total = int(np.prod(s, dtype=np.int64))
        if known == 0 or total % known:
            _refuse(imp, f"cannot reshape {s} to {want}", "shape")
        out[out.index(-1)] = total // known
    imp.reshape(n.input[0], out, out=n.output[0])


def convert_transpose(imp, n, a):
    r = len(imp.v(n.input[0]).shape)
    perm = tuple(int(p) % max(r, 1) for p in a.get("perm", list(range(r))[::-1]))
    if sorted(perm) != list(range(r)):
        _refuse(imp, f"perm {perm} is not a permutation of {r} axes", "shape")
    imp.emit("transpose", [n.input[0]], {"perm": perm}, outputs=[n.output[0]])


def convert_concat(imp, n, a):
    ins = [i for i in n.input if i]
    r = len(imp.v(ins[0]).shape)
    ax = _axis(imp, a["axis"], r)
    # empty parts add nothing: the others are concatenated (one left: it is the output);
    # when all are empty, emit makes the empty output a constant
    full = [i for i in ins if imp.v(i).size] or ins
    if len(full) == 1 and len(ins) > 1:
        imp.alias[n.output[0]] = imp.resolve(full[0])
        return
    imp.emit("concat", full, {"axis": ax}, outputs=[n.output[0]])


def convert_split(imp, n, a):
    s = imp.v(n.input[0]).shape
    ax = _axis(imp, a.get("axis", 0), len(s))
    outs = list(n.output)
    if imp.opset >= 13 and _inp(n, 1):
        sizes = [int(x) for x in imp.const(n.input[1], "split").reshape(-1)]
    elif imp.opset < 13 and "split" in a:
        sizes = list(a["split"])
    elif "num_outputs" in a:
        k = a["num_outputs"]
        chunk = -(-s[ax] // k)
        sizes = [chunk] * (k - 1) + [s[ax] - chunk * (k - 1)]
    else:
        if s[ax] % len(outs):
            _refuse(imp, f"cannot split {s[ax]} evenly into {len(outs)}", "shape")
        sizes = [s[ax] // len(outs)] * len(outs)
    if len(sizes) != len(outs):
        _refuse(imp, f"{len(sizes)} split sizes for {len(outs)} outputs", "shape")
    if sum(sizes) != s[ax] or min(sizes) < 0:
        _refuse(imp, f"split sizes {sizes} do not cover the axis of {s[ax]}", "shape")
    names = [o if o else imp.fresh(f"{n.name}__unused{i}") for i, o in enumerate(outs)]
    for name, size in zip(names, sizes):       # an empty part is a constant, not an output
        if size == 0:
            shape = tuple(0 if d == ax else x for d, x in enumerate(s))
            imp.set_const(name, np.zeros(shape, imp.v(n.input[0]).dtype))
    kept = [(name, size) for name, size in zip(names, sizes) if size]
    if len(kept) == 1:
        imp.alias[kept[0][0]] = imp.resolve(n.input[0])
        return
    imp.emit("split", [n.input[0]], {"axis": ax, "sizes": tuple(z for _, z in kept)},
             outputs=[name for name, _ in kept])


def convert_slice(imp, n, a):
    s = imp.v(n.input[0]).shape
    r = len(s)
    starts = [int(x) for x in imp.const(n.input[1], "starts").reshape(-1)]
    ends = [int(x) for x in imp.const(n.input[2], "ends").reshape(-1)]
    axes = ([int(x) for x in imp.const(n.input[3], "axes").reshape(-1)] if _inp(n, 3)
            else list(range(len(starts))))
    steps = ([int(x) for x in imp.const(n.input[4], "steps").reshape(-1)] if _inp(n, 4)
             else [1] * len(starts))
    st, en, sp = [0] * r, list(s), [1] * r
    for b, e, ax, step in zip(starts, ends, axes, steps):
        ax = _axis(imp, ax, r)
        d = s[ax]
        if step == 0:
            _refuse(imp, "slice step 0", "shape")
        b = b + d if b < 0 else b
        e = e + d if e < 0 else e
        if step > 0:
            b, e = min(max(b, 0), d), min(max(e, 0), d)
        else:
            b, e = min(max(b, 0), d - 1), min(max(e, -1), d - 1)
        st[ax], en[ax], sp[ax] = b, e, step
    imp.emit("slice", [n.input[0]], {"starts": tuple(st), "ends": tuple(en), "steps": tuple(sp)},
             outputs=[n.output[0]])


def _unsqueeze_axes(imp, n, a):
    if imp.opset >= 13:
        return [int(x) for x in imp.const(n.input[1], "axes").reshape(-1)] if _inp(n, 1) else None
    return a.get("axes")


def convert_squeeze(imp, n, a):
    s = imp.v(n.input[0]).shape
    axes = _unsqueeze_axes(imp, n, a)
    if axes is None:
        axes = [i for i, d in enumerate(s) if d == 1]
    axes = {_axis(imp, x, len(s)) for x in axes}
    if any(s[x] != 1 for x in axes):
        _refuse(imp, f"cannot squeeze axes {sorted(axes)} of shape {s}", "shape")
    imp.reshape(n.input[0], [d for i, d in enumerate(s) if i not in axes], out=n.output[0])


def convert_unsqueeze(imp, n, a):
    s = list(imp.v(n.input[0]).shape)
    axes = _unsqueeze_axes(imp, n, a)
    if not axes:
        _refuse(imp, "Unsqueeze without axes", "shape")
    r = len(s) + len(axes)
    axes = sorted({_axis(imp, x, r) for x in axes})
    for x in axes:
        s.insert(x, 1)
    imp.reshape(n.input[0], s, out=n.output[0])


def convert_pad(imp, n, a):
    s = imp.v(n.input[0]).shape
    r = len(s)
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        _refuse(imp, f"mode={mode!r}")
    pads = [int(x) for x in imp.const(n.input[1], "pads").reshape(-1)]
    value = 0
    if _inp(n, 2):
        cv = imp.const(n.input[2], "constant_value").reshape(-1)
        value = cv[0].item() if cv.size else 0
    axes = ([_axis(imp, int(x), r) for x in imp.const(n.input[3], "axes").reshape(-1)]
            if _inp(n, 3) else list(range(r)))
    if len(pads) != 2 * len(axes):
        _refuse(imp, f"{len(pads)} pads for {len(axes)} axes", "shape")
    full = [0] * (2 * r)
    for i, ax in enumerate(axes):
        full[ax], full[r + ax] = pads[i], pads[len(axes) + i]
    if mode == "reflect" and any(p >= d for p, d in zip(full, list(s) * 2)):
        _refuse(imp, f"reflect pads {full} reach past the input {s}", "shape")
    dt = imp.v(n.input[0]).dtype
    value = float(value) if dt == "float32" else int(value)
    imp.emit("pad", [n.input[0]], {"pads": tuple(full), "mode": mode, "value": value},
             outputs=[n.output[0]])


def convert_gather(imp, n, a):
    data, idx = n.input[0], n.input[1]
    s = imp.v(data).shape
    ax = _axis(imp, a.get("axis", 0), len(s))
    ind = imp.const(idx, "indices").astype(np.int64)
    if np.any(ind >= s[ax]) or np.any(ind < -s[ax]):
        _refuse(imp, f"indices out of range for axis of size {s[ax]}", "shape")
    ind = np.where(ind < 0, ind + s[ax], ind)
    c = imp.add_const(ind, f"{n.output[0]}__indices")
    imp.emit("gather", [data, c], {"axis": ax}, outputs=[n.output[0]])


def convert_shape(imp, n, a):
    s = imp.v(n.input[0]).shape
    r = len(s)
    start, end = a.get("start", 0), a.get("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    imp.set_const(n.output[0], np.asarray(s[start:end], dtype=np.int64))


def convert_size(imp, n, a):
    imp.set_const(n.output[0], np.asarray(int(np.prod(imp.v(n.input[0]).shape)), dtype=np.int64))


def convert_constant_of_shape(imp, n, a):
    shape = [int(x) for x in imp.const(n.input[0], "shape").reshape(-1)]
    val = a.get("value")
    val = np.zeros((1,), np.float32) if val is None else np.asarray(val).reshape(-1)
    imp.set_const(n.output[0], np.full(shape, val[0], dtype=val.dtype))


def convert_constant(imp, n, a):
    if "sparse_value" in a or "value_string" in a or "value_strings" in a:
        _refuse(imp, "sparse or string constants", "unsupported_dtype")
    if "value" in a:
        v = np.asarray(a["value"])
    elif "value_float" in a:
        v = np.asarray(a["value_float"], np.float32)
    elif "value_floats" in a:
        v = np.asarray(a["value_floats"], np.float32)
    elif "value_int" in a:
        v = np.asarray(a["value_int"], np.int64)
    elif "value_ints" in a:
        v = np.asarray(a["value_ints"], np.int64)
    else:
        _refuse(imp, "no value attribute")
    imp.set_const(n.output[0], v)


# ------------------------------------------------------------------ quantisation
