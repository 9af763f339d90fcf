"""Instruction-count costs: a kernel on bare-metal AArch64 under QEMU's icount.

`qemu-system-aarch64 -M virt -cpu cortex-a72 -semihosting -icount
shift=0,sleep=off` advances the virtual counter `cntvct_el0` (62.5 MHz) by one
tick per 16 executed instructions, so the same binary on the same inputs
costs the same number of ticks on every run, on any machine: a cost signal
free of a shared CI machine's noise.  It counts instructions, not cycles
(no caches, no pipeline), so it ranks code by work done, e.g. NEON against
scalar, not by memory behaviour.

Costs are in the unit `icount_ticks` (COST_UNIT), never seconds: an
IcountResult says so in `cost_unit`, and log records carry it.  A tick is
16 instructions; the harness also reads the PMU cycle counter, which runs on
the same virtual clock at one count per instruction, so costs are exact
fractions of a tick and every repeat agrees (see ticks_per_call).

This module runs a bare-metal ELF and reads its answer; building the ELF
(the module's C, the freestanding harness of cgen.codegen.baremetal, a linker
script) is cgen.build_baremetal's.  Inputs and outputs travel as files through
semihosting (the protocol's constants are here, the guest's side in the harness).
"""
from __future__ import annotations

from dataclasses import dataclass
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .runner import Result, RunError, ToolMissing, arg_file

# The harness protocol (cgen.codegen.baremetal writes the guest's side of it): QEMU's RAM,
# the run file (two little-endian uint32: repeat, number), one raw file per parameter
# (runner.arg_file),
# and the SYS_EXIT statuses.
RAM_MB = 1024                  # qemu -m; the linker script's RAM length
RUN_FILE = "cg_run.bin"
EXIT_OK, EXIT_HARNESS, EXIT_KERNEL, EXIT_EXCEPTION, EXIT_WRONG_EL = 0, 2, 3, 4, 5


COST_UNIT = "icount_ticks"
TICK_HZ = 62_500_000            # cntvct_el0 on -M virt; one tick = 16 instructions at shift=0
QEMU = "qemu-system-aarch64"
QEMU_PACKAGE = "qemu-system-arm"   # Debian ships qemu-system-aarch64 in it
QEMU_ARGS = ("-M", "virt", "-cpu", "cortex-a72", "-nographic", "-net", "none",
             "-semihosting", "-icount", "shift=0,sleep=off")
# plain `-icount shift=0` jitters by one tick; the default CPU of -M virt hangs on AArch64 code
# Cores QEMU models that a target's -mcpu may name: its code runs on that core (an rpi5's
# sdot needs the Cortex-A76); code for an unnamed core beyond Armv8.0 (-march=armv8.2-a+dotprod)
# runs on QEMU's `max`.  The instruction count is the binary's, whichever core runs it.
QEMU_CPUS = ("cortex-a53", "cortex-a57", "cortex-a72", "cortex-a76", "neoverse-n1")


def qemu_cpu(flags) -> str:
    """The -cpu for code compiled with `flags` (a target's flags())."""
    for f in flags:
        if f.startswith("-mcpu=") and f[6:].split("+")[0] in QEMU_CPUS:
            return f[6:].split("+")[0]
    if any(f.startswith(("-march=", "-mcpu=")) and f.split("=")[1] != "armv8-a" for f in flags):
        return "max"
    return QEMU_ARGS[QEMU_ARGS.index("-cpu") + 1]

# ESR_EL1 exception classes worth naming in an error message
_EC = {0x00: "undefined instruction", 0x07: "FP/SIMD trap", 0x0e: "illegal execution state",
       0x20: "instruction abort", 0x21: "instruction abort", 0x22: "PC alignment fault",
       0x24: "data abort", 0x25: "data abort", 0x26: "SP alignment fault",
       0x2c: "floating-point exception", 0x3c: "brk (trap)"}
_ABORTS = (0x20, 0x21, 0x22, 0x24, 0x25)   # FAR_EL1 holds the faulting address


@dataclass(frozen=True)
class IcountResult(Result):
    """A Result whose `times` are icount ticks per call (cost_unit), not seconds."""
    cost_unit: str = COST_UNIT
    checksum: str = ""            # the guest's checksum of the written parameters
    counter: str = ""             # "pmccntr" (instruction resolution) or "cntvct" (16 instructions)


def checksum(arrays) -> int:
    """The harness's checksum: sum of (i + 1) * (b_i + 1) over the bytes, mod 2**64."""
    total, pos, chunk = np.uint64(0), 0, 1 << 20
    with np.errstate(over="ignore"):
        for a in arrays:
            data = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
            for lo in range(0, data.size, chunk):
                b = data[lo:lo + chunk].astype(np.uint64) + np.uint64(1)
                idx = np.arange(pos + 1, pos + 1 + b.size, dtype=np.uint64)
                total = total + np.sum(idx * b, dtype=np.uint64)
                pos += b.size
    return int(total)


