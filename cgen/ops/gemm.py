"""Packed GEMM: the BLIS-style algorithm written as te + a schedule.

A and B are packed into panels (MR rows / NR columns contiguous per k, zero
padded), the packed tiles are computed at the blocking loops (so each packed
tile is a small contiguous buffer), and the MR x NR register tile is a
tensorized micro-kernel.

Two builders:

- `packed_gemm(M, N, K, target, cfg)`: C = A @ B accumulated in place in C
  (tails of C guarded), the target's shipped micro-kernel by default.
- `packed_matmul(spec, target, cfg)`: the general form the operator templates
  use: transposed operands (the packing compute reads them transposed, the
  micro-kernel is unchanged), numpy-broadcast batch dimensions, B given
  pre-packed (weights), and an epilogue (bias, activation, residual add)
  computed in the same kernel: the accumulation runs into a column-block
  buffer padded to whole micro-tiles, computed at the epilogue stage's
  column-block loop, and the epilogue stage writes the output block from it.

Where the ISA row offers them (x86), the micro-kernel is generated with this
template's knobs (rows MR, k unrolling, prefetch distance) by
cgen.tensorize.microkernel; elsewhere it is the shipped kernel of cgen.tensorize.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .. import te
from .common import broadcast_shape
from ..codegen.isa import kernel_isa
from ..tensorize import gemm_intrin, gemm_shape
from ..tensorize.intrin import KernelSource, TensorizeError, from_compute
from ..tensorize.kernels import tile_definition
from ..tensorize.microkernel import blis_kernel, blis_rows
from targets import resolve


@dataclass(frozen=True)
class GemmConfig:
    MC: int = 144      # rows of A per packed block (multiple of MR)
    NC: int = 512      # columns of B per packed block (multiple of NR)
    KC: int = 256      # depth of a packed block
    order: str = "ji"  # micro-tile loop order: "ji" (B panel reused) or "ij" (A panel reused)
    parallel: bool = False  # OpenMP over the outermost block loop
    # micro-kernel: MR = 0 is the target's shipped kernel; a positive MR (x86 only) is a
    # kernel generated here with `unroll` k steps per iteration and B prefetches
    # `prefetch` k steps ahead (0: none)
    MR: int = 0
    unroll: int = 1
    prefetch: int = 0
    pack_a: bool = True  # False: the kernel reads A in place (when the kernel and the padding allow)
    # packed_matmul only.  "direct": accumulate in place in the output (no epilogue; tails
    # of the output guarded), Goto's loop order NC, KC, MC.  "goto": the same loops
    # accumulating an M x NC column block into a buffer padded to whole micro-tiles, the
    # epilogue stage writing the output from it.
    block: str = "direct"


# ----------------------------------------------------------------------------- micro-kernels
def _row(target):
    return kernel_isa(resolve(target))


def generated_kernels(target) -> bool:
    """Whether the target's ISA row offers GEMM tiles generated with this template's knobs
    (rows MR, k unrolling, prefetch distance); else only its shipped tile."""
    isa = _row(target)
    return isa is not None and bool(isa.gemm_rows)


def one_row_kernel(target) -> bool:
    """Whether a one-row GEMM kernel (`blis_kernel` with MR = 1: the GEMV of a single row,
    independent accumulators over unrolled k) is generated for the target: every vector
    ISA row, those with a shipped tile only included (NEON)."""
    isa = _row(target)
    return isa is not None and not isa.scalar and bool(isa.gemm_tile)


def kernel_rows(target) -> tuple:
    """The MR choices of the target's GEMM micro-kernels (0 stands for the shipped kernel)."""
    return _row(target).gemm_rows if generated_kernels(target) else (0,)


def kernel_shape(target, MR: int = 0) -> tuple:
    """(MR, NR) of the micro-kernel a config selects."""
    tgt = resolve(target)
    if MR == 0:
        return gemm_shape(tgt)
    isa = _row(tgt)
    if MR == 1 and one_row_kernel(tgt):
        return 1, isa.gemm_tile[1]
    if not generated_kernels(tgt) or not 1 <= MR <= isa.gemm_max_rows:
        raise TensorizeError(f"no {MR}-row GEMM micro-kernel for target {tgt.name}")
    return MR, isa.gemm_tile[1]


