"""The shipped f32 micro-kernel: a register-blocked GEMM (outer-product FMA) per ISA
row (the int8 kernels are in cgen.tensorize.int8_microkernel).

The GEMM kernel's C comes from the one generator (cgen.tensorize.microkernel) and
its shape from the ISA row (`gemm_tile`).  `gemm_intrin(target)` gives the
intrinsic for a target, declared by its compute definition.
"""
from __future__ import annotations

from .. import te
from ..codegen.isa import kernel_isa
from .intrin import KernelSource, TensorIntrin, from_compute, TensorizeError
from .microkernel import gemm_tile, target_core, tile_kernel


def _gemm_row(target):
    isa = kernel_isa(target)
    if isa is None or not isa.gemm_tile:
        raise TensorizeError(f"no GEMM micro-kernel for target {target.name} (isa {target.isa})")
    return isa


def tile_definition(name: str, source: str, MR: int, NR: int, fixed_rows: bool = True,
                    fixed_cols: bool = True, a_unit: bool = False,
                    a_k_unit: bool = False, zero: tuple | None = None) -> TensorIntrin:
    """The intrinsic of an MR x NR GEMM tile: C[i, j] += sum_k A[i, k] * B[k, j], B and C
    contiguous along j; `a_unit`: A contiguous along i (packed); `a_k_unit`: along k (A
    read in place); a fixed extent is the tile's, else the kernel takes the count (M, N)
    first.  `zero`: (name, source) of the kernel that starts from zero (TensorIntrin)."""
    A = te.placeholder((MR, 1), "float32", name="A")
    B = te.placeholder((1, NR), "float32", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((MR, NR), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    fixed = ({"i": MR} if fixed_rows else {}) | ({"j": NR} if fixed_cols else {})
    unit = ({("b", "j"), ("c", "j")} | ({("a", "i")} if a_unit else set())
            | ({("a", "k")} if a_k_unit else set()))
    return from_compute(name, C, fixed, unit, KernelSource(name, source),
                        KernelSource(*zero) if zero else None)


def gemm_shape(target) -> tuple:
    """(MR, NR) of the target's GEMM micro-kernel."""
    return gemm_tile(_gemm_row(target), target)[:2]


def gemm_intrin(target) -> TensorIntrin:
    """C[i, j] += sum_k A[i, k] * B[k, j] on an MR x NR register tile (the ISA row's
    shipped tile; targets without SIMD get the plain-C register tile).

    B and C must be contiguous along j; where the tile reads A by lane (NEON) A must be
    packed (contiguous along i)."""
    isa = _gemm_row(target)
    MR, NR, a_read = gemm_tile(isa, target)
    core = "" if (MR, NR, a_read) == isa.gemm_tile else "_" + target_core(target).replace("-", "_")
    name = (f"cg_gemm_{MR}x{NR}_scalar" if isa.scalar
            else f"cg_gemm_{MR}x{NR}_{target.isa}_{target.arch}{core}")
    return tile_definition(name, tile_kernel(name, isa, MR, NR, a_read=a_read), MR, NR,
                           a_unit=a_read == "lanes")

