"""Runners: which one runs each target's harness executables (`Target.runner` names it).

    res = runner_for(target).run(exe, params, arrays, outputs, repeat=5, number=10)

The host runs them directly, Linux cross targets under QEMU user mode, bare-metal
Cortex-M images under QEMU system emulation with semihosting (targets/semihost.py).
Every runner has targets/process.py's `run`: each parameter staged as `argK.bin`,
errors as values (`Result.error`), emulated timings flagged (`Result.emulated`).
"""
from __future__ import annotations

from .process import ERROR_KINDS, CannotRunHere, Result, RunError, Runner, ToolMissing, arg_file
from .semihost import QEMU_SYSTEM_ARM

__all__ = ["CannotRunHere", "ERROR_KINDS", "Result", "RunError", "Runner", "ToolMissing", "arg_file",
           "RUNNERS", "runner_for"]

RUNNERS = {
    "local": Runner("local"),
    "qemu-aarch64": Runner("qemu-aarch64", ("qemu-aarch64",), "qemu-user", True),
    "qemu-arm": Runner("qemu-arm", ("qemu-arm",), "qemu-user", True),
    "qemu-system-arm": QEMU_SYSTEM_ARM,
}


def runner_for(target) -> Runner:
    """The runner of target's executables (set up for its board, if it has one)."""
    try:
        runner = RUNNERS[target.runner]
    except KeyError:
        raise ValueError(f"target {target.name}: unknown runner {target.runner!r}; known: "
                         f"{', '.join(RUNNERS)}") from None
    return runner.for_target(target)
