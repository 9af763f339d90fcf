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
    return msg


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


def _model_call(what: str, fn, args) -> int:
    """Run a model subcommand; every failure is one line on stderr and exit status 1."""
    from cgen.graph import ModelError
    try:
        return fn(args)
    except (ModelError, ValueError, OSError, RuntimeError) as e:
        print(f"cgen {what}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - an internal error is still one line
        print(f"cgen {what}: internal error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1


def _model_file(path: str) -> str:
    from pathlib import Path
    if not Path(path).is_file():
        raise OSError(f"no such model file: {path}")
    return path


def _compile_model(args) -> int:
    from cgen.graph.model import compile_model
    cm = compile_model(_model_file(args.model), args.target, args.name, _model_shapes(args),
                       budget_ram=args.budget_ram, budget_flash=args.budget_flash)
    paths = cm.write(args.output)
    print(f"{args.model} -> {args.output}/ for target {cm.target.name} in "
          f"{cm.compile_seconds:.2f} s: {' '.join(p.name for p in paths)}")
    print(cm.report.totals())
    if args.report:
        print(cm.report.table())
    return 0


def _run_model(args) -> int:
    import numpy as np
    from cgen.graph.model import compile_model, load_npz
    cm = compile_model(_model_file(args.model), args.target, args.name, _model_shapes(args))
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
    return 0


def _bench_model(args) -> int:
    import json
    from cgen.graph.model import bench_model, compile_model, load_npz
    model = _model_file(args.model)
    cm = compile_model(model, args.target, args.name, _model_shapes(args))
    feeds = load_npz(args.inputs, cm.graph) if args.inputs else None
    res = bench_model(model, args.target, feeds, repeat=args.repeat, rounds=args.rounds,
                      compiled=cm)
    if args.json:
        print(json.dumps({"suite": "model", "case": cm.name, "ratio": res.ratio,
                          "unit": "s", "cgen_s": res.cgen_s, "peer": "onnxruntime-1thread",
                          "peer_s": res.ort_s, "cgen_median_s": res.cgen_median_s,
                          "peer_median_s": res.ort_median_s, "max_rel_err": res.max_rel_err}))
    else:
        print(res.line())
    return 0


def _add_model_parsers(sub) -> None:
    def common(p, target_default=None):
        p.add_argument("model", help="the ONNX model file")
        p.add_argument("--target", default=target_default, required=target_default is None,
                       help="a built-in target name or a target .toml file")
        p.add_argument("--name", help="the C name of the model (default: the file's stem)")
        p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                       help="the shape of an input with symbolic dimensions (repeatable)")
    c = sub.add_parser("compile", help="compile an ONNX model to NAME.h / NAME.c for a target",
                       description="Writes NAME.h, NAME.c, manifest.json and NAME.cmake to DIR "
                                   "and prints the workspace (RAM) and weight (flash) bytes.")
    common(c)
    c.add_argument("-o", "--output", required=True, metavar="DIR")
    c.add_argument("--budget-ram", type=int, metavar="BYTES",
                   help="fail when the workspace needs more than BYTES")
    c.add_argument("--budget-flash", type=int, metavar="BYTES",
                   help="fail when the weights need more than BYTES")
    c.add_argument("--report", action="store_true", help="also print the per-layer memory table")
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
                                     "(one thread), as a ratio (above 1: cgen is faster)")
    common(b, "host")
    b.add_argument("--inputs", metavar="IN.npz", help="inputs (default: seeded random)")
    b.add_argument("--repeat", type=int, default=5, help="repeats per round (default 5)")
    b.add_argument("--rounds", type=int, default=6,
                   help="interleaved rounds of cgen and onnxruntime repeats (default 6)")
    b.add_argument("--json", action="store_true", help="one JSON object (the bench format)")
    b.set_defaults(fn=lambda a: _model_call("bench", _bench_model, a))
# ---------------------------------------------------------------- end of models block


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cgen", description="tensor programs and ONNX models to fast C")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("targets", help="list the targets with their compiler and ISA")
    t.add_argument("toml", nargs="*", help="also show these user target files")
    t.set_defaults(fn=_targets)
    _add_devices_parser(sub)
    _add_model_parsers(sub)  # models: compile / run / bench
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
