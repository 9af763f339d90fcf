"""Where a compiled ARM model spends its work, kernel by kernel, in instructions counted
under QEMU's -icount.

An emulator's seconds say little about a board's, so ARM targets are profiled in
instructions instead: QEMU system emulation with `-icount shift=0,sleep=off` advances
virtual time one nanosecond per executed instruction, and every count is the same on
every run, whatever else the machine is doing.  The model runs in a bare-metal image:

  AArch64 (aarch64, rpi3, rpi4, rpi5): qemu-system-aarch64 -M virt, the freestanding
    harness of cgen.codegen.baremetal around NAME_run; the PMU cycle counter counts one
    per instruction (cntvct_el0 one per 16 without a PMU).
  Cortex-M (cortex-m4, cortex-m7, cortex-m55): qemu-system-arm on the target's board, the
    model's own newlib harness with the "systick" timer (SysTick on the icount clock,
    instructions per tick calibrated in the same run).

Two images: the profiling build (emit_model(profile=True): each kernel call between
two reads of the clock, reported by the harness's hooks, cgen.codegen.harness
PROFILE_HOOKS) and the plain build, whose one NAME_run gives the whole run's count (the
profiling build's reports would add their own instructions to it).  Both outputs must
agree before a count is used.  One call is enough: nothing varies from run to run.

  armv7 (armv7, rpi2, rpi3-32, rpi4-32): qemu-system-arm -M virt on the target's core (or
    cortex-a15 / max), the model's own harness on newlib's rdimon with the "pmu-a32" timer
    (PMCCNTR, one per instruction); qemu-arm user mode, which runs armv7 otherwise, has no
    -icount.  The image is built by arm-none-eabi-gcc with the target's flags (the same gcc
    release as the Linux cross compiler, so the kernels' code is the same but for the C
    library's calls).

Other targets that do not run here are refused in one line.  onnxruntime has no peer
figure: it does not run on these targets.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .graph_ir import ModelError

UNIT = "instructions"
_PROFILE_LINE = re.compile(r"^profile (\S+) ([0-9][0-9.]*(?:e[+-]?\d+)?)\s*$", re.M)


@dataclass(frozen=True)
class IcountRow:
    kernel: str             # C function name
    ops: str                # the fused ops, "Conv -> Relu"
    template: str
    config: dict | None
    instructions: float     # per call of the kernel
    flops: int
    share: float            # of the summed kernel instructions

    @property
    def flop_per_instruction(self) -> float:
        return self.flops / self.instructions if self.instructions > 0 else 0.0

    def as_dict(self) -> dict:
        return {"kernel": self.kernel, "ops": self.ops, "template": self.template,
                "config": self.config, "unit": UNIT, "instructions": self.instructions,
                "flops": self.flops, "flop_per_instruction": self.flop_per_instruction,
                "share": self.share}


@dataclass(frozen=True)
class IcountProfile:
    target: str
    rows: tuple             # of IcountRow, in NAME_run's order
    run_instructions: float  # one NAME_run of the plain build
    clock: str              # how the instructions were counted
    unit: str = UNIT

    @property
    def kernel_instructions(self) -> float:
        return sum(r.instructions for r in self.rows)


# ------------------------------------------------------------------ the two families
@dataclass(frozen=True)
class _Entry:
    """NAME_run as cgen.codegen.baremetal.harness_source sees a kernel: its parameters
    (inputs, outputs, the workspace) and the ones it writes."""
    name: str
    params: tuple
    outputs: tuple


@dataclass(frozen=True)
class _Image:
    """What cgen.build_baremetal.build_elf takes of a module."""
    target: object
    c_source: str
    func: _Entry
    prototype: str
    name: str


def _icount_args() -> tuple:
    from targets.icount import QEMU_ARGS
    return QEMU_ARGS[QEMU_ARGS.index("-icount"):]


def _a64_image(cm, source: str, profiling: bool) -> Path:
    from ..build_baremetal import build_elf
    from ..codegen.baremetal import harness_source
    from ..codegen.harness import profile_hooks
    from ..lower.ir import Buffer
    src = cm.source
    params = tuple(Buffer(f"in{k}", d, tuple(s)) for k, (_, _, d, s) in enumerate(src.inputs))
    outs = tuple(Buffer(f"out{k}", d, tuple(s)) for k, (_, _, d, s) in enumerate(src.outputs))
    ws = Buffer("ws", "uint8", (max(src.workspace_bytes, 1),))
    entry = _Entry(f"{cm.name}_run", params + outs + (ws,), tuple(b.name for b in outs))
    proto = src.manifest["entry_point"] + ";"
    harness = harness_source(entry, proto) + (profile_hooks("aarch64-baremetal") if profiling else "")
    name = cm.name + ("_prof" if profiling else "_icount")
    return build_elf(_Image(cm.target, source, entry, proto, name), harness=harness)


def _a64_command(cm, exe, timed: bool) -> tuple:
    """(command, files to stage beside the parameters)."""
    from targets.icount import RUN_FILE, IcountRunner, qemu_cpu
    runner = IcountRunner(cpu=qemu_cpu(cm.target.flags()))
    runner.check()
    from targets.runner import arg_file
    run = np.array([1 if timed else 0, 1], "<u4").tobytes()     # repeat, number
    # the harness reads every parameter from a file, the workspace (NAME_run's last) too
    ws = arg_file(len(cm.source.inputs) + len(cm.source.outputs))
    return runner.command(exe), {RUN_FILE: run, ws: bytes(max(cm.source.workspace_bytes, 1))}


def _a64_whole(console: str) -> float:
    from targets.icount import ticks_per_call
    lines = [(int(t), int(c)) for t, c in re.findall(r"^ticks (\d+) cycles (\d+)\s*$", console, re.M)]
    if not lines:
        raise RuntimeError(f"no tick line from the bare-metal harness: {console.strip()[-300:]!r}")
    ticks, _ = ticks_per_call(lines[-1:], 1)
    return ticks[0] * 16        # a cntvct tick is 16 instructions at shift=0


def _m_image(cm, source: str, profiling: bool) -> Path:
    from targets import compile_c
    from ..build import bare_metal_link
    from ..codegen.harness import profile_hooks
    link, startup = bare_metal_link(cm.target)
    harness = cm.harness_source("systick") + (profile_hooks("libc") if profiling else "")
    return compile_c(source, cm.target, "executable", extra_flags=link,
                     name=cm.name + ("_prof" if profiling else "_icount"),
                     extra_sources=(harness, startup), strict=not profiling)


def _m_command(cm, exe, timed: bool) -> tuple:
    from targets.runner import runner_for
    runner = runner_for(cm.target)
    runner.check()
    runner = replace(runner, prefix=tuple(runner.prefix) + _icount_args())
    return runner.command(exe, [], 1 if timed else 0, 1), {}


def _m_whole(console: str) -> float:
    nums = re.findall(r"^\s*([0-9.]+e[+-]\d+)\s*$", console, re.M)
    if not nums:
        raise RuntimeError(f"no timing line from the SysTick harness: {console.strip()[-300:]!r}")
    return float(nums[-1])


# An armv7 image: the target's flags, built by arm-none-eabi-gcc (gcc 12 too) on newlib's
# rdimon (multilib v7-a+simd/hard), linked at -M virt's RAM; cores qemu-system-arm models
# for a -mcpu, otherwise cortex-a15 for plain armv7-a and `max` for an Armv8 core in AArch32
A32_RAM = 0x40000000
A32_CPUS = ("cortex-a7", "cortex-a8", "cortex-a9", "cortex-a15")
A32_QEMU_ARGS = ("-M", "virt", "-m", "512M", "-nographic", "-monitor", "none", "-net", "none")


def _a32_cpu(flags) -> str:
    cpu = next((f[len("-mcpu="):].split("+")[0] for f in flags if f.startswith("-mcpu=")), "")
    return cpu if cpu in A32_CPUS else ("max" if cpu else "cortex-a15")


def _a32_image(cm, source: str, profiling: bool) -> Path:
    from targets import compile_c
    from targets.semihost import LINK_FLAGS
    from ..codegen.harness import A32_FPU_STARTUP, profile_hooks
    bm = replace(cm.target, name=f"{cm.target.name}-baremetal", cc="arm-none-eabi-gcc",
                 triple="arm-none-eabi", apt_package="gcc-arm-none-eabi", sysroot="",
                 static=True, threads=False)
    harness = cm.harness_source("pmu-a32") + (profile_hooks("libc") if profiling else "")
    return compile_c(source, bm, "executable",
                     extra_flags=LINK_FLAGS + (f"-Wl,-Ttext-segment=0x{A32_RAM:x}",),
                     name=cm.name + ("_prof" if profiling else "_icount"),
                     extra_sources=(harness, A32_FPU_STARTUP), strict=not profiling)


def _a32_command(cm, exe, timed: bool) -> tuple:
    """The harness takes its file names from argv here (semihosting's command line)."""
    from targets.runner import ToolMissing, arg_file
    from targets.semihost import CMDLINE_MAX
    if shutil.which("arm-none-eabi-gcc") is None:
        raise ToolMissing("'arm-none-eabi-gcc' not found; install it with: apt-get install "
                          "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    n = len(cm.source.inputs) + len(cm.source.outputs)
    argv = ["prog"] + (["--time", "1", "1"] if timed else []) + [arg_file(k) for k in range(n)]
    if len(" ".join(argv)) > CMDLINE_MAX:
        raise ModelError(f"{n} parameter files do not fit semihosting's command line of "
                         f"{CMDLINE_MAX} characters", "bad_input")
    return ["qemu-system-arm", *A32_QEMU_ARGS, "-cpu", _a32_cpu(cm.target.flags()),
            *_icount_args(), "-semihosting-config",
            "enable=on,target=native," + ",".join(f"arg={a}" for a in argv),
            "-kernel", str(exe)], {}


@dataclass(frozen=True)
class _Way:
    """How one family of ARM targets runs a model's image under QEMU -icount."""
    clock: str
    image: Callable         # (compiled, C source, profiling) -> executable
    command: Callable       # (compiled, executable, timed) -> (argv, staged files)
    whole: Callable         # console of a timed run -> instructions of one NAME_run


_A64 = _Way("qemu-system-aarch64 -M virt -icount shift=0 (PMU cycle counter: one per instruction)",
            _a64_image, _a64_command, _a64_whole)
_M = _Way("qemu-system-arm -icount shift=0 on the target's board (SysTick, calibrated "
          "instructions per tick)", _m_image, _m_command, _m_whole)
_A32 = _Way("qemu-system-arm -M virt -icount shift=0 (PMU cycle counter: one per instruction)",
            _a32_image, _a32_command, _m_whole)
# Target.arch -> way
WAYS = {"aarch64": _A64, "armv7": _A32, "armv7e-m": _M, "armv8m": _M}


def way_for(target):
    way = WAYS.get(target.arch)
    if way is None:
        raise ModelError(f"cannot profile target {target.name}: it does not run on this machine, "
                         f"and {target.arch} code has no QEMU -icount image to count its "
                         f"instructions in; profile the host or an ARM target", "bad_input")
    return way


# ------------------------------------------------------------------ running
def _run(argv: list, arrays: list, staged: dict, n_in: int, timeout: float) -> tuple:
    """(console, the output arrays read back) of one run in a fresh directory."""
    from targets.runner import arg_file
    with tempfile.TemporaryDirectory(prefix="cgen-prof-icount-") as d:
        for k, a in enumerate(arrays):
            Path(d, arg_file(k)).write_bytes(np.ascontiguousarray(a).tobytes())
        for name, data in staged.items():
            Path(d, name).write_bytes(data)
        try:
            proc = subprocess.run(argv, cwd=d, capture_output=True, text=True, errors="replace",
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"no answer within {timeout:g} s under {argv[0]}") from None
        console = proc.stdout + "\n" + proc.stderr
        if proc.returncode != 0:
            tail = " | ".join(ln for ln in console.strip().splitlines()[-3:])
            raise RuntimeError(f"{argv[0]} exit status {proc.returncode}: {tail[-300:]}")
        outs = [np.frombuffer(Path(d, arg_file(n_in + j)).read_bytes(), a.dtype).reshape(a.shape)
                for j, a in enumerate(arrays[n_in:])]
    return console, outs


def _checked_way(cm) -> _Way:
    way = way_for(cm.target)
    if shutil.which("qemu-system-aarch64" if way is _A64 else "qemu-system-arm") is None:
        raise ModelError(f"cannot profile target {cm.target.name}: QEMU system emulation is not "
                         "installed (apt-get install qemu-system-arm)", "bad_input")
    return way


def _count(cm, way: _Way, source: str, profiling: bool, arrays: list, n_in: int,
           timeout: float) -> tuple:
    """(console, outputs) of one run of `source`'s image: the profiling build (one count
    per kernel) or the plain one, timed (one count of NAME_run)."""
    argv, staged = way.command(cm, way.image(cm, source, profiling), not profiling)
    return _run(argv, arrays, staged, n_in, timeout)


def _arrays(cm, feeds) -> tuple:
    ins = cm.check_feeds(feeds)
    return ins + [np.zeros(v.shape, v.dtype) for v in cm.graph.outputs], len(ins)


def run_instructions(cm, feeds, timeout: float = 900.0) -> float:
    """Instructions of one whole NAME_run of an ARM CompiledModel under QEMU -icount (the
    plain build: nothing added around the kernels)."""
    way = _checked_way(cm)
    arrays, n_in = _arrays(cm, feeds)
    console, _ = _count(cm, way, cm.c_source, False, arrays, n_in, timeout)
    return way.whole(console)


def icount_profile(cm, feeds, timeout: float = 900.0) -> IcountProfile:
    """Instructions of each kernel of `cm` (an AArch64 or Cortex-M CompiledModel) and of
    one whole NAME_run, under QEMU -icount (see the module doc)."""
    from .emit import emit_model
    from ..codegen.harness import PROFILE_EXTERN
    way = _checked_way(cm)
    src = cm.source
    prof = emit_model(cm.graph, cm.kernels, cm.target, cm.name, src.label, src.stack_limit,
                      profile=True, profile_prelude=PROFILE_EXTERN, **src.plan_options)
    arrays, n_in = _arrays(cm, feeds)
    console, got = _count(cm, way, prof.source, True, arrays, n_in, timeout)
    whole_console, want = _count(cm, way, cm.c_source, False, arrays, n_in, timeout)
    for v, a, b in zip(cm.graph.outputs, got, want):
        if not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise RuntimeError(f"the profiling build's output {v.name} differs from the model's")
    counts = {}
    for kernel, n in _PROFILE_LINE.findall(console):
        counts.setdefault(kernel, float(n))
    # the kernels the profiling build reports (like the host's rows): what else runs shows
    # in the whole run's count, outside the kernels
    live = [k for k in cm.kernels if not k.is_alias and k.name in counts]
    if not live:
        raise RuntimeError(f"the profiling run reported no kernel: {console.strip()[-200:]!r}")
    total = sum(counts[k.name] for k in live) or 1.0
    rows = tuple(IcountRow(k.name, k.describe(), k.template, k.config, counts[k.name], k.flops,
                           counts[k.name] / total) for k in live)
    return IcountProfile(cm.target.name, rows, way.whole(whole_console), way.clock)


def icount_table(p: IcountProfile) -> str:
    head = (f"{'kernel':<28} {'ops':<34} {'template':<18} {'instructions':>13} "
            f"{'FLOP/insn':>9} {'share':>6}  config")
    lines = [f"# {p.target}: {p.unit} per call, counted by {p.clock}; no onnxruntime column "
             f"(onnxruntime does not run on {p.target})", head, "-" * (len(head) + 20)]
    for r in p.rows:
        lines.append(f"{r.kernel[:28]:<28} {r.ops[:34]:<34} {r.template[:18]:<18} "
                     f"{r.instructions:>13,.0f} {r.flop_per_instruction:>9.3f} {r.share:>6.1%}  "
                     + (",".join(f"{k}={v}" for k, v in r.config.items()) if r.config else "-"))
    glue = p.run_instructions - p.kernel_instructions
    lines.append(f"total {p.kernel_instructions:,.0f} {p.unit} over {len(p.rows)} kernels; one "
                 f"whole run {p.run_instructions:,.0f} {p.unit} ({glue:,.0f} outside the kernels)")
    return "\n".join(lines)
