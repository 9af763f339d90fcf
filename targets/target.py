"""Targets as data: which compiler, which flags, which ISA, how code runs.

A target is a frozen value named by a short string (`host`, `aarch64`,
`rpi4`, ...) or loaded from a user's TOML file; nothing here is global state.
"""
from __future__ import annotations

from dataclasses import dataclass, replace, fields
import functools
from pathlib import Path
import platform

COMMON_CFLAGS = ("-std=c99", "-O3", "-ffp-contract=fast")
STRICT_CFLAGS = ("-Wall", "-Wextra", "-Werror", "-pedantic")
# gcc workarounds in targets' flags (cortex-m55) that clang does not take
GCC_ONLY_CFLAGS = ("-fno-schedule-insns", "-fno-schedule-insns2")


# Vector registers per (arch, isa): AVX-512 and A64 NEON have 32, AVX2 and A32 NEON 16.
_VECTOR_REGISTERS = {("x86_64", "avx512"): 32, ("x86_64", "avx2"): 16,
                     ("aarch64", "neon"): 32, ("armv7", "neon"): 16,
                     ("armv8m", "mve"): 8}
_DTYPE_BITS = {"float32": 32, "int32": 32, "uint32": 32, "float64": 64, "int64": 64,
               "int16": 16, "uint16": 16, "float16": 16, "int8": 8, "uint8": 8}


