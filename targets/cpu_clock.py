"""CPU time of a harness run, the clock for single-thread figures on a shared machine.

Wall time counts the moments the run sat descheduled behind other jobs; the child's
user + system time does not, so a loaded 2-core CI runner still ranks configs right.
"""
from __future__ import annotations

import os
import statistics
import subprocess


def child_cpu_seconds(exe, files, number: int) -> float:
    """User + system seconds of one `exe --time 1 NUMBER FILE...` run."""
    proc = subprocess.Popen([str(exe), "--time", "1", str(number), *map(str, files)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if status != 0:
        raise RuntimeError(f"{exe} failed (status {status}): {err[:300]}")
    return usage.ru_utime + usage.ru_stime


def fixed_cpu_seconds(exe, files) -> float:
    """The part of a run that is not the timed calls (reading and writing the files, one
    untimed call): the median of three runs with NUMBER 0."""
    return statistics.median(child_cpu_seconds(exe, files, 0) for _ in range(3))


def cpu_seconds_per_call(exe, files, number: int, base: float) -> float:
    """CPU seconds per call, less `base` (see fixed_cpu_seconds)."""
    return max(child_cpu_seconds(exe, files, number) - base, 1e-9) / number
