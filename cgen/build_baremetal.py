"""A built Module as a bare-metal AArch64 ELF, and its cost in icount ticks.

The ELF is the module's C compiled with the target's usual flags (so the
kernel's code is what a Linux board would run) and linked with
`-nostdlib -static`, a linker script and the freestanding harness of
cgen.codegen.baremetal, libgcc, and glibc's cross libm.a when the kernel
calls libm.  targets.icount runs it under QEMU's icount.
"""
from __future__ import annotations

from dataclasses import replace
import hashlib
import os
import re
from pathlib import Path

import numpy as np

from targets.icount import IcountResult, IcountRunner, qemu_cpu
from targets.runner import RunError
from targets.toolchain import CompileError, cache_dir, compile_c
from .codegen.baremetal import harness_source, linker_script


# ------------------------------------------------------------------ building
def _linker_script_path() -> Path:
    text = linker_script()
    path = cache_dir() / f"baremetal-{hashlib.sha256(text.encode()).hexdigest()[:16]}.ld"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


# C99's float functions of <math.h>
_LIBM = re.compile(r"\b(?:a?(?:sin|cos|tan)h?|atan2|exp|exp2|expm1|log|log2|log10|log1p|logb|sqrt|cbrt|"
                   r"pow|hypot|erfc?|[lt]gamma|floor|ceil|trunc|l?l?round|l?l?rint|nearbyint|fabs|fmod|"
                   r"remainder|remquo|fmax|fmin|fdim|fma|frexp|ldexp|scalbl?n|ilogb|modf|copysign|nextafter|"
                   r"nexttoward|nan)f\s*\(")


def uses_libm(c_source: str) -> bool:
    return _LIBM.search(c_source) is not None


def build_elf(mod, extra_flags=(), harness: str | None = None) -> Path:
    """The bare-metal ELF of a built cgen Module (an AArch64 target).

    extra_flags go to the kernel's compile only, e.g. ("-fno-tree-vectorize",)
    for a scalar baseline (gcc vectorises plain loops at -O3).  OpenMP pragmas
    are ignored (one core).  Raises CompileError, ValueError for a target
    that is not AArch64.  harness: another harness C (default: cgen.codegen.baremetal's
    around mod.func), e.g. one around a whole model's entry point.
    """
    tgt = mod.target
    if tgt.arch != "aarch64":
        raise ValueError(f"icount mode runs AArch64 code: target {tgt.name} is {tgt.arch}; "
                         f"build the module for aarch64 (or rpi3, rpi4, rpi5)")
    libm = uses_libm(mod.c_source)
    bm = replace(tgt, name=f"{tgt.name}-baremetal", static=True, threads=False, bare_metal=True,
                 libs=(("-lm",) if libm else ()) + ("-lgcc",))
    harness = harness_source(mod.func, mod.prototype) if harness is None else harness
    obj = compile_c(harness, bm, "object", extra_flags=("-ffreestanding",),
                    name="cg_baremetal")
    flags = ["-nostdlib", "-T", str(_linker_script_path()), str(obj)]
    if "#pragma omp" in mod.c_source:
        flags.append("-Wno-unknown-pragmas")
    try:
        return compile_c(mod.c_source, bm, "executable", extra_flags=tuple(flags) + tuple(extra_flags),
                         name=mod.name)
    except CompileError as e:
        if libm and re.search(r"undefined reference|libm\.a|cannot find -lm", e.message):
            raise CompileError(e.message + "\n(the kernel calls libm and the cross libm.a "
                               "(Debian libc6-dev-arm64-cross) does not link without a C library "
                               "in this bare-metal image)", e.c_path) from None
        raise


def default_inputs(func, seed: int = 0) -> list:
    """Deterministic arrays for func's parameters: floats of magnitude in [0.5, 1)
    (normal numbers, random signs), small integers, random booleans."""
    rng = np.random.default_rng(seed)
    out = []
    for p in func.params:
        shape = tuple(p.shape)
        if p.dtype == "float32":
            a = (rng.uniform(0.5, 1.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)
        elif p.dtype == "bool":
            a = rng.random(shape) < 0.5
        else:
            info = np.iinfo(p.dtype)
            a = rng.integers(max(info.min, -8), min(info.max, 8), shape, dtype=p.dtype, endpoint=True)
        out.append(np.ascontiguousarray(a))
    return out


def icount_benchmark(mod, *arrays, repeat: int = 3, number: int = 1, timeout: float = 60.0,
                     extra_flags=(), seed: int = 0) -> IcountResult:
    """Ticks per call of a built AArch64 Module on bare-metal QEMU with icount.

    arrays: one per parameter (checked like a call); without them,
    default_inputs(mod.func, seed).  `outputs` holds the written arrays after
    the warm-up call, for checking before a cost counts.  A compile failure,
    crash or hang comes back as an error in the result; a missing QEMU raises
    ToolMissing.
    """
    runner = IcountRunner(cpu=qemu_cpu(mod.target.flags()))
    runner.check()
    arrays = mod.check_args(arrays) if arrays else default_inputs(mod.func, seed)
    try:
        elf = build_elf(mod, extra_flags)
    except CompileError as e:
        msg = str(e)
        msg = msg if len(msg) <= 4000 else msg[:2000] + "\n...\n" + msg[-2000:]
        return IcountResult(None, (), RunError("compile_error", msg), True)
    return runner.run(elf, [p.name for p in mod.func.params], arrays, mod.func.outputs,
                      repeat=repeat, number=number, timeout=timeout)