def micro_kernel(target, MR: int = 0, unroll: int = 1, prefetch: int = 0, a_unit: bool = True,
                 rows: bool = False):
    """The TensorIntrin of an MR x NR GEMM tile: C[i, j] += sum_k A[i, k] * B[k, j].

    MR = 0 is the target's shipped kernel (cgen.tensorize.gemm_intrin); a
    positive MR is a `blis_kernel` of the ISA row (x86 AVX2 / AVX-512); with a_unit, A must
    be contiguous along i (packed), else rows of A are a_si apart (and k contiguous).
    `rows`: the kernel takes the number of rows (<= MR) first, so a row tail runs a
    generated kernel too (`blis_rows`), not the scalar loops."""
    tgt = resolve(target)
    if MR == 0:
        return gemm_intrin(tgt)
    MR, NR = kernel_shape(tgt, MR)
    if unroll < 1 or prefetch < 0:
        raise ValueError(f"micro_kernel: unroll must be >= 1 and prefetch >= 0, got {unroll}, {prefetch}")
    if MR == 1:
        a_unit, rows = True, False
    name = (f"cg_gemm_{MR}x{NR}_u{unroll}_p{prefetch}{'' if a_unit else '_s'}{'_r' if rows else ''}"
            f"_{tgt.isa}")
    B = te.placeholder((1, NR), "float32", name="B")
    k = te.reduce_axis((0, 1), name="k")
    # A read in place is row-major: its k stride is 1, specialised into the kernel
    src = (blis_rows if rows else blis_kernel)(name, _row(tgt), MR, NR, unroll, prefetch, a_unit,
                                               a_k_unit=not a_unit)
    if MR == 1:  # a unit-extent i loop is simplified away: the definition has no i
        A = te.placeholder((1,), "float32", name="A")
        C = te.compute((NR,), lambda j: te.sum(A[k] * B[k, j], axis=k), name="C")
        return from_compute(name, C, {"j": NR}, {("b", "j"), ("c", "j")}, KernelSource(name, src))
    return tile_definition(name, src, MR, NR, fixed_rows=not rows, a_unit=a_unit,
                           a_k_unit=not a_unit)


def shipped_a_unit(target) -> bool:
    """Whether the target's shipped kernel needs A contiguous along i (NEON: packed A)."""
    return ("a", "i") in gemm_intrin(resolve(target)).unit


# ----------------------------------------------------------------------------- plain GEMM
def packed_gemm(M: int, N: int, K: int, target="host", cfg: GemmConfig = GemmConfig()):
    """(schedule, [A, B, C]) computing C = A @ B with the packed micro-kernel,
    accumulating in place in C (Goto's loop order: NC, KC, MC blocks)."""
    return packed_matmul(MatmulSpec(M, N, K), target, replace(cfg, block="direct"))


def _padded(index, extent: int, load, padded: bool = True):
    """load(index) where index < extent, else 0; the clamped index keeps the
    (unselected) load inside the array.  No select when nothing is padded."""
    if not padded:
        return load(index)
    return te.if_then_else(index < extent, load(te.minimum(index, extent - 1)), 0.0)


# ----------------------------------------------------------------------------- general matmul
ACTIVATIONS = ("relu", "relu6", "clip", "sigmoid", "tanh")
EPILOGUE_STEPS = ("bias",) + ACTIVATIONS + ("residual",)