@dataclass(frozen=True)
class IcountRunner:
    """Runs a bare-metal ELF (cgen.build_baremetal.build_elf) under QEMU's icount.

    `run` has the shape of targets.runner.Runner.run; `times` are icount
    ticks per call (the ticks of one repeat divided by `number`).
    """
    name: str = "qemu-icount"
    qemu: str = QEMU
    cost_unit: str = COST_UNIT
    emulated: bool = True
    cpu: str = QEMU_ARGS[QEMU_ARGS.index("-cpu") + 1]   # see qemu_cpu

    def check(self):
        if shutil.which(self.qemu) is None:
            raise ToolMissing(f"'{self.qemu}' not found; install it with: apt-get install {QEMU_PACKAGE}")

    def command(self, exe) -> list:
        args = list(QEMU_ARGS)
        args[args.index("-cpu") + 1] = self.cpu
        return [self.qemu, *args, "-m", f"{RAM_MB}M", "-kernel", str(exe)]

    def run(self, exe, params, arrays, outputs, repeat: int = 0, number: int = 1,
            timeout: float = 60.0) -> IcountResult:
        """params: names in call order; arrays: one per param; outputs: names written."""
        self.check()
        if not (1 <= number < 2**32 and 0 <= repeat < 2**32):
            raise ValueError(f"repeat must be in [0, 2**32) and number in [1, 2**32), got {repeat}, {number}")
        with tempfile.TemporaryDirectory(prefix="cgen-icount-") as d:
            Path(d, RUN_FILE).write_bytes(np.array([repeat, number], "<u4").tobytes())
            for k, a in enumerate(arrays):
                Path(d, arg_file(k)).write_bytes(np.ascontiguousarray(a).tobytes())
            cmd = self.command(Path(exe).resolve())
            try:
                proc = subprocess.Popen(cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True, text=True,
                                        errors="replace")
            except OSError as e:
                return IcountResult(None, (), RunError("runtime_error", f"cannot start {cmd[0]}: {e}"),
                                    True)
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.communicate()
                return IcountResult(None, (), RunError(
                    "run_timeout", f"no answer within {timeout:g} s (bare-metal kernel under {self.qemu})"),
                    True)
            # QEMU 7.2 sends the semihosting console to stderr, next to its own messages
            out, err = _split_console(out + "\n" + err)
            if proc.returncode != 0:
                msg = _failure(proc.returncode, out, err, exe)
                return IcountResult(None, (), RunError("runtime_error", msg), True)
            results = {}
            for k, (name, a) in enumerate(zip(params, arrays)):
                if name in outputs:
                    data = Path(d, arg_file(k)).read_bytes()
                    results[name] = np.frombuffer(data, dtype=a.dtype).reshape(a.shape).copy()
        m = re.search(r"^checksum 0x([0-9a-f]{16})\s*$", out, re.M)
        lines = [(int(t), int(c)) for t, c in re.findall(r"^ticks (\d+) cycles (\d+)\s*$", out, re.M)]
        if m is None or len(lines) != repeat:
            return IcountResult(None, (), RunError(
                "runtime_error", f"unexpected harness output ({len(lines)} of {repeat} tick lines): "
                                 f"{out.strip()[-500:]!r}"), True)
        written = [results[n] for n in params if n in results]
        if int(m.group(1), 16) != checksum(written):
            return IcountResult(None, (), RunError(
                "runtime_error", "outputs read back do not match the guest's checksum"), True)
        costs, counter = ticks_per_call(lines, number)
        return IcountResult(results, costs, None, emulated=True, checksum=m.group(1), counter=counter)


def ticks_per_call(lines, number: int) -> tuple[tuple, str]:
    """(ticks per call for each repeat, the counter used) from (ticks, cycles) pairs.

    cntvct_el0 ticks every 16 instructions, so a repeat's count depends on
    where in a tick it starts and repeats of one run may differ by one.  The
    PMU cycle counter runs on the same virtual clock at 1 GHz (one count per
    instruction at shift=0): when every repeat agrees with cntvct to within
    two ticks, cycles / 16 is the cost, exact and the same for every repeat.
    """
    if lines and all(c > 0 and abs(t - c / 16) <= 2 for t, c in lines):
        return tuple(c / 16 / number for _, c in lines), "pmccntr"
    return tuple(t / number for t, _ in lines), "cntvct"


_HARNESS_LINE = re.compile(r"^(ticks \d|checksum 0x|error |exception vector )")


def _split_console(text: str) -> tuple[str, str]:
    """(the harness's lines, everything else) of QEMU's output."""
    lines = text.splitlines()
    return ("\n".join(ln for ln in lines if _HARNESS_LINE.match(ln)),
            "\n".join(ln for ln in lines if ln.strip() and not _HARNESS_LINE.match(ln)))


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _failure(rc: int, out: str, err: str, exe) -> str:
    """A one-paragraph account of a failed run, naming a CPU exception's kind and function."""
    if rc < 0:
        msg = f"{QEMU} killed by {signal.Signals(-rc).name}"
    else:
        msg = {EXIT_HARNESS: "harness error", EXIT_KERNEL: "kernel returned nonzero",
               EXIT_EXCEPTION: "CPU exception in the bare-metal program",
               EXIT_WRONG_EL: "not started at EL1"}.get(rc, f"{QEMU} exit status {rc}")
    m = re.search(r"^exception vector (\d+) esr 0x([0-9a-f]+) elr 0x([0-9a-f]+) far 0x([0-9a-f]+)", out, re.M)
    lines = [ln for ln in out.splitlines() if ln.startswith("error ")]
    if m:
        esr, elr, far = (int(m.group(i), 16) for i in (2, 3, 4))
        ec = esr >> 26
        where = _symbol(exe, elr)
        msg += (f": {_EC.get(ec, f'exception class 0x{ec:x}')} at pc 0x{elr:x}"
                + (f" (in {where})" if where else "")
                + (f", fault address 0x{far:x}" if ec in _ABORTS else "") + f", ESR 0x{esr:x}")
    elif lines:
        msg = lines[-1][len("error "):]
    tail = err.strip()[-1000:]
    return msg + (f"; stderr: {tail}" if tail else "")


def _symbol(exe, addr: int) -> str:
    """The function containing addr, from the cross nm (best effort)."""
    nm = shutil.which("aarch64-linux-gnu-nm")
    if nm is None:
        return ""
    try:
        out = subprocess.run([nm, "-n", str(exe)], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    best = ""
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            if int(parts[0], 16) > addr:
                break
            best = parts[2]
    return best
