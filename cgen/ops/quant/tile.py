"""The u8 x s8 register-tile micro-kernel: C source per ISA and its tensor intrinsic."""
from __future__ import annotations

from ... import te
from targets import resolve


# =============================================================================
# u8 x s8 register-tile micro-kernel
# =============================================================================
# C[i, j] += sum_k int32(A[i, k]) * int32(B[j, k]) on an MR x NR tile, A (uint8) and
# B (int8) contiguous along k, any K: MR*NR dot products sharing their loads,
# reduced across lanes once per call.  The products are exact: AVX-512 VNNI
# (vpdpbusd, u8 x s8 in groups of 4 into int32) when the compiler enables it,
# else widening to int16 and pmaddwd / vmlal (no int16 saturation anywhere).

_TILE_SIG = ("(int64_t K, const uint8_t *restrict A, int64_t a_si, const int8_t *restrict B, "
             "int64_t b_sj, int32_t *restrict C, int64_t c_si, int64_t c_sj)")


def _tile_x86_512(name, MR, NR):
    """MR x NR (MR in 1, 2, 4): one loop of masked loads (the last chunk zero-filled), then per
    channel j the MR dot products reduced together (unpack / add / fold to 128 bits)."""
    L = [f"static inline void {name}{_TILE_SIG} {{", "  int64_t k;"]
    acc = [(r, j) for r in range(MR) for j in range(NR)]
    for r, j in acc:
        L.append(f"  __m512i c{r}_{j} = _mm512_setzero_si512();")

    def body(load_a, load_b, op, indent="    "):
        out = []
        for r in range(MR):
            out.append(f"{indent}__m512i a{r} = {load_a.format(p=f'A + {r} * a_si + k')};")
        for j in range(NR):
            out.append(f"{indent}__m512i b{j} = {load_b.format(p=f'B + {j} * b_sj + k')};")
        for r, j in acc:
            out.append(f"{indent}c{r}_{j} = {op.format(c=f'c{r}_{j}', a=f'a{r}', b=f'b{j}')};")
        return out
    L.append("#if defined(__AVX512VNNI__)")
    L.append("  for (k = 0; k < K; k += 64) {")
    L.append("    __mmask64 m = K - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1) << (K - k)) - 1;")
    L += body("_mm512_maskz_loadu_epi8(m, (const void *)({p}))",
              "_mm512_maskz_loadu_epi8(m, (const void *)({p}))", "_mm512_dpbusd_epi32({c}, {a}, {b})")
    L.append("  }")
    L.append("#else")
    L.append("  for (k = 0; k < K; k += 32) {")
    L.append("    __mmask32 m = K - k >= 32 ? ~(__mmask32)0 : (((__mmask32)1) << (K - k)) - 1;")
    L += body("_mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, (const void *)({p})))",
              "_mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, (const void *)({p})))",
              "_mm512_add_epi32({c}, _mm512_madd_epi16({a}, {b}))")
    L.append("  }")
    L.append("#endif")
    if MR == 1:
        L.append("  (void)c_si;")
    for j in range(NR):
        if MR == 1:
            L.append(f"  C[{j} * c_sj] += _mm512_reduce_add_epi32(c0_{j});")
            continue
        L.append("  {")
        L.append(f"    __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(c0_{j}, c1_{j}), "
                 f"_mm512_unpackhi_epi32(c0_{j}, c1_{j}));")
        if MR == 4:
            L.append(f"    __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(c2_{j}, c3_{j}), "
                     f"_mm512_unpackhi_epi32(c2_{j}, c3_{j}));")
            L.append("    __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), "
                     "_mm512_unpackhi_epi64(t0, t1));")
        else:   # lanes [a, b, a, b] per 128 bits
            L.append("    __m512i u = _mm512_add_epi32(t0, _mm512_shuffle_epi32(t0, (_MM_PERM_ENUM)0x4e));")
        L.append("    __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64(u, 1));")
        L.append("    __m128i q = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));")
        L.append(f"    int32_t *c = C + {j} * c_sj;")
        if MR == 4:
            L.append("    if (c_si == 1) {")
            L.append("      _mm_storeu_si128((__m128i *)(void *)c, _mm_add_epi32(_mm_loadu_si128("
                     "(const __m128i *)(const void *)c), q));")
            L.append("    } else {")
            L.append("      c[0] += _mm_cvtsi128_si32(q);")
            L.append("      c[c_si] += _mm_extract_epi32(q, 1);")
            L.append("      c[2 * c_si] += _mm_extract_epi32(q, 2);")
            L.append("      c[3 * c_si] += _mm_extract_epi32(q, 3);")
            L.append("    }")
        else:
            L.append("    c[0] += _mm_cvtsi128_si32(q);")
            L.append("    c[c_si] += _mm_extract_epi32(q, 1);")
        L.append("  }")
    L.append("}")
    return "\n".join(L)