@dataclass(frozen=True)
class MatmulSpec:
    """out[b..., i, j] = epilogue(sum_k op(A)[b..., i, k] * op(B)[b..., k, j]).

    A is a_batch + (M, K), or (K, M) with trans_a; B is b_batch + (K, N), or
    (N, K) with trans_b, or pre-packed as (ceil(N / b_block), K, b_block)
    (b_block > 0, no batch: the panel layout of the micro-kernel, zero
    padded).  Batch dimensions broadcast like numpy's matmul.  The epilogue is
    a sequence of steps applied in order: "bias" (+ bias[j]), "residual"
    (+ R[b..., i, j]), "relu", "relu6", "clip" (to [clip_lo, clip_hi]),
    "sigmoid", "tanh".
    """
    M: int
    N: int
    K: int
    a_batch: tuple = ()
    b_batch: tuple = ()
    trans_a: bool = False
    trans_b: bool = False
    b_block: int = 0
    epilogue: tuple = ()
    clip_lo: float = 0.0
    clip_hi: float = 6.0

    def __post_init__(self):
        for name in ("M", "N", "K"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"matmul: {name} must be a positive int, got {v!r}")
        for st in self.epilogue:
            if st not in EPILOGUE_STEPS:
                raise ValueError(f"matmul: unknown epilogue step {st!r}; one of {EPILOGUE_STEPS}")
        if self.b_block and (self.b_batch or self.trans_b):
            raise ValueError("matmul: a pre-packed B has no batch dimensions and no transpose")
        broadcast_batch(self.a_batch, self.b_batch)

    @property
    def batch(self) -> tuple:
        return broadcast_batch(self.a_batch, self.b_batch)


def broadcast_batch(a: tuple, b: tuple) -> tuple:
    return broadcast_shape(a, b, "matmul: batch dimensions")


def _batch_index(own: tuple, batch: tuple, idx: tuple) -> tuple:
    """Indices into an operand's own batch dims from the output batch indices."""
    off = len(batch) - len(own)
    return tuple(0 if n == 1 and batch[off + d] != 1 else idx[off + d] for d, n in enumerate(own))


