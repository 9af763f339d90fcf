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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cgen", description="tensor programs and ONNX models to fast C")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("targets", help="list the targets with their compiler and ISA")
    t.add_argument("toml", nargs="*", help="also show these user target files")
    t.set_defaults(fn=_targets)
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
