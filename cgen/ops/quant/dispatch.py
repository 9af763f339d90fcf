"""Which int8 kernels a target offers (the "algo" choices), workload checks, and the
tensorize call of a packed algorithm's reduction."""
from __future__ import annotations

from ...tensorize import TensorizeError
from ...tensorize.int8_microkernel import dot_i8_intrin, s8s8_tile_intrin, u8s8_tile_intrin
from ..common import config_dict  # noqa: F401 (the templates import it from here)
from .reference import QDTYPES, ROUNDINGS


def _has(make, tgt) -> bool:
    try:
        make(tgt)
    except TensorizeError:
        return False
    return True


def target_algos(tgt) -> tuple:
    out = ("direct", "packed")
    if _has(dot_i8_intrin, tgt):
        out += ("packed_dot",)
    if _has(u8s8_tile_intrin, tgt):
        out += ("packed_tile",)
    if _has(s8s8_tile_intrin, tgt):
        out += ("packed_tile_s8",)
    return out


# the algorithms whose reduction is a register tile (tile_shape's MR x NR), by kernel
TILE_INTRINS = {"packed_tile": u8s8_tile_intrin, "packed_tile_s8": s8s8_tile_intrin}


def default_algo(tgt, K: int) -> str:
    """A tile kernel (s8 x s8 first: where a row has it, it is the cheaper one), else the
    dot kernel, for a reduction of at least 16; else direct."""
    algos = target_algos(tgt)
    for algo in ("packed_tile_s8", "packed_tile", "packed_dot"):
        if algo in algos and K >= 16:
            return algo
    return "direct"


def _check_qdtype(op, what, dtype):
    if dtype not in QDTYPES:
        raise TypeError(f"{op}: {what} must be int8 or uint8, got {dtype}")


def check_common(op, rounding, dtypes):
    if rounding not in ROUNDINGS:
        raise ValueError(f"{op}: rounding must be one of {ROUNDINGS}, got {rounding!r}")
    for what, dt in dtypes.items():
        _check_qdtype(op, what, dt)


def tensorize(s, stage, axis, algo, tgt, mr=None):
    if algo == "packed_dot":
            s[stage].tensorize(axis, dot_i8_intrin(tgt))
    elif algo in TILE_INTRINS:
        s[stage].tensorize(axis, TILE_INTRINS[algo](tgt, mr))
