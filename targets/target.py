"""Targets as data: which compiler, which flags, which ISA, how code runs."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

COMMON_CFLAGS = ("-std=c99", "-O3", "-ffp-contract=fast")
STRICT_CFLAGS = ("-Wall", "-Wextra", "-Werror", "-pedantic")


@dataclass(frozen=True)
class Target:
    name: str
    cc: str                       # compiler command
    cflags: tuple = ()            # target flags beyond COMMON_CFLAGS
    isa: str = "none"             # none | avx2 | avx512 | neon
    vector_bits: int = 0
    triple: str = ""              # e.g. aarch64-linux-gnu; "" for the host
    runner: str = "local"         # local | qemu-aarch64 | qemu-arm
    apt_package: str = "gcc"      # what provides cc on Debian
    bare_metal: bool = False
    libs: tuple = ("-lm",)

    def flags(self) -> tuple:
        return COMMON_CFLAGS + self.cflags

    def with_cc(self, cc: str) -> "Target":
        return replace(self, cc=cc)


def _host_isa() -> tuple[str, int, tuple]:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        info = ""
    flags = set()
    for line in info.splitlines():
        if line.startswith("flags") or line.startswith("Features"):
            flags.update(line.split(":", 1)[1].split())
            break
    if "avx512f" in flags:
        return "avx512", 512, ("-march=native",)
    if "avx2" in flags and "fma" in flags:
        return "avx2", 256, ("-march=native",)
    if "asimd" in flags or "neon" in flags:
        return "neon", 128, ("-mcpu=native",)
    return "none", 0, ("-march=native",)


def _builtin(name: str) -> Target:
    if name == "host":
        isa, bits, flags = _host_isa()
        return Target("host", "cc", flags, isa, bits)
    if name == "generic-c":
        return Target("generic-c", "cc", (), "none", 0)
    raise KeyError(name)


TARGET_NAMES = ("host", "generic-c")


def resolve(target) -> Target:
    """A Target from a Target or a name."""
    if isinstance(target, Target):
        return target
    if not isinstance(target, str):
        raise TypeError(f"target must be a name or a Target, got {target!r}")
    try:
        return _builtin(target)
    except KeyError:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGET_NAMES)}") from None
