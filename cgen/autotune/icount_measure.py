"""Measure AArch64 configs by instruction count: bare-metal QEMU with -icount.

`IcountMeasurer` has the interface of cgen.autotune.measure.Measurer
(`measure(task, configs)` yields one log record per config, in order), for
tasks whose target is AArch64 (aarch64, rpi3, rpi4, rpi5):

    with IcountMeasurer() as m:
        for rec in m.measure(parse_workload("gemm:96,80,72", "aarch64"), configs):
            rec.costs, rec.cost_unit        # (ticks per call,), "icount_ticks"

Each candidate is built like Measurer's (cgen.autotune.measure.build_candidate),
then linked as a bare-metal ELF and run by cgen.build_baremetal.icount_benchmark;
its outputs are checked against the template's reference before its cost
counts.  A cost is a deterministic tick count (one tick = 16 instructions),
the same on every run and whatever else the machine is doing, so candidates
are built *and* run in parallel threads (each run is a QEMU child process)
and one repeat is enough.  Costs are `icount_ticks`, never seconds.

A failing candidate (compile error, crash, hang, wrong answer) is a record
with its error kind (and cost_unit `icount_ticks`, like the successes), never
an exception.  Only a setup problem raises, before
any candidate: a task whose target is not AArch64 (ValueError) or a missing
qemu-system-aarch64 (targets.runner.ToolMissing).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import replace

import numpy as np

from targets.icount import COST_UNIT, QEMU, QEMU_ARGS, IcountRunner, qemu_cpu
from ..build_baremetal import build_elf, icount_benchmark
from targets.toolchain import CompileError
from .log import Record
from .measure import build_candidate, check_outputs, error_record, measure_input, run_record, toolchain_info
from .record import ErrorKind, MeasureResult

# what the ELF adds to the kernel's compile (cgen.build_baremetal.build_elf), for the record
BAREMETAL_FLAGS = ("-static", "-nostdlib", "-ffreestanding(harness)")


def icount_toolchain(tgt, extra_flags=()) -> dict:
    """toolchain_info of a bare-metal icount build, naming the emulator that counted."""
    tc = toolchain_info(tgt, tuple(extra_flags) + BAREMETAL_FLAGS)
    args = list(QEMU_ARGS)
    args[args.index("-cpu") + 1] = qemu_cpu(tgt.flags())     # the core that ran it
    tc["runner"] = " ".join((QEMU, *args))
    return tc


def build_icount_candidate(template, wl: dict, tgt, config):
    """(module with its bare-metal ELF built, None) or (None, error record)."""
    mod, err = build_candidate(template, wl, tgt, config)
    if err is not None:
        return None, err
    try:
        build_elf(mod)          # cached by source and flags: icount_benchmark finds it again
    except (CompileError, ValueError) as e:
        return None, error_record(wl, tgt, config, ErrorKind.COMPILE_ERROR, e,
                                  icount_toolchain(tgt, mod.extra_flags))
    return mod, None


class IcountMeasurer:
    """Measures batches of one AArch64 task's configs in icount ticks (see the module doc)."""

    cost_unit = COST_UNIT

    def __init__(self, workers: int = 2, repeat: int = 1, number: int = 1,
                 timeout: float = 60.0, build_timeout: float = 300.0, seed: int = 0):
        if repeat < 1 or number < 1:
            raise ValueError(f"repeat and number must be at least 1, got {repeat}, {number}")
        self.workers, self.repeat, self.number = workers, repeat, number
        self.timeout, self.build_timeout, self.seed = timeout, build_timeout, seed
        self._prepared: dict = {}
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="cgen-icount")

    def prepare(self, task):
        """(inputs, reference) of a task, made once per measurer from its seed."""
        if task.key not in self._prepared:
            rng = np.random.default_rng(self.seed)
            inputs = task.template.inputs(task.workload, rng)
            self._prepared[task.key] = (inputs, task.template.reference(task.workload, inputs))
        return self._prepared[task.key]

    def measure(self, task, configs):
        """Yield one record per config, in the order of `configs`, each as soon as it is known."""
        tgt = task.target
        if tgt.arch != "aarch64":
            raise ValueError(f"icount measures AArch64 code: task target {tgt.name} is {tgt.arch}")
        IcountRunner().check()
        configs = list(configs)
        prep = self.prepare(task)
        futs = [self._pool.submit(self._one, task, c, prep) for c in configs]
        for c, f in zip(configs, futs):
            try:
                rec = f.result(timeout=self.build_timeout + self.timeout)
            except FutureTimeout:
                rec = error_record(task.workload, tgt, c, ErrorKind.BUILD_TIMEOUT,
                                   f"build and run took over {self.build_timeout + self.timeout:g} s")
            except Exception as e:      # a template bug is this candidate's error, not the run's
                rec = error_record(task.workload, tgt, c, ErrorKind.COMPILE_ERROR, f"{type(e).__name__}: {e}")
            # failures too say how they were measured: an aarch64 log may also hold
            # seconds from a board or QEMU user mode
            yield replace(rec, cost_unit=COST_UNIT)

    def _one(self, task, config, prep) -> Record:
        tgt, wl = task.target, task.workload
        mod, err = build_icount_candidate(task.template, wl, tgt, config)
        if err is not None:
            return err
        inputs, reference = prep
        inp = measure_input(wl, tgt, config, icount_toolchain(tgt, mod.extra_flags))
        res = icount_benchmark(mod, *[a.copy() for a in inputs], repeat=self.repeat,
                               number=self.number, timeout=self.timeout)
        if res.error is None:
            bad = check_outputs(res.outputs, reference)
            if bad:
                return Record.of(inp, MeasureResult.failed(ErrorKind.WRONG_ANSWER, bad, COST_UNIT))
        return run_record(inp, res, COST_UNIT)

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
