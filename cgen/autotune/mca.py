"""Cycles of a micro-kernel's hot loop, predicted by llvm-mca.

The kernel's C is compiled to assembly by the target's own cross compiler
(`-S`, the core named by -mcpu, or -mtune on x86 where the target's flags keep
choosing the ISA); the innermost loop with the most FMAs is cut out between its
label and its backward branch, and llvm-mca runs it with the scheduling model
LLVM has for the core:

    loop = fma_bound_fraction(src, "cg_gemm_8x8_neon_aarch64", "cortex-a53", "aarch64", 16)
    loop.cycles_per_iter, loop.ipc, loop.bottleneck, loop.fraction

The FMA-pipe bound is LLVM's too, never a number typed in: llvm-mca runs a
block of independent vector FMAs (more accumulators than the FMA latency needs)
on the same core and the bound of a loop is its FMA count times the cycles one
FMA costs there.  `fraction` = bound / predicted cycles (1.0: the loop runs at
the FMA pipe's limit).  Note LLVM 14 (Debian 12) has no Cortex-A72 or A76
model of its own: both use its Cortex-A57 model (the A53 has an in-order one).

`python -m cgen.autotune.mca --report` prints the NEON GEMM micro-kernels'
fractions on the Raspberry Pi cores; `python -m bench mca` adds the rank
correlation of llvm-mca's estimate against measured seconds on the host.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..codegen.isa import AVX2, NEON_AARCH64, NEON_ARMV7

MCA = "llvm-mca"
MCA_ITERATIONS = 200


@dataclass(frozen=True)
class Arch:
    """How one instruction set's loops are compiled, found and fed to llvm-mca."""
    mtriple: str            # llvm-mca -mtriple
    base_target: str        # the named target whose compiler and flags build the kernel
    cpu_flag: str           # the compiler flag naming the core
    fma: str                # regex of a vector FMA mnemonic
    fma_line: str           # one independent FMA of the bound's block ({i}: accumulator)
    accumulators: int       # enough independent FMAs to hide the latency, in registers
    branch: str             # regex of a conditional or plain branch mnemonic
    header: str             # the intrinsics header a bare kernel needs


ARCHES = {
    "aarch64": Arch("aarch64", "aarch64", "-mcpu", r"fmla", "fmla\tv{i}.4s, v30.4s, v31.4s", 28,
                    r"b|b\.?[a-z]{2}|cbn?z|tbn?z", NEON_AARCH64.header),
    "armv7": Arch("armv7", "armv7", "-mcpu", r"v(fma|mla)\.f32", "vfma.f32\tq{i}, q14, q15", 14,
                  r"b|b[a-z]{2}", NEON_ARMV7.header),
    "x86-64": Arch("x86_64", "x86-avx2", "-mtune", r"vfmadd\d+ps",
                   "vfmadd231ps\t%ymm14, %ymm15, %ymm{i}", 14, r"j[a-z]+", AVX2.header),
}
_EXITS = ("ret", "bx", "pop")
TRIPLE_OF_ARCH = {"aarch64": "aarch64", "armv7": "armv7", "x86_64": "x86-64"}
# llvm-mca needs these to read the compiler's assembly (the A32 syntax and FPU)
_KEEP_DIRECTIVES = re.compile(r"^\s*\.(syntax|arch|fpu|arch_extension)\b")


class McaMissing(RuntimeError):
    """llvm-mca or the target's compiler is not installed."""


@dataclass(frozen=True)
class McaLoop:
    """llvm-mca's prediction for one loop body on one core."""
    cpu: str
    triple: str
    instructions: int       # per iteration
    fmas: int               # vector FMAs per iteration (counted in the loop)
    cycles_per_iter: float
    ipc: float
    bottleneck: str         # the busiest resource, or stalls when no resource is saturated
    bound_cycles: float     # fmas_per_iter x cycles of one FMA on this core (llvm-mca's)
    fraction: float         # bound_cycles / cycles_per_iter

    @property
    def cycles_per_instruction(self) -> float:
        return self.cycles_per_iter / self.instructions


def missing(triple: str = "aarch64") -> str | None:
    """Why loops of `triple` cannot be analysed here (one line), or None."""
    if triple not in ARCHES:
        return f"llvm-mca: unknown triple {triple!r}; one of {', '.join(ARCHES)}"
    if shutil.which(MCA) is None:
        return f"{MCA} is not installed (Debian: apt-get install llvm)"
    from targets import resolve
    cc = resolve(ARCHES[triple].base_target).cc
    if shutil.which(cc) is None:
        return f"{cc} is not installed (needed to compile kernels for llvm-mca)"
    return None


