"""The toolchain driver: C source -> shared library or executable for a target."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .target import Target, STRICT_CFLAGS


class CompileError(RuntimeError):
    """The C compiler refused generated code; carries its message and the C file."""

    def __init__(self, message: str, c_path: str):
        super().__init__(f"C compilation failed for {c_path}:\n{message}")
        self.message = message
        self.c_path = c_path


class ToolchainMissing(RuntimeError):
    pass


def cache_dir() -> Path:
    base = Path(tempfile.gettempdir()) / f"cgen-cache-{os.getuid()}"
    base.mkdir(parents=True, exist_ok=True)
    return base


def cached_file(text: str, suffix: str) -> Path:
    """A file in the cache holding text, named by its hash (a linker script for -T)."""
    p = cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}{suffix}"
    if not p.exists():
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=cache_dir())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, p)
    return p


def compiler_path(cc: str, apt_package: str) -> str:
    path = shutil.which(cc)
    if path is None:
        raise ToolchainMissing(f"C compiler '{cc}' not found; install it with: apt-get install {apt_package}")
    return path


def check_toolchain(target: Target) -> None:
    """One-line error naming the Debian package when the compiler is missing."""
    compiler_path(target.cc, target.apt_package)


@functools.lru_cache(maxsize=None)
def is_gcc(cc: str) -> bool:
    """True for GCC (whatever it is called: cc, gcc, aarch64-linux-gnu-gcc), not clang."""
    out = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    return "Free Software Foundation" in out and "clang" not in out


def compiler_version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else cc


def compile_c(source: str, target: Target, kind: str = "shared", extra_flags=(),
              strict: bool = True, name: str = "kernel", extra_sources=()) -> Path:
    """Compile source (plus extra sources) and return the artifact's path.

    kind: "shared" (a .so for cffi), "object" or "executable".  Artifacts are
    cached by the hash of everything that decides them.
    """
    cc = compiler_path(target.cc, target.apt_package)
    flags = list(target.flags()) + (list(STRICT_CFLAGS) if strict else []) + list(extra_flags)
    if is_gcc(cc):
        # GCC 12's loop if-conversion miscompiles guarded copies whose innermost loop
        # has two iterations at -O3 with AVX (wrong values, seen in padded conv tiles)
        flags.append("-fno-tree-loop-if-convert")
    if kind == "shared":
        flags += ["-shared", "-fPIC"]
    elif kind == "object":
        flags += ["-c"]
    elif target.static:
        # boards and QEMU: no dependence on the device's glibc
        flags += ["-static"]
    libs = list(target.libs) if kind != "object" else []
    # the key covers every input, the artifact's name included (it names the file the
    # directory must hold)
    key = hashlib.sha256(json.dumps([name, source, list(extra_sources), cc, kind, flags, libs])
                         .encode()).hexdigest()[:24]
    out_dir = cache_dir() / key
    suffix = {"shared": ".so", "object": ".o", "executable": ""}[kind]
    artifact = out_dir / f"{name}{suffix}"
    if artifact.exists():
        return artifact
    tmp = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cache_dir()))
    c_path = tmp / f"{name}.c"
    c_path.write_text(source)
    srcs = [str(c_path)]
    # extra sources (a harness, start-up code) are the same for every candidate of a
    # tuning task, and often for every model: compiled once to cached objects named by
    # position only, then only linked
    srcs += [str(compile_c(extra, target, "object", extra_flags, strict, f"extra{i}"))
             for i, extra in enumerate(extra_sources)]
    out = tmp / artifact.name
    cmd = [cc, *flags, *srcs, "-o", str(out), *libs]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError((proc.stderr or proc.stdout).strip() + f"\n(command: {' '.join(cmd)})", str(c_path))
    try:
        os.rename(tmp, out_dir)
    except OSError:
        # another process built the same artifact first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return artifact
