"""The shipped micro-kernels: a register-blocked GEMM (outer-product FMA) per ISA
row, and an int8 dot product with int32 accumulation.

The GEMM kernel's C comes from the one generator (cgen.tensorize.microkernel) and
its shape from the ISA row (`gemm_tile`).  `gemm_intrin(target)` /
`dot_i8_intrin(target)` give the intrinsic for a target, declared by its compute
definition.
"""
from __future__ import annotations

from .. import te
from ..codegen.isa import kernel_isa
from .intrin import KernelSource, TensorIntrin, from_compute, TensorizeError
from .microkernel import tile_kernel


def _gemm_row(target):
    isa = kernel_isa(target)
    if isa is None or not isa.gemm_tile:
        raise TensorizeError(f"no GEMM micro-kernel for target {target.name} (isa {target.isa})")
    return isa


def gemm_shape(target) -> tuple:
    """(MR, NR) of the target's GEMM micro-kernel."""
    return _gemm_row(target).gemm_tile[:2]


def gemm_intrin(target) -> TensorIntrin:
    """C[i, j] += sum_k A[i, k] * B[k, j] on an MR x NR register tile (the ISA row's
    shipped tile; targets without SIMD get the plain-C register tile).

    B and C must be contiguous along j; where the tile reads A by lane (NEON) A must be
    packed (contiguous along i)."""
    isa = _gemm_row(target)
    MR, NR, a_read = isa.gemm_tile
    name = (f"cg_gemm_{MR}x{NR}_scalar" if isa.scalar
            else f"cg_gemm_{MR}x{NR}_{target.isa}_{target.arch}")
    A = te.placeholder((MR, 1), "float32", name="A")
    B = te.placeholder((1, NR), "float32", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((MR, NR), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    unit = {("b", "j"), ("c", "j")} | ({("a", "i")} if a_read == "lanes" else set())
    return from_compute(name, C, {"i": MR, "j": NR}, unit,
                        KernelSource(name, tile_kernel(name, isa, MR, NR, a_read=a_read)))


# ---------------------------------------------------------------------------
# int8 dot product: c += sum_k int32(a[k]) * int32(b[k])

_DOT_SIG = "(int64_t K, const int8_t *restrict A, const int8_t *restrict B, int32_t *restrict C)"

_DOT_AVX2 = """static inline void {name}""" + _DOT_SIG + """ {
  __m256i acc = _mm256_setzero_si256();
  int64_t k = 0;
  int32_t lanes[8];
  int32_t s = 0;
  int q;
  for (; k + 16 <= K; k += 16) {
    __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(A + k)));
    __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(B + k)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
  }
  _mm256_storeu_si256((__m256i *)(void *)lanes, acc);
  for (q = 0; q < 8; ++q) s += lanes[q];
  for (; k < K; ++k) s += (int32_t)A[k] * (int32_t)B[k];
  *C += s;
}"""

_DOT_NEON = """static inline void {name}""" + _DOT_SIG + """ {
  int32x4_t acc = vdupq_n_s32(0);
  int64_t k = 0;
  int32_t lanes[4];
  int32_t s = 0;
  int q;
  for (; k + 16 <= K; k += 16) {
    int8x16_t a = vld1q_s8(A + k);
    int8x16_t b = vld1q_s8(B + k);
    int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    int16x8_t hi = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    acc = vpadalq_s16(acc, lo);
    acc = vpadalq_s16(acc, hi);
  }
  vst1q_s32(lanes, acc);
  for (q = 0; q < 4; ++q) s += lanes[q];
  for (; k < K; ++k) s += (int32_t)A[k] * (int32_t)B[k];
  *C += s;
}"""

_DOT = {("avx2", "x86_64"): _DOT_AVX2, ("avx512", "x86_64"): _DOT_AVX2,
        ("neon", "aarch64"): _DOT_NEON, ("neon", "armv7"): _DOT_NEON}


def dot_i8_intrin(target) -> TensorIntrin:
    """C += sum_k int32(A[k]) * int32(B[k]) for contiguous int8 A and B."""
    key = (target.isa, target.arch)
    if key not in _DOT:
        raise TensorizeError(f"no int8 dot micro-kernel for target {target.name} (isa {target.isa})")
    name = f"cg_dot_s8_{target.isa}_{target.arch}"
    A = te.placeholder((1, 1), "int8", name="A")
    B = te.placeholder((1, 1), "int8", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((1,), lambda i: te.sum(A[0, k].astype("int32") * B[0, k].astype("int32"), axis=k),
                   name="C")
    # the output axis has extent 1 in the definition: the kernel covers the k loop only
    intr = from_compute(name, C, {}, {("a", "k"), ("b", "k")}, KernelSource(name, _DOT[key].replace("{name}", name)))
    roles = tuple(r for r in intr.roles if r != "i")
    operands = {t: frozenset(r for r in rs if r != "i") for t, rs in intr.operands.items()}
    from dataclasses import replace
    return replace(intr, roles=roles, operands=operands)
