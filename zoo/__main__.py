"""python -m zoo OUT_DIR [--scale full|ci] [NAME ...]: write the zoo's models as ONNX files."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from . import ZOO


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("out", help="output directory")
    p.add_argument("names", nargs="*", help=f"models (default: all of {', '.join(ZOO)})")
    p.add_argument("--scale", choices=("full", "ci"), default="full")
    a = p.parse_intermixed_args(argv)
    unknown = [n for n in a.names if n not in ZOO]
    if unknown:
        print(f"zoo: unknown model {unknown[0]!r} (known: {', '.join(ZOO)})", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in a.names or ZOO:
        path = out / f"{name}.onnx"
        onnx.save(ZOO[name].build(a.scale), path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
