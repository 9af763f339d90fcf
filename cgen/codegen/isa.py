"""Vector ISAs as tables: vector type, lane count and intrinsic names.

Codegen looks names up here; it never branches on the ISA.  A missing entry
means "not vectorizable on this ISA" and the vectorize pass leaves the loop
scalar (armv7 NEON has no vector divide, for example).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VectorISA:
    name: str
    header: str
    lanes: int                  # float32 lanes per register
    vtype: str
    load: str                   # (ptr) -> v
    store: str                  # (ptr, v)
    set1: str                   # (scalar) -> v
    binary: dict                # op -> intrinsic (a, b) -> v
    fma: str                    # fused multiply-add
    fma_order: tuple            # argument order of fma in terms of "acc", "a", "b"
    mask_type: str | None = None
    mask_load: str | None = None    # (mask, ptr) -> v, zeroing
    mask_store: str | None = None   # (ptr, mask, v)
    guard_macro: str = ""           # predefined macro that says the ISA is enabled

    @property
    def masked(self) -> bool:
        return self.mask_type is not None


NEON_AARCH64 = VectorISA(
    "neon-aarch64", "arm_neon.h", 4, "float32x4_t", "vld1q_f32", "vst1q_f32", "vdupq_n_f32",
    {"+": "vaddq_f32", "-": "vsubq_f32", "*": "vmulq_f32", "/": "vdivq_f32",
     "max": "vmaxq_f32", "min": "vminq_f32"},
    "vfmaq_f32", ("acc", "a", "b"), guard_macro="__ARM_NEON")

# armv7 NEON: no vector divide; vfmaq_f32 needs VFPv4 (-mfpu=neon-vfpv4).
NEON_ARMV7 = VectorISA(
    "neon-armv7", "arm_neon.h", 4, "float32x4_t", "vld1q_f32", "vst1q_f32", "vdupq_n_f32",
    {"+": "vaddq_f32", "-": "vsubq_f32", "*": "vmulq_f32", "max": "vmaxq_f32", "min": "vminq_f32"},
    "vfmaq_f32", ("acc", "a", "b"), guard_macro="__ARM_NEON")

AVX2 = VectorISA(
    "avx2", "immintrin.h", 8, "__m256", "_mm256_loadu_ps", "_mm256_storeu_ps", "_mm256_set1_ps",
    {"+": "_mm256_add_ps", "-": "_mm256_sub_ps", "*": "_mm256_mul_ps", "/": "_mm256_div_ps",
     "max": "_mm256_max_ps", "min": "_mm256_min_ps"},
    "_mm256_fmadd_ps", ("a", "b", "acc"), guard_macro="__AVX2__")

AVX512 = VectorISA(
    "avx512", "immintrin.h", 16, "__m512", "_mm512_loadu_ps", "_mm512_storeu_ps", "_mm512_set1_ps",
    {"+": "_mm512_add_ps", "-": "_mm512_sub_ps", "*": "_mm512_mul_ps", "/": "_mm512_div_ps",
     "max": "_mm512_max_ps", "min": "_mm512_min_ps"},
    "_mm512_fmadd_ps", ("a", "b", "acc"), "__mmask16", "_mm512_maskz_loadu_ps",
    "_mm512_mask_storeu_ps", guard_macro="__AVX512F__")

_BY_KEY = {("neon", "aarch64"): NEON_AARCH64, ("neon", "armv7"): NEON_ARMV7,
           ("avx2", "x86_64"): AVX2, ("avx512", "x86_64"): AVX512}


def isa_for(target) -> VectorISA | None:
    """The vector table of a target, or None for portable scalar C."""
    if target is None:
        return None
    return _BY_KEY.get((target.isa, target.arch))
