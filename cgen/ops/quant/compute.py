"""The quantized computes: qconv2d and qdense in te, per algorithm (direct, packed*)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import te
from ...te.expr import const
from ...te.tensor import Tensor
from .requant import QParams, make_qparams


@dataclass
class QOp:
    """A quantized operator's tensors: output, build arguments in order, named stages."""
    out: Tensor
    args: list
    stages: dict
    qp: QParams


# algo -> (activation domain, weight domain) of the packed operands
DOMAINS = {"packed": ("int8", "int8"), "packed_dot": ("int8", "int8"),
           "packed_tile": ("uint8", "int8"), "packed_tile_s8": ("int8", "int8")}


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
