"""Weight packings of the conv templates (te computes over OIHW weights, folded at
compile time in a model) and their numpy twins."""
from __future__ import annotations

import numpy as np

from ... import te


def pack_weights_nchwc(Wt, ic_bn: int, oc_bn: int, name: str = "Wp"):
    """te: OIHW weights (F, C/groups, KH, KW) -> [F/oc_bn][Cg/ic_bn][KH*KW*ic_bn][oc_bn]
    (row q = (kh*KW + kw)*ic_bn + ic)."""
    f, cg, kh, kw = Wt.shape
    if f % oc_bn or cg % ic_bn:
        raise ValueError(f"pack_weights_nchwc: blocks ({ic_bn}, {oc_bn}) must divide ({cg}, {f})")
    return te.compute((f // oc_bn, cg // ic_bn, kh * kw * ic_bn, oc_bn),
                      lambda ob, ib, q, o: Wt[ob * oc_bn + o, ib * ic_bn + q % ic_bn,
                                              q // (kw * ic_bn), (q // ic_bn) % kw],
                      name=name)


def pack_weights_nchwc_np(w: np.ndarray, ic_bn: int, oc_bn: int) -> np.ndarray:
    f, cg, kh, kw = w.shape
    p = w.reshape(f // oc_bn, oc_bn, cg // ic_bn, ic_bn, kh, kw).transpose(0, 2, 4, 5, 3, 1)
    return np.ascontiguousarray(p.reshape(f // oc_bn, cg // ic_bn, kh * kw * ic_bn, oc_bn))


def unpack_weights_nchwc_np(wp: np.ndarray, kh: int, kw: int) -> np.ndarray:
    ocb, icb, q, oc_bn = wp.shape
    ic_bn = q // (kh * kw)
    w = wp.reshape(ocb, icb, kh, kw, ic_bn, oc_bn).transpose(0, 5, 1, 4, 2, 3)
    return np.ascontiguousarray(w.reshape(ocb * oc_bn, icb * ic_bn, kh, kw))



def pack_weights_gemm(Wt, groups: int, mr: int, name: str = "Ap"):
    """te: OIHW weights (F, C/groups, KH, KW) -> [G][ceil(Fg/mr)][Cg*KH*KW][mr] panels,
    zero rows past Fg (numpy twin: pack_weights_gemm_np)."""
    f, cg, kh, kw = Wt.shape
    fg = f // groups
    kk = cg * kh * kw
    return te.compute(
        (groups, -(-fg // mr), kk, mr),
        lambda g, ob, k, o: te.if_then_else(
            ob * mr + o < fg,
            Wt[te.minimum(g * fg + ob * mr + o, f - 1), k // (kh * kw), (k // kw) % kh, k % kw], 0.0),
        name=name)


def pack_weights_gemm_np(w: np.ndarray, groups: int, mr: int, kb: int | None = None) -> np.ndarray:
    """OIHW -> [G][ceil(Fg/mr)][KK][mr] panels (KK = Cg*KH*KW), zero rows past Fg; with a
    depth block `kb` (dividing KK) -> [G][KK/kb][ceil(Fg/mr)][kb][mr]: every panel's kb rows
    of one depth block, then the next block (see gemm.weight_depth_block)."""
    f, cg, kh, kw = w.shape
    fg = f // groups
    nb = -(-fg // mr)
    kk = cg * kh * kw
    a = np.zeros((groups, nb * mr, kk), np.float32)
    a[:, :fg] = w.reshape(groups, fg, kk)
    panels = a.reshape(groups, nb, mr, kk).transpose(0, 1, 3, 2)
    if kb is None:
        return np.ascontiguousarray(panels)
    if kk % kb:
        raise ValueError(f"pack_weights_gemm_np: the depth block {kb} does not divide {kk}")
    return np.ascontiguousarray(panels.reshape(groups, nb, kk // kb, kb, mr).transpose(0, 2, 1, 3, 4))


def unpack_weights_gemm_np(ap: np.ndarray, f: int, cg: int, kh: int, kw: int) -> np.ndarray:
    if ap.ndim == 5:            # depth-blocked: back to [G][panel][KK][mr]
        g, nkb, nb, kb, mr = ap.shape
        ap = ap.transpose(0, 2, 1, 3, 4).reshape(g, nb, nkb * kb, mr)
    g, nb, kk, mr = ap.shape
    a = ap.transpose(0, 1, 3, 2).reshape(g, nb * mr, kk)[:, :f // g]
    return np.ascontiguousarray(a.reshape(f, cg, kh, kw))


def blocked_input(wl: dict, ic_bn: int):
    """The conv input X (NCHW, or NCHW[ic_bn]c with layout "NCHWc") and xval(n, cb, y, q),
    its value at channel block cb, padded row y and padded blocked column q = x*ic_bn + c
    (the caller guards the padding)."""
    N, C, H, W = (wl[k] for k in ("N", "C", "H", "W"))
    top, left = wl["pad"][0], wl["pad"][1]
    if wl["layout"] == "NCHWc":
        X = te.placeholder((N, C // ic_bn, H, W, ic_bn), "float32", name="X")

        def xval(n, cb, y, q):
            return X[n, cb, y - top, q // ic_bn - left, q % ic_bn]
    else:
        X = te.placeholder((N, C, H, W), "float32", name="X")

        def xval(n, cb, y, q):
            return X[n, cb * ic_bn + q % ic_bn, y - top, q // ic_bn - left]
    return X, xval
