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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cgen", description="tensor programs and ONNX models to fast C")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("targets", help="list the targets with their compiler and ISA")
    t.add_argument("toml", nargs="*", help="also show these user target files")
    t.set_defaults(fn=_targets)
    _add_devices_parser(sub)
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