@dataclass(frozen=True)
class Target:
    name: str
    cc: str                        # compiler command
    cflags: tuple = ()             # target flags beyond COMMON_CFLAGS
    isa: str = "none"              # none | avx2 | avx512 | neon
    arch: str = "x86_64"           # x86_64 | aarch64 | armv7 | armv7e-m
    vector_bits: int = 0
    triple: str = ""               # e.g. aarch64-linux-gnu; "" for the host
    runner: str = "local"          # local | qemu-aarch64 | qemu-arm
    apt_package: str = "gcc"       # what provides cc on Debian
    static: bool = False           # link executables -static (boards, QEMU)
    threads: bool = True           # OpenMP available
    bare_metal: bool = False
    sysroot: str = ""
    libs: tuple = ("-lm",)
    description: str = ""
    dotprod: bool = False          # Armv8.2 dot product (sdot): int8 kernels use it

    def flags(self) -> tuple:
        out = COMMON_CFLAGS + (_with_dotprod(self.cflags) if self.dotprod else self.cflags)
        if self.sysroot:
            out += (f"--sysroot={self.sysroot}",)
        return out

    @property
    def is_host(self) -> bool:
        return self.runner == "local"

    @property
    def lanes_f32(self) -> int:
        return self.vector_bits // 32

    @property
    def can_thread(self) -> bool:
        """Whether kernels may run loops on several threads (OpenMP, not bare metal)."""
        return bool(self.threads) and not self.bare_metal

    @property
    def vector_registers(self) -> int:
        """Architectural vector registers (the register-tile budget); 0 without SIMD."""
        return _VECTOR_REGISTERS.get((self.arch, self.isa), 0)

    def lanes(self, dtype: str = "float32") -> int:
        """Elements of `dtype` in one vector register; 1 without SIMD."""
        if self.isa == "none" or not self.vector_bits:
            return 1
        return max(1, self.vector_bits // _DTYPE_BITS[dtype])

    def with_cc(self, cc: str) -> "Target":
        """The same target built with another compiler (gcc or clang).

        clang cross-compiles with --target=TRIPLE and the gcc cross sysroot, without the
        flags that work around gcc bugs (GCC_ONLY_CFLAGS: clang refuses them)."""
        if "clang" in Path(cc).name and self.triple:
            flags = tuple(f for f in self.cflags if f not in GCC_ONLY_CFLAGS)
            return replace(self, cc=cc, cflags=(f"--target={self.triple}",) + flags,
                           apt_package="clang")
        return replace(self, cc=cc, apt_package="clang" if "clang" in cc else self.apt_package)

    def describe(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Cores whose -mcpu already enables the dot product (the compiler then defines the
# feature macro that selects the int8 kernels' sdot way).
_DOTPROD_CPUS = ("cortex-a55", "cortex-a75", "cortex-a76", "cortex-a77", "cortex-a78",
                 "cortex-x1", "neoverse-n1")


def _with_dotprod(cflags: tuple) -> tuple:
    """cflags that enable the dot product.  gcc's NEON header wants Armv8.2 for the sdot
    intrinsic (an armv8-a+dotprod build defines the macro, then fails to inline it), so an older
    -march becomes armv8.2-a+dotprod, and an -mcpu of a core without it becomes that
    -march with -mtune of the core; an -mcpu of a core that has it stays."""
    for i, f in enumerate(cflags):
        if not f.startswith(("-mcpu=", "-march=")):
            continue
        opt, value = f.split("=", 1)
        base, *ext = value.split("+")
        if "dotprod" in ext or (opt == "-mcpu" and base in _DOTPROD_CPUS):
            return cflags
        arch = base if opt == "-march" and base not in ("armv8-a", "armv8.1-a") else "armv8.2-a"
        new = (f"-march={'+'.join([arch, *ext, 'dotprod'])}",)
        return cflags[:i] + new + ((f"-mtune={base}",) if opt == "-mcpu" else ()) + cflags[i + 1:]
    return cflags + ("-march=armv8.2-a+dotprod",)


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset:
    """This CPU's feature flags, read once: every in-process kernel call asks (runner check)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return frozenset()
    for line in info.splitlines():
        if line.startswith("flags") or line.startswith("Features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


_AARCH64 = Target("aarch64", "aarch64-linux-gnu-gcc", ("-march=armv8-a",), "neon", "aarch64", 128,
                  "aarch64-linux-gnu", "qemu-aarch64", "gcc-aarch64-linux-gnu", static=True,
                  description="armv8-a + NEON, 64-bit Linux (Raspberry Pi 3/4/5 on a 64-bit OS)")
# Debian's armhf default is armv7-a+fp without NEON: the FPU flags are not optional.
_ARMV7 = Target("armv7", "arm-linux-gnueabihf-gcc",
                ("-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard"), "neon", "armv7", 128,
                "arm-linux-gnueabihf", "qemu-arm", "gcc-arm-linux-gnueabihf", static=True,
                description="armv7-a + NEON-VFPv4, hard float, 32-bit Linux (Raspberry Pi 2/3/4 on a 32-bit OS)")


# Bare metal: newlib + rdimon semihosting, run on a board QEMU models (targets/semihost.py).
_CORTEX_M4 = Target("cortex-m4", "arm-none-eabi-gcc",
                    ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                    "none", "armv7e-m", 0, "arm-none-eabi", "qemu-system-arm",
                    "gcc-arm-none-eabi", static=True, threads=False, bare_metal=True,
                    description="Cortex-M4F bare metal (QEMU mps2-an386, semihosting)")
# Cortex-M55: Armv8.1-M mainline with Helium (MVE); arch "armv8m" (Armv8-M mainline: the
# arch goes into kernel names, so no dot).  -mcpu=cortex-m55 with the default -mfpu=auto
# enables the FPU and float MVE (the MVE feature macro is 3: integer and float32 vectors).
# No RTL scheduling: gcc 12's MVE vector load / store intrinsics give their memory as
# int[1], 4 bytes of the 16 (-fdump-rtl-expand), so the schedulers move
# scalar accesses to lanes 1-3 across them (a padded conv2d_nchw summed wrong at -O3;
# tests/test_cortex_m55.py keeps the case).
_CORTEX_M55 = Target("cortex-m55", "arm-none-eabi-gcc",
                     ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard", "-fno-schedule-insns",
                      "-fno-schedule-insns2"),
                     "mve", "armv8m", 128, "arm-none-eabi", "qemu-system-arm",
                     "gcc-arm-none-eabi", static=True, threads=False, bare_metal=True,
                     description="Cortex-M55 + Helium (MVE) bare metal (QEMU mps3-an547, semihosting)")


# Cortex-M7: the same Armv7E-M code (DSP extension included) with FPv5, single precision
# as on most M7 parts; it runs on QEMU's mps2-an500 (targets/semihost.py picks the board).
_CORTEX_M7 = replace(_CORTEX_M4, name="cortex-m7",
                     cflags=("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
                     description="Cortex-M7F bare metal (QEMU mps2-an500, semihosting)")


def _board(base: Target, name: str, cpu: str, desc: str) -> Target:
    flags = tuple(f for f in base.cflags if not f.startswith("-march="))
    return replace(base, name=name, cflags=(f"-mcpu={cpu}",) + flags, description=desc)


# What this machine must report (in /proc/cpuinfo) to run a target's code, per (arch, isa).
_CPU_NEEDS = {
    ("x86_64", "avx2"): ("avx2", "fma"),
    ("x86_64", "avx512"): ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"),
    ("armv7", "neon"): ("neon",),
}
_MACHINE_ARCH = {"x86_64": "x86_64", "AMD64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
                 "armv7l": "armv7"}
# The built-in target a detected host starts from, best first, per machine arch.
_HOST_BASES = {"x86_64": ("x86-avx512", "x86-avx2"), "aarch64": ("aarch64",)}
# Features beyond a base target's flags that kernels use when the compiler enables them
# (the int8 tile kernel's vpdpbusd): (base target, cpuinfo flag, compiler flag).  Named
# flags, never -march=native, so the flags (and the compile-cache key) say what code runs.
_HOST_EXTRAS = (("x86-avx512", "avx512_vnni", "-mavx512vnni"),)


def cannot_run(target: Target, cpu_flags=None, machine=None) -> str | None:
    """Why this machine cannot run target's code natively, or None if it can."""
    cpu = _cpu_flags() if cpu_flags is None else set(cpu_flags)
    raw = machine or platform.machine()
    arch = _MACHINE_ARCH.get(raw, raw)
    if target.bare_metal:
        return f"it is bare-metal {target.arch} firmware"
    if target.arch not in (arch, raw):
        return f"it is {target.arch} code and this machine is {arch}"
    missing = [f for f in _CPU_NEEDS.get((arch, target.isa), ()) if f not in cpu]
    if missing:
        return f"this CPU lacks {' '.join(missing)}"
    return None


def _host(table: dict, env=None, cpu_flags=None, machine=None) -> Target:
    """The local machine as a target: a built-in target's ISA and flags, run and compiled here.

    CGEN_HOST=<built-in name> picks that target (it must be runnable here); otherwise the
    best built-in target this CPU runs, plus its detected extras (_HOST_EXTRAS)."""
    import os
    cpu = _cpu_flags() if cpu_flags is None else set(cpu_flags)
    machine = machine or platform.machine()
    forced = (os.environ if env is None else env).get("CGEN_HOST", "")
    if forced:
        if forced not in table:
            raise ValueError(f"CGEN_HOST={forced}: not a built-in target; use one of "
                             f"{', '.join(table)}")
        why = cannot_run(table[forced], cpu, machine)
        if why:
            raise ValueError(f"CGEN_HOST={forced}: this machine cannot run its code ({why})")
        base, extra, desc = table[forced], (), f"this machine as {forced} (CGEN_HOST)"
    else:
        arch = _MACHINE_ARCH.get(machine, machine)
        base = next((table[n] for n in _HOST_BASES.get(arch, ())
                     if cannot_run(table[n], cpu, machine) is None), table["generic-c"])
        extra = tuple(f for b, c, f in _HOST_EXTRAS if b == base.name and c in cpu)
        desc = f"this machine ({base.name}{''.join(' ' + f for f in extra)})"
    # The host compiles with the local cc and runs here, whatever the base's toolchain is.
    return replace(base, name="host", cc="cc", cflags=base.cflags + extra, triple="",
                   runner="local", apt_package="gcc", static=False, threads=True,
                   bare_metal=False, sysroot="", description=desc)


def builtin_targets(host: bool = True) -> dict:
    """Every named target, freshly made (host is detected from this machine, or CGEN_HOST)."""
    t = {
        "generic-c": Target("generic-c", "cc", (), "none", platform.machine(), 0,
                            description="portable C99, no intrinsics, for this machine"),
        "x86-avx2": Target("x86-avx2", "cc", ("-mavx2", "-mfma"), "avx2", "x86_64", 256,
                           description="x86-64 with AVX2 + FMA"),
        "x86-avx512": Target("x86-avx512", "cc",
                             ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"),
                             "avx512", "x86_64", 512, description="x86-64 with AVX-512 F/BW/VL/DQ"),
        "aarch64": _AARCH64,
        "armv7": _ARMV7,
        "rpi3": _board(_AARCH64, "rpi3", "cortex-a53", "Raspberry Pi 3, 64-bit OS"),
        "rpi4": _board(_AARCH64, "rpi4", "cortex-a72", "Raspberry Pi 4, 64-bit OS"),
        "rpi5": replace(_board(_AARCH64, "rpi5", "cortex-a76", "Raspberry Pi 5, 64-bit OS"),
                        dotprod=True),
        "rpi2": _board(_ARMV7, "rpi2", "cortex-a7", "Raspberry Pi 2, 32-bit OS"),
        "rpi3-32": _board(_ARMV7, "rpi3-32", "cortex-a53", "Raspberry Pi 3, 32-bit OS"),
        "rpi4-32": _board(_ARMV7, "rpi4-32", "cortex-a72", "Raspberry Pi 4, 32-bit OS"),
        "cortex-m4": _CORTEX_M4,
        "cortex-m7": _CORTEX_M7,
        "cortex-m55": _CORTEX_M55,
    }
    return {"host": _host(t), **t} if host else t


# host is not built here: a bad CGEN_HOST is reported where a target is resolved, in one line.
TARGET_NAMES = ("host",) + tuple(builtin_targets(host=False))
_TOML_KEYS = {f.name for f in fields(Target)}


def load_toml(path) -> Target:
    """A user target from a TOML file.

    Keys are Target's fields; `base = "aarch64"` starts from a named target.
    Example:
        name = "myboard"
        base = "aarch64"
        cflags = ["-mcpu=cortex-a55"]
        dotprod = true      # Armv8.2 sdot for the int8 kernels (adds +dotprod to the flags)
    """
    from .toml_file import read_toml
    p = Path(path)
    data = read_toml(p, "target file")
    base_name = data.pop("base", None)
    unknown = set(data) - _TOML_KEYS
    if unknown:
        raise ValueError(f"target file {p}: unknown keys {sorted(unknown)}; known: {sorted(_TOML_KEYS)}")
    if base_name is not None:
        base = resolve(base_name)
    else:
        for req in ("cc", "isa", "arch"):
            if req not in data:
                raise ValueError(f"target file {p}: needs '{req}' (or 'base = \"NAME\"')")
        base = Target(name=p.stem, cc=data["cc"])
    data.setdefault("name", p.stem)
    for k in ("cflags", "libs"):
        if k in data:
            data[k] = tuple(data[k])
    out = replace(base, **data)
    if out.dotprod and out.arch != "aarch64":
        raise ValueError(f"target file {p}: dotprod = true needs an aarch64 target, not {out.arch}")
    return out


def resolve(target) -> Target:
    """A Target from a Target, a built-in name, or a path to a TOML file."""
    if isinstance(target, Target):
        return target
    if isinstance(target, Path) or (isinstance(target, str) and target.endswith(".toml")):
        return load_toml(target)
    if not isinstance(target, str):
        raise TypeError(f"target must be a name, a .toml path or a Target, got {target!r}")
    table = builtin_targets()
    if target not in table:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(table)} (or a .toml file)")
    return table[target]
