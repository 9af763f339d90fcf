"""conv2d workloads: the canonical dict, output size, flops, the numpy reference,
and the knob helpers the conv templates share."""
from __future__ import annotations

import numpy as np

from ..space import ConfigSpace, divisors
from ..common import conv_out, conv_out_hw as out_size, from_nchwc_np, to_nchwc_np
from ..nn import _pads, _pair

LAYOUTS = ("NCHW", "NCHWc")
WEIGHTS = ("OIHW", "packed")
MAX_BLOCK = 64          # largest channel block offered as a knob choice

# ---------------------------------------------------------------- workloads
def conv2d_workload(op: str, N: int, C: int, H: int, W: int, F: int, KH: int, KW: int,
                    stride=1, pad=0, dilation=1, groups: int = 1, layout: str = "NCHW",
                    weights: str = "OIHW", ic_bn: int | None = None, oc_bn: int | None = None,
                    dtype: str = "float32") -> dict:
    """The canonical conv2d workload dict (checked; see the module docstring)."""
    sh, sw = _pair(op, "stride", stride, 1)
    dh, dw = _pair(op, "dilation", dilation, 1)
    pads = _pads(op, pad)
    for name, v in (("N", N), ("C", C), ("H", H), ("W", W), ("F", F), ("KH", KH), ("KW", KW),
                    ("groups", groups)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    if C % groups or F % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide C ({C}) and F ({F})")
    if layout not in LAYOUTS:
        raise ValueError(f"{op}: layout must be one of {LAYOUTS}, got {layout!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"{op}: weights must be one of {WEIGHTS}, got {weights!r}")
    if dtype != "float32":
        raise ValueError(f"{op}: only float32 is supported, got {dtype}")
    conv_out(op, H, pads[0], pads[2], KH, sh, dh, "height")
    conv_out(op, W, pads[1], pads[3], KW, sw, dw, "width")
    return {"op": op, "N": int(N), "C": int(C), "H": int(H), "W": int(W), "F": int(F),
            "KH": int(KH), "KW": int(KW), "stride": [sh, sw], "pad": list(pads),
            "dilation": [dh, dw], "groups": int(groups), "layout": layout, "weights": weights,
            "ic_bn": None if ic_bn is None else int(ic_bn),
            "oc_bn": None if oc_bn is None else int(oc_bn), "dtype": dtype}


def conv_flops(wl: dict) -> int:
    oh, ow = out_size(wl)
    return 2 * wl["N"] * wl["F"] * oh * ow * (wl["C"] // wl["groups"]) * wl["KH"] * wl["KW"]


def random_conv_inputs(wl: dict, rng) -> tuple:
    """(x NCHW, w OIHW): standard normal float32 draws, x first."""
    N, C, H, W, F, KH, KW, G = (wl[k] for k in ("N", "C", "H", "W", "F", "KH", "KW", "groups"))
    return (rng.standard_normal((N, C, H, W), dtype=np.float32),
            rng.standard_normal((F, C // G, KH, KW), dtype=np.float32))


def random_conv_io(wl: dict, rng) -> tuple:
    """(x, w OIHW, zeroed output) in the workload's layout (NCHW or NCHW[x]c)."""
    N, F = wl["N"], wl["F"]
    OH, OW = out_size(wl)
    x, w = random_conv_inputs(wl, rng)
    if wl["layout"] == "NCHWc":
        return (to_nchwc_np(x, wl["ic_bn"]), w,
                np.zeros((N, F // wl["oc_bn"], OH, OW, wl["oc_bn"]), np.float32))
    return x, w, np.zeros((N, F, OH, OW), np.float32)


def reference_in_layout(wl: dict, x: np.ndarray, w: np.ndarray) -> dict:
    """{output name: numpy conv2d} for x in the workload's layout and w OIHW."""
    nchwc = wl["layout"] == "NCHWc"
    y = conv2d_reference(from_nchwc_np(x) if nchwc else x, w, wl["stride"], wl["pad"],
                         wl["dilation"], wl["groups"])
    return {"Yc": to_nchwc_np(y, wl["oc_bn"])} if nchwc else {"Y": y}


def conv2d_reference(x: np.ndarray, w: np.ndarray, stride, pad, dilation, groups: int) -> np.ndarray:
    """numpy conv2d (NCHW, OIHW), float64 accumulation, float32 result."""
    sh, sw = stride
    dh, dw = dilation
    t, l, b, r = pad
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    xp = np.zeros((n, c, h + t + b, wd + l + r), np.float64)
    xp[:, :, t:t + h, l:l + wd] = x
    oh, ow = out_size({"H": h, "W": wd, "KH": kh, "KW": kw, "stride": stride, "pad": pad,
                       "dilation": dilation})
    fg = f // groups
    y = np.zeros((n, f, oh, ow), np.float64)
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * fg:(g + 1) * fg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                win = xs[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
                y[:, g * fg:(g + 1) * fg] += np.einsum("nchw,fc->nfhw", win, ws[:, :, i, j])
    return y.astype(np.float32)



# ---------------------------------------------------------------- knob helpers
def _variants(space: ConfigSpace, base, changes) -> list:
    """Configs of `space` that differ from `base` by each dict of `changes` (values a knob
    does not offer are skipped; duplicates dropped), in order."""
    out, seen = [], {base.index}
    knobs = {k.name: k.choices for k in space.knobs}
    for ch in changes:
        vals = base.to_dict()
        if any(k not in knobs or v not in knobs[k] for k, v in ch.items()):
            continue
        vals.update(ch)
        cfg = space.get(space.index_of(vals))
        if cfg.index not in seen:
            seen.add(cfg.index)
            out.append(cfg)
    return out



def block_lanes(tgt) -> int:
    """The granule of channel blocks and tile columns: the target's float32 lanes, or 4
    for portable C."""
    lanes = tgt.lanes("float32")
    return lanes if lanes > 1 else 4


def register_budget(tgt) -> int:
    """Vector registers a register tile may use (16 for portable C's scalar tiles)."""
    return tgt.vector_registers or 16



def block_choices(n: int, limit: int = MAX_BLOCK) -> tuple:
    return tuple(d for d in divisors(n) if d <= limit)


def default_block(n: int, lanes: int, prefer: int) -> int:
    """A channel block: `prefer` if it divides n, else the largest divisor of n that is
    a multiple of the vector width (up to prefer), else the largest divisor <= prefer."""
    if n % prefer == 0:
        return prefer
    vec = [d for d in divisors(n) if d <= prefer and d % lanes == 0]
    if vec:
        return max(vec)
    return max(d for d in divisors(n) if d <= prefer)

