"""Measure configs of a template: build, run in a child process through the
target's runner, check the output against the reference, and make a log
record.  A failure at any step is a record with its error kind, never an
exception that stops the caller."""
from __future__ import annotations


import numpy as np

from targets import resolve
from targets.toolchain import CompileError, compiler_version
from .log import Record, resolved_target_name


def toolchain_info(target, flags=()) -> dict:
    return {"cc": target.cc, "version": compiler_version(target.cc),
            "flags": list(target.flags()) + list(flags)}


def matches(out: np.ndarray, ref: np.ndarray) -> bool:
    if np.issubdtype(ref.dtype, np.floating):
        atol = 1e-4 * float(np.max(np.abs(ref))) if ref.size else 0.0
        return bool(np.allclose(out, ref, rtol=1e-4, atol=atol))
    return bool(np.array_equal(out, ref))


def calibrate_number(first_time: float, min_repeat_ms: float) -> int:
    """Calls per repeat so that one repeat lasts at least min_repeat_ms."""
    if first_time <= 0:
        return 1
    return max(1, int(np.ceil(min_repeat_ms / 1e3 / first_time)))


def measure_config(template, wl: dict, target, config, inputs=None, reference=None,
                   repeat: int = 5, min_repeat_ms: float = 50.0, timeout: float = 60.0,
                   seed: int = 0) -> Record:
    """One record for one config."""
    import cgen
    from ..schedule import ScheduleError
    tgt = resolve(target)
    rng = np.random.default_rng(seed)
    if inputs is None:
        inputs = template.inputs(wl, rng)
    if reference is None:
        reference = template.reference(wl, inputs)
    base = dict(workload=wl, target=resolved_target_name(tgt), config=config.to_json())
    try:
        s, args = template.build(wl, tgt, config)
        mod = cgen.build(s, args, target=tgt, name=template.name.replace("-", "_"))
        mod.executable()
    except (ScheduleError, CompileError, ValueError) as e:
        return Record(toolchain=toolchain_info(tgt), costs=(), error={"kind": "compile_error",
                      "msg": str(e)[:2000]}, **base)
    tc = toolchain_info(tgt, mod.extra_flags)
    arrays = [a.copy() for a in inputs]
    probe = mod.benchmark(*arrays, repeat=1, number=1, timeout=timeout)
    if probe.error is not None:
        return Record(toolchain=tc, costs=(), error=probe.error.to_json(), **base)
    for name, ref in reference.items():
        if not matches(probe.outputs[name], ref):
            err = float(np.max(np.abs(probe.outputs[name].astype(np.float64) - ref)))
            return Record(toolchain=tc, costs=(), error={"kind": "wrong_answer",
                          "msg": f"{name}: max abs error {err:g}"}, **base)
    number = calibrate_number(probe.times[0], min_repeat_ms)
    res = mod.benchmark(*arrays, repeat=repeat, number=number, timeout=timeout)
    if res.error is not None:
        return Record(toolchain=tc, costs=(), error=res.error.to_json(), **base)
    unit = "s"
    return Record(toolchain=tc, costs=tuple(res.times), cost_unit=unit, **base)