def _require(triple: str) -> Arch:
    why = missing(triple)
    if why is not None:
        raise McaMissing(why)
    return ARCHES[triple]


# ----------------------------------------------------------------------------- compile, cut the loop
def core_target(triple: str, cpu: str):
    """The named target of `triple`, its -march replaced by the core (-mcpu), or (x86) the
    core added as -mtune."""
    from targets import resolve
    arch = ARCHES[triple]
    tgt = resolve(arch.base_target)
    flags = tgt.cflags
    if arch.cpu_flag == "-mcpu":
        flags = tuple(f for f in flags if not f.startswith(("-march=", "-mcpu=")))
    return replace(tgt, cflags=(f"{arch.cpu_flag}={cpu}",) + flags)


@functools.lru_cache(maxsize=64)
def compile_asm(kernel_c: str, tgt) -> str:
    """The assembly gcc makes of kernel_c for tgt (its static functions kept, inline or
    not: a register tile is out of line; the same source and target are compiled once
    per process)."""
    from targets.toolchain import is_gcc
    flags = list(tgt.flags()) + ["-S", "-fkeep-inline-functions"]
    if is_gcc(tgt.cc):
        # as targets.toolchain.compile_c builds it; the static tiles have no caller here
        flags += ["-fno-tree-loop-if-convert", "-fkeep-static-functions"]
    with tempfile.TemporaryDirectory(prefix="cgen-mca-") as d:
        c, s = Path(d) / "k.c", Path(d) / "k.s"
        c.write_text(kernel_c)
        proc = subprocess.run([tgt.cc, *flags, str(c), "-o", str(s)], capture_output=True, text=True)
        if proc.returncode != 0:
            first = (proc.stderr or proc.stdout).strip().splitlines()
            raise ValueError(f"mca: {tgt.cc} failed: {first[0] if first else proc.returncode}")
        return s.read_text()


def _instr(line: str) -> tuple | None:
    """(mnemonic, operands) of an instruction line, None for labels, directives, comments."""
    text = re.split(r"[@;#]|//", line, maxsplit=1)[0].strip() if not line.lstrip().startswith("#") \
        else ""
    if not text or text.endswith(":") or text.startswith("."):
        return None
    parts = text.split(None, 1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


def function_lines(asm: str, func: str | None) -> list:
    """The lines of func in the assembly (the whole file when func is None)."""
    lines = asm.splitlines()
    if func is None:
        return lines
    try:
        start = next(i for i, ln in enumerate(lines) if re.match(rf"{re.escape(func)}:", ln))
    except StopIteration:
        raise ValueError(f"mca: function {func} not in the assembly") from None
    end = next((i for i in range(start + 1, len(lines))
                if re.match(rf"\s*\.size\s+{re.escape(func)}\b", lines[i])), len(lines))
    return lines[start:end]


def loops(lines: list, arch: Arch) -> list:
    """(first, last) line indices of each loop: a label and a later branch back to it."""
    labels = {m.group(1): i for i, ln in enumerate(lines) if (m := re.match(r"^(\.?L\w+):", ln))}
    out = []
    for i, ln in enumerate(lines):
        ins = _instr(ln)
        if ins and re.fullmatch(arch.branch, ins[0]):
            target = ins[1].split(",")[-1].strip()
            if target in labels and labels[target] < i:
                out.append((labels[target], i))
    return out


def hot_loop(asm: str, func: str | None, arch: Arch) -> list:
    """The instruction lines of func's (None: the file's) innermost loop with the most
    FMAs (ties: the most instructions, then the first)."""
    lines = function_lines(asm, func)
    # a region a branch jumps back across a return is the tail of a loop laid out after
    # the function's exit, not a loop
    found = [(a, b) for a, b in loops(lines, arch)
             if not any((_instr(ln) or ("",))[0] in _EXITS for ln in lines[a:b])]
    inner = [(a, b) for a, b in found
             if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in found)]
    if not inner:
        raise ValueError(f"mca: no loop in {func or 'the kernel'}")

    def body(lp):
        return [ln.strip() for ln in lines[lp[0] + 1:lp[1] + 1] if _instr(ln)]

    def score(lp):
        ins = body(lp)
        return (sum(bool(re.match(arch.fma + r"\b", s)) for s in ins), len(ins), -lp[0])
    return body(max(inner, key=score))


