"""cgen.build: schedule -> C -> a module callable on numpy arrays.

Every target's module is called the same way: the host loads the kernel with cffi,
other targets (QEMU user mode, bare-metal Cortex-M under qemu-system-arm) run the
harness executable through their runner (targets.runner.runner_for).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from targets import resolve, compile_c
from targets.runner import runner_for
from targets.target import Target
from .codegen.c import emit_c
from .codegen.harness import harness_source
from .lower.ir import PrimFunc
from .lower.lower import lower
from .schedule import Schedule

# probe runs at most before a benchmark with min_repeat_ms (each one a process start)
CALIBRATION_ROUNDS = 4
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g",
                  "-fno-omit-frame-pointer")


class Module:
    """A built kernel: `.c_source`, and a call taking one numpy array per argument."""

    def __init__(self, func: PrimFunc, c_source: str, prototype: str, target: Target,
                 sanitize: bool = False):
        self.func = func
        self.name = func.name
        self.c_source = c_source
        self.prototype = prototype
        self.target = target
        self.sanitize = sanitize
        self._lib = None
        self._exe = None
        self.timeout = 600.0
        self.device = None
        # -fopenmp exactly when a pragma needs it: an omp pragma without it fails under -Werror
        self.extra_flags = ("-fopenmp",) if "#pragma omp" in c_source else ()

    @property
    def params(self):
        return self.func.params

    def check_args(self, arrays) -> list:
        params = self.func.params
        if len(arrays) != len(params):
            raise ValueError(f"{self.name} takes {len(params)} arrays "
                             f"({', '.join(p.name for p in params)}), got {len(arrays)}")
        out = []
        for a, p in zip(arrays, params):
            if not isinstance(a, np.ndarray):
                raise ValueError(f"{self.name}: argument {p.name} must be a numpy array, got {type(a).__name__}")
            if a.dtype != np.dtype(p.dtype if p.dtype != "bool" else np.bool_):
                raise ValueError(f"{self.name}: argument {p.name} has dtype {a.dtype}, expected {p.dtype}")
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"{self.name}: argument {p.name} has shape {tuple(a.shape)}, expected {tuple(p.shape)}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{self.name}: argument {p.name} must be C-contiguous (use np.ascontiguousarray)")
            if p.name in self.func.outputs and not a.flags.writeable:
                raise ValueError(f"{self.name}: output {p.name} is read-only")
            out.append(a)
        return out

    # ---------------------------------------------------------------- host
    def _load(self):
        if self._lib is None:
            import cffi
            so = compile_c(self.c_source, self.target, "shared", extra_flags=self.extra_flags,
                           name=self.name)
            ffi = cffi.FFI()
            ffi.cdef(self.prototype.replace("restrict", "").replace("const ", ""))
            self._ffi = ffi
            # An OpenMP kernel is never unloaded: dlclose would unmap libgomp under its
            # idle worker threads, which then crash the process.
            flags = ffi.RTLD_NOW | (ffi.RTLD_NODELETE if "-fopenmp" in self.extra_flags else 0)
            self._lib = ffi.dlopen(str(so), flags)
        return self._lib

    def harness_source(self) -> str:
        """The C of the executable's main (codegen.harness): file names from argv, or on
        bare metal fixed (targets.semihost explains why) and timed by semihosting."""
        if not self.target.bare_metal:
            return harness_source(self.func, self.prototype)
        from targets.semihost import arg_file
        files = tuple(arg_file(k) for k in range(len(self.func.params)))
        return harness_source(self.func, self.prototype, files, clock="semihosting")

    def executable(self) -> Path:
        """A standalone harness executable (see codegen.harness); on bare metal an image
        with the board's start-up code (see bare_metal_link)."""
        if self._exe is None:
            flags = self.extra_flags + (SANITIZE_FLAGS if self.sanitize else ())
            extra = (self.harness_source(),)
            if self.target.bare_metal:
                link, startup = bare_metal_link(self.target)
                flags, extra = flags + link, extra + (startup,)
            self._exe = compile_c(self.c_source, self.target, "executable", extra_flags=flags,
                                  name=self.name, extra_sources=extra)
        return self._exe

    def __call__(self, *arrays):
        arrays = self.check_args(arrays)
        if self.sanitize or not self.target.is_host or self.device is not None:
            res = self._runner().run(self.executable(), [p.name for p in self.func.params], arrays,
                                     self.func.outputs, timeout=self.timeout)
            if res.error is not None:
                raise RuntimeError(f"{self.name} on {self.target.name}: {res.error.kind}: {res.error.msg}")
            for p, a in zip(self.func.params, arrays):
                if p.name in res.outputs:
                    a[...] = res.outputs[p.name]
            return
        self._runner().check()       # code this CPU cannot run is refused, not a SIGILL
        lib = self._load()
        ffi = self._ffi
        ptrs = [ffi.from_buffer(a) for a in arrays]
        ptrs = [ffi.cast(f"{_ctype(p.dtype)} *", x) for p, x in zip(self.func.params, ptrs)]
        rc = getattr(lib, self.name)(*ptrs)
        if rc != 0:
            raise RuntimeError(f"{self.name} returned {rc} (out of memory for a temporary buffer)")

    def _runner(self):
        if self.device is not None:
            return self.device.runner()
        return runner_for(self.target)

    def on(self, device) -> "Module":
        """Run calls and benchmarks on a device (targets.device.open_device(url): a board
        over SSH, QEMU or local) through the measuring agent."""
        if not device.supports(self.target):
            raise ValueError(f"device {device.name} cannot run target {self.target.name}")
        self.device = device
        return self

    def benchmark(self, *arrays, repeat: int = 5, number: int = 1, timeout: float | None = None,
                  min_repeat_ms: float = 0.0):
        """Time the kernel in a child process through the target's runner (or device).

        Returns targets.runner.Result: `times` holds seconds per call for each
        repeat (emulation time when `emulated`), `outputs` the written arrays.
        min_repeat_ms > 0: `number` is first raised until one repeat lasts that long, as
        a measuring device's agent does: probe runs time `number` calls twice (the first
        repeat also pays an emulator's translation) and a few calls also carry the
        timer's own cost (a semihosting call), so the estimate is refined in rounds.
        """
        arrays = self.check_args(arrays)
        names = [p.name for p in self.func.params]

        def run(r: int, n: int):
            return self._runner().run(self.executable(), names, arrays, self.func.outputs,
                                      repeat=r, number=n, timeout=timeout or self.timeout)
        for _ in range(CALIBRATION_ROUNDS if min_repeat_ms > 0 and repeat > 0 else 0):
            probe = run(2, number)
            if probe.error is not None:
                return probe
            per_call = min(probe.times, default=0.0)
            if per_call <= 0 or per_call * number * 1e3 >= min_repeat_ms:
                break
            number = max(2 * number, math.ceil(min_repeat_ms / 1e3 / per_call * 1.1))
        return run(repeat, number)


