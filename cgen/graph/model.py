"""Models to firmware: compile, run and benchmark ONNX models as generated C.

    from cgen.graph.model import compile_model, run_model, bench_model
    cm = compile_model("model.onnx", target="aarch64", name="net")   # CompiledModel
    cm.write("out/")                 # net.h, net.c, manifest.json, net.cmake
    print(cm.report.totals()); print(cm.report.table())
    outs = cm.run({"x": x})          # built with a small generated main, run on the target
                                     # (host natively, aarch64/armv7 under QEMU user mode,
                                     # cortex-m4 bare metal under qemu-system-arm)
    res = bench_model("model.onnx")  # BenchResult: cgen vs onnxruntime (1 thread), ratio

Pipeline: cgen.graph.prepare (ONNX -> canonical graph -> fused groups) ->
cgen.graph.drive (one kernel per group, configs from `group_config`) ->
cgen.graph.emit (static memory plan, C / header / manifest / CMake).
Refusals are `ModelError`s with one-line messages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import re
import time

import numpy as np

from .graph_ir import ModelError
from .emit import STACK_LIMIT, ModelSource, check_model_name, emit_model
from .drive import legalize, lower_graph
from .kernels import kernel_target
from .ort_peer_child import ort_session, time_ort



def model_target(target):
    """A Target from a name, a .toml path or a Target (targets.resolve; kept for callers)."""
    from targets import resolve
    return resolve(target)


def default_name(model) -> str:
    """The model name from a file path's stem (a C identifier), else "model"."""
    if isinstance(model, (str, Path)) and not isinstance(model, bytes):
        stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(model).stem)
        if stem and not stem[0].isdigit():
            return stem
        return f"m_{stem}" if stem else "model"
    return "model"


def _label(model) -> str:
    return Path(model).name if isinstance(model, (str, Path)) else "an in-memory ONNX model"


