"""ISAs as tables: the one description of every vector (and the scalar) ISA.

Codegen and the micro-kernel generator (cgen.tensorize.microkernel) look names
up here; neither branches on the ISA.  A row holds the float32 vector type,
its lane and register counts, the intrinsic of each operation, how tails are
handled, and (for the int8 kernels) the widening integer operations.  A
missing entry means "not available on this ISA": the vectorize pass leaves
the loop scalar (armv7 NEON has no vector divide, for example), and the
generator refuses the kernel that would need it.

An operation given as None is written as plain C (the SCALAR row: a load is
`p[0]`, a broadcast the value itself, an FMA `acc + a * b`), so one generator
also makes the register-tiled kernels of targets without SIMD.

Adding an ISA (NEON dotprod, Helium MVE, ...) is adding one row to ROWS (its
`serves` names the targets' (isa, arch)), and its target in the rows' tests
(tests/test_microkernel.py walks every row).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


# =============================================================================
# int8 (u8 x s8 register tiles, s8 dot products): operations of each vector ISA
# =============================================================================
# Operations are small expression trees, not text: ("f", x, y) is the call f(x, y),
# ("cast", "const void *", x) a cast, "$p" / "$m" / "$c" / "$a" / "$b" / "$h" / "$q" the
# generator's operands (address, lane mask, accumulator, A and B vectors, temporary,
# reduced vector), an int a constant and "0x.." a constant written in hex; ("+" | "*" |
# "|" | ">>" | "<<", x, y) a C operator, ("deref", p) *p, and a load ("unaligned", p) the
# bytes at p copied into the variable (memcpy: no alignment or aliasing assumed).
# cgen.tensorize.int8_microkernel turns them into the printer's C AST.

@dataclass(frozen=True)
class Int8Tile:
    """C[i, j] += sum_k u8 A[i, k] * s8 B[j, k] on an MR x NR tile of int32 vectors."""
    step: int                   # k per vector step
    acc_type: str               # int32 accumulator vector
    zero: tuple                 # () -> zeroed accumulator
    a_type: str                 # A's vector as the update reads it
    load_a: tuple               # ($p[, $m]) -> a
    b_type: str
    load_b: tuple
    update: tuple               # statements $c = expr($c, $a, $b), in order
    reduce: tuple               # $h = ... steps, the last the int32 sum of $c
    temp_type: str = ""         # type of $h ("" when reduce is one step)
    tail: str = "scalar"        # "scalar": k tail in plain C; "mask": the last step masked
    mask_type: str = ""         # lane mask of `step` bytes (tail "mask")
    # A fed to a signed-only dot: a - u8_bias (load_a flips the sign bit), the bias given
    # back as u8_bias * sum_k B (B's sums by the same update with A = `ones`)
    u8_bias: int = 0
    ones: tuple = ()
    # MR -> steps (name, type, expr of $c0.. and earlier names) reducing the MR accumulators
    # of one column together into $q, one row per lane; lanes: lane i of $q as an int32;
    # add_store: C's MR contiguous values += $q (used when c_si == 1)
    group_reduce: tuple = ()
    lanes: tuple = ()
    add_store: tuple = ()


@dataclass(frozen=True)
class Int8Dot:
    """C += sum_k s8 A[k] * s8 B[k], one int32 vector accumulator, a plain-C k tail."""
    step: int
    acc_type: str
    zero: tuple
    a_type: str
    load: tuple                 # ($p) -> vector of A or B
    update: tuple               # as Int8Tile.update
    reduce: tuple
    temp_type: str = ""


@dataclass(frozen=True)
class Int8Ops:
    """One way (an ISA, or an extension of it) to run the int8 kernels.  A VectorISA row
    lists its ways best first; each but the last needs its guard_macro (which the
    compiler defines when the target's flags enable the extension): the kernels are
    emitted once per way, behind #if / #elif / #else."""
    name: str
    guard_macro: str            # "" for the last (always available) way
    tile_nr: int                # the tile's NR and the MRs offered (the same in every way)
    tile_mrs: tuple
    tile: Int8Tile | None = None
    dot: Int8Dot | None = None
    # s8 x s8 register tile (A already shifted into int8 by the packing), where it is
    # cheaper than the u8 x s8 one (dotprod: no sign flip, no B sums in the loop)
    tile_s8: Int8Tile | None = None
    headers: tuple = ()         # included behind the way's guard (arm_acle.h, string.h)


def _ptr(t: str, p="$p"):
    """x86 vector loads take a vector pointer: the address through const void * first."""
    return ("cast", f"const {t} *", ("cast", "const void *", p))


# x86: one 128-bit vector's four int32 lanes summed (AVX2's reduction tail)
_X86_FOLD128 = (("_mm_add_epi32", "$h", ("_mm_shuffle_epi32", "$h", "0x4e")),
                ("_mm_add_epi32", "$h", ("_mm_shuffle_epi32", "$h", "0xb1")),
                ("_mm_cvtsi128_si32", "$h"))
_X86_256_REDUCE = (("_mm_add_epi32", ("_mm256_castsi256_si128", "$c"),
                    ("_mm256_extracti128_si256", "$c", 1)),) + _X86_FOLD128

X86_DOT = Int8Dot(16, "__m256i", ("_mm256_setzero_si256",), "__m256i",
                  ("_mm256_cvtepi8_epi16", ("_mm_loadu_si128", _ptr("__m128i"))),
                  (("_mm256_add_epi32", "$c", ("_mm256_madd_epi16", "$a", "$b")),),
                  _X86_256_REDUCE, "__m128i")

AVX2_I8 = Int8Ops("avx2", "", 4, (1, 2), Int8Tile(
    16, "__m256i", ("_mm256_setzero_si256",),
    "__m256i", ("_mm256_cvtepu8_epi16", ("_mm_loadu_si128", _ptr("__m128i"))),
    "__m256i", ("_mm256_cvtepi8_epi16", ("_mm_loadu_si128", _ptr("__m128i"))),
    (("_mm256_add_epi32", "$c", ("_mm256_madd_epi16", "$a", "$b")),),
    _X86_256_REDUCE, "__m128i"), X86_DOT)


def _unpack_add(lo: str, hi: str, x: str, y: str) -> tuple:
    return ("_mm512_add_epi32", (lo, x, y), (hi, x, y))


# AVX-512: the accumulators of 2 or 4 rows reduced together (interleaved, then folded to
# 128 bits), one row per lane of $q
_X86_512_TO_128 = (("h", "__m256i", ("_mm256_add_epi32", ("_mm512_castsi512_si256", "$u"),
                                     ("_mm512_extracti64x4_epi64", "$u", 1))),
                   ("q", "__m128i", ("_mm_add_epi32", ("_mm256_castsi256_si128", "$h"),
                                     ("_mm256_extracti128_si256", "$h", 1))))
_X86_512_GROUP = (
    (2, (("t0", "__m512i", _unpack_add("_mm512_unpacklo_epi32", "_mm512_unpackhi_epi32", "$c0", "$c1")),
         # lanes [a, b, a, b] per 128 bits
         ("u", "__m512i", ("_mm512_add_epi32", "$t0",
                           ("_mm512_shuffle_epi32", "$t0", ("cast", "_MM_PERM_ENUM", "0x4e")))))
     + _X86_512_TO_128),
    (4, (("t0", "__m512i", _unpack_add("_mm512_unpacklo_epi32", "_mm512_unpackhi_epi32", "$c0", "$c1")),
         ("t1", "__m512i", _unpack_add("_mm512_unpacklo_epi32", "_mm512_unpackhi_epi32", "$c2", "$c3")),
         ("u", "__m512i", _unpack_add("_mm512_unpacklo_epi64", "_mm512_unpackhi_epi64", "$t0", "$t1")))
     + _X86_512_TO_128))


def _avx512_tile(step, mask_type, load_a, load_b, update, a_type):
    return Int8Tile(step, "__m512i", ("_mm512_setzero_si512",), a_type, load_a, a_type, load_b,
                    update, (("_mm512_reduce_add_epi32", "$c"),), tail="mask",
                    mask_type=mask_type, group_reduce=_X86_512_GROUP,
                    lanes=(("_mm_cvtsi128_si32", "$q"),) + tuple(
                        ("_mm_extract_epi32", "$q", i) for i in (1, 2, 3)),
                    add_store=("_mm_storeu_si128", ("cast", "__m128i *", ("cast", "void *", "$p")),
                               ("_mm_add_epi32", ("_mm_loadu_si128", _ptr("__m128i")), "$q")))


_M64 = ("_mm512_maskz_loadu_epi8", "$m", ("cast", "const void *", "$p"))
_M32 = ("_mm256_maskz_loadu_epi8", "$m", ("cast", "const void *", "$p"))
# VNNI: vpdpbusd, u8 x s8 in groups of 4 into int32, 64 bytes a step
AVX512_VNNI_I8 = Int8Ops("avx512-vnni", "__AVX512VNNI__", 4, (1, 2, 4), _avx512_tile(
    64, "__mmask64", _M64, _M64, (("_mm512_dpbusd_epi32", "$c", "$a", "$b"),), "__m512i"), X86_DOT)
# AVX-512BW: widened to int16 and pmaddwd (exact: no int16 sum saturates), 32 bytes a step
AVX512_I8 = Int8Ops("avx512", "", 4, (1, 2, 4), _avx512_tile(
    32, "__mmask32", ("_mm512_cvtepu8_epi16", _M32), ("_mm512_cvtepi8_epi16", _M32),
    (("_mm512_add_epi32", "$c", ("_mm512_madd_epi16", "$a", "$b")),), "__m512i"), X86_DOT)


_NEON_S8 = ("vmovl_s8", ("vld1_s8", "$p"))


def _neon_tile(update, reduce, temp_type="", load_a=("vreinterpretq_s16_u16", ("vmovl_u8", ("vld1_u8", "$p")))):
    return Int8Tile(8, "int32x4_t", ("vdupq_n_s32", 0), "int16x8_t", load_a,
                    "int16x8_t", _NEON_S8, update, reduce, temp_type)


_NEON_LOW = ("vmlal_s16", "$c", ("vget_low_s16", "$a"), ("vget_low_s16", "$b"))
_NEON_A32_REDUCE = (("vadd_s32", ("vget_low_s32", "$c"), ("vget_high_s32", "$c")),
                    ("vget_lane_s32", ("vpadd_s32", "$h", "$h"), 0))
NEON_DOT = Int8Dot(16, "int32x4_t", ("vdupq_n_s32", 0), "int8x16_t", ("vld1q_s8", "$p"),
                   (("vpadalq_s16", "$c", ("vmull_s8", ("vget_low_s8", "$a"), ("vget_low_s8", "$b"))),
                    ("vpadalq_s16", "$c", ("vmull_s8", ("vget_high_s8", "$a"), ("vget_high_s8", "$b")))),
                   (("vaddvq_s32", "$c"),))

_NEON_A64_UPDATE = (_NEON_LOW, ("vmlal_high_s16", "$c", "$a", "$b"))
_NEON_A32_UPDATE = (_NEON_LOW, ("vmlal_s16", "$c", ("vget_high_s16", "$a"), ("vget_high_s16", "$b")))
NEON_A64_I8 = Int8Ops("neon-aarch64", "", 4, (1, 2, 4),
                      _neon_tile(_NEON_A64_UPDATE, (("vaddvq_s32", "$c"),)), NEON_DOT,
                      tile_s8=_neon_tile(_NEON_A64_UPDATE, (("vaddvq_s32", "$c"),), load_a=_NEON_S8))
NEON_A32_I8 = Int8Ops("neon-armv7", "", 4, (1, 2),
                      _neon_tile(_NEON_A32_UPDATE, _NEON_A32_REDUCE, "int32x2_t"),
                      replace(NEON_DOT, reduce=_NEON_A32_REDUCE, temp_type="int32x2_t"),
                      tile_s8=_neon_tile(_NEON_A32_UPDATE, _NEON_A32_REDUCE, "int32x2_t",
                                         load_a=_NEON_S8))

# NEON dotprod (armv8.2-a+dotprod; Cortex-A55/A76/...: the Raspberry Pi 5): sdot, four
# s8 x s8 products into each int32 lane.  A (uint8) enters as A - 128 (its sign bit
# flipped), so the tile adds 128 * sum_k B back, from B's sums by the same sdot on ones.
NEON_DOTPROD_I8 = Int8Ops("neon-dotprod", "__ARM_FEATURE_DOTPROD", 4, (1, 2, 4), Int8Tile(
    16, "int32x4_t", ("vdupq_n_s32", 0),
    "int8x16_t", ("vreinterpretq_s8_u8", ("veorq_u8", ("vld1q_u8", "$p"), ("vdupq_n_u8", "0x80"))),
    "int8x16_t", ("vld1q_s8", "$p"), (("vdotq_s32", "$c", "$a", "$b"),), (("vaddvq_s32", "$c"),),
    u8_bias=128, ones=("vdupq_n_s8", 1)),
    Int8Dot(16, "int32x4_t", ("vdupq_n_s32", 0), "int8x16_t", ("vld1q_s8", "$p"),
            (("vdotq_s32", "$c", "$a", "$b"),), (("vaddvq_s32", "$c"),)),
    # A in int8 already: the sdot tile without the sign flip and the sums of B
    tile_s8=Int8Tile(16, "int32x4_t", ("vdupq_n_s32", 0), "int8x16_t", ("vld1q_s8", "$p"),
                     "int8x16_t", ("vld1q_s8", "$p"), (("vdotq_s32", "$c", "$a", "$b"),),
                     (("vaddvq_s32", "$c"),)))


# Armv7E-M DSP (Cortex-M4/M7, ACLE arm_acle.h): four bytes a step in one 32-bit load;
# SXTB16 / UXTB16 widen bytes 0 and 2 (and, of the word rotated by 8, bytes 1 and 3) to two
# int16 halves; SMLAD adds both halves' products to the int32 accumulator, exactly.  (gcc
# 12 keeps the rotate as its own instruction: the extends are builtins it does not fold.)
def _ror8(x):
    u = ("cast", "uint32_t", x)
    return ("|", (">>", u, 8), ("<<", u, 24))


def _smlad_pairs(ext_a: str, ext_b: str) -> tuple:
    return (("__smlad", (ext_a, "$a"), (ext_b, "$b"), "$c"),
            ("__smlad", (ext_a, _ror8("$a")), (ext_b, _ror8("$b")), "$c"))


_DSP_LOAD = ("unaligned", "$p")
ARM_DSP_I8 = Int8Ops(
    "arm-dsp", "__ARM_FEATURE_DSP", 2, (1, 2),
    Int8Tile(4, "int32_t", 0, "uint32_t", _DSP_LOAD, "int32_t", _DSP_LOAD,
             _smlad_pairs("__uxtb16", "__sxtb16"), ("$c",)),
    Int8Dot(4, "int32_t", 0, "int32_t", _DSP_LOAD, _smlad_pairs("__sxtb16", "__sxtb16"), ("$c",)),
    headers=("arm_acle.h", "string.h"))
# Portable C: one product a step (the way of a core without SIMD or DSP, and the #else of
# the DSP way); the same 2 x 2 register tile.
_C_LOAD = ("cast", "int32_t", ("deref", "$p"))
_C_MAC = (("+", "$c", ("*", "$a", "$b")),)
C_I8 = Int8Ops("c99", "", 2, (1, 2),
               Int8Tile(1, "int32_t", 0, "int32_t", _C_LOAD, "int32_t", _C_LOAD, _C_MAC, ("$c",)),
               Int8Dot(1, "int32_t", 0, "int32_t", _C_LOAD, _C_MAC, ("$c",)))


# Helium (MVE, Armv8.1-M: the Cortex-M55): no widening dot into vector lanes, but
# vmladavaq_s8 sums sixteen s8 x s8 products into a scalar int32, so accumulators are
# general registers (even ones: the instruction's RdaLo) and reducing is nothing.  A
# (uint8) enters as A - 128, as in the dotprod row.  Few even registers: two columns
# (the 128 * sum_k B correction is one more sum per column), two rows: six sums.
MVE_I8 = Int8Ops("mve", "", 2, (1, 2), Int8Tile(
    16, "int32_t", 0,
    "int8x16_t", ("vreinterpretq_s8_u8", ("veorq_u8", ("vld1q_u8", "$p"), ("vdupq_n_u8", "0x80"))),
    "int8x16_t", ("vld1q_s8", "$p"), (("vmladavaq_s8", "$c", "$a", "$b"),), ("$c",),
    u8_bias=128, ones=("vdupq_n_s8", 1)),
    Int8Dot(16, "int32_t", 0, "int8x16_t", ("vld1q_s8", "$p"),
            (("vmladavaq_s8", "$c", "$a", "$b"),), ("$c",)))


@dataclass(frozen=True)
class VectorISA:
    name: str
    header: str | None
    lanes: int                  # float32 lanes per register
    vtype: str                  # the float32 vector type ("float" for SCALAR)
    load: str | None            # (ptr) -> v, unaligned
    store: str | None           # (ptr, v), unaligned
    set1: str | None            # (scalar) -> v, broadcast
    binary: dict                # op -> intrinsic (a, b) -> v
    fma: str | None             # fused multiply-add
    fma_order: tuple            # argument order of fma in terms of "acc", "a", "b"
    # lane masks of the vectorizer's tails: the masked load zeroes the lanes off and reads
    # none of them (no fault past a buffer's end), the masked store writes none of them;
    # their arguments in the order mask_load_args / mask_store_args name them
    mask_type: str | None = None
    mask_load: str | None = None
    mask_store: str | None = None
    mask_load_args: tuple = ("mask", "ptr")
    mask_store_args: tuple = ("ptr", "mask", "v")
    # the mask of the first $n lanes (0 < n < lanes) as an expression tree: ("f", args...)
    # a call, ("cast", type, x) a cast, (operator, x, y), "$n" the count, else a constant
    mask_first: tuple = ()
    guard_macro: str = ""           # predefined macro that says the ISA is enabled
    vregs: int = 16                 # architectural vector registers: the register-tile budget
    setzero: str | None = None      # () -> v of zeros
    load_aligned: str | None = None   # (ptr) -> v, ptr aligned to the vector size
    store_aligned: str | None = None  # (ptr, v)
    # prefetch of a read-only line: (ptr) -> void; with a hint, (ptr cast to const char *, hint)
    prefetch: str = "__builtin_prefetch"
    prefetch_hint: str | None = None
    # multiply-accumulate by one lane of a vector: lane_fma(acc, b, a, lane) = acc + b * a[lane];
    # the lanes come from registers of lane_width lanes (NEON a64: q registers, 4 lanes;
    # a32: d registers, 2 lanes, split off a loaded q register with half_low / half_high)
    lane_fma: str | None = None
    lane_width: int = 0
    half_type: str | None = None
    half_low: str | None = None
    half_high: str | None = None
    # column tails of a register tile: "mask" (the last vector loaded and stored under a
    # lane mask) or "none" (tails are the caller's: the tile is called only on whole vectors)
    tail: str = "none"
    # GEMM micro-kernels: the shipped tile (MR, NR, how A is read: "rows" broadcast with any
    # row stride, "lanes" packed and multiplied by lane), and the row counts of the tiles
    # generated with the GEMM template's knobs (unroll, prefetch; empty: shipped tile only)
    gemm_tile: tuple = ()
    gemm_rows: tuple = ()
    gemm_max_rows: int = 0
    # (acc, v, scalar) -> acc + v * scalar, the scalar in a general register: the GEMM
    # tiles' A values then need no broadcast (MVE's vfma.f32 q, q, r)
    fma_scalar: str | None = None
    int8: tuple = ()                # Int8Ops ways of the int8 kernels, best first
    # bit casts between the float32 vector and the int32 vector of the same lanes, and
    # the int32 shift left by a constant (exp's 2^n: cgen.te.fastmath)
    as_int: str | None = None
    as_float: str | None = None
    int_shl: str | None = None
    # float32 `a OP b ? t : f` per comparison OP, as a row_expr tree of "$a" "$b" "$t" "$f":
    # ordered comparisons, false on NaN as C's are (Elu, PReLU, Shrink, ThresholdedRelu)
    select: dict = field(default_factory=dict)
    # float32 scalar min / max ("$a", "$b" trees) in code that already uses the row: the
    # plain `a > b ? a : b` of a clamp becomes a jump (gcc 12 threads the min past the
    # max), which values around the bound mispredict
    scalar_minmax: dict = field(default_factory=dict)
    # the lanes p[0], p[2], .., p[2 * (lanes - 1)] as a row_expr tree of "$p", reading no
    # element past the last lane's (p[0 .. 2 * lanes - 2]: two loads, the second one element
    # back, and a shuffle), so a copy into parity planes never reads past its source.
    # Missing on NEON: gcc already turns such a loop into ld2 / vld2, the best there is
    load_even: tuple = ()
    # a store of the first n lanes, n a constant, as plain stores of parts where the
    # masked store is slow (AVX2's vmaskmovps to memory: 42 uops, one per 12 cycles on
    # Zen 3, 1-2 uops on Intel): steps (lanes, type of what is left, store of the first
    # `lanes` of "$v" at "$p", what is left of "$v" after them, what is left when the
    # step stores nothing), halving the width each step
    part_store: tuple = ()
    serves: tuple = ()              # (Target.isa, Target.arch) pairs whose kernels use this row

    @property
    def masked(self) -> bool:
        return self.mask_type is not None

    @property
    def scalar(self) -> bool:
        return self.lanes == 1


def _select_rows(make) -> dict:
    """The select trees of a row from make(comparison suffix) for < <= > >=."""
    return {op: make(name) for op, name in (("<", "lt"), ("<=", "le"), (">", "gt"), (">=", "ge"))}


def _x86_cmp(cmp: str, c: str) -> tuple:
    # _CMP_xx_OQ: ordered and quiet, false when either side is NaN
    return (cmp, "$a", "$b", f"_CMP_{c.upper()}_OQ")


# blendv takes its second operand's lane where the mask is set; mask_blend its third
_AVX2_SELECT = _select_rows(lambda c: ("_mm256_blendv_ps", "$f", "$t",
                                       _x86_cmp("_mm256_cmp_ps", c)))
_AVX512_SELECT = _select_rows(lambda c: ("_mm512_mask_blend_ps",
                                         _x86_cmp("_mm512_cmp_ps_mask", c), "$f", "$t"))
_NEON_SELECT = _select_rows(lambda c: ("vbslq_f32", (f"vc{c}q_f32", "$a", "$b"), "$t", "$f"))
# MVE's LT and LE conditions hold when unordered (N != V): a < b is written b > a
_MVE_SELECT = {op: ("vpselq_f32", "$t", "$f", (f"vcmp{c}q_f32",) + ab) for op, c, ab in (
    ("<", "gt", ("$b", "$a")), ("<=", "ge", ("$b", "$a")), (">", "gt", ("$a", "$b")),
    (">=", "ge", ("$a", "$b")))}

# maxss / minss: a > b ? a : b and a < b ? a : b exactly (the second operand on NaN), as
# the portable helpers.  An NCHWc -> NCHW Clip(0, 6) epilogue on random data (32 channels,
# 128x128, x86-avx512): 5.5 ms with the jumps, 3.0 without
_SSE_MINMAX = {op: ("_mm_cvtss_f32", (f"_mm_{op}_ss", ("_mm_set_ss", "$a"), ("_mm_set_ss", "$b")))
               for op in ("min", "max")}

# every other float of p[0 ..] from a = p[0 .. 7] and b = p[7 .. 14]: shufps takes a's lanes
# 0, 2 and b's 1, 3 in each 128-bit half (p0 p2 p8 p10 | p4 p6 p12 p14), vpermpd puts the
# 64-bit pairs in order.  gcc's own vectorization of the copy is two vpermd and a blend
# per vector (MobileNetV2's 112 -> 56 depthwise alone: 406 us, 273 us this way)
_AVX2_LOAD_EVEN = ("_mm256_castpd_ps", ("_mm256_permute4x64_pd", ("_mm256_castps_pd", (
    "_mm256_shuffle_ps", ("_mm256_loadu_ps", "$p"), ("_mm256_loadu_ps", ("+", "$p", 7)), "0xd8")),
    "0xd8"))
# n = 4a + 2b + c lanes: the low 128 bits, then 64 (movq), then 32 (movss), each from
# what the previous step left (the high half after a store, else the low one)
_AVX2_PART_STORE = (
    (4, "__m128", ("_mm_storeu_ps", "$p", ("_mm256_castps256_ps128", "$v")),
     ("_mm256_extractf128_ps", "$v", 1), ("_mm256_castps256_ps128", "$v")),
    (2, "__m128", ("_mm_storel_epi64", ("cast", "__m128i *", ("cast", "void *", "$p")),
                   ("_mm_castps_si128", "$v")), ("_mm_movehl_ps", "$v", "$v"), "$v"),
    (1, "__m128", ("_mm_store_ss", "$p", "$v"), "$v", "$v"))
# a = p[0 .. 15], b = p[15 .. 30]: a's even lanes, then b's odd ones (p16 = b[1], ..)
_AVX512_LOAD_EVEN = ("_mm512_permutex2var_ps", ("_mm512_loadu_ps", "$p"), (
    "_mm512_setr_epi32",) + tuple(range(0, 16, 2)) + tuple(range(17, 32, 2)),
    ("_mm512_loadu_ps", ("+", "$p", 15)))

_NEON_BINARY = {"+": "vaddq_f32", "-": "vsubq_f32", "*": "vmulq_f32", "max": "vmaxq_f32",
                "min": "vminq_f32"}

NEON_AARCH64 = VectorISA(
    "neon-aarch64", "arm_neon.h", 4, "float32x4_t", "vld1q_f32", "vst1q_f32", "vdupq_n_f32",
    dict(_NEON_BINARY, **{"/": "vdivq_f32"}), "vfmaq_f32", ("acc", "a", "b"),
    guard_macro="__ARM_NEON", vregs=32, load_aligned="vld1q_f32", store_aligned="vst1q_f32",
    lane_fma="vfmaq_laneq_f32", lane_width=4, gemm_tile=(8, 8, "lanes"), int8=(NEON_DOTPROD_I8, NEON_A64_I8),
    as_int="vreinterpretq_s32_f32", as_float="vreinterpretq_f32_s32", int_shl="vshlq_n_s32",
    select=_NEON_SELECT, serves=(("neon", "aarch64"),))

# armv7 NEON: no vector divide; vfmaq_f32 needs VFPv4 (-mfpu=neon-vfpv4); the by-lane
# multiply-accumulate (vmla.f32 q, q, d[x]) takes its lane from a d register.
NEON_ARMV7 = VectorISA(
    "neon-armv7", "arm_neon.h", 4, "float32x4_t", "vld1q_f32", "vst1q_f32", "vdupq_n_f32",
    dict(_NEON_BINARY), "vfmaq_f32", ("acc", "a", "b"),
    guard_macro="__ARM_NEON", vregs=16, load_aligned="vld1q_f32", store_aligned="vst1q_f32",
    lane_fma="vmlaq_lane_f32", lane_width=2, half_type="float32x2_t", half_low="vget_low_f32",
    half_high="vget_high_f32", gemm_tile=(4, 8, "lanes"), int8=(NEON_A32_I8,),
    as_int="vreinterpretq_s32_f32", as_float="vreinterpretq_f32_s32", int_shl="vshlq_n_s32",
    select=_NEON_SELECT, serves=(("neon", "armv7"),))

# Helium (MVE) float32, Armv8.1-M with the FP extension (__ARM_FEATURE_MVE & 2): 8 q
# registers, no vector divide, no FMA by lane; max / min are the IEEE maxNum / minNum.
# The FMA by a scalar register leaves all 8 q registers to the tile: 3 x 8 is 6
# accumulators and 2 vectors of B.
MVE = VectorISA(
    "mve", "arm_mve.h", 4, "float32x4_t", "vld1q_f32", "vst1q_f32", "vdupq_n_f32",
    {"+": "vaddq_f32", "-": "vsubq_f32", "*": "vmulq_f32", "max": "vmaxnmq_f32",
     "min": "vminnmq_f32"}, "vfmaq_f32", ("acc", "a", "b"),
    guard_macro="__ARM_FEATURE_MVE", vregs=8, load_aligned="vld1q_f32", store_aligned="vst1q_f32",
    fma_scalar="vfmaq_n_f32", gemm_tile=(3, 8, "rows"), int8=(MVE_I8,),
    as_int="vreinterpretq_s32_f32", as_float="vreinterpretq_f32_s32", int_shl="vshlq_n_s32",
    select=_MVE_SELECT, serves=(("mve", "armv8m"),))

AVX2 = VectorISA(
    "avx2", "immintrin.h", 8, "__m256", "_mm256_loadu_ps", "_mm256_storeu_ps", "_mm256_set1_ps",
    {"+": "_mm256_add_ps", "-": "_mm256_sub_ps", "*": "_mm256_mul_ps", "/": "_mm256_div_ps",
     "max": "_mm256_max_ps", "min": "_mm256_min_ps"},
    "_mm256_fmadd_ps", ("a", "b", "acc"), "__m256i", "_mm256_maskload_ps", "_mm256_maskstore_ps",
    mask_load_args=("ptr", "mask"),
    # vmaskmovps takes its mask as int32 lanes, on where the sign bit is set: lane i < n
    mask_first=("_mm256_cmpgt_epi32", ("_mm256_set1_epi32", ("cast", "int32_t", "$n")),
                ("_mm256_setr_epi32",) + tuple(range(8))),
    guard_macro="__AVX2__", vregs=16,
    setzero="_mm256_setzero_ps", load_aligned="_mm256_load_ps", store_aligned="_mm256_store_ps",
    prefetch="_mm_prefetch", prefetch_hint="_MM_HINT_T0",
    gemm_tile=(6, 16, "rows"), gemm_rows=(4, 6), gemm_max_rows=6,
    int8=(AVX2_I8,), as_int="_mm256_castps_si256", as_float="_mm256_castsi256_ps",
    int_shl="_mm256_slli_epi32", select=_AVX2_SELECT, scalar_minmax=_SSE_MINMAX,
    load_even=_AVX2_LOAD_EVEN, part_store=_AVX2_PART_STORE, serves=(("avx2", "x86_64"),))

AVX512 = VectorISA(
    "avx512", "immintrin.h", 16, "__m512", "_mm512_loadu_ps", "_mm512_storeu_ps", "_mm512_set1_ps",
    {"+": "_mm512_add_ps", "-": "_mm512_sub_ps", "*": "_mm512_mul_ps", "/": "_mm512_div_ps",
     "max": "_mm512_max_ps", "min": "_mm512_min_ps"},
    "_mm512_fmadd_ps", ("a", "b", "acc"), "__mmask16", "_mm512_maskz_loadu_ps",
    "_mm512_mask_storeu_ps",
    mask_first=("cast", "__mmask16", ("-", ("<<", "1u", ("cast", "int32_t", "$n")), "1u")),
    guard_macro="__AVX512F__", vregs=32,
    setzero="_mm512_setzero_ps", load_aligned="_mm512_load_ps", store_aligned="_mm512_store_ps",
    prefetch="_mm_prefetch", prefetch_hint="_MM_HINT_T0", tail="mask",
    gemm_tile=(6, 32, "rows"), gemm_rows=(4, 6, 8, 12), gemm_max_rows=12,
    int8=(AVX512_VNNI_I8, AVX512_I8), as_int="_mm512_castps_si512",
    as_float="_mm512_castsi512_ps", int_shl="_mm512_slli_epi32", select=_AVX512_SELECT,
    scalar_minmax=_SSE_MINMAX, load_even=_AVX512_LOAD_EVEN, serves=(("avx512", "x86_64"),))

# Plain C99: one lane, every operation written as C operators (None); 32 registers is the
# budget of a Cortex-M4's FPv4-SP (s0-s31) and of aarch64, so a 4x4 tile stays in registers.
SCALAR = VectorISA("scalar", None, 1, "float", None, None, None,
                   {"+": None, "-": None, "*": None, "/": None}, None, ("acc", "a", "b"),
                   vregs=32, gemm_tile=(4, 4, "rows"), int8=(ARM_DSP_I8, C_I8))

ROWS = (AVX2, AVX512, NEON_AARCH64, NEON_ARMV7, MVE, SCALAR)

_BY_KEY = {key: row for row in ROWS for key in row.serves}


def isa_for(target) -> VectorISA | None:
    """The vector table of a target, or None for portable scalar C (what the vectorize
    pass and the printer need: None leaves loops scalar)."""
    if target is None:
        return None
    return _BY_KEY.get((target.isa, target.arch))


def kernel_isa(target) -> VectorISA | None:
    """The row the micro-kernels of a target are generated from: its vector ISA, SCALAR
    for targets without SIMD (isa "none"), None for an ISA with no row."""
    if target.isa == "none":
        return SCALAR
    return isa_for(target)
