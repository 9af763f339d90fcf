"""The shipped micro-kernels: register-blocked GEMM (outer-product FMA) per
vector ISA, and an int8 dot product with int32 accumulation.

Each kernel is plain C99 with intrinsics, written out statement by statement
by the small generators below (fixed statement shapes, no expression
splicing).  `gemm_intrin(target)` / `dot_i8_intrin(target)` give the
intrinsic for a target, declared by its compute definition.
"""
from __future__ import annotations

from .. import te
from .intrin import KernelSource, TensorIntrin, from_compute, TensorizeError

GEMM_SIG = ("(int64_t K, const float *restrict A, {a_si}int64_t a_sk, "
            "const float *restrict B, int64_t b_sk, float *restrict C, int64_t c_si)")


def _gemm_x86(name, W, vt, load, store, set1, fma, MR, NR):
    nv = NR // W
    L = [f"static inline void {name}" + GEMM_SIG.format(a_si="int64_t a_si, ") + " {"]
    L.append("  int64_t k;")
    for r in range(MR):
        L.append(f"  const float *a{r} = A + {r} * a_si;")
    for r in range(MR):
        for v in range(nv):
            L.append(f"  {vt} c{r}_{v} = {load}(C + {r} * c_si + {v * W});")
    L.append("  for (k = 0; k < K; ++k) {")
    for v in range(nv):
        L.append(f"    {vt} b{v} = {load}(B + {v * W});")
    for r in range(MR):
        L.append(f"    {vt} a = {set1}(a{r}[0]);" if r == 0 else f"    a = {set1}(a{r}[0]);")
        for v in range(nv):
            L.append(f"    c{r}_{v} = {fma}(a, b{v}, c{r}_{v});")
    for r in range(MR):
        L.append(f"    a{r} += a_sk;")
    L.append("    B += b_sk;")
    L.append("  }")
    for r in range(MR):
        for v in range(nv):
            L.append(f"  {store}(C + {r} * c_si + {v * W}, c{r}_{v});")
    L.append("}")
    return "\n".join(L)


def _gemm_neon(name, MR, NR, a_loads, fma):
    """The NEON kernel shape: A packed with unit stride along i (its MR values loaded as
    vectors, rows taken by lane, no scalar loads), NR/4 vectors of B, an MR x NR/4 tile
    of accumulators.  a_loads: the statements loading A; fma(r, v): one row-by-lane update."""
    nv = NR // 4
    L = [f"static inline void {name}" + GEMM_SIG.format(a_si="") + " {", "  int64_t k;"]
    L += [f"  float32x4_t c{r}_{v} = vld1q_f32(C + {r} * c_si + {v * 4});"
          for r in range(MR) for v in range(nv)]
    L.append("  for (k = 0; k < K; ++k) {")
    L += [f"    {x}" for x in a_loads]
    L += [f"    float32x4_t b{v} = vld1q_f32(B + {v * 4});" for v in range(nv)]
    L += [f"    c{r}_{v} = {fma(r, v)};" for r in range(MR) for v in range(nv)]
    L += ["    A += a_sk;", "    B += b_sk;", "  }"]
    L += [f"  vst1q_f32(C + {r} * c_si + {v * 4}, c{r}_{v});" for r in range(MR) for v in range(nv)]
    L.append("}")
    return "\n".join(L)


def _gemm_neon_a64(name, MR, NR):
    """aarch64: fused multiply-add by a lane of a q register (fmla v.4s, v.4s, v.s[x])."""
    return _gemm_neon(name, MR, NR,
                      [f"float32x4_t a{q} = vld1q_f32(A + {q * 4});" for q in range(MR // 4)],
                      lambda r, v: f"vfmaq_laneq_f32(c{r}_{v}, b{v}, a{r // 4}, {r % 4})")


def _gemm_neon_a32(name, MR, NR):
    """armv7 (MR = 4): multiply-accumulate by a lane of a d register (vmla.f32 q, q, d[x])."""
    return _gemm_neon(name, MR, NR,
                      ["float32x4_t a = vld1q_f32(A);", "float32x2_t alo = vget_low_f32(a);",
                       "float32x2_t ahi = vget_high_f32(a);"],
                      lambda r, v: f"vmlaq_lane_f32(c{r}_{v}, b{v}, {'alo' if r < 2 else 'ahi'}, {r % 2})")


# (isa, arch) -> (MR, NR, unit strides, source maker)
_GEMM = {
    ("avx512", "x86_64"): (6, 32, False, lambda n: _gemm_x86(
        n, 16, "__m512", "_mm512_loadu_ps", "_mm512_storeu_ps", "_mm512_set1_ps", "_mm512_fmadd_ps", 6, 32)),
    ("avx2", "x86_64"): (6, 16, False, lambda n: _gemm_x86(
        n, 8, "__m256", "_mm256_loadu_ps", "_mm256_storeu_ps", "_mm256_set1_ps", "_mm256_fmadd_ps", 6, 16)),
    ("neon", "aarch64"): (8, 8, True, lambda n: _gemm_neon_a64(n, 8, 8)),
    ("neon", "armv7"): (4, 8, True, lambda n: _gemm_neon_a32(n, 4, 8)),
}


def gemm_shape(target) -> tuple:
    """(MR, NR) of the target's GEMM micro-kernel."""
    key = (target.isa, target.arch)
    if key not in _GEMM:
        raise TensorizeError(f"no GEMM micro-kernel for target {target.name} (isa {target.isa})")
    return _GEMM[key][:2]


def gemm_intrin(target) -> TensorIntrin:
    """C[i, j] += sum_k A[i, k] * B[k, j] on an MR x NR register tile.

    B and C must be contiguous along j; on NEON A must be packed (contiguous along i)."""
    key = (target.isa, target.arch)
    if key not in _GEMM:
        raise TensorizeError(f"no GEMM micro-kernel for target {target.name} (isa {target.isa})")
    MR, NR, a_unit, make = _GEMM[key]
    name = f"cg_gemm_{MR}x{NR}_{target.isa}_{target.arch}"
    A = te.placeholder((MR, 1), "float32", name="A")
    B = te.placeholder((1, NR), "float32", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((MR, NR), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    unit = {("b", "j"), ("c", "j")} | ({("a", "i")} if a_unit else set())
    return from_compute(name, C, {"i": MR, "j": NR}, unit, KernelSource(name, make(name)))


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
