"""The MR x NR register-tile GEMM intrinsic of the conv templates (rows of A with any
strides, B optionally prefetched, row and column tails without scalar code)."""
from __future__ import annotations

from functools import lru_cache

from ...codegen.isa import ROWS, isa_for
from ...tensorize import TensorizeError
from ...tensorize.kernels import tile_definition
from ...tensorize.microkernel import tile_dispatch, tile_kernel, tile_mask_type
from targets import resolve


def tile_kernel_shape_ok(target, MR: int, NR: int) -> bool:
    """Whether an MR x NR register tile kernel exists and fits the register file."""
    regs, lanes = target.vector_registers, target.lanes("float32")
    if not regs or NR % lanes:
        return False
    nv = NR // lanes
    return 1 <= MR and 1 <= nv <= 4 and MR * nv + nv + 1 <= regs


def tile_intrin(target, MR: int, NR: int, prefetch: int = 0, masked: bool = False,
                rows: bool = False, a_packed: bool = False):
    """The MR x NR register-tile GEMM intrinsic, A with arbitrary strides (conv rows);
    `prefetch` > 0 prefetches B that many steps of k ahead.  `masked` (ISAs with
    masks) takes any number of columns up to NR, `rows` any number of rows up to MR,
    so tails need no scalar code.  `a_packed`: A is MR-row panels (contiguous along the
    rows); where the ISA multiplies by lane, a fixed tile then loads MR values as
    vectors instead of broadcasting each row through its own pointer."""
    tgt = resolve(target)
    if not tile_kernel_shape_ok(tgt, MR, NR):
        raise TensorizeError(f"no {MR}x{NR} register tile kernel for target {tgt.name}")
    isa = isa_for(tgt)
    packed = (a_packed and not masked and not rows and getattr(isa, "lane_fma", None)
              and MR % isa.lanes == 0)
    if not packed and masked and tile_mask_type(isa) is None:
        raise TensorizeError(f"no masked tile kernel on {isa.name}")
    return _tile(isa.name, MR, NR, prefetch, masked, rows, bool(packed))


# the kernels' C is a pure function of these arguments, and generating a tile and its
# zero-start twin costs tens of ms: every conv build and tuning candidate asks again
@lru_cache(maxsize=256)
def _tile(isa_name: str, MR: int, NR: int, prefetch: int, masked: bool, rows: bool,
          packed: bool):
    isa = next(r for r in ROWS if r.name == isa_name)
    if packed:
        name = f"cg_tile_{MR}x{NR}p{f'_pf{prefetch}' if prefetch else ''}_{isa.name.replace('-', '_')}"
        zname = name + "_z"
        return tile_definition(name, tile_kernel(name, isa, MR, NR, prefetch, a_read="lanes"),
                               MR, NR, a_unit=True,
                               zero=(zname, tile_kernel(zname, isa, MR, NR, prefetch,
                                                        a_read="lanes", zero=True)))
    name = (f"cg_tile_{MR}x{NR}{'m' if masked else ''}{'r' if rows else ''}"
            f"{f'_pf{prefetch}' if prefetch else ''}_{isa.name.replace('-', '_')}")
    zname = name + "_z"
    return tile_definition(name, tile_dispatch(name, isa, MR, NR, prefetch, masked, rows), MR, NR,
                           fixed_rows=not rows, fixed_cols=not masked,
                           zero=(zname, tile_dispatch(zname, isa, MR, NR, prefetch, masked, rows,
                                                      zero=True)))


def masked_tiles_ok(target) -> bool:
    """Whether the ISA masks lanes natively (AVX-512): a masked tile costs nothing more."""
    isa = isa_for(target)
    return isa is not None and isa.tail == "mask"


def column_tails_ok(target) -> bool:
    """Whether masked tiles exist at all, natively or with vector masks (AVX2's
    vmaskmovps, whose whole tiles run unmasked): column tails then need no scalar code."""
    isa = isa_for(target)
    return isa is not None and tile_mask_type(isa) is not None

