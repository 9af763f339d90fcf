"""Dense / matmul templates: transposes, a fused epilogue.

Templates over the packed GEMM of cgen.ops.gemm (packing as a te compute: a
transposed operand is packed by reading it transposed, so the micro-kernel
never changes); batch_matmul (cgen.ops.batch_matmul) is the same protocol with
batch dimensions:

  matmul        C = epilogue(op(A) @ op(B)), A (M, K) or (K, M), B (K, N) or (N, K)
  dense         y = epilogue(x @ W^T): x (M, K), W (N, K) (ONNX Gemm transB=1, PyTorch
                Linear), W either as is ("plain") or pre-packed ("packed": panels of
                b_block columns, (ceil(N / b_block), K, b_block), zero padded; `pack_b`
                makes them from W.T; `panel_columns(target)` is the panel width the
                target's micro-kernel streams best, b_block a multiple of its NR).  Few
                rows (M <= GEMV_ROWS, packed weights, ISAs with generated tiles) take the
                GEMV path: an M-row micro-kernel streaming the weight panels (vectorized
                over N, memory bound), with its own knobs.

Every config of every space tensorizes on every target with a GEMM tile (each ISA
row of cgen.codegen.isa, the scalar row included): the MR choices never exceed M
where the ISA generates tiles of any height, and "direct" accumulation (in place,
partial edge tiles) is offered only when a whole tile fits the matrix.

The epilogue is a list of steps applied in order to the accumulated tile:
"bias" (+ bias[j]), "residual" (+ R[..., i, j]), "relu", "relu6", "clip"
(to wl["clip"] = [lo, hi]), "sigmoid", "tanh".  It is computed in the same
kernel: the accumulation runs into an M x NC column-block buffer (padded to
whole micro-tiles) computed at the epilogue stage's column-block loop (knob
`block` "goto"); without an epilogue, "direct" accumulates in the output itself.
"""
from __future__ import annotations

import numpy as np

from .common import config_dict
from .space import ConfigSpace, Knob
from .gemm import (EPILOGUE_STEPS, MatmulSpec, generated_kernels, kernel_rows, kernel_shape,
                   one_row_kernel, matmul_reference, pack_b, packed_matmul)
from .gemm_template import (gemm_config, gemm_default_values, gemm_knobs,
                            quick_variants)
from .tophub import best_known
from targets import resolve

GEMV_ROWS = 4
DEFAULT_B_BLOCK = 32


def _epilogue(epilogue) -> list:
    steps = [str(s) for s in (epilogue or ())]
    for s in steps:
        if s not in EPILOGUE_STEPS:
            raise ValueError(f"unknown epilogue step {s!r}; one of {EPILOGUE_STEPS}")
    return steps


def _clip(clip) -> list:
    lo, hi = (0.0, 6.0) if clip is None else clip
    if not float(lo) <= float(hi):
        raise ValueError(f"clip bounds must satisfy lo <= hi, got {clip}")
    return [float(lo), float(hi)]


def _spec(wl: dict) -> MatmulSpec:
    lo, hi = wl.get("clip", [0.0, 6.0])
    if wl["op"] == "dense":
        packed = wl["weights"] == "packed"
        return MatmulSpec(wl["M"], wl["N"], wl["K"], trans_b=not packed,
                          b_block=wl["b_block"] if packed else 0,
                          epilogue=tuple(wl["epilogue"]), clip_lo=lo, clip_hi=hi)
    return MatmulSpec(wl["M"], wl["N"], wl["K"], a_batch=tuple(wl["a_batch"]),
                      b_batch=tuple(wl["b_batch"]), trans_a=wl["trans_a"], trans_b=wl["trans_b"],
                      epilogue=tuple(wl["epilogue"]), clip_lo=lo, clip_hi=hi)


def shipped_knobs(name: str, wl: dict, target, space: ConfigSpace):
    """The shipped best knobs of the nearest measured workload (cgen.ops.tophub), or None
    when there are none or they are another path's (a GEMV entry for a GEMM-shaped dense)."""
    want = best_known(name, target, wl)
    if want is None or set(want) - {"parallel"} != set(space.names()) - {"parallel"}:
        return None
    return want


def matmul_rows(M: int, target) -> tuple:
    """The MR choices for an M-row matmul: where the ISA generates tiles of any height, a
    matrix shorter than the shortest tile gets an M-row tile (a taller one would only
    compute padding)."""
    rows = tuple(kernel_rows(target))
    if generated_kernels(target) and M < min(rows):
        return (M,)
    return rows


