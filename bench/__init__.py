"""Benchmarks: cgen kernels against numpy/OpenBLAS and onnxruntime, measured in one run.

`python -m bench SUITE [--json]`; every ratio is `peer_s / cgen_s`, above 1
when cgen is faster.  Suites are listed in `bench.__main__.SUITES`.
"""