# ----------------------------------------------------------------------------- llvm-mca
def run_mca(body: list, cpu: str, arch: Arch, preamble=(), iterations: int = MCA_ITERATIONS) -> str:
    text = "\n".join(list(preamble) + body) + "\n"
    proc = subprocess.run([MCA, f"-mtriple={arch.mtriple}", f"-mcpu={cpu}", f"-iterations={iterations}",
                           "-instruction-info=false"], input=text, capture_output=True, text=True)
    if proc.returncode != 0 or "Total Cycles" not in proc.stdout:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise ValueError(f"mca: llvm-mca -mcpu={cpu} failed: {err[0] if err else proc.returncode}")
    return proc.stdout


def parse_mca(out: str) -> dict:
    """iterations, instructions, cycles, ipc and the per-resource pressure of one report."""
    def num(key):
        return float(re.search(rf"^{key}:\s+([\d.]+)", out, re.M).group(1))
    names = dict(re.findall(r"^\[([\d.]+)\]\s+-\s+(\S+)", out, re.M))
    pressure = {}
    m = re.search(r"Resource pressure per iteration:\n(.*)\n(.*)\n", out)
    if m:
        for idx, val in zip(re.findall(r"\[([\d.]+)\]", m.group(1)), m.group(2).split()):
            p = 0.0 if val == "-" else float(val)
            name = names.get(idx, idx)
            pressure[name] = max(pressure.get(name, 0.0), p)
    return {"iterations": num("Iterations"), "instructions": num("Instructions"),
            "cycles": num("Total Cycles"), "ipc": num("IPC"), "pressure": pressure}


def bottleneck(cycles_per_iter: float, pressure: dict) -> str:
    """The busiest resource when it is busy (>= 90%) every cycle, else stalls (an in-order
    core waiting on a load, a dependency chain) with the busiest resource's share."""
    if not pressure:
        return "unknown"
    name, p = max(sorted(pressure.items()), key=lambda kv: kv[1])
    if p >= 0.9 * cycles_per_iter:
        return name
    return f"stalls (busiest {name}: {p:g} of {cycles_per_iter:.3g} cycles)"


def analyse(body: list, cpu: str, triple: str, preamble=()) -> dict:
    """llvm-mca's cycles per iteration, IPC and bottleneck of a loop body."""
    arch = _require(triple)
    r = parse_mca(run_mca(body, cpu, arch, preamble))
    cyc = r["cycles"] / r["iterations"]
    return {"instructions": int(r["instructions"] / r["iterations"]), "cycles_per_iter": cyc,
            "ipc": r["ipc"], "bottleneck": bottleneck(cyc, r["pressure"]),
            "fmas": sum(bool(re.match(arch.fma + r"\b", s)) for s in body)}


@functools.lru_cache(maxsize=None)
def fma_cycles(cpu: str, triple: str) -> float:
    """Cycles one vector FMA costs on `cpu` by LLVM's model: a block of independent FMAs
    (no loads, no loop overhead), its cycles per iteration over its FMA count."""
    arch = _require(triple)
    body = [arch.fma_line.format(i=i) for i in range(arch.accumulators)]
    r = parse_mca(run_mca(body, cpu, arch, iterations=400))
    return r["cycles"] / r["iterations"] / arch.accumulators


def with_headers(kernel_c: str, triple: str) -> str:
    if "#include" in kernel_c:
        return kernel_c
    return f"#include <stdint.h>\n#include <{ARCHES[triple].header}>\n" + kernel_c


def loop_of(kernel_c: str, func: str | None, cpu: str, triple: str, tgt=None) -> tuple:
    """(loop body lines, directives llvm-mca needs) of func's hot loop compiled for cpu
    (with tgt's own flags when given, e.g. a tuning task's target)."""
    arch = _require(triple)
    asm = compile_asm(with_headers(kernel_c, triple), tgt or core_target(triple, cpu))
    pre = [ln.strip() for ln in asm.splitlines() if _KEEP_DIRECTIVES.match(ln)]
    return hot_loop(asm, func, arch), list(dict.fromkeys(pre))


