"""Helpers shared by the bench suites: timing, thread limits, output checks, printing.

Timing follows AutoTVM's habit: one warm-up call, then `repeats` timed
repeats of `number` back-to-back calls, `number` raised until one repeat
lasts at least `min_repeat_s`; the figure reported is the median of the
per-call times of the repeats.  cgen and its peer are measured interleaved
(repeat r of one, then repeat r of the other) in the same process, so a
noisy neighbour on a shared machine slows both alike.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from targets.cpu_clock import cpu_seconds_per_call, fixed_cpu_seconds

# One core's FP32 FMA peak on the development machine (REFERENCE.md: 32 FLOP/cycle
# x ~3.65 GHz).  Only a default for x86 AVX2/AVX-512 hosts; pass --peak-gflops
# with your own machine's figure (FLOP/cycle x GHz) elsewhere.
DEFAULT_X86_PEAK_GFLOPS = 117.0


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median over repeats, each repeat's figure, calls per repeat."""
    median: float
    times: tuple
    number: int

    @property
    def repeats(self) -> int:
        return len(self.times)


class ChildTimer:
    """Times a cgen module in a child process (its harness executable), never in-process:
    a crashing candidate cannot take the bench down.  Calling it runs the module once."""

    def __init__(self, mod, arrays, timeout: float = 120.0):
        self.mod, self.arrays, self.timeout = mod, arrays, timeout

    def __call__(self):
        self.mod(*self.arrays)

    def per_call(self, number: int) -> float:
        res = self.mod.benchmark(*self.arrays, repeat=1, number=number, timeout=self.timeout)
        if res.error is not None:
            raise RuntimeError(f"{res.error.kind}: {res.error.msg}")
        return res.times[0]


class CpuTimer:
    """Times a cgen module's harness executable (`exe --time 1 NUMBER FILE...`) in CPU
    seconds of its process (user + system): on a shared machine, time spent descheduled
    does not count.  A context manager: the parameter files live in a temporary directory."""

    def __init__(self, mod, arrays):
        import tempfile
        self.mod, self.exe = mod, mod.executable()
        self._dir = tempfile.TemporaryDirectory(prefix="bench-cpu-")
        self.files = []
        for k, a in enumerate(arrays):
            self.files.append(os.path.join(self._dir.name, f"p{k}"))
            np.ascontiguousarray(a).tofile(self.files[-1])
        self._base = None

    def __call__(self):
        self.per_call(1)

    def per_call(self, number: int) -> float:
        # the process also reads and writes its files and calls the kernel once untimed:
        # that fixed part (a run with NUMBER 0, the median of three) is subtracted
        if self._base is None:
            self._base = fixed_cpu_seconds(self.exe, self.files)
        return cpu_seconds_per_call(self.exe, self.files, number, self._base)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._dir.cleanup()


def _per_call(fn, number: int) -> float:
    # timers that run in another process (ChildTimer, bench.gemm.BlasPeer) time themselves
    if hasattr(fn, "per_call"):
        return fn.per_call(number)
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


MAX_CALLS = 1 << 20


def calibrate(fn, min_repeat_s: float) -> int:
    """Calls per repeat so that one repeat lasts at least min_repeat_s (MAX_CALLS at most).

    A probe can read as about zero (a CPU clock's tick is coarser than a short run), so
    the count grows at most 100x a step and never past MAX_CALLS: an estimate from a
    zero reading once asked for 2e8 calls, minutes of one run."""
    number = 1
    while True:
        t = _per_call(fn, number)
        if t * number >= min_repeat_s or number >= MAX_CALLS:
            return number
        want = math.ceil(min_repeat_s / max(t, 1e-9))
        number = min(max(number * 2, want), number * 100, MAX_CALLS)


@contextlib.contextmanager
def _no_gc():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def measure(fn, repeats: int = 7, min_repeat_s: float = 0.02, warmup: int = 1) -> Timing:
    """Median seconds per call of fn() (see the module docstring)."""
    return measure_interleaved([fn], repeats, min_repeat_s, warmup)[0]


