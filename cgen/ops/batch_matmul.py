"""Batched matmul: numpy.matmul over (B..., M, K) x (B..., K, N), for attention.

The batch dimensions broadcast like numpy's (right-aligned, 1 stretches), either
operand may be transposed in its last two axes (Q.K^T is trans_b), and the dense
templates' epilogue steps apply.  The schedule is the packed GEMM of
cgen.ops.gemm with the batch loops outermost: each batch's operands are packed
into micro-kernel panels (a transposed or broadcast operand is packed by reading
it so; a broadcast operand's panels are indexed by its own batch, never copied),
and every MR x NR tile is the target's GEMM micro-kernel, the same tiles dense
and gemm use.  Knobs, defaults and legality are the matmul template's.
"""
from __future__ import annotations

from .dense import _MatmulBase, _clip, _epilogue, _spec


class BatchMatmulTemplate(_MatmulBase):
    """numpy.matmul semantics on the batch dimensions (broadcast, right-aligned)."""
    name = "batch_matmul"

    def workload(self, a_shape, b_shape, trans_a: bool = False, trans_b: bool = False,
                 epilogue=(), clip=None, dtype: str = "float32") -> dict:
        a_shape, b_shape = tuple(int(x) for x in a_shape), tuple(int(x) for x in b_shape)
        if len(a_shape) < 2 or len(b_shape) < 2:
            raise ValueError(f"batch_matmul: operands need 2+ dimensions, got {a_shape}, {b_shape}")
        M, Ka = (a_shape[-1], a_shape[-2]) if trans_a else a_shape[-2:]
        Kb, N = (b_shape[-1], b_shape[-2]) if trans_b else b_shape[-2:]
        if Ka != Kb:
            raise ValueError(f"batch_matmul: inner dimensions differ: {a_shape}, {b_shape}")
        wl = {"op": self.name, "M": int(M), "N": int(N), "K": int(Ka), "trans_a": bool(trans_a),
              "trans_b": bool(trans_b), "a_batch": list(a_shape[:-2]), "b_batch": list(b_shape[:-2]),
              "epilogue": _epilogue(epilogue), "clip": _clip(clip), "dtype": dtype}
        _spec(wl)
        return wl


def batch_matmul_templates() -> tuple:
    """Fresh instances of this module's templates (for cgen.ops.registry)."""
    return (BatchMatmulTemplate(),)