def _vector_k_end(step: int) -> str:
    """The end of the vector loop over k (a multiple of `step`), declared before it.  The
    scalar tail starts there, not where the vector loop happened to stop: from the vector
    loop's exit test alone (k + step > K) gcc cannot see that k <= K, so on a 32-bit target
    it follows an infeasible path where the tail would wrap around the address space and
    fails with -Werror=aggressive-loop-optimizations ("iteration 4294967295 invokes
    undefined behavior").  From kv it sees at most step - 1 tail iterations."""
    return f"  const int64_t kv = K - K % {step};"


def _scalar_tail(MR, NR, indent="  "):
    out = [f"{indent}for (k = kv; k < K; ++k) {{"]
    for r in range(MR):
        for j in range(NR):
            out.append(f"{indent}  s{r}_{j} += (int32_t)A[{r} * a_si + k] * (int32_t)B[{j} * b_sj + k];")
    out.append(f"{indent}}}")
    return out


def _tile_avx2(name, MR, NR):
    L = [f"static inline void {name}{_TILE_SIG} {{", "  int64_t k = 0;", _vector_k_end(16),
         "  __m128i h;"]
    acc = [(r, j) for r in range(MR) for j in range(NR)]
    for r, j in acc:
        L.append(f"  __m256i c{r}_{j} = _mm256_setzero_si256();")
        L.append(f"  int32_t s{r}_{j};")
    L.append("  for (; k < kv; k += 16) {")
    for r in range(MR):
        L.append(f"    __m256i a{r} = _mm256_cvtepu8_epi16(_mm_loadu_si128("
                 f"(const __m128i *)(const void *)(A + {r} * a_si + k)));")
    for j in range(NR):
        L.append(f"    __m256i b{j} = _mm256_cvtepi8_epi16(_mm_loadu_si128("
                 f"(const __m128i *)(const void *)(B + {j} * b_sj + k)));")
    for r, j in acc:
        L.append(f"    c{r}_{j} = _mm256_add_epi32(c{r}_{j}, _mm256_madd_epi16(a{r}, b{j}));")
    L.append("  }")
    for r, j in acc:
        L.append(f"  h = _mm_add_epi32(_mm256_castsi256_si128(c{r}_{j}), _mm256_extracti128_si256(c{r}_{j}, 1));")
        L.append("  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));")
        L.append("  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));")
        L.append(f"  s{r}_{j} = _mm_cvtsi128_si32(h);")
    L += _scalar_tail(MR, NR)
    for r, j in acc:
        L.append(f"  C[{r} * c_si + {j} * c_sj] += s{r}_{j};")
    L.append("}")
    return "\n".join(L)


