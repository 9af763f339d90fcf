"""One harness executable run as a child process on staged parameter files.

`Runner.run(executable, params, arrays, outputs, repeat, number, timeout) -> Result`:
each parameter is staged as `argK.bin` in a fresh directory, the candidate runs there in
a process group of its own, and a crash, a signal or a timeout comes back as an error
value, never as an exception.  Subclasses change only the command line (`command`) and
what they take from a target (`for_target`); targets/runner.py picks one per target.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ERROR_KINDS = ("compile_error", "build_timeout", "runtime_error", "run_timeout",
               "wrong_answer", "device_lost")


@dataclass(frozen=True)
class RunError:
    kind: str
    msg: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "msg": self.msg}


@dataclass(frozen=True)
class Result:
    outputs: dict | None          # name -> array, for the written parameters
    times: tuple = ()             # seconds per call, one per repeat
    error: RunError | None = None
    emulated: bool = False        # timings are emulation times (QEMU)


class ToolMissing(RuntimeError):
    pass


class CannotRunHere(RuntimeError):
    """The target's code needs what this machine's CPU lacks (an AVX-512 build on an
    AVX2-only CPU would die of SIGILL with nothing said)."""


def arg_file(k: int) -> str:
    """The file parameter k is staged in, in the run's own directory."""
    return f"arg{k}.bin"


@dataclass(frozen=True)
class Runner:
    """prefix: the command that runs an executable (empty for the host)."""
    name: str
    prefix: tuple = ()
    apt_package: str = ""
    emulated: bool = False
    refusal: str = ""             # why this machine cannot run the target's code natively

    def for_target(self, target) -> "Runner":
        """This runner set up for target's executables (a board, for system emulation;
        for the host, a refusal when this CPU cannot run them)."""
        if self.prefix or self.emulated:
            return self
        from .target import cannot_run
        why = cannot_run(target)
        if why is None:
            return self
        return replace(self, refusal=f"target {target.name} cannot run on this machine: {why} "
                                     "(its C still compiles here; run it on a CPU that has them, "
                                     "or pick a target this CPU runs, such as host)")

    def check(self):
        if self.refusal:
            raise CannotRunHere(self.refusal)
        if self.prefix and shutil.which(self.prefix[0]) is None:
            raise ToolMissing(f"'{self.prefix[0]}' not found; install it with: apt-get install {self.apt_package}")

    def run(self, exe, params, arrays, outputs, repeat: int = 0, number: int = 1,
            timeout: float = 60.0) -> Result:
        """params: names in call order; arrays: one per param; outputs: names written."""
        self.check()
        with tempfile.TemporaryDirectory(prefix="cgen-run-") as d:
            paths = []
            for k, (name, a) in enumerate(zip(params, arrays)):
                p = Path(d) / arg_file(k)
                p.write_bytes(np.ascontiguousarray(a).tobytes())
                paths.append(str(p))
            cmd = self.command(exe, paths, repeat, number)
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        start_new_session=True, text=True, cwd=d)
            except OSError as e:
                return Result(None, (), RunError("runtime_error", f"cannot start {cmd[0]}: {e}"))
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.communicate()
                return Result(None, (), RunError("run_timeout", f"no answer within {timeout:g} s"),
                              self.emulated)
            if proc.returncode != 0:
                if proc.returncode < 0:
                    sig = signal.Signals(-proc.returncode).name
                    msg = f"killed by {sig}"
                else:
                    msg = f"exit status {proc.returncode}"
                tail = err.strip()[-2000:]
                return Result(None, (), RunError("runtime_error", msg + (f": {tail}" if tail else "")),
                              self.emulated)
            results = {}
            for name, a, p in zip(params, arrays, paths):
                if name in outputs:
                    results[name] = np.frombuffer(Path(p).read_bytes(), dtype=a.dtype).reshape(a.shape).copy()
            times = tuple(float(x) for x in out.split()) if repeat else ()
            return Result(results, times, None, self.emulated)

    def command(self, exe, paths, repeat: int, number: int) -> list:
        """The command line that runs exe on the staged files (in their directory)."""
        cmd = list(self.prefix) + [str(exe)]
        if repeat:
            cmd += ["--time", str(int(repeat)), str(int(number))]
        return cmd + paths


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
