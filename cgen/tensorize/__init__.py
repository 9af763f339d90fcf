"""Tensorization: micro-kernels declared by their compute definition."""
from .intrin import TensorIntrin, TensorizeError, KernelSource, from_compute, tensorize_loop
from .kernels import gemm_intrin, gemm_shape
from .int8_microkernel import dot_i8_intrin, u8s8_tile_intrin


def builtin_intrinsics(target) -> dict:
    """The shipped intrinsics available on a target, by name (a fresh dict)."""
    out = {}
    for make in (gemm_intrin, dot_i8_intrin):
        try:
            intr = make(target)
        except TensorizeError:
            continue
        out[intr.name] = intr
    return out