def _tile_neon(name, MR, NR, a64: bool):
    L = [f"static inline void {name}{_TILE_SIG} {{", "  int64_t k = 0;", _vector_k_end(8)]
    acc = [(r, j) for r in range(MR) for j in range(NR)]
    for r, j in acc:
        L.append(f"  int32x4_t c{r}_{j} = vdupq_n_s32(0);")
        L.append(f"  int32_t s{r}_{j};")
    if not a64:
        L.append("  int32x2_t h;")
    L.append("  for (; k < kv; k += 8) {")
    for r in range(MR):
        L.append(f"    int16x8_t a{r} = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(A + {r} * a_si + k)));")
    for j in range(NR):
        L.append(f"    int16x8_t b{j} = vmovl_s8(vld1_s8(B + {j} * b_sj + k));")
    for r, j in acc:
        L.append(f"    c{r}_{j} = vmlal_s16(c{r}_{j}, vget_low_s16(a{r}), vget_low_s16(b{j}));")
        if a64:
            L.append(f"    c{r}_{j} = vmlal_high_s16(c{r}_{j}, a{r}, b{j});")
        else:
            L.append(f"    c{r}_{j} = vmlal_s16(c{r}_{j}, vget_high_s16(a{r}), vget_high_s16(b{j}));")
    L.append("  }")
    for r, j in acc:
        if a64:
            L.append(f"  s{r}_{j} = vaddvq_s32(c{r}_{j});")
        else:
            L.append(f"  h = vadd_s32(vget_low_s32(c{r}_{j}), vget_high_s32(c{r}_{j}));")
            L.append(f"  s{r}_{j} = vget_lane_s32(vpadd_s32(h, h), 0);")
    L += _scalar_tail(MR, NR)
    for r, j in acc:
        L.append(f"  C[{r} * c_si + {j} * c_sj] += s{r}_{j};")
    L.append("}")
    return "\n".join(L)


# (isa, arch) -> (NR, the MRs offered, source maker (name, MR) -> C)
_TILE = {
    ("avx512", "x86_64"): (4, (1, 2, 4), lambda n, mr: _tile_x86_512(n, mr, 4)),
    ("avx2", "x86_64"): (4, (1, 2), lambda n, mr: _tile_avx2(n, mr, 4)),
    ("neon", "aarch64"): (4, (1, 2, 4), lambda n, mr: _tile_neon(n, mr, 4, True)),
    ("neon", "armv7"): (4, (1, 2), lambda n, mr: _tile_neon(n, mr, 4, False)),
}


def tile_mrs(target) -> tuple:
    """The MR (pixels / rows) of the target's u8 x s8 tile kernels; () when it has none."""
    tgt = resolve(target)
    v = _TILE.get((tgt.isa, tgt.arch))
    return () if v is None else v[1]


def tile_shape(target, mr: int | None = None):
    """(MR, NR) of the target's tile kernel with the largest offered MR <= mr (default: the
    largest), or None when the target has none."""
    tgt = resolve(target)
    v = _TILE.get((tgt.isa, tgt.arch))
    if v is None:
        return None
    mrs = [m for m in v[1] if mr is None or m <= mr] or [min(v[1])]
    return max(mrs), v[0]


def u8s8_tile_intrin(target, mr: int | None = None):
    """The TensorIntrin C[i, j] += sum_k int32(A[i, k]) * int32(B[j, k]), A uint8 and B int8
    contiguous along k, on an MR x NR tile (see tile_shape; cgen.tensorize.TensorizeError if
    the target has no such kernel)."""
    from ...tensorize import TensorizeError, KernelSource, from_compute
    tgt = resolve(target)
    key = (tgt.isa, tgt.arch)
    if key not in _TILE:
        raise TensorizeError(f"no u8 x s8 tile kernel for target {tgt.name} (isa {tgt.isa})")
    MR, NR = tile_shape(tgt, mr)
    name = f"cg_qtile_u8s8_{MR}x{NR}_{tgt.isa}_{tgt.arch}"
    A = te.placeholder((MR, 1), "uint8", name="A")
    B = te.placeholder((NR, 1), "int8", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((MR, NR), lambda i, j: te.sum(A[i, k].astype("int32") * B[j, k].astype("int32"),
                                                 axis=k), name="C")
    return from_compute(name, C, {"i": MR, "j": NR}, {("a", "k"), ("b", "k")},
                        KernelSource(name, _TILE[key][2](name, MR)))
