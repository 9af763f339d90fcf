"""Packed GEMM: the BLIS-style algorithm written as te + a schedule.

A and B are packed into panels (MR rows / NR columns contiguous per k, zero
padded), the packed tiles are computed at the blocking loops (so each packed
tile is a small contiguous buffer), and the MR x NR register tile is the
target's tensorized micro-kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import te
from ..tensorize import gemm_intrin, gemm_shape
from targets import resolve


@dataclass(frozen=True)
class GemmConfig:
    MC: int = 144      # rows of A per packed block (multiple of MR)
    NC: int = 512      # columns of B per packed block (multiple of NR)
    KC: int = 256      # depth of a packed block
    order: str = "ji"  # micro-tile loop order: "ji" (B panel reused) or "ij" (A panel reused)
    parallel: bool = False  # OpenMP over the NC blocks


def packed_gemm(M: int, N: int, K: int, target="host", cfg: GemmConfig = GemmConfig()):
    """(schedule, [A, B, C]) computing C = A @ B with the target's micro-kernel."""
    tgt = resolve(target)
    MR, NR = gemm_shape(tgt)
    MC = max(MR, cfg.MC // MR * MR)
    NC = max(NR, cfg.NC // NR * NR)
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    Mp, Np = -(-M // MR), -(-N // NR)
    # clamped indices keep the (unselected) loads inside the arrays
    Ap = te.compute((Mp, K, MR), lambda io, k, ii: te.if_then_else(
        io * MR + ii < M, A[te.minimum(io * MR + ii, M - 1), k], 0.0), name="Ap")
    Bp = te.compute((Np, K, NR), lambda jo, k, ji: te.if_then_else(
        jo * NR + ji < N, B[k, te.minimum(jo * NR + ji, N - 1)], 0.0), name="Bp")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(Ap[i // MR, k, i % MR] * Bp[j // NR, k, j % NR], axis=k),
                   name="C")
    s = te.create_schedule(C)
    i, j = s[C].op.axis
    jc, j1 = s[C].split(j, NC)
    jr, jj = s[C].split(j1, NR)
    kc, kk = s[C].split(k, cfg.KC)
    ic, i1 = s[C].split(i, MC)
    ir, ii = s[C].split(i1, MR)
    if cfg.order == "ji":
        s[C].reorder(jc, kc, ic, jr, ir, kk, ii, jj)
    else:
        s[C].reorder(jc, kc, ic, ir, jr, kk, ii, jj)
    s[C].tensorize(kk, gemm_intrin(tgt))
    s[Bp].compute_at(s[C], kc)
    s[Ap].compute_at(s[C], ic)
    if cfg.parallel and tgt.threads and not tgt.bare_metal:
        s[C].parallel(jc)
    return s, [A, B, C]