def matmul_tensors(spec: MatmulSpec):
    """(inputs, bias, R): the placeholders of a spec, inputs = [A, B] + [bias] + [R] as
    the epilogue reads them (bias and R are None when it does not)."""
    batch = spec.batch
    M, N, K = spec.M, spec.N, spec.K
    A = te.placeholder(spec.a_batch + ((K, M) if spec.trans_a else (M, K)), "float32", name="A")
    if spec.b_block:
        B = te.placeholder((-(-N // spec.b_block), K, spec.b_block), "float32", name="B")
    else:
        B = te.placeholder(spec.b_batch + ((N, K) if spec.trans_b else (K, N)), "float32", name="B")
    extra = []
    bias = R = None
    if "bias" in spec.epilogue:
        bias = te.placeholder((N,), "float32", name="bias")
        extra.append(bias)
    if "residual" in spec.epilogue:
        R = te.placeholder(batch + (M, N), "float32", name="R")
        extra.append(R)
    return [A, B] + extra, bias, R


def epilogue_expr(spec: MatmulSpec, v, bias, R, b_idx, i, j):
    for st in spec.epilogue:
        if st == "bias":
            v = v + bias[j]
        elif st == "residual":
            v = v + R[tuple(b_idx) + (i, j)]
        elif st == "relu":
            v = te.maximum(v, 0.0)
        elif st == "relu6":
            v = te.minimum(te.maximum(v, 0.0), 6.0)
        elif st == "clip":
            v = te.minimum(te.maximum(v, float(spec.clip_lo)), float(spec.clip_hi))
        elif st == "sigmoid":
            v = te.sigmoid(v)
        elif st == "tanh":
            v = te.tanh(v)
    return v


def matmul_reference(spec: MatmulSpec, A, B, *extra):
    """numpy: the spec's output from its input arrays, in the order of the build
    arguments (A, B, then bias and R when the epilogue reads them); float64
    accumulation, float32 result."""
    import numpy as np
    extra = list(extra)
    bias = extra.pop(0) if "bias" in spec.epilogue else None
    R = extra.pop(0) if "residual" in spec.epilogue else None
    a = np.asarray(A, np.float64)
    if spec.trans_a:
        a = np.swapaxes(a, -1, -2)
    if spec.b_block:
        b = np.asarray(B, np.float64).transpose(1, 0, 2).reshape(spec.K, -1)[:, :spec.N]
    else:
        b = np.asarray(B, np.float64)
        if spec.trans_b:
            b = np.swapaxes(b, -1, -2)
    v = np.matmul(a, b)
    v = np.broadcast_to(v, spec.batch + (spec.M, spec.N))
    for st in spec.epilogue:
        if st == "bias":
            v = v + np.asarray(bias, np.float64)
        elif st == "residual":
            v = v + np.asarray(R, np.float64)
        elif st == "relu":
            v = np.maximum(v, 0.0)
        elif st == "relu6":
            v = np.clip(v, 0.0, 6.0)
        elif st == "clip":
            v = np.minimum(np.maximum(v, spec.clip_lo), spec.clip_hi)
        elif st == "sigmoid":
            v = 1.0 / (1.0 + np.exp(-v))
        elif st == "tanh":
            v = np.tanh(v)
    return np.ascontiguousarray(v, dtype=np.float32)


def pack_b(B, block: int):
    """numpy: B (K, N) -> (ceil(N / block), K, block), zero padded: the pre-packed layout."""
    import numpy as np
    K, N = B.shape
    Np = -(-N // block)
    out = np.zeros((Np, K, block), np.float32)
    pad = np.zeros((K, Np * block), np.float32)
    pad[:, :N] = B
    out[...] = pad.reshape(K, Np, block).transpose(1, 0, 2)
    return out


def _micro_tiles(s, stage, order, outer, kc, ic, jr, ir, inner, intrin, panels):
    """The block and micro-tile loop order of `stage`, its kernel call (intrin None: plain
    loops) and the loops the packed panels are made at, in the order given (each
    (buffer or None, axis))."""
    tile = (jr, ir) if order == "ji" else (ir, jr)
    s[stage].reorder(*outer, kc, ic, *tile, *inner)
    if intrin is not None:
        s[stage].tensorize(inner[0], intrin)
    for buf, axis in panels:
        if buf is not None:
            s[buf].compute_at(s[stage], axis)


def packed_matmul(spec: MatmulSpec, target="host", cfg: GemmConfig = GemmConfig()):
    """(schedule, args): args = [A, B, (bias), (R), C] computing the spec with the packed GEMM.

    block "direct" accumulates in place in C (no epilogue).  Otherwise ("goto")
    the accumulation Cacc runs into an M x NC column-block buffer padded to whole
    micro-tiles (Goto's loops NC, KC, MC inside), computed at the column-block loop
    of the output stage C, which applies the epilogue (or copies) from it."""
    tgt = resolve(target)
    MR, NR = kernel_shape(tgt, cfg.MR)
    M, N, K = spec.M, spec.N, spec.K
    direct = cfg.block == "direct"
    if cfg.block not in ("direct", "goto"):
        raise ValueError(f"matmul: unknown block mode {cfg.block!r}")
    if direct and spec.epilogue:
        raise ValueError("matmul: block 'direct' accumulates in the output; an epilogue needs "
                         "'goto'")
    if spec.b_block and spec.b_block % NR:
        raise ValueError(f"matmul: pre-packed B blocks of {spec.b_block} columns are not a multiple "
                         f"of the micro-kernel's {NR}")
    # A read in place: transposed A is contiguous along i already; plain A needs a kernel
    # with a row stride (the generated ones); padded rows past M must not be read
    a_rows_ok = direct or M % MR == 0
    a_in_place = (not cfg.pack_a and a_rows_ok
                  and (spec.trans_a or cfg.MR > 0 or not shipped_a_unit(tgt)))
    a_unit = spec.trans_a or not a_in_place
    # in place, a row tail (M no multiple of MR) is a short tile of the generated kernel
    intrin = micro_kernel(tgt, cfg.MR, cfg.unroll, cfg.prefetch, a_unit=a_unit,
                          rows=direct and M % MR != 0) if cfg.MR else gemm_intrin(tgt)
    batch = spec.batch
    MC = max(MR, cfg.MC // MR * MR)
    NC = max(NR, cfg.NC // NR * NR)
    if spec.b_block:
        NC = max(spec.b_block, NC // spec.b_block * spec.b_block)
    inputs, bias, R = matmul_tensors(spec)
    A, B = inputs[:2]
    Mp, Np = -(-M // MR), -(-N // NR)
    Ap = None if a_in_place else te.compute(spec.a_batch + (Mp, K, MR), lambda *x: _padded(
        x[-3] * MR + x[-1], M, lambda r: A[tuple(x[:-3]) + ((x[-2], r) if spec.trans_a else (r, x[-2]))],
        M % MR != 0), name="Ap")
    if spec.b_block:
        Bp = None
        Npb = -(-N // spec.b_block) * spec.b_block
    else:
        Bp = te.compute(spec.b_batch + (Np, K, NR), lambda *x: _padded(
            x[-3] * NR + x[-1], N,
            lambda c: B[tuple(x[:-3]) + ((c, x[-2]) if spec.trans_b else (x[-2], c))],
            N % NR != 0), name="Bp")
        Npb = Np * NR
    k = te.reduce_axis((0, K), name="k")

    # in place ("direct"), a matrix smaller than one micro-tile (or K = 1) never fills a tile:
    # no kernel call (the tile loops of extent 1 are simplified away, so the nest could not be
    # matched either); "goto" accumulates into whole (zero padded) micro-tiles
    use_kernel = (not direct or (M >= MR and N >= NR)) and K >= 2

    def acc(*x):
        b_idx, i, j = x[:-2], x[-2], x[-1]
        ab = _batch_index(spec.a_batch, batch, b_idx)
        if Ap is None:
            a = A[ab + ((k, i) if spec.trans_a else (i, k))]
        else:
            a = Ap[ab + (i // MR, k, i % MR)]
        if Bp is None:  # index by j's NR-column tile: linear in the tile's columns
            jt, per = j // NR, spec.b_block // NR
            b = B[jt // per, k, jt % per * NR + j % NR]
        else:
            b = Bp[_batch_index(spec.b_batch, batch, b_idx) + (j // NR, k, j % NR)]
        return te.sum(a * b, axis=k)

    if direct:
        C = te.compute(batch + (M, N), acc, name="C")
        s = te.create_schedule(C)
        cax = s[C].op.axis
        ci, cj = cax[-2], cax[-1]
        (ck,) = s[C].op.reduce_axis
        jc, j1 = s[C].split(cj, NC)
        jr, jj = s[C].split(j1, NR)
        kc, kk = s[C].split(ck, cfg.KC)
        ic, i1 = s[C].split(ci, MC)
        ir, ii = s[C].split(i1, MR)
        _micro_tiles(s, C, cfg.order, (*cax[:-2], jc), kc, ic, jr, ir, (kk, ii, jj),
                     intrin if use_kernel else None, ((Bp, kc), (Ap, ic)))
        if cfg.parallel and tgt.can_thread:
            s[C].parallel(s[C].leaf_axes[0])
        return s, inputs + [C]

    Cacc = te.compute(batch + (Mp * MR, Npb), acc, name="Cacc")
    C = te.compute(batch + (M, N), lambda *x: epilogue_expr(
        spec, Cacc[x], bias, R, x[:-2], x[-2], x[-1]), name="C")
    s = te.create_schedule(C)
    ax = s[C].op.axis
    bax, i, j = ax[:-2], ax[-2], ax[-1]
    # the block loops are split again by MR and NR, so the region of Cacc they read
    # (bound inference over these loops' ranges) is whole micro-tiles
    jc, jn = s[C].split(j, NC)
    jn_o, jn_i = s[C].split(jn, NR)
    ic, inn = s[C].split(i, MC)
    in_o, in_i = s[C].split(inn, MR)
    s[C].reorder(*bax, jc, ic, in_o, in_i, jn_o, jn_i)
    s[C].vectorize(jn_i)
    if M >= MR and N >= NR:  # else the block's region would be a partial tile: whole Cacc
        s[Cacc].compute_at(s[C], jc)
    cax = s[Cacc].op.axis
    ci, cj = cax[-2], cax[-1]
    (ck,) = s[Cacc].op.reduce_axis
    jr, jj = s[Cacc].split(cj, NR)
    kc, kk = s[Cacc].split(ck, cfg.KC)
    c_ic, ci1 = s[Cacc].split(ci, MC)
    ir, ii = s[Cacc].split(ci1, MR)
    _micro_tiles(s, Cacc, cfg.order, tuple(cax[:-2]), kc, c_ic, jr, ir, (kk, ii, jj),
                 intrin if use_kernel else None, ((Ap, c_ic), (Bp, kc)))
    if cfg.parallel and tgt.can_thread:
        s[C].parallel(s[C].leaf_axes[0])
    return s, inputs + [C]