def _block_knob(spec: MatmulSpec, knobs: list, target) -> Knob:
    """"direct" accumulates in the output in place: only without an epilogue, and only when
    a whole micro-tile fits the matrix (else no tile is ever full and nothing tensorizes)."""
    rows = next(k.choices for k in knobs if k.name == "MR")
    MR = max(kernel_shape(target, r)[0] for r in rows)
    NR = kernel_shape(target, rows[0])[1]
    direct_ok = not spec.epilogue and spec.M >= MR and spec.N >= NR
    return Knob("block", ("direct", "goto") if direct_ok else ("goto",))


class _MatmulBase:
    """The protocol over a MatmulSpec; subclasses make workloads."""
    name = "matmul"

    def spec(self, wl: dict) -> MatmulSpec:
        return _spec(wl)

    def space(self, wl: dict, target) -> ConfigSpace:
        sp, tgt = self.spec(wl), resolve(target)
        knobs = gemm_knobs(sp.M, sp.N, sp.K, tgt, matmul_rows(sp.M, tgt))
        return ConfigSpace(tuple(knobs) + (_block_knob(sp, knobs, tgt),))

    def build(self, wl: dict, target, config):
        c = config_dict(config)
        return packed_matmul(self.spec(wl), target, gemm_config(c))

    def default(self, wl: dict, target):
        """The shipped best config of the nearest measured workload (cgen.ops.tophub), else
        the target family's GEMM choice; projected onto this workload's space."""
        tgt = resolve(target)
        space = self.space(wl, tgt)
        want = shipped_knobs(self.name, wl, tgt, space)
        if want is None:
            want = dict(gemm_default_values(tgt))
            want["block"] = "goto" if self.spec(wl).epilogue else "direct"
        return space.nearest(want)

    def quick_configs(self, wl: dict, target) -> list:
        """A few configs one knob away from the default, for a short sweep to try first."""
        return quick_variants(self.space(wl, target), self.default(wl, target))

    def inputs(self, wl: dict, rng) -> list:
        sp = self.spec(wl)
        a_shape = sp.a_batch + ((sp.K, sp.M) if sp.trans_a else (sp.M, sp.K))
        b_shape = sp.b_batch + ((sp.N, sp.K) if sp.trans_b else (sp.K, sp.N))
        out = [_values(rng, a_shape), _values(rng, b_shape)]
        if "bias" in sp.epilogue:
            out.append(_values(rng, (sp.N,)))
        if "residual" in sp.epilogue:
            out.append(_values(rng, sp.batch + (sp.M, sp.N)))
        return out + [np.zeros(sp.batch + (sp.M, sp.N), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        return {"C": matmul_reference(self.spec(wl), *inputs[:-1])}

    def flops(self, wl: dict) -> int:
        sp = self.spec(wl)
        return 2 * int(np.prod(sp.batch, dtype=np.int64)) * sp.M * sp.N * sp.K


def _values(rng, shape) -> np.ndarray:
    """Inputs in [-1, 1): sums of both signs (an epilogue's clip and relu see both)."""
    return (rng.random(shape, dtype=np.float32) * 2 - 1).astype(np.float32)


class MatmulTemplate(_MatmulBase):
    name = "matmul"

    def workload(self, M: int, N: int, K: int, trans_a: bool = False, trans_b: bool = False,
                 epilogue=(), clip=None, dtype: str = "float32") -> dict:
        wl = {"op": self.name, "M": int(M), "N": int(N), "K": int(K), "trans_a": bool(trans_a),
              "trans_b": bool(trans_b), "a_batch": [], "b_batch": [],
              "epilogue": _epilogue(epilogue), "clip": _clip(clip), "dtype": dtype}
        _spec(wl)  # checks
        return wl


class DenseTemplate(_MatmulBase):
    """y = epilogue(x @ W^T), the GEMV path for few rows with pre-packed weights."""
    name = "dense"

    def workload(self, M: int, N: int, K: int, epilogue=("bias",), weights: str = "plain",
                 b_block: int = DEFAULT_B_BLOCK, clip=None, dtype: str = "float32") -> dict:
        if weights not in ("plain", "packed"):
            raise ValueError(f"dense: weights must be 'plain' or 'packed', got {weights!r}")
        wl = {"op": self.name, "M": int(M), "N": int(N), "K": int(K),
              "epilogue": _epilogue(epilogue), "weights": weights,
              "b_block": int(b_block) if weights == "packed" else 0, "clip": _clip(clip),
              "dtype": dtype}
        _spec(wl)
        return wl

    @staticmethod
    def panel_columns(target) -> int:
        """The weight panel width for a target: its micro-kernel's NR (each panel is then
        one contiguous stream of K x NR values)."""
        return kernel_shape(resolve(target), 0)[1]

    def gemv(self, wl: dict, target) -> bool:
        """Whether the workload takes the GEMV path on the target."""
        tgt = resolve(target)
        return wl["M"] <= GEMV_ROWS and wl["weights"] == "packed" and (
            generated_kernels(tgt) or (wl["M"] == 1 and one_row_kernel(tgt)))

    def space(self, wl: dict, target) -> ConfigSpace:
        tgt = resolve(target)
        NR = self.panel_columns(tgt)
        if wl["weights"] == "packed" and wl["b_block"] % NR:
            raise ValueError(f"dense: weight panels of {wl['b_block']} columns do not split into "
                             f"the {NR}-column tiles of target {tgt.name}; pack them with "
                             f"b_block = a multiple of {NR}")
        if not self.gemv(wl, tgt):
            return super().space(wl, tgt)
        bb, N = wl["b_block"], wl["N"]
        nc = sorted({min(bb * n, -(-N // bb) * bb) for n in (1, 2, 4, 8, 16, 32)})
        knobs = [Knob("NC", tuple(nc)), Knob("unroll", (1, 2, 4, 8)),
                 Knob("prefetch", (0, 8, 16, 32))]
        if tgt.can_thread:
            knobs.append(Knob("parallel", (False, True)))
        return ConfigSpace(tuple(knobs))

    def build(self, wl: dict, target, config):
        tgt = resolve(target)
        if not self.gemv(wl, tgt):
            return super().build(wl, tgt, config)
        c = config_dict(config)
        M, K = wl["M"], wl["K"]
        cfg = gemm_config(c, MR=M, MC=M, KC=K, pack_a=False, block="goto")
        return packed_matmul(self.spec(wl), tgt, cfg)

    def default(self, wl: dict, target):
        tgt = resolve(target)
        if not self.gemv(wl, tgt):
            return super().default(wl, tgt)
        # untuned: weight panels prefetched 16 k steps ahead, 4 steps per loop iteration,
        # 256-column blocks (the shipped table has the measured choice per ISA)
        # Where only the one-row kernel is generated (NEON): 8 steps, no prefetch -- the
        # weights are one sequential stream the core's own prefetcher follows, and a prfm
        # per k step costs as much as a load (aarch64 icount: 4599 ticks against 5902 for
        # u4/p16 on 256x512)
        space = self.space(wl, tgt)
        untuned = ({"NC": 256, "unroll": 4, "prefetch": 16, "parallel": False}
                   if generated_kernels(tgt) else
                   {"NC": 256, "unroll": 8, "prefetch": 0, "parallel": False})
        want = shipped_knobs(self.name, wl, tgt, space) or untuned
        return space.nearest(want)

    def quick_configs(self, wl: dict, target) -> list:
        tgt = resolve(target)
        if not self.gemv(wl, tgt):
            return super().quick_configs(wl, tgt)
        sp, d = self.space(wl, tgt), self.default(wl, tgt)
        out = []
        for change in ({"prefetch": 8}, {"unroll": 8}, {"NC": 128}, {"prefetch": 0}):
            c = sp.nearest({**d.to_dict(), **change})
            if c.index != d.index and c not in out:
                out.append(c)
        return out

    def inputs(self, wl: dict, rng) -> list:
        sp = self.spec(wl)
        x = _values(rng, (sp.M, sp.K))
        w = _values(rng, (sp.N, sp.K))
        out = [x, pack_b(np.ascontiguousarray(w.T), sp.b_block) if sp.b_block else w]
        if "bias" in sp.epilogue:
            out.append(_values(rng, (sp.N,)))
        if "residual" in sp.epilogue:
            out.append(_values(rng, (sp.M, sp.N)))
        return out + [np.zeros((sp.M, sp.N), np.float32)]


def dense_templates() -> tuple:
    """Fresh instances of this module's templates (for cgen.ops.registry)."""
    return (MatmulTemplate(), DenseTemplate())
