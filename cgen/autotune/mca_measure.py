"""Measure AArch64 configs in estimated cycles: icount instructions x llvm-mca's CPI.

`McaMeasurer` has the interface of cgen.autotune.measure.Measurer and runs each
candidate exactly as cgen.autotune.icount_measure.IcountMeasurer does (bare-metal
QEMU with -icount, outputs checked against the reference), then turns its
instruction count into cycles on the target's core:

    estimated cycles = icount ticks x 16 instructions x (cycles / instruction)

where cycles / instruction is llvm-mca's for the candidate's hot loop (the
innermost loop with the most FMAs, cgen.autotune.mca.module_loop) compiled with
the task's target flags and modelled on its core (-mcpu of the target: rpi3 is
cortex-a53, rpi4 cortex-a72, rpi5 cortex-a76; aarch64 names none and is modelled
as cortex-a72).  The rule is honest where the hot loop is most of the work (a
GEMM or conv tile); code outside it is charged at the loop's rate.

Costs are deterministic, in the unit `mca_cycles` (COST_UNIT) -- never seconds
and never icount ticks: a log keeps the three apart, and the tuner only compares
records of its own unit.  The CPI of a source is computed once per measurer.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

from targets.icount import COST_UNIT as ICOUNT_UNIT
from targets.icount import IcountRunner
from ..build_baremetal import icount_benchmark
from .icount_measure import IcountMeasurer, build_icount_candidate, icount_toolchain
from .log import Record
from .mca import MCA, McaMissing, missing, module_loop, target_cpu, TRIPLE_OF_ARCH
from .measure import check_outputs, error_record, measure_input, run_record
from .record import ErrorKind, MeasureResult

COST_UNIT = "mca_cycles"
INSNS_PER_TICK = 16       # one icount tick (cntvct_el0 on -M virt at shift=0)


class McaMeasurer(IcountMeasurer):
    """Measures batches of one AArch64 task's configs in estimated cycles (module doc)."""

    cost_unit = COST_UNIT

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cpi: dict = {}

    def measure(self, task, configs):
        tgt = task.target
        if tgt.arch != "aarch64":
            raise ValueError(f"mca cycles are estimated for AArch64 code: task target {tgt.name} "
                             f"is {tgt.arch}")
        why = missing(TRIPLE_OF_ARCH[tgt.arch])
        if why is not None:
            raise McaMissing(why)
        IcountRunner().check()
        for rec in super().measure(task, configs):
            # failures too carry the unit they would have been measured in
            yield replace(rec, cost_unit=COST_UNIT)

    def cpi(self, c_source: str, tgt) -> tuple:
        """(cycles per instruction, the McaLoop) of the source's hot loop, once per source."""
        key = hashlib.sha256((tgt.name + "\0" + " ".join(tgt.flags()) + "\0" + c_source)
                             .encode()).hexdigest()
        if key not in self._cpi:
            loop = module_loop(c_source, tgt)
            self._cpi[key] = (loop.cycles_per_instruction, loop)
        return self._cpi[key]

    def _one(self, task, config, prep) -> Record:
        tgt, wl = task.target, task.workload
        mod, err = build_icount_candidate(task.template, wl, tgt, config)
        if err is not None:
            return err
        inputs, reference = prep
        tc = icount_toolchain(tgt, mod.extra_flags)
        try:
            cpi, loop = self.cpi(mod.c_source, tgt)
        except ValueError as e:        # no loop to model, or llvm-mca refused it
            return error_record(wl, tgt, config, ErrorKind.COMPILE_ERROR, str(e), tc)
        tc["mca"] = (f"{MCA} -mcpu={target_cpu(tgt)}: {loop.cycles_per_iter:.4g} cycles per "
                     f"hot-loop iteration of {loop.instructions} instructions")
        inp = measure_input(wl, tgt, config, tc)
        res = icount_benchmark(mod, *[a.copy() for a in inputs], repeat=self.repeat,
                               number=self.number, timeout=self.timeout)
        if res.error is None:
            bad = check_outputs(res.outputs, reference)
            if bad:
                return Record.of(inp, MeasureResult.failed(ErrorKind.WRONG_ANSWER, bad, COST_UNIT))
        rec = run_record(inp, res, ICOUNT_UNIT)
        return replace(rec, costs=tuple(t * INSNS_PER_TICK * cpi for t in rec.costs),
                       cost_unit=COST_UNIT)
