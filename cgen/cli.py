"""The `cgen` command line.  Errors are one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import shutil
import sys


def _targets(args) -> int:
    from targets.target import builtin_targets, resolve
    table = builtin_targets()
    rows = list(table.values())
    for path in args.toml or ():
        rows.append(resolve(path))
    print(f"{'target':<12} {'isa':<7} {'arch':<8} {'compiler':<26} {'runs on':<13} description")
    for t in rows:
        have = "" if shutil.which(t.cc) else f"  [missing: apt-get install {t.apt_package}]"
        print(f"{t.name:<12} {t.isa:<7} {t.arch:<8} {t.cc:<26} {t.runner:<13} {t.description}{have}")
    return 0


# ---------------------------------------------------------------- devices check
def _check_target(url: str, device, info: dict, name):
    """The target a device check builds its tiny kernel for."""
    from dataclasses import replace
    from targets.target import resolve
    if name:
        return resolve(name)
    if device.kind == "local":
        return resolve("host")
    if device.emulator:
        return resolve("aarch64" if device.emulator == "qemu-aarch64" else "armv7")
    machine, bits = info.get("machine", ""), info.get("bits", 64)
    if machine in ("aarch64", "arm64") and bits == 64:
        return resolve("aarch64")
    if machine.startswith("arm") or machine == "aarch64":
        return resolve("armv7")
    if machine == "x86_64":   # portable C, linked statically: the board's libc may differ
        return replace(resolve("generic-c"), static=True)
    raise ValueError(f"{url}: no built-in target for machine {machine!r} ({bits}-bit); pass --target")


def _devices_check(args) -> int:
    """Connect, print the device's hello and measure a tiny kernel; one line on failure."""
    import numpy as np
    from targets.device import open_device
    from targets.ssh import SshOptions
    try:
        opts = SshOptions(identity=tuple(args.identity or ()), known_hosts=args.known_hosts,
                          trust_on_first_use=args.trust_on_first_use,
                          ssh_config=None if args.no_ssh_config else "~/.ssh/config",
                          python=args.python, remote_dir=args.remote_dir,
                          connect_timeout=args.connect_timeout)
        device = open_device(args.url, ssh_options=opts)
        info = device.connect(attempts=1)
    except Exception as e:  # noqa: BLE001 - every failure is one line and a non-zero exit
        print(f"cgen devices check: {args.url}: {_one_line(e)}", file=sys.stderr)
        return 1
    try:
        print(f"device {args.url} ({device.kind}{', emulated' if device.emulated else ''})")
        for k in ("protocol", "machine", "bits", "cpu_model", "cores", "governor", "mem_free_bytes",
                  "mem_total_bytes", "python", "system", "release", "workdir"):
            v = info.get(k)
            if k.startswith("mem_") and v:
                v = f"{v / 2**20:.0f} MiB"
            print(f"  {k + ':':<17}{v}")
        emus = ", ".join(e for e, p in (info.get("emulators") or {}).items() if p) or "none"
        print(f"  {'emulators:':<17}{emus}")
        import cgen
        from cgen import te
        tgt = _check_target(args.url, device, info, args.target)
        if not device.supports(tgt):
            raise ValueError(f"target {tgt.name} does not run on this device ({info.get('machine')})")
        n = 1024
        a = te.placeholder((n,), "float32", name="A")
        b = te.placeholder((n,), "float32", name="B")
        c = te.compute((n,), lambda i: a[i] * 2.0 + b[i], name="C")
        exe = cgen.build(te.create_schedule(c), [a, b, c], tgt, name="devcheck").executable()
        x = np.arange(n, dtype=np.float32)
        y = np.ones(n, dtype=np.float32)
        res = device.run(exe, {"A": x, "B": y, "C": np.zeros(n, np.float32)}, ["C"], repeat=5,
                         min_repeat_ms=args.min_repeat_ms, timeout=args.timeout)
        if res.error is not None:
            raise RuntimeError(f"tiny kernel: {res.error.kind}: {res.error.msg}")
        if not np.allclose(res.outputs["C"], x * 2 + y):
            raise RuntimeError("tiny kernel: wrong answer")
        med = sorted(res.times)[len(res.times) // 2]
        kind = "emulated " if res.emulated else ""
        print(f"kernel C = 2*A + B ({n} floats, target {tgt.name}): ok, "
              f"{kind}median {med * 1e6:.3g} us per call over {len(res.times)} repeats")
        return 0
    except Exception as e:  # noqa: BLE001
        print(f"cgen devices check: {args.url}: {_one_line(e)}", file=sys.stderr)
        return 1
    finally:
        device.close()


def _one_line(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # a compiler or linker refusal: its first error line says why (e.g. "region `ITCM'
    # overflowed by 1234 bytes"), which the first line of the exception does not
    why = [ln.strip() for ln in getattr(e, "message", "").splitlines()
           if "error" in ln or "overflow" in ln]
    return f"{msg.rstrip(':')}: {why[0]}" if hasattr(e, "c_path") and why else msg


def _add_devices_parser(sub) -> None:
    d = sub.add_parser("devices", help="measurement devices (boards over SSH, QEMU, this machine)")
    dsub = d.add_subparsers(dest="devices_cmd", required=True)
    c = dsub.add_parser("check", help="connect to a device, print its hello and measure a tiny kernel",
                        description="URL: ssh://[user@]host[:port], qemu:aarch64, qemu:arm or local. "
                                    "Exits non-zero with a one-line reason on failure.")
    c.add_argument("url")
    c.add_argument("--identity", action="append", metavar="FILE",
                   help="private key file (repeatable; default: ssh config, ssh-agent, ~/.ssh/id_*)")
    c.add_argument("--known-hosts", metavar="FILE",
                   help="verify the host key against this file (default: ~/.ssh/known_hosts)")
    c.add_argument("--trust-on-first-use", action="store_true",
                   help="accept an unknown host key and record it in the known_hosts file")
    c.add_argument("--no-ssh-config", action="store_true", help="ignore ~/.ssh/config")
    c.add_argument("--python", default="python3", help="the board's Python (default python3)")
    c.add_argument("--remote-dir", default=".cache/cgen",
                   help="where the agent file is uploaded on the board (default ~/.cache/cgen)")
    c.add_argument("--target", help="build the tiny kernel for this target (default: from the device)")
    c.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    c.add_argument("--timeout", type=float, default=60.0, metavar="S", help="run timeout")
    c.add_argument("--min-repeat-ms", type=float, default=1.0, metavar="MS")
    c.set_defaults(fn=_devices_check)


# ---------------------------------------------------------------- models: compile / run / bench
# (self-contained block: ONNX models to generated C, run on a target, timed against onnxruntime)
def _model_shapes(args) -> dict:
    from cgen.graph import parse_input_shape
    return dict(parse_input_shape(t) for t in (args.input_shape or ()))


def _model_call(what: str, fn, args, bad_input_status: int = 1) -> int:
    """Run a subcommand; every failure is one line on stderr: bad input exits with
    `bad_input_status`, an internal error with 1, an interrupt with 130 (a tuning log
    keeps every record measured before it)."""
    from cgen.graph import ModelError
    try:
        return fn(args)
    except KeyboardInterrupt:
        print(f"cgen {what}: interrupted", file=sys.stderr)
        return 130
    except (ModelError, ValueError, OSError, RuntimeError) as e:
        status = 1 if isinstance(e, RuntimeError) else bad_input_status
        print(f"cgen {what}: error: {_one_line(e)}", file=sys.stderr)
        return status
    except Exception as e:  # noqa: BLE001 - an internal error is still one line
        print(f"cgen {what}: internal error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1


def _model_file(path: str) -> str:
    from pathlib import Path
    if not Path(path).is_file():
        raise OSError(f"no such model file: {path}")
    return path


def _tuned(args):
    """The best config per workload of --tuning-log for the model's target (None without it)."""
    if not getattr(args, "tuning_log", None):
        return None
    from pathlib import Path
    from cgen.autotune.log import apply_pareto
    from cgen.graph.kernels import kernel_target
    from cgen.graph.model import model_target
    path = Path(args.tuning_log)
    if not path.is_file():
        raise OSError(f"no such tuning log: {path}")
    return apply_pareto(path, kernel_target(model_target(args.target)))


def _tuned_note(cm, tuned, log) -> str:
    """How many of the model's template kernels the tuning log configured."""
    from cgen.graph.kernels import workload_key
    ks = [k for k in cm.kernels if k.workload is not None]
    hit = sum(1 for k in ks if workload_key(k.workload) in tuned)
    return (f"tuning log {log}: {hit} of {len(ks)} template kernels tuned "
            f"({len(tuned)} tuned workloads for {cm.target.name} in the log)")


def _compile_model(args) -> int:
    from cgen.graph.model import compile_model
    tuned = _tuned(args)
    cm = compile_model(_model_file(args.model), args.target, args.name, _model_shapes(args),
                       budget_ram=args.budget_ram, budget_flash=args.budget_flash, tuned=tuned,
                       strict=args.strict, patches=args.patches, objective=args.objective)
    paths = cm.write(args.output)
    print(f"{args.model} -> {args.output}/ for target {cm.target.name} in "
          f"{cm.compile_seconds:.2f} s: {' '.join(p.name for p in paths)}")
    if tuned is not None:
        print(_tuned_note(cm, tuned, args.tuning_log))
    print(cm.report.totals())
    if cm.patches is not None:
        print(cm.patches.line())
    print(cm.flash().line())
    if args.report:
        print(cm.report.table())
        print(cm.flash().table({r.kernel: r.weight_bytes for r in cm.report.rows}))
    return 0


def _run_model(args) -> int:
    import numpy as np
    from cgen.graph.model import compile_model, load_npz
    tuned = _tuned(args)
    cm = compile_model(_model_file(args.model), args.target, args.name, _model_shapes(args),
                       tuned=tuned)
    feeds = load_npz(args.inputs, cm.graph)
    if args.device:
        from targets.device import open_device
        with open_device(args.device, identity=args.identity, known_hosts=args.known_hosts) as dev:
            outs = cm.run(feeds, timeout=args.timeout, device=dev)
    else:
        outs = cm.run(feeds, timeout=args.timeout)
    np.savez(args.outputs, **outs)
    desc = ", ".join(f"{k}: {a.dtype}{list(a.shape)}" for k, a in outs.items())
    print(f"{cm.name} on {cm.target.name}: wrote {args.outputs} ({desc})")
    if tuned is not None:
        print(_tuned_note(cm, tuned, args.tuning_log))
    return 0


def _profile_model(args) -> int:
    import json
    from cgen.graph.model import compile_model, load_npz, model_target, random_feeds
    from cgen.graph.profile import onnx_node_outputs, ort_node_seconds, profile_rows, table
    from cgen.graph.profile_icount import way_for
    model = _model_file(args.model)
    if not model_target(args.target).is_host:
        way_for(model_target(args.target))      # a target it cannot count: refused before a build
    cm = compile_model(model, args.target, args.name, _model_shapes(args), tuned=_tuned(args))
    feeds = load_npz(args.inputs, cm.graph) if args.inputs else random_feeds(cm.graph)
    if not cm.target.is_host:
        return _profile_icount(cm, feeds, args)
    peer, peer_isa = (None, "none") if args.no_peer else ort_node_seconds(model, feeds, cm.target)
    rows = profile_rows(cm, feeds, number=args.number, peer=peer,
                        peer_outputs=None if peer is None else onnx_node_outputs(model))
    if args.json:
        for r in rows:
            print(json.dumps({"suite": "profile", "case": cm.name, "target": args.target,
                              "unit": "us", **r.as_dict(), "peer_isa": peer_isa}))
    else:
        print(table(rows, peer_isa))
    return 0


def _profile_icount(cm, feeds, args) -> int:
    """An ARM target: instructions under QEMU -icount, one call (they do not vary); no
    onnxruntime peer, which does not run there."""
    import json
    from cgen.graph.profile_icount import icount_table
    p = cm.profile_icount(feeds, timeout=args.timeout)
    if not args.json:
        print(icount_table(p))
        return 0
    for r in p.rows:
        print(json.dumps({"suite": "profile", "case": cm.name, "target": args.target,
                          **r.as_dict(), "run_instructions": p.run_instructions,
                          "counted_by": p.clock,
                          "peer": f"none (onnxruntime does not run on {p.target})"}))
    return 0


def _bench_model(args) -> int:
    import json
    from cgen.graph.model import bench_builds, compile_model, load_npz
    model = _model_file(args.model)
    tuned = _tuned(args)
    cm = compile_model(model, args.target, args.name, _model_shapes(args))
    feeds = load_npz(args.inputs, cm.graph) if args.inputs else None
    # --tuning-log: the tuned build is timed in the same interleaved rounds as the
    # defaults and onnxruntime, so their ratio is not two runs' different machine load
    builds = [cm] if tuned is None else [
        cm, compile_model(model, args.target, args.name, _model_shapes(args), tuned=tuned)]
    results = bench_builds(model, builds, feeds, repeat=args.repeat, rounds=args.rounds)
    res = results[0]
    if res.peer_note:       # the row says it too (peer_isa)
        print(f"cgen bench: warning: {res.peer_note}", file=sys.stderr)
    row = {"suite": "model", "case": cm.name, "ratio": res.ratio,
           "unit": "s", "cgen_s": res.cgen_s, "peer": "onnxruntime-1thread",
           "peer_isa": res.peer_isa, "peer_s": res.ort_s, "cgen_median_s": res.cgen_median_s,
           "peer_median_s": res.ort_median_s, "max_rel_err": res.max_rel_err}
    if tuned is None:
        print(json.dumps(row) if args.json else res.line())
        return 0
    tcm, tres = builds[1], results[1]
    if args.json:
        row.update({"ratio": tres.ratio, "cgen_s": tres.cgen_s,
                    "cgen_median_s": tres.cgen_median_s, "max_rel_err": tres.max_rel_err,
                    "tuned": True, "untuned_cgen_s": res.cgen_s, "untuned_ratio": res.ratio,
                    "speedup": res.cgen_s / tres.cgen_s,
                    "median_speedup": res.cgen_median_s / tres.cgen_median_s})
        print(json.dumps(row))
        return 0
    print(_tuned_note(tcm, tuned, args.tuning_log))
    print(f"{cm.name} on {cm.target.name}, best repeats: defaults {res.cgen_s * 1e6:.1f} us, "
          f"tuned {tres.cgen_s * 1e6:.1f} us, onnxruntime (1 thread, {res.peer_isa}) "
          f"{res.ort_s * 1e6:.1f} us per call, timed in the same interleaved rounds")
    print(f"ratio vs onnxruntime: {res.ratio:.2f} with the defaults -> {tres.ratio:.2f} tuned "
          f"(tuned / defaults: {res.cgen_s / tres.cgen_s:.2f}x best, "
          f"{res.cgen_median_s / tres.cgen_median_s:.2f}x median; max rel err "
          f"{max(res.max_rel_err, tres.max_rel_err):.2g})")
    return 0


def _add_model_parsers(sub) -> None:
    def common(p, target_default=None):
        p.add_argument("model", help="the ONNX model file")
        p.add_argument("--target", default=target_default, required=target_default is None,
                       help="a built-in target name or a target .toml file")
        p.add_argument("--name", help="the C name of the model (default: the file's stem)")
        p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                       help="the shape of an input with symbolic dimensions (repeatable)")
        p.add_argument("--tuning-log", metavar="LOG",
                       help="use the best config of each tuned kernel in this log "
                            "(written by `cgen tune`)")
    c = sub.add_parser("compile", help="compile an ONNX model to NAME.h / NAME.c for a target",
                       description="Writes NAME.h, NAME.c, manifest.json and NAME.cmake to DIR "
                                   "and prints the workspace (RAM) bytes and the flash bytes "
                                   "(code, weights and constants of the object built for the "
                                   "target, read with its binutils' size and nm). Over a "
                                   "budget: one line, exit status 1, nothing written.")
    common(c)
    c.add_argument("-o", "--output", required=True, metavar="DIR")
    c.add_argument("--budget-ram", type=int, metavar="BYTES",
                   help="fail when the workspace needs more than BYTES")
    c.add_argument("--budget-flash", type=int, metavar="BYTES",
                   help="fail when code + weights + constants need more than BYTES")
    c.add_argument("--patches", metavar="N|auto|off",
                   help="run the first stages patch by patch, their output cut in an N x N "
                        "grid (auto: the planner chooses, as it does under --budget-ram "
                        "when the activations per layer exceed it and with --objective ram; "
                        "off: never)")
    c.add_argument("--objective", choices=("latency", "ram", "balanced"),
                   help="what each kernel's template and config are chosen for (default: "
                        "balanced on bare-metal targets or under --budget-ram, else latency)")
    c.add_argument("--report", action="store_true", help="also print the per-layer memory table")
    c.add_argument("--strict", action="store_true",
                   help="fail when a kernel falls back to plain loops because no template "
                        "built it (always marked in the report)")
    c.set_defaults(fn=lambda a: _model_call("compile", _compile_model, a))
    r = sub.add_parser("run", help="compile, build and run a model on a target (QEMU for ARM)",
                       description="IN.npz holds one array per graph input (keyed by name); "
                                   "OUT.npz gets one array per graph output.")
    common(r)
    r.add_argument("--inputs", required=True, metavar="IN.npz")
    r.add_argument("--outputs", required=True, metavar="OUT.npz")
    r.add_argument("--timeout", type=float, default=600.0, metavar="S")
    r.add_argument("--device", metavar="URL",
                   help="run on a device instead: ssh://user@host, qemu:aarch64, qemu:arm, local")
    r.add_argument("--identity", metavar="FILE", help="SSH private key (with --device ssh://...)")
    r.add_argument("--known-hosts", metavar="FILE", help="known_hosts file (with --device ssh://...)")
    r.set_defaults(fn=lambda a: _model_call("run", _run_model, a))
    b = sub.add_parser("bench", help="latency of the compiled model against onnxruntime "
                                     "(one thread), as a ratio (above 1: cgen is faster)",
                       description="onnxruntime runs in a child process at the target's ISA: "
                                   "on an AVX-512 machine, --target x86-avx2 masks the AVX-512 "
                                   "bits of CPUID for it (CPUID faulting and a preloaded "
                                   "library built with the system C compiler), so both sides "
                                   "are AVX2. The output names the peer's ISA (peer_isa); "
                                   "where the mask is unavailable it says so, and one line "
                                   "on stderr too.")
    common(b, "host")
    b.add_argument("--inputs", metavar="IN.npz", help="inputs (default: seeded random)")
    b.add_argument("--repeat", type=int, default=5, help="repeats per round (default 5)")
    b.add_argument("--rounds", type=int, default=6,
                   help="interleaved rounds of cgen and onnxruntime repeats (default 6)")
    b.add_argument("--json", action="store_true", help="one JSON object (the bench format)")
    b.set_defaults(fn=lambda a: _model_call("bench", _bench_model, a))
    pr = sub.add_parser("profile", help="time each kernel of the compiled model (host targets), "
                                        "beside onnxruntime's profile of the same nodes; ARM "
                                        "targets (aarch64, cortex-m) count instructions under "
                                        "QEMU -icount instead, without onnxruntime")
    common(pr, "host")
    pr.add_argument("--inputs", metavar="IN.npz", help="inputs (default: seeded random)")
    pr.add_argument("--number", type=int, default=50,
                    help="timed runs of the whole model; each kernel's time is its median "
                         "over them (default 50; ARM targets count one run: counts do not vary)")
    pr.add_argument("--no-peer", action="store_true",
                    help="skip onnxruntime's profile (never run for ARM targets)")
    pr.add_argument("--json", action="store_true", help="one JSON object per kernel")
    pr.add_argument("--timeout", type=float, default=900.0, metavar="S",
                    help="per QEMU run, ARM targets (default 900)")
    pr.set_defaults(fn=lambda a: _model_call("profile", _profile_model, a))
# ---------------------------------------------------------------- end of models block


# ---------------------------------------------------------------- tune
# (self-contained block: `cgen tune` for command-line workloads and for the tasks of a model)
class _BadInput(ValueError):
    """A refusal of the command line's input (exit status 2)."""


def _check_log(path: str) -> None:
    """The log must be a readable, appendable file (or creatable)."""
    import os
    from pathlib import Path
    p = Path(path)
    if p.exists():
        if not p.is_file():
            raise _BadInput(f"log {path}: not a regular file")
        with open(p, "rb"):
            pass
        if not os.access(p, os.W_OK):
            raise _BadInput(f"log {path}: not writable")
        return
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise _BadInput(f"log {path}: cannot create it in {parent}")


def _pretrained(args):
    """task -> the shipped model for the first batch (None with --no-pretrained)."""
    if args.no_pretrained or args.cost == "mca":   # no model is trained in mca cycles
        return None
    from cgen.autotune.pretrained import load_pretrained
    return lambda task: load_pretrained(task, cost_unit=_unit(args))


def _unit(args) -> str:
    return {"icount": "icount_ticks", "mca": "mca_cycles"}.get(args.cost, "s")


def _tune_measurer(args):
    from cgen.autotune.measure import Measurer
    pool = None
    if args.cost == "icount":
        from targets import resolve
        from cgen.autotune.icount_measure import IcountMeasurer
        if resolve(args.target).arch != "aarch64" or args.device or args.model_file:
            raise _BadInput("--cost icount measures --workload tasks for aarch64 targets "
                            "(bare metal under QEMU, no --device)")
        return None, IcountMeasurer(timeout=args.timeout)
    if args.cost == "mca":
        from targets import resolve
        from cgen.autotune.mca import missing
        from cgen.autotune.mca_measure import McaMeasurer
        if resolve(args.target).arch != "aarch64" or args.device or args.model_file:
            raise _BadInput("--cost mca estimates --workload tasks for aarch64 targets "
                            "(icount under QEMU x llvm-mca's CPI, no --device)")
        if missing("aarch64"):
            raise _BadInput(f"--cost mca: {missing('aarch64')}")
        return None, McaMeasurer(timeout=args.timeout)
    if args.device:
        from targets.pool import DevicePool
        pool = DevicePool.from_urls(list(args.device))
    measurer = Measurer(pool=pool, repeat=args.repeat, min_repeat_ms=args.min_repeat_ms,
                        timeout=args.timeout)
    if args.objective in ("ram", "balanced"):     # records carry RAM and flash: a front
        from cgen.autotune.footprint import FootprintMeasurer
        measurer = FootprintMeasurer(measurer)
    return pool, measurer


def _knobs_line(record) -> str:
    import json
    cfg = record.config
    return f"#{cfg.get('index')} {json.dumps(cfg.get('knobs', cfg), sort_keys=True)}"


def _tune_workloads(args, tasks, measurer) -> int:
    from cgen.autotune.log import read_log
    from cgen.autotune.tuner import Tuner, transfer_set
    results, failed = [], []
    for task in tasks:
        transfer = transfer_set(read_log(args.log), task, cost_unit=_unit(args))
        pre = _pretrained(args)
        tuner = Tuner(task, measurer, args.log, model=args.cost_model, search=args.search,
                      seed=args.seed, batch_size=args.batch, transfer=transfer,
                      progress=not args.no_progress, pretrained=pre(task) if pre else None)
        res = tuner.tune(args.trials, early_stopping=args.early_stopping)
        results.append(res)
        head = (f"{task.describe()} on {task.target_name}: {len(res.records)} trials "
                f"({res.new} new, {res.errors} errors)")
        if res.best is None:
            print(f"{head}: no correct candidate")
            failed.append(task.describe())
            continue
        if res.best.cost_unit == "s":
            print(f"{head}: best {res.best_gflops:.2f} GFLOP/s ({res.best.mean_cost * 1e6:.2f} us)")
        else:
            per = "cycle" if res.best.cost_unit == "mca_cycles" else "tick"
            print(f"{head}: best {task.flops() / res.best.mean_cost:.3g} FLOPs per {per} "
                  f"({res.best.mean_cost:.6g} {res.best.cost_unit})")
        print(f"  config {_knobs_line(res.best)}")
    print(f"log: {args.log}")
    _tune_plot(args, results)
    if failed:
        print(f"cgen tune: error: no correct candidate for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _tune_model(args, mtasks, measurer) -> int:
    from cgen.autotune.model_tasks import format_table, tune_model

    def on_default(mt, rec):
        kind = (rec.error or {}).get("kind", "no timing")
        state = f"{mt.default_gflops:.2f} GFLOP/s" if rec.ok else f"failed ({kind})"
        print(f"default of {mt.task.describe()}: {state}", file=sys.stderr)

    def on_plan(mts, alloc):
        print("trials per task: " + ", ".join(f"{m.task.describe()[:40]}: {n}"
                                              for m, n in zip(mts, alloc)), file=sys.stderr)

    rows = tune_model(mtasks, measurer, args.log, args.trials, seed=args.seed,
                      batch_size=args.batch, model=args.cost_model, search=args.search,
                      early_stopping=args.early_stopping, progress=not args.no_progress,
                      on_default=on_default, on_plan=on_plan, pretrained=_pretrained(args))
    print(format_table(rows))
    for r in rows:
        sel = r.selection
        pick = sel.record if sel is not None else r.result.best
        if pick is not None:
            why = f"; {sel.chosen}: {sel.reason}" if sel is not None else ""
            print(f"  {r.mtask.task.describe()}: {_knobs_line(pick)} "
                  f"(kernels {', '.join(r.mtask.kernels)}{why})")
    if not args.no_model_check and args.cost == "time" and args.objective == "latency" \
            and measurer_runs_here(args):
        from cgen.autotune.model_check import check_model
        print(check_model(_model_file(args.model_file), args.target, rows, args.log,
                          _model_shapes(args)).line)
    print(f"log: {args.log}  (apply it with: cgen compile {args.model_file} --target {args.target} "
          f"--tuning-log {args.log} -o DIR)")
    _tune_plot(args, [r.result for r in rows])
    return 0


def measurer_runs_here(args) -> bool:
    """The in-model check times both builds on this machine: a host target, no --device."""
    from targets import resolve
    return not args.device and resolve(args.target).is_host


def _tune_plot(args, results) -> None:
    if not args.plot:
        return
    if len(results) == 1:
        from cgen.autotune.tuner import plot_history
        plot_history(results[0], args.plot)
    else:
        from cgen.autotune.model_tasks import plot_histories
        plot_histories(results, args.plot)
    print(f"plot: {args.plot}")


def _tune(args) -> int:
    for name in ("trials", "batch"):
        if getattr(args, name) < 1:
            raise _BadInput(f"--{name} must be at least 1")
    if args.early_stopping is not None and args.early_stopping < 1:
        raise _BadInput("--early-stopping must be at least 1")
    if bool(args.model_file) == bool(args.workload):
        raise _BadInput("give either MODEL.onnx or --workload SPEC (repeatable), not both"
                        if args.model_file else "nothing to tune: give MODEL.onnx or "
                        "--workload SPEC (e.g. gemm:512,512,512)")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise _BadInput(f"--plot {args.plot}: expected a .png file name")
    _check_log(args.log)
    # everything the command line names is checked before anything is measured
    if args.workload:
        from cgen.autotune.task import parse_workload
        tasks = [parse_workload(spec, args.target) for spec in args.workload]
        seen = set()
        tasks = [t for t in tasks if not (t.key in seen or seen.add(t.key))]
    else:
        from cgen.autotune.model_tasks import extract_tasks
        mtasks = extract_tasks(_model_file(args.model_file), args.target,
                               _model_shapes(args), objective=args.objective)
        if not mtasks:
            print(f"{args.model_file}: no kernel with an operator template to tune")
            return 0
        print(f"{args.model_file}: {len(mtasks)} tasks for {mtasks[0].task.target_name}, "
              f"{args.trials} trials in all", file=sys.stderr)
    pool, measurer = _tune_measurer(args)
    try:
        with measurer:
            if args.workload:
                return _tune_workloads(args, tasks, measurer)
            return _tune_model(args, mtasks, measurer)
    finally:
        if pool is not None:
            pool.close()


def _add_tune_parser(sub) -> None:
    t = sub.add_parser(
        "tune", help="search the config spaces of operator workloads or of a model's kernels",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measures candidates (built in parallel, run one at a time on the device\n"
                    "pool), appends one JSON line per candidate to LOG, and resumes from LOG\n"
                    "(records already there count as trials and are never measured again).\n\n"
                    "workload forms (--workload, repeatable; --trials per workload):\n"
                    "  gemm:M,N,K                      C = A @ B\n"
                    "  dense:M,N,K                     Y = X @ W + bias (N outputs, K inputs)\n"
                    "  conv2d:N,C,H,W,O,KH,KW,stride,pad[,dilation,groups]   NCHW\n"
                    "  depthwise:N,C,H,W,KH,KW,stride,pad\n"
                    "  TEMPLATE:{JSON}                 any template, its workload's keywords\n\n"
                    "MODEL.onnx: one task per distinct kernel workload of the fused graph;\n"
                    "--trials is the total, shared by each task's share of the model's\n"
                    "estimated time (each task's default config is measured first).  Then\n"
                    "each task's default and its fastest candidates are re-measured together,\n"
                    "interleaved; a tuned config is kept only when its median beats the\n"
                    "default's by the margin, and the log records which one and why.")
    t.add_argument("model_file", nargs="?", metavar="MODEL.onnx",
                   help="tune the kernels of this model (instead of --workload)")
    t.add_argument("--workload", action="append", metavar="SPEC",
                   help="a workload to tune, e.g. gemm:512,512,512 (repeatable)")
    t.add_argument("--target", default="host",
                   help="a built-in target name or a target .toml file (default host)")
    t.add_argument("--trials", type=int, default=64,
                   help="trials per workload, or in all for a model (default 64)")
    t.add_argument("--log", required=True, metavar="LOG",
                   help="the JSON-lines tuning log (appended; resumed when it exists)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch", type=int, default=8, help="candidates per batch (default 8)")
    t.add_argument("--cost", choices=("time", "icount", "mca"), default="time",
                   help="time: seconds on the device (default); icount: deterministic "
                        "instruction ticks of bare-metal aarch64 under QEMU (aarch64 targets); "
                        "mca: those instructions x llvm-mca's cycles per instruction of the "
                        "hot loop on the target's core (estimated cycles, aarch64 targets)")
    t.add_argument("--no-pretrained", action="store_true",
                   help="first batch random instead of ranked by the shipped cost model")
    t.add_argument("--model", dest="cost_model", choices=("rank", "reg", "random"),
                   default="rank", help="the cost model (default rank: XGBoost ranking)")
    t.add_argument("--search", choices=("model", "random", "grid"), default="model",
                   help="model: annealing on the cost model (default); random; grid")
    t.add_argument("--early-stopping", type=int, metavar="N",
                   help="stop a task after N trials without improvement")
    t.add_argument("--device", action="append", metavar="URL",
                   help="measure on this device (repeatable: a pool): local, qemu:aarch64, "
                        "qemu:arm, ssh://user@host (default: local, QEMU for ARM targets)")
    t.add_argument("--plot", metavar="FILE.png", help="draw best GFLOP/s against trials")
    t.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    t.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="with MODEL.onnx: the shape of an input with symbolic dimensions")
    t.add_argument("--objective", choices=("latency", "ram", "balanced"), default="latency",
                   help="ram / balanced: each correct record also carries its config's RAM "
                        "and code bytes, so the log keeps the Pareto front of (time, RAM, "
                        "flash) per kernel that compile picks from (default latency)")
    t.add_argument("--repeat", type=int, default=3, help="timed repeats per candidate (default 3)")
    t.add_argument("--min-repeat-ms", type=float, default=20.0, metavar="MS",
                   help="each repeat lasts at least MS milliseconds (default 20)")
    t.add_argument("--timeout", type=float, default=20.0, metavar="S",
                   help="a candidate's run timeout (default 20)")
    t.add_argument("--no-model-check", action="store_true",
                   help="with MODEL.onnx: skip the final check that times the tuned model "
                        "against the default one (interleaved) and falls back per kernel, "
                        "then entirely, when the tuned one is not faster")
    t.set_defaults(fn=lambda a: _model_call("tune", _tune, a, bad_input_status=2))
# ---------------------------------------------------------------- end of tune block


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cgen", description="tensor programs and ONNX models to fast C")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("targets", help="list the targets with their compiler and ISA")
    t.add_argument("toml", nargs="*", help="also show these user target files")
    t.set_defaults(fn=_targets)
    _add_devices_parser(sub)
    _add_model_parsers(sub)  # models: compile / run / bench
    _add_tune_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, OSError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"cgen: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
