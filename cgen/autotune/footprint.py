"""The memory side of a tuning record: RAM and flash of a kernel config, beside its time.

    ram, flash = footprint(template, workload, target, config)
    measurer = FootprintMeasurer(Measurer(...))     # `cgen tune --objective ram|balanced`

ram_bytes: the kernel's own buffers (every local buffer of the lowered kernel: scratch
the model puts in its workspace, small ones on the stack), not its inputs and outputs.
flash_bytes: the kernel's code, `.text` of its object built for the target (the target's
binutils `size`); weights are the workload's and the same for every config.  Both are
properties of the config, not measurements: they are computed once per measured
candidate and written into its record (log.Record.ram_bytes / flash_bytes), so the log
keeps the Pareto front of (time, RAM, flash) per kernel (log.pareto_front) and a compile
picks from it per objective (log.apply_pareto).
"""
from __future__ import annotations

from dataclasses import replace


def ram_bytes(func) -> int:
    """Bytes of every local buffer a lowered kernel allocates."""
    from ..lower.ir import Allocate
    from ..te.visit import walk
    found = []
    walk(func.body, lambda x: found.append(x.buffer.nbytes) if isinstance(x, Allocate) else None)
    return sum(found)


def footprint(template, workload: dict, target, config) -> tuple:
    """(ram_bytes, flash_bytes) of a template's kernel for the config on the target."""
    import cgen
    from targets import compile_c
    from ..graph.flash import berkeley, binutil
    s, args = template.build(workload, target, config)
    mod = cgen.build(s, args, target=target, name=template.name.replace("-", "_"), load=False)
    obj = compile_c(mod.c_source, target, "object", name=template.name.replace("-", "_"))
    text, _, _ = berkeley(binutil(target, "size"), obj)
    return ram_bytes(mod.func), text


class FootprintMeasurer:
    """A measurer whose correct records also carry their config's footprint."""

    def __init__(self, inner):
        self.inner = inner

    def measure(self, task, configs):
        for config, rec in zip(configs, self.inner.measure(task, configs)):
            if rec.ok:
                try:
                    ram, flash = footprint(task.template, task.workload, task.target, config)
                except Exception:  # noqa: BLE001 - no footprint: the record stays time-only
                    yield rec
                    continue
                rec = replace(rec, ram_bytes=ram, flash_bytes=flash)
            yield rec

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)
