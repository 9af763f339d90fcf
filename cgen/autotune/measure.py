"""Measure configs of a template: build, run in a child process through the
target's runner (or a device pool), check the output against the reference,
and make a log record.  A failure at any step is a record with its error kind,
never an exception that stops the caller.

    rec = measure_config(template, wl, target, config)           # one, in this process
    m = Measurer(pool=None, repeat=3)                            # the tuner's: a batch at a time
    for rec in m.measure(task, configs): ...                     # records as they arrive

The measurer builds a batch in parallel threads (lowering is Python, the
compiler a child process), then runs the candidates one after another on the
pool's devices, so no compile competes with a timing on the same machine.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from targets import resolve
from targets.toolchain import CompileError, compiler_version
from .log import Record, resolved_target_name
from .record import ErrorKind, MeasureError, MeasureInput, MeasureResult


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


def measure_input(wl: dict, tgt, config, toolchain: dict) -> MeasureInput:
    return MeasureInput(wl, resolved_target_name(tgt), config.to_json(), toolchain)


def error_record(wl: dict, tgt, config, kind: ErrorKind | str, msg: str, toolchain=None) -> Record:
    return Record.of(measure_input(wl, tgt, config, toolchain or toolchain_info(tgt)),
                     MeasureResult.failed(kind, msg))


def run_record(inp: MeasureInput, run, cost_unit: str = "s") -> Record:
    """The record of a run that failed (its error) or timed (its times)."""
    if run.error is not None:
        return Record.of(inp, MeasureResult((), cost_unit, MeasureError.from_json(run.error)))
    return Record.of(inp, MeasureResult(tuple(float(t) for t in run.times), cost_unit))


def build_candidate(template, wl: dict, tgt, config):
    """(module with its executable built, None) or (None, error record)."""
    import cgen
    from ..schedule import ScheduleError
    try:
        s, args = template.build(wl, tgt, config)
        mod = cgen.build(s, args, target=tgt, name=template.name.replace("-", "_"), load=False)
        mod.executable()
        return mod, None
    except (ScheduleError, CompileError, ValueError) as e:
        return None, error_record(wl, tgt, config, ErrorKind.COMPILE_ERROR, e)


def check_outputs(outputs: dict, reference: dict) -> str | None:
    """None when every output matches its reference, else what differs."""
    for name, ref in reference.items():
        out = outputs.get(name) if outputs else None
        if out is None:
            return f"{name}: no output"
        if not matches(out, ref):
            err = float(np.max(np.abs(out.astype(np.float64) - ref)))
            return f"{name}: max abs error {err:g}"
    return None


def measure_config(template, wl: dict, target, config, inputs=None, reference=None,
                   repeat: int = 5, min_repeat_ms: float = 50.0, timeout: float = 60.0,
                   seed: int = 0) -> Record:
    """One record for one config."""
    tgt = resolve(target)
    rng = np.random.default_rng(seed)
    if inputs is None:
        inputs = template.inputs(wl, rng)
    if reference is None:
        reference = template.reference(wl, inputs)
    mod, err = build_candidate(template, wl, tgt, config)
    if err is not None:
        return err
    inp = measure_input(wl, tgt, config, toolchain_info(tgt, mod.extra_flags))
    arrays = [a.copy() for a in inputs]
    probe = mod.benchmark(*arrays, repeat=1, number=1, timeout=timeout)
    if probe.error is not None:
        return run_record(inp, probe)
    bad = check_outputs(probe.outputs, reference)
    if bad:
        return Record.of(inp, MeasureResult.failed(ErrorKind.WRONG_ANSWER, bad))
    number = calibrate_number(probe.times[0], min_repeat_ms)
    return run_record(inp, mod.benchmark(*arrays, repeat=repeat, number=number, timeout=timeout))


def default_device_url(tgt) -> str | None:
    """Where a target's candidates run when no device is named: here, under QEMU user
    mode, or (None) through the target's own runner, for bare-metal images no measuring
    agent runs (cortex-m4: targets.runner's qemu-system-arm with semihosting)."""
    if tgt.is_host:
        return "local"
    if tgt.bare_metal:
        return None
    if tgt.arch == "aarch64":
        return "qemu:aarch64"
    if tgt.arch.startswith("arm") and not tgt.bare_metal:
        return "qemu:arm"
    raise ValueError(f"target {tgt.name} needs a device to measure on (--device URL)")


@dataclass
class _Prepared:
    inputs: list
    reference: dict


class Measurer:
    """Measures batches of one task's configs: parallel builds, runs on a device pool."""

    cost_unit = "s"

    def __init__(self, pool=None, build_workers: int = 2, repeat: int = 3,
                 min_repeat_ms: float = 20.0, timeout: float = 20.0,
                 build_timeout: float = 300.0, seed: int = 0):
        self._pool, self._own_pool = pool, pool is None
        self.build_workers, self.repeat, self.min_repeat_ms = build_workers, repeat, min_repeat_ms
        self.timeout, self.build_timeout, self.seed = timeout, build_timeout, seed
        self._prepared: dict = {}
        self._builders = ThreadPoolExecutor(max(1, build_workers), thread_name_prefix="cgen-build")

    def pool_for(self, tgt):
        """The device pool for tgt's candidates; None: they run through tgt's runner."""
        if self._pool is None:
            url = default_device_url(tgt)
            if url is None:
                return None
            from targets.pool import DevicePool
            self._pool = DevicePool.from_urls([url])
        return self._pool

    def prepare(self, task) -> _Prepared:
        if task.key not in self._prepared:
            rng = np.random.default_rng(self.seed)
            inputs = task.template.inputs(task.workload, rng)
            self._prepared[task.key] = _Prepared(inputs, task.template.reference(task.workload, inputs))
        return self._prepared[task.key]

    def measure(self, task, configs):
        """Yield one record per config, in the order of `configs`, each as soon as it is known."""
        prep = self.prepare(task)
        built = self._build_all(task, configs)
        pool = self.pool_for(task.target)
        for c, (mod, err) in zip(configs, built):
            if err is not None:
                yield err
                continue
            yield self._run(task, c, mod, prep, pool)

    def _build_all(self, task, configs) -> list:
        """[(module, None) or (None, error record)] in the order of configs."""
        tgt = task.target
        futs = [self._builders.submit(build_candidate, task.template, task.workload, tgt, c)
                for c in configs]
        built = []
        for c, f in zip(configs, futs):
            try:
                built.append(f.result(timeout=self.build_timeout))
            except FutureTimeout:
                built.append((None, error_record(task.workload, tgt, c, ErrorKind.BUILD_TIMEOUT,
                                                 f"build took over {self.build_timeout:g} s")))
            except Exception as e:      # a template bug is this candidate's error, not the run's
                built.append((None, error_record(task.workload, tgt, c, ErrorKind.COMPILE_ERROR,
                                                 f"{type(e).__name__}: {e}")))
        return built

    def interleaved(self, task, configs, rounds: int):
        """One record per config whose costs are `rounds` samples taken in rounds: each
        config is built once, checked and calibrated, then round r runs every config one
        repeat, in an order rotated by r, so load from other tenants falls on all alike.
        On this machine (a host target, no device pool given) the samples are the harness
        child's CPU seconds per call (_cpu_rounds), elsewhere the device's wall time."""
        prep = self.prepare(task)
        built = self._build_all(task, configs)
        pool = self.pool_for(task.target)
        out = [err for _mod, err in built]
        number = [0] * len(configs)
        for i, (c, (mod, err)) in enumerate(zip(configs, built)):
            if err is None:
                first = self._run(task, c, mod, prep, pool, repeat=1)
                if first.ok:
                    number[i] = calibrate_number(first.costs[0], self.min_repeat_ms)
                else:
                    out[i] = first
        costs = [[] for _ in configs]
        live = [i for i in range(len(configs)) if out[i] is None]
        if live and self._own_pool and task.target.is_host:
            self._cpu_rounds(task, configs, built, prep, live, number, rounds, costs, out)
        for r in range(rounds if live and not any(costs) else 0):
            for i in live[r % len(live):] + live[:r % len(live)]:
                if out[i] is not None:
                    continue
                rec = self._run(task, configs[i], built[i][0], prep, pool, repeat=1,
                                number=number[i], min_repeat_ms=0.0, check=False)
                if rec.ok:
                    costs[i].append(rec.costs[0])
                else:
                    out[i] = rec
        for i in live:
            if out[i] is None:
                inp = measure_input(task.workload, task.target, configs[i],
                                    toolchain_info(task.target, built[i][0].extra_flags))
                out[i] = Record.of(inp, MeasureResult(tuple(costs[i]), self.cost_unit))
        return out

    def _cpu_rounds(self, task, configs, built, prep, live, number, rounds, costs, out):
        """The rounds on this machine in CPU seconds of the harness child (targets.cpu_clock):
        on a shared machine wall time counts the moments a run sat descheduled behind
        other jobs, which is most of the noise between two configs."""
        import tempfile
        from pathlib import Path
        from targets.cpu_clock import cpu_seconds_per_call, fixed_cpu_seconds
        with tempfile.TemporaryDirectory(prefix="cgen-cpu-") as d:
            runs = {}
            for i in live:
                files = []
                for k, a in enumerate(prep.inputs):
                    files.append(Path(d) / f"c{i}_{k}.bin")
                    np.ascontiguousarray(a).tofile(files[-1])
                exe = built[i][0].executable()
                try:
                    runs[i] = (exe, files, fixed_cpu_seconds(exe, files))
                except RuntimeError as e:
                    out[i] = error_record(task.workload, task.target, configs[i],
                                          ErrorKind.RUNTIME_ERROR, e)
            for r in range(rounds):
                order = [i for i in live[r % len(live):] + live[:r % len(live)] if i in runs]
                for i in order:
                    if out[i] is not None:
                        continue
                    exe, files, base = runs[i]
                    try:
                        costs[i].append(cpu_seconds_per_call(exe, files, number[i], base))
                    except RuntimeError as e:
                        out[i] = error_record(task.workload, task.target, configs[i],
                                              ErrorKind.RUNTIME_ERROR, e)

    def _run(self, task, config, mod, prep, pool, repeat=None, number: int = 1,
             min_repeat_ms=None, check: bool = True) -> Record:
        tgt = task.target
        repeat = self.repeat if repeat is None else repeat
        min_ms = self.min_repeat_ms if min_repeat_ms is None else min_repeat_ms
        inp = measure_input(task.workload, tgt, config, toolchain_info(tgt, mod.extra_flags))
        names = [p.name for p in mod.func.params]
        arrays = {n: a.copy() for n, a in zip(names, prep.inputs)}
        if pool is None:
            res = mod.benchmark(*arrays.values(), repeat=repeat, number=number,
                                min_repeat_ms=min_ms, timeout=self.timeout)
        else:
            res = pool.submit(mod.executable(), arrays, [n for n in names if n in mod.func.outputs],
                              target=tgt, repeat=repeat, number=number, min_repeat_ms=min_ms,
                              timeout=self.timeout).result()
        if res.error is None and check:
            bad = check_outputs(res.outputs, prep.reference)
            if bad:
                return Record.of(inp, MeasureResult.failed(ErrorKind.WRONG_ANSWER, bad))
        return run_record(inp, res)

    def close(self):
        self._builders.shutdown(wait=False, cancel_futures=True)
        if self._own_pool and self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