def measure_interleaved(fns, repeats: int = 7, min_repeat_s: float = 0.02,
                        warmup: int = 1) -> list:
    """Timings of several functions, measured round-robin repeat by repeat."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    with _no_gc():
        for fn in fns:
            for _ in range(warmup):
                fn()
        numbers = [calibrate(fn, min_repeat_s) for fn in fns]
        times = [[] for _ in fns]
        for _ in range(repeats):
            for k, fn in enumerate(fns):
                times[k].append(_per_call(fn, numbers[k]))
    return [Timing(statistics.median(t), tuple(t), n) for t, n in zip(times, numbers)]


def time_once(fn) -> float:
    """Wall seconds of one call."""
    return _per_call(fn, 1)


# ---------------------------------------------------------------- threads
@contextlib.contextmanager
def single_thread():
    """Limit BLAS/OpenMP thread pools to one thread (threadpoolctl)."""
    with threads(1):
        yield


@contextlib.contextmanager
def threads(n: int):
    """Limit BLAS and OpenMP thread pools to n threads (threadpoolctl), the peer's and
    cgen's alike: cgen's OpenMP kernels read OMP_NUM_THREADS in their child process."""
    import os
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as e:  # pragma: no cover - dev dependency
        raise SystemExit("bench needs threadpoolctl (pip install -e '.[dev]')") from e
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


def blas_info() -> dict:
    """The BLAS numpy calls, as threadpoolctl reports it right now (call inside single_thread)."""
    from threadpoolctl import threadpool_info
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return {
                "internal_api": pool.get("internal_api"),
                "version": pool.get("version"),
                "architecture": pool.get("architecture"),
                "num_threads": pool.get("num_threads"),
                "threading_layer": pool.get("threading_layer"),
                # OpenBLAS's kernel choice can be forced by this variable; record it.
                "coretype": os.environ.get("OPENBLAS_CORETYPE"),
            }
    return {"internal_api": None, "version": None, "architecture": None, "num_threads": None,
            "threading_layer": None, "coretype": os.environ.get("OPENBLAS_CORETYPE")}


def describe_blas(info: dict) -> str:
    parts = [f"{info.get('internal_api')} {info.get('version')}",
             f"kernel {info.get('architecture')}"]
    if info.get("coretype"):
        parts.append(f"OPENBLAS_CORETYPE={info['coretype']}")
    parts.append(f"num_threads={info.get('num_threads')}")
    return ", ".join(parts)


# ---------------------------------------------------------------- checks
def check_close(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-4) -> tuple:
    """(ok, max abs error, atol): allclose(rtol, atol = rtol * max|ref|), the tests' rule."""
    atol = rtol * float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(out.astype(np.float64) - ref))) if ref.size else 0.0
    ok = bool(np.all(np.isfinite(out))) and bool(np.allclose(out, ref, rtol=rtol, atol=atol))
    return ok, err, atol


# ---------------------------------------------------------------- peak
def default_peak_gflops(target=None) -> float | None:
    """117 GFLOP/s on x86 hosts with AVX2 or AVX-512, else unknown (None)."""
    from targets import resolve
    tgt = resolve(target or "host")
    if tgt.arch == "x86_64" and tgt.isa in ("avx2", "avx512"):
        return DEFAULT_X86_PEAK_GFLOPS
    return None


# ---------------------------------------------------------------- CLI + output
def add_common_arguments(p) -> None:
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per case and line (progress goes to stderr)")
    p.add_argument("--repeats", type=int, default=7,
                   help="timed repeats per measurement; the median is reported (default 7)")
    p.add_argument("--min-repeat-ms", type=float, default=20.0,
                   help="calls per repeat are raised until a repeat lasts this long (default 20)")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="one core's FP32 FMA peak for the 'of peak' column; default "
                        f"{DEFAULT_X86_PEAK_GFLOPS:g} on x86 AVX2/AVX-512 hosts (REFERENCE.md's "
                        "figure: 32 FLOP/cycle x ~3.65 GHz), none elsewhere")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def progress(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr, flush=True)


def print_json_lines(records, file=None) -> None:
    out = file or sys.stdout
    for r in records:
        out.write(json.dumps(r) + "\n")
    out.flush()


def format_table(headers, rows) -> str:
    """Plain text columns: text left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[c]) for r in cells) for c in range(len(headers))]
    numeric = [all(isinstance(row[c], (int, float)) or row[c] is None for row in rows)
               for c in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        parts = [v.rjust(w) if numeric[c] else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


# ---------------------------------------------------------------- peers
def lazy_peer(make_session, feeds: dict, reference, repeats: int = 7, min_repeat_s: float = 0.02):
    """(peer_fn, peer_call, check) for an onnxruntime session made on first use.

    peer_fn() -> median seconds per run; peer_call() runs once (for interleaving);
    check() -> relative max error of the session's output against reference()."""
    state = {}

    def session():
        if "s" not in state:
            state["s"] = make_session()
        return state["s"]

    def call():
        session().run(None, feeds)

    def peer_fn() -> float:
        return measure(call, repeats=repeats, min_repeat_s=min_repeat_s).median

    def check() -> float:
        y = session().run(None, feeds)[0]
        ref = reference()
        return float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))
    return peer_fn, call, check


def ort_session(model):
    """An onnxruntime session on the CPU with one intra-op and one inter-op thread,
    sequential execution, all graph optimisations: the single-thread peer."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