def fma_bound_fraction(kernel_c: str, func: str | None, cpu: str, triple: str,
                       fmas_per_iter: int | None = None, tgt=None) -> McaLoop:
    """llvm-mca's prediction for func's hot loop on cpu and its fraction of the FMA-pipe
    bound.  kernel_c: the kernel's C (headers added when it has none; static
    functions are kept); triple: "aarch64", "armv7" or "x86-64"; fmas_per_iter: the
    vector FMAs one iteration does (None: those counted in the loop); tgt: compile with
    this target's flags instead of the triple's named target with -mcpu=cpu."""
    body, pre = loop_of(kernel_c, func, cpu, triple, tgt)
    a = analyse(body, cpu, triple, pre)
    n = a["fmas"] if fmas_per_iter is None else fmas_per_iter
    bound = n * fma_cycles(cpu, triple)
    return McaLoop(cpu, triple, a["instructions"], a["fmas"], a["cycles_per_iter"], a["ipc"],
                   a["bottleneck"], bound, bound / a["cycles_per_iter"])


# the core a target's code is modelled on when its flags name none (its arch's default)
DEFAULT_CPU = {"aarch64": "cortex-a72", "armv7": "cortex-a7", "x86_64": "sapphirerapids"}


def target_cpu(tgt) -> str:
    """The core llvm-mca models for a target: its -mcpu (or, x86, -mtune / -march),
    else DEFAULT_CPU of its arch (aarch64: the Pi 4's Cortex-A72)."""
    for flag in ("-mcpu=", "-mtune=", "-march="):
        named = [f[len(flag):] for f in tgt.cflags if f.startswith(flag)]
        if named and not named[-1].startswith("armv"):
            return named[-1].split("+")[0]
    if tgt.arch not in DEFAULT_CPU:
        raise ValueError(f"mca: no llvm-mca core for target {tgt.name} ({tgt.arch})")
    return DEFAULT_CPU[tgt.arch]


def module_loop(c_source: str, tgt, cpu: str | None = None) -> McaLoop:
    """llvm-mca on the hot loop of a whole generated module (any of its functions: the
    innermost loop with the most FMAs), built with tgt's flags, on tgt's core."""
    if tgt.arch not in TRIPLE_OF_ARCH:
        raise ValueError(f"mca: no llvm-mca triple for target {tgt.name} ({tgt.arch})")
    return fma_bound_fraction(c_source, None, cpu or target_cpu(tgt), TRIPLE_OF_ARCH[tgt.arch],
                              tgt=tgt)


# ----------------------------------------------------------------------------- the GEMM report
PI_CORES = ("cortex-a53", "cortex-a72", "cortex-a76")


def gemm_microkernel_report(target_name: str, cpu: str) -> list:
    """One row (a dict) per NEON f32 GEMM micro-kernel of the target, built as the target
    with -mcpu=cpu builds it (its per-core variant): kernel, schedule, cycles per k step,
    the FMA-pipe bound and the fraction of it, IPC and the bottleneck."""
    from targets import resolve
    from ..tensorize.kernels import gemm_intrin, gemm_shape
    base = resolve(target_name)
    triple = TRIPLE_OF_ARCH[base.arch]
    tgt = replace(base, cflags=(f"-mcpu={cpu}",) + tuple(
        f for f in base.cflags if not f.startswith(("-march=", "-mcpu="))))
    intr = gemm_intrin(tgt)
    MR, NR = gemm_shape(tgt)
    fmas = MR * NR // base.lanes("float32")
    loop = fma_bound_fraction(intr.body.source, intr.name, cpu, triple, fmas)
    return [{"kernel": intr.name, "target": target_name, "cpu": cpu, "tile": f"{MR}x{NR}",
             "fmas_per_iter": fmas,
             "cycles_per_iter": round(loop.cycles_per_iter, 3),
             "bound_cycles": round(loop.bound_cycles, 3), "fraction": round(loop.fraction, 3),
             "ipc": loop.ipc, "bottleneck": loop.bottleneck}]


def main(argv=None) -> int:
    import argparse
    import json
    p = argparse.ArgumentParser(prog="python -m cgen.autotune.mca",
                                description="llvm-mca on the GEMM micro-kernels' hot loops")
    p.add_argument("--report", action="store_true", help="NEON GEMM tiles on the Pi cores")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    why = missing("aarch64")
    if why:
        print(f"mca: {why}")
        return 2
    rows = [r for cpu in PI_CORES for r in gemm_microkernel_report("aarch64", cpu)]
    for r in rows:
        print(json.dumps(r) if a.json else
              f"{r['kernel']:32s} {r['cpu']:11s} {r['cycles_per_iter']:7.2f} cyc/k "
              f"bound {r['bound_cycles']:5.1f}  fraction {r['fraction']:.3f}  {r['bottleneck']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
