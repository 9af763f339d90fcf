"""python -m bench SUITE [options]: run one benchmark suite.

Suites are listed below, explicitly; only the chosen one is imported.  Each
suite module provides `add_arguments(parser)` and `run(args) -> exit code`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import common

# name -> (module, one-line description)
SUITES = {
    "gemm": ("bench.gemm", "square float32 GEMM (256, 512, 1024) against numpy/OpenBLAS, one thread"),
    "pool": ("bench.pool", "device pool throughput: two local devices against one (rate ratio)"),
    "ops": ("bench.ops", "operator templates (default + quick sweep) vs numpy/onnxruntime, one thread"),
    "tuner": ("bench.tuner", "learned tuner vs random search, replayed on measured pools (trials to 95%)"),
    "mca": ("bench.mca", "llvm-mca: rank correlation with host seconds; NEON GEMM tiles' fraction of the FMA-pipe bound"),
    "arm": ("bench.arm", "ARM kernels vs XNNPACK (Debian arm64) or a physical bound, in QEMU icount instructions"),
    "memory": ("bench.memory", "workspace per test model on cortex-m4 vs the per-op bound and a TFLM-style plan (bytes)"),
    "models": ("bench.models", "zoo models (zoo/, published sizes) vs onnxruntime one thread on x86-avx2/x86-avx512 (seconds)"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of cgen kernels against a peer measured in the same run; "
                    "every ratio is peer_s / cgen_s (above 1 when cgen is faster).",
        epilog="suites:\n" + "\n".join(f"  {n:10s} {d}" for n, (_, d) in SUITES.items())
               + "\n\n`python -m bench SUITE --help` lists a suite's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("suite", choices=sorted(SUITES), metavar="SUITE",
                     help="one of: " + ", ".join(sorted(SUITES)))
    # Only the suite name is ours; everything after it belongs to the suite's parser.
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv)  # prints help or the "SUITE required" error
    ns = top.parse_args(argv[:1])
    mod = importlib.import_module(SUITES[ns.suite][0])
    p = argparse.ArgumentParser(prog=f"python -m bench {ns.suite}", description=mod.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p)
    mod.add_arguments(p)
    return mod.run(p.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
