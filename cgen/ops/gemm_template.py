"""GEMM template: the packed micro-kernel schedule with its blocking knobs.

Knobs (every combination builds and computes C = A @ B):
  MR        micro-kernel rows (x86: generated kernels of 4, 6, 8, 12 rows on AVX-512,
            4 or 6 on AVX2; elsewhere 0, the target's shipped kernel)
  unroll    k steps per micro-kernel loop iteration (generated kernels)
  prefetch  B prefetch distance in k steps, 0 = none (generated kernels)
  pack_a    pack A into MR-row panels, or let the kernel read A in place
  MC NC KC  block sizes (rounded to multiples of MR / NR by the builder)
  order     micro-tile loop order ("ji": B micro-panel reused, "ij": A micro-panel reused)
  parallel  OpenMP over the column blocks (targets with threads)
"""
from __future__ import annotations

import numpy as np

from .common import config_dict
from .space import ConfigSpace, Knob
from .gemm import GemmConfig, generated_kernels, kernel_rows, kernel_shape, packed_gemm
from .tophub import best_known
from targets import resolve

MC_CHOICES = (48, 96, 144, 192, 288)
NC_PANELS = (2, 4, 8, 16, 32)
KC_CHOICES = (64, 128, 256, 384, 512)
UNROLL_CHOICES = (1, 2, 4)
PREFETCH_CHOICES = (0, 4, 8)


def gemm_knobs(M: int, N: int, K: int, target, mr_choices=None) -> list:
    """The blocking and micro-kernel knobs shared by the GEMM-shaped templates."""
    tgt = resolve(target)
    rows = tuple(mr_choices if mr_choices is not None else kernel_rows(tgt))
    # kernels taller than the matrix only ever run their scalar fallback: keep them out
    fit = tuple(r for r in rows if r <= max(M, min(rows)))
    NR = kernel_shape(tgt, fit[0])[1]
    mr_max = max(kernel_shape(tgt, r)[0] for r in fit)
    mc = sorted({min(m, -(-M // mr_max) * mr_max) for m in MC_CHOICES})
    nc = sorted({min(n * NR, -(-N // NR) * NR) for n in NC_PANELS})
    kc = sorted({min(k, K) for k in KC_CHOICES})
    knobs = [Knob("MR", fit)]
    if generated_kernels(tgt):
        knobs += [Knob("unroll", UNROLL_CHOICES), Knob("prefetch", PREFETCH_CHOICES)]
    knobs += [Knob("pack_a", (True, False)), Knob("MC", tuple(mc)), Knob("NC", tuple(nc)),
              Knob("KC", tuple(kc)), Knob("order", ("ji", "ij"))]
    if tgt.can_thread:
        knobs.append(Knob("parallel", (False, True)))
    return knobs


def gemm_default_values(tgt) -> dict:
    """The untuned choice per target family (measured on the development machine for
    AVX-512: an 8 x 32 kernel unrolled twice, B prefetched 8 steps ahead, KC 384, A read
    in place)."""
    if generated_kernels(tgt) and tgt.isa == "avx512":
        return {"MR": 8, "unroll": 2, "prefetch": 8, "pack_a": False, "MC": 144, "NC": 512,
                "KC": 384, "order": "ji", "parallel": False}
    if generated_kernels(tgt):
        return {"MR": 6, "unroll": 2, "prefetch": 0, "pack_a": False, "MC": 144, "NC": 256,
                "KC": 256, "order": "ji", "parallel": False}
    MR, NR = kernel_shape(tgt, 0)
    return {"MR": 0, "pack_a": True, "MC": 8 * MR, "NC": 16 * NR, "KC": 256, "order": "ji",
            "parallel": False}


# variations of the default worth measuring first (a quick sweep's head start): knob -> value
QUICK_VARIANTS = ({"prefetch": 0}, {"unroll": 1}, {"KC": 128}, {"KC": 256}, {"pack_a": True},
                  {"MR": 12}, {"MR": 4}, {"MC": 96}, {"MC": 192}, {"NC": 128}, {"order": "ij"})


def quick_variants(space: ConfigSpace, default) -> list:
    """Configs one knob away from the default (QUICK_VARIANTS that the space has)."""
    out = []
    for change in QUICK_VARIANTS:
        want = dict(default.to_dict())
        if not all(k in want for k in change):
            continue
        want.update(change)
        c = space.nearest(want)
        if c.index != default.index and c.index not in {o.index for o in out}:
            out.append(c)
    return out


def gemm_config(c: dict, **fixed) -> GemmConfig:
    """GemmConfig from a config's knob values (knobs a space lacks keep their defaults)."""
    names = ("MC", "NC", "KC", "order", "parallel", "MR", "unroll", "prefetch", "pack_a", "block")
    kw = {n: c[n] for n in names if n in c}
    kw.update(fixed)
    if "parallel" in kw:
        kw["parallel"] = bool(kw["parallel"])
    return GemmConfig(**kw)


class GemmTemplate:
    name = "gemm"

    def workload(self, M: int, N: int, K: int, dtype: str = "float32") -> dict:
        return {"op": "gemm", "M": int(M), "N": int(N), "K": int(K), "dtype": dtype}

    def space(self, wl: dict, target) -> ConfigSpace:
        return ConfigSpace(tuple(gemm_knobs(wl["M"], wl["N"], wl["K"], target)))

    def build(self, wl: dict, target, config):
        c = config_dict(config)
        return packed_gemm(wl["M"], wl["N"], wl["K"], target, gemm_config(c))

    def default(self, wl: dict, target):
        """The shipped best config of the nearest measured workload (cgen.ops.tophub), else
        the target family's untuned choice; projected onto this workload's space."""
        want = best_known(self.name, target, wl) or gemm_default_values(resolve(target))
        return self.space(wl, target).nearest(want)

    def quick_configs(self, wl: dict, target) -> list:
        """A few configs one knob away from the default, for a short sweep to try first."""
        return quick_variants(self.space(wl, target), self.default(wl, target))

    def inputs(self, wl: dict, rng) -> list:
        M, N, K = wl["M"], wl["N"], wl["K"]
        return [rng.random((M, K), dtype=np.float32), rng.random((K, N), dtype=np.float32),
                np.zeros((M, N), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        return {"C": inputs[0] @ inputs[1]}

    def flops(self, wl: dict) -> int:
        return 2 * wl["M"] * wl["N"] * wl["K"]


def gemm_templates() -> list:
    return [GemmTemplate()]