@dataclass
class CompiledModel:
    """A model compiled for a target: the emitted sources and what they came from."""
    source: ModelSource
    kernels: list
    fused: object                   # FusedGraph
    target: object                  # Target (no threads)
    compile_seconds: float
    _exe: dict = field(default_factory=dict, repr=False)
    patches: object = None          # cgen.graph.patch.PatchPlan, when patches ran
    _flash: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def graph(self):
        return self.fused.graph

    @property
    def report(self):
        return self.source.report

    @property
    def c_source(self) -> str:
        return self.source.source

    @property
    def header(self) -> str:
        return self.source.header

    @property
    def manifest(self) -> dict:
        return self.source.manifest

    @property
    def workspace_bytes(self) -> int:
        return self.source.workspace_bytes

    def flash(self):
        """The FlashReport: code, weights and constants of the object built for the target
        (cgen.graph.flash; measured once, by the first call or by compile's flash budget)."""
        if self._flash is None:
            from .flash import measure_flash
            self._flash = measure_flash(self.source, self.kernels, self.target)
        return self._flash

    def write(self, out_dir) -> list:
        """NAME.h, NAME.c, manifest.json (with the flash measured) and NAME.cmake in out_dir,
        all or none (cgen.graph.fit.write_outputs); returns their paths."""
        from .fit import manifest_with_flash, write_outputs
        files = self.source.files()
        files["manifest.json"] = manifest_with_flash(self.manifest, self.flash())
        return write_outputs(files, out_dir)

    # ------------------------------------------------------------ running
    def harness_source(self, timer: str = "") -> str:
        """A main() around NAME_run: `exe [--time REPEAT NUMBER] IN... OUT...` reads each
        input from a raw file, runs once (writing each output's file), then with --time
        prints the mean seconds per call of each repeat.  The workspace is heap-allocated
        with exactly NAME_WORKSPACE_BYTES, so a sanitizer catches any overrun."""
        src = self.source
        ins, outs = src.inputs, src.outputs
        n = len(ins) + len(outs)
        from ..codegen.c import C_TYPES
        # bare metal: the semihosting command line holds 254 characters, so the harness
        # opens each parameter's file by its staged name and argv carries no file names
        if self.target.bare_metal:
            from targets.semihost import arg_file
            path = lambda k: f'"{arg_file(k)}"'      # noqa: E731
            n_args = 0
        else:
            path = lambda k: f"argv[a0 + {k}]"      # noqa: E731
            n_args = n
        body = [
            "  int a0 = 1, repeat = 0, number = 1, r, i, rc;",
            "  void *ws;",
            "  if (argc > 1 && strcmp(argv[1], \"--time\") == 0) {",
            "    if (argc < 4) { fprintf(stderr, \"--time REPEAT NUMBER\\n\"); return 2; }",
            "    repeat = atoi(argv[2]); number = atoi(argv[3]); a0 = 4;",
            "  }",
            f"  if (argc - a0 != {n_args}) {{ fprintf(stderr, \"expected {n_args} file names\\n\"); "
            "return 2; }",
        ]
        args = []
        if not ins:     # a model of constants reads no file: keep gcc's unused-function quiet
            body.append("  (void)cg_read;")
        for k, (_, c, d, s) in enumerate(ins):
            nb = int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize
            body.append(f"  void *p{k} = cg_read({path(k)}, {nb}u);")
            args.append(f"(const {C_TYPES[d]} *)p{k}")
        for k, (_, c, d, s) in enumerate(outs):
            nb = int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize
            body.append(f"  void *q{k} = malloc({max(nb, 1)}u);")
            body.append(f"  if (!q{k}) {{ fprintf(stderr, \"out of memory\\n\"); return 2; }}")
            args.append(f"({C_TYPES[d]} *)q{k}")
        ws = src.workspace_bytes
        body.append(f"  ws = malloc({ws}u ? {ws}u : 1u);")
        body.append("  if (!ws) { fprintf(stderr, \"out of memory\\n\"); return 2; }")
        call = f"{src.name}_run({', '.join(args + ['ws'])})"
        body.append(f"  rc = {call};")
        body.append("  if (rc != 0) { fprintf(stderr, \"model returned %d\\n\", rc); return 3; }")
        for k, (_, c, d, s) in enumerate(outs):
            nb = int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize
            body.append(f"  cg_write({path(len(ins) + k)}, q{k}, {nb}u);")
        body += ["  for (r = 0; r < repeat; ++r) {", "    double t0 = cg_now();",
                 f"    for (i = 0; i < number; ++i) rc |= {call};",
                 "    printf(\"%.9e\\n\", (cg_now() - t0) / number);", "  }"]
        body += [f"  free(p{k});" for k in range(len(ins))]
        body += [f"  free(q{k});" for k in range(len(outs))]
        body += ["  free(ws);", "  return rc == 0 ? 0 : 3;"]
        proto = src.manifest["entry_point"] + ";"
        from ..codegen.harness import prelude as harness_prelude
        prelude = harness_prelude(timer or ("semihosting" if self.target.bare_metal else "posix"))
        return (prelude + "\n" + proto + "\n\nint main(int argc, char **argv) {\n"
                + "\n".join(body) + "\n}\n")

    def executable(self, sanitize: bool = False, cc: str | None = None) -> Path:
        """The model and its harness built for the target (strict flags; with `sanitize`,
        ASan + UBSan on the host)."""
        key = (sanitize, cc)
        if key not in self._exe:
            from targets import compile_c
            tgt = self.target if cc is None else self.target.with_cc(cc)
            flags = ()
            if sanitize:
                if not tgt.is_host:
                    raise ModelError(f"sanitizers run on the host only, not on {tgt.name}",
                                     "bad_input")
                from ..build import SANITIZE_FLAGS
                flags = SANITIZE_FLAGS
            extra = (self.harness_source(),)
            if tgt.bare_metal:      # the same image set-up as a kernel's (shared start-up object)
                from ..build import bare_metal_link
                link, startup = bare_metal_link(tgt)
                flags, extra = flags + link, extra + (startup,)
            self._exe[key] = compile_c(self.c_source, tgt, "executable", extra_flags=flags,
                                       name=self.name, extra_sources=extra)
        return self._exe[key]

    def check_feeds(self, feeds) -> list:
        arrs = self.graph.check_inputs(feeds)
        return [np.ascontiguousarray(arrs[v.name]) for v in self.graph.inputs]

    def _run(self, feeds, repeat=0, number=1, timeout=600.0, sanitize=False, device=None):
        from targets.runner import runner_for
        arrays = self.check_feeds(feeds)
        outs = [np.zeros(v.shape, v.dtype) for v in self.graph.outputs]
        params = [f"in{k}" for k in range(len(arrays))] + [f"out{k}" for k in range(len(outs))]
        # a device (targets.device.open_device: a board over SSH, QEMU, local) runs the
        # executable through the measuring agent; otherwise the target's own runner
        runner = device.runner() if device is not None else runner_for(self.target)
        res = runner.run(self.executable(sanitize), params, arrays + outs,
                                          params[len(arrays):], repeat=repeat, number=number,
                                          timeout=timeout)
        if res.error is not None:
            raise RuntimeError(f"{self.name} on {self.target.name}: {res.error.kind}: "
                               f"{res.error.msg}")
        got = {v.name: res.outputs[f"out{k}"] for k, v in enumerate(self.graph.outputs)}
        return got, res

    def run(self, feeds, timeout: float = 600.0, sanitize: bool = False, device=None) -> dict:
        """Outputs (graph output name -> array) for one run on the target (or on `device`)."""
        if device is not None and not device.supports(self.target):
            raise ModelError(f"device {device.name} cannot run target {self.target.name}", "bad_input")
        return self._run(feeds, timeout=timeout, sanitize=sanitize, device=device)[0]

    def time(self, feeds, repeat: int = 7, min_repeat_s: float = 0.05,
             timeout: float = 600.0) -> list:
        """Seconds per call of each repeat (a repeat runs long enough to be timed)."""
        _, res = self._run(feeds, repeat=1, number=1, timeout=timeout)
        one = max(res.times[0], 1e-7)
        number = max(1, min(1_000_000, int(min_repeat_s / one)))
        _, res = self._run(feeds, repeat=repeat, number=number, timeout=timeout)
        return list(res.times)

    def profile(self, feeds, number: int = 200, timeout: float = 600.0) -> list:
        """(kernel name, seconds) of each kernel in NAME_run's order, on the host: a
        profiling build of the model (emit_model(profile=True): each kernel call of
        NAME_run timed) runs the model 1 + `number` times, and each kernel's time is the
        median over the timed runs.  A kernel is timed where the model runs it, after the
        kernels before it, so the times add up to the model's own; calling one kernel
        over and over instead would find its weights and input warm in the caches.  The
        emitted file is unchanged."""
        import signal
        import statistics
        import subprocess
        import tempfile
        from targets import compile_c
        if not self.target.is_host:
            raise ModelError(f"profiling times kernels on this machine: target {self.target.name} "
                             "does not run here (ARM targets: profile_icount, in instructions)",
                             "bad_input")
        from targets.runner import runner_for
        runner_for(self.target).check()
        prof = emit_model(self.graph, self.kernels, self.target, self.name, self.source.label,
                          self.source.stack_limit, profile=True, **self.source.plan_options)
        exe = compile_c(prof.source, self.target, "executable", name=self.name + "_prof",
                        extra_sources=(self.harness_source(),), strict=False)
        arrays = self.check_feeds(feeds) + [np.zeros(v.shape, v.dtype) for v in self.graph.outputs]
        with tempfile.TemporaryDirectory(prefix="cgen-prof-") as d:
            paths = []
            for k, a in enumerate(arrays):
                path = os.path.join(d, f"a{k}.bin")
                a.tofile(path)
                paths.append(path)
            proc = subprocess.run([str(exe), "--time", "1", str(max(1, number))] + paths,
                                  capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            raise RuntimeError(f"profiling run failed ({how}): {proc.stderr.strip()[-500:]}")
        seconds: dict = {}
        for ln in proc.stderr.splitlines():
            parts = ln.split()
            if len(parts) == 2:
                seconds.setdefault(parts[0], []).append(float(parts[1]))
        # the first run writes the outputs and meets cold pages: it is not timed
        return [(k, statistics.median(v[1:] or v)) for k, v in seconds.items()]

    def profile_icount(self, feeds, timeout: float = 900.0):
        """Instructions of each kernel and of one NAME_run on an ARM target, counted under
        QEMU -icount (cgen.graph.profile_icount.icount_profile; never seconds)."""
        from .profile_icount import icount_profile
        return icount_profile(self, feeds, timeout)


def compile_model(model, target="host", name: str | None = None, input_shapes=None,
                  budget_ram: int | None = None, budget_flash: int | None = None, tuned=None,
                  stack_limit: int = STACK_LIMIT, strict: bool = False, patches=None,
                  objective: str | None = None) -> CompiledModel:
    """ONNX model (path, bytes or ModelProto) -> CompiledModel for the target.

    input_shapes: name -> shape for inputs with symbolic dimensions.  budget_ram /
    budget_flash: refuse (ModelError, cgen.graph.fit) when the workspace / the flash (code +
    weights + constants of the object built for the target) exceed them.
    tuned: per-group config overrides (see cgen.graph.kernels.group_config).
    strict: refuse (ModelError "fallback") when a kernel that a template should build
    falls back to plain loops; without it such kernels are marked in the report.
    objective: "latency", "ram" or "balanced" (cgen.graph.objective; None: balanced on
    bare-metal targets or under a RAM budget, latency elsewhere).
    patches: an n x n grid, "auto" or "off" for the first stages run patch by patch
    (cgen.graph.patch; None: "auto" with the ram objective or when the activations per
    layer exceed budget_ram); the plan is `CompiledModel.patches` and manifest["patches"]."""
    from .patch import prepare_patched
    from .objective import choose_kernels, legalize_objective, resolve_objective
    t0 = time.perf_counter()
    tgt = kernel_target(model_target(target))
    name = check_model_name(name if name is not None else default_name(model))
    objective = resolve_objective(objective, tgt, budget_ram)
    fused, patch_plan = prepare_patched(model, input_shapes, patches, budget_ram, objective)
    fg = legalize(fused, tgt, legalize_objective(objective))
    from .fit import check_budgets

    def build(picks):
        kernels, options = choose_kernels(fg, tgt, picks, objective, budget_ram, stack_limit)
        src = emit_model(fg.graph, kernels, tgt, name, _label(model), stack_limit, **options)
        src.manifest["objective"] = objective
        rep = src.report
        if patch_plan is not None:
            src.manifest["patches"] = patch_plan.to_json()
        if strict and rep.fallbacks:
            first = rep.fallbacks[0]
            raise ModelError(f"{len(rep.fallbacks)} kernel(s) fell back to plain loops for "
                             f"target {tgt.name} (strict), first {first.kernel}: "
                             f"{first.fallback}", "fallback")
        return src, kernels, check_budgets(src, kernels, tgt, budget_ram, budget_flash)
    try:
        src, kernels, flash = build(tuned)
    except ModelError as e:
        # over the flash budget with a tuning log's Pareto fronts: their least-code configs
        smaller = getattr(tuned, "smallest_code", lambda: None)()
        if e.kind != "budget" or budget_flash is None or smaller is None \
                or not str(e).startswith("flash"):
            raise
        src, kernels, flash = build(smaller)
        src.manifest["tuned_picks"] = "least code (flash budget)"
    return CompiledModel(src, kernels, fg, tgt, time.perf_counter() - t0,
                         patches=patch_plan, _flash=flash)


def load_npz(path, graph=None) -> dict:
    """Arrays of an .npz file, name -> array (checked against the graph's inputs when given)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrs = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {str(e).splitlines()[0]}", "bad_input") from None
    if graph is not None:
        graph.check_inputs(arrs)
    return arrs


def run_model(model, target="host", feeds=None, name: str | None = None, input_shapes=None,
              timeout: float = 600.0, sanitize: bool = False) -> dict:
    """Compile, build and run once: graph output name -> array."""
    cm = compile_model(model, target, name, input_shapes)
    return cm.run(feeds or {}, timeout=timeout, sanitize=sanitize)


# ====================================================================== bench
@dataclass(frozen=True)
class BenchResult:
    """Seconds per call of the compiled model and of onnxruntime (one thread), measured in
    interleaved repeats.  The ratio compares the best repeats (the least disturbed by
    other load on the machine); the medians are kept alongside."""
    name: str
    target: str
    cgen_s: float           # best repeat, seconds per call, the compiled model
    ort_s: float            # best repeat, seconds per call, onnxruntime with one thread
    max_rel_err: float      # of the compiled model's outputs against onnxruntime's
    cgen_median_s: float = 0.0
    ort_median_s: float = 0.0
    peer_isa: str = ""      # the ISA onnxruntime ran with (cgen.graph.ort_peer.OrtPeer.isa)
    peer_note: str = ""     # why that is not the target's ISA, when it is not

    @property
    def ratio(self) -> float:
        """onnxruntime time / cgen time: above 1 when cgen is faster."""
        return self.ort_s / self.cgen_s

    @property
    def median_ratio(self) -> float:
        return self.ort_median_s / self.cgen_median_s if self.cgen_median_s else 0.0

    def line(self) -> str:
        return (f"{self.name}: cgen {self.cgen_s * 1e6:.1f} us, onnxruntime (1 thread, "
                f"{self.peer_isa}) {self.ort_s * 1e6:.1f} us per call: ratio {self.ratio:.2f} on {self.target} "
                f"(medians {self.cgen_median_s * 1e6:.1f} / {self.ort_median_s * 1e6:.1f} us: "
                f"{self.median_ratio:.2f})")


def random_feeds(graph, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        if np.issubdtype(np.dtype(v.dtype), np.floating):
            out[v.name] = rng.standard_normal(v.shape).astype(v.dtype)
        else:
            info = np.iinfo(v.dtype)
            out[v.name] = rng.integers(max(info.min, -100), min(info.max, 100) + 1,
                                       v.shape).astype(v.dtype)
    return out


def bench_model(model, target="host", feeds=None, name: str | None = None, input_shapes=None,
                repeat: int = 5, min_repeat_s: float = 0.002, rounds: int = 6,
                compiled: CompiledModel | None = None) -> BenchResult:
    """Latency of the compiled model (its harness, on the target) against onnxruntime
    with one thread, on the same inputs: `rounds` interleaved rounds of `repeat` repeats of
    each, a repeat lasting about min_repeat_s; see BenchResult.  onnxruntime runs in a
    child process that sees the target's ISA (cgen.graph.ort_peer: on an AVX-512 machine,
    x86-avx2 gets an AVX2 onnxruntime by masking CPUID); BenchResult.peer_isa says which."""
    cm = compiled or compile_model(model, target, name, input_shapes)
    return bench_builds(model, [cm], feeds, repeat, min_repeat_s, rounds)[0]


def bench_builds(model, builds: list, feeds=None, repeat: int = 5,
                 min_repeat_s: float = 0.002, rounds: int = 6) -> list:
    """One BenchResult per build of the same model (e.g. its default and tuned configs),
    all timed in the same interleaved rounds with one onnxruntime peer, so that the
    builds' figures see the same machine load; every result carries the peer's figures."""
    from .ort_peer import OrtPeer
    for cm in builds:
        if not cm.target.is_host:
            raise ModelError(f"bench times the host; target {cm.target.name} runs under "
                             "emulation (use cgen run for correctness there)", "bad_input")
    first = builds[0]
    feeds = feeds if feeds is not None else random_feeds(first.graph)
    got = [cm.run(feeds) for cm in builds]
    with OrtPeer(model, feeds, first.target) as peer:
        errs = [_max_rel_err(g, peer.outputs) for g in got]
        # interleaved rounds of short repeats: all see the same machine load, and a short
        # repeat fits in one scheduler time slice on a busy machine
        numbers = []
        for cm in builds:
            _, res = cm._run(feeds, repeat=3, number=1)
            numbers.append(max(1, min(1_000_000, int(min_repeat_s / max(min(res.times), 1e-7)))))
        peer.time(1, min_repeat_s)
        cg_t, ort_t = [[] for _ in builds], []
        for _ in range(rounds):
            for cm, number, times in zip(builds, numbers, cg_t):
                times += cm._run(feeds, repeat=repeat, number=number)[1].times
            ort_t += peer.time(repeat, min_repeat_s, warmup=0)
    return [BenchResult(cm.name, cm.target.name, float(np.min(t)), float(np.min(ort_t)), err,
                        float(np.median(t)), float(np.median(ort_t)), peer.isa, peer.note)
            for cm, t, err in zip(builds, cg_t, errs)]


def _max_rel_err(got: dict, want: dict) -> float:
    """Largest error of the float outputs in `got`, relative to each output's largest
    magnitude in `want`."""
    err = 0.0
    for k, a in want.items():
        if k in got and a.size and np.issubdtype(a.dtype, np.floating):
            scale = max(float(np.max(np.abs(a))), 1e-30)
            err = max(err, float(np.max(np.abs(got[k].astype(np.float64) - a))) / scale)
    return err


__all__ = ["CompiledModel", "compile_model", "run_model", "bench_model", "bench_builds",
           "BenchResult",
           "load_npz", "random_feeds", "ort_session", "time_ort", "default_name",
           "model_target"]