def bare_metal_link(tgt) -> tuple:
    """(link flags, start-up C) of a bare-metal image for the board tgt runs on: newlib's
    semihosting library, the board's memory as a linker script, the vector table.  The
    start-up C is the same for every image, so the toolchain cache compiles it once."""
    from targets.semihost import LINK_FLAGS, board_for
    from targets.toolchain import cached_file
    from .codegen.cortex_m import linker_script, startup_source
    board = board_for(tgt)
    script = cached_file(linker_script(board.rom, board.ram), ".ld")
    return LINK_FLAGS + board.link_flags + ("-T", str(script)), startup_source()


def _ctype(dtype: str) -> str:
    from .codegen.c import C_TYPES
    return C_TYPES[dtype]


def build(sch: Schedule, args, target="host", name: str = "kernel", sanitize: bool = False,
          load: bool = True) -> Module:
    """Lower, emit C and prepare a module for the target.

    A host module is compiled and loaded here (load=False: on first call, for
    callers that only want its `.executable()`, like the tuner); a compiler
    failure raises targets.CompileError with the compiler's message and the C file.
    """
    tgt = resolve(target)
    from targets.toolchain import check_toolchain
    check_toolchain(tgt)
    if not name.isidentifier():
        raise ValueError(f"module name {name!r} must be a C identifier")
    if sanitize and tgt.bare_metal:
        raise ValueError(f"sanitizers need a hosted C library, not bare-metal {tgt.name}")
    from .codegen.isa import isa_for
    func = lower(sch, args, name, tgt)
    src, proto = emit_c(func, isa_for(tgt), func.kernels, openmp=tgt.can_thread)
    mod = Module(func, src, proto, tgt, sanitize)
    if tgt.is_host and not sanitize and load:
        mod._load()
    return mod
