"""The README's demo: a scheduled matmul compiled to C, printed, run and checked against numpy.

    python examples/matmul.py          (make demo runs it with the project's venv)

Exits 0 and prints "... OK" when cgen's result matches numpy's, 1 otherwise.
"""
import sys
from pathlib import Path

import numpy as np

try:
    import cgen
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cgen
from cgen import te


def matmul(M: int, N: int, K: int):
    """C = A @ B as a tensor expression, and a schedule for it."""
    # The algorithm: what is computed.
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    # The schedule: how the loops run.  8 x 16 tiles of C; inside a tile the
    # 8 rows are unrolled and the 16 columns vectorized.
    s = te.create_schedule(C)
    i, j = s[C].op.axis
    io, ii = s[C].split(i, factor=8)
    jo, ji = s[C].split(j, factor=16)
    s[C].reorder(io, jo, k, ii, ji)
    s[C].unroll(ii)
    s[C].vectorize(ji)
    return s, [A, B, C]


def main() -> int:
    M, N, K = 127, 100, 64
    s, args = matmul(M, N, K)
    mod = cgen.build(s, args, target="host", name="matmul")
    print(mod.c_source)

    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    c = np.zeros((M, N), dtype=np.float32)
    mod(a, b, c)

    ref = a @ b
    err = float(np.max(np.abs(c - ref)))
    atol = 1e-4 * float(np.max(np.abs(ref)))
    ok = bool(np.allclose(c, ref, rtol=1e-4, atol=atol))
    print(f"matmul {M}x{K} @ {K}x{N} on {mod.target.name} ({mod.target.isa}): "
          f"max abs error {err:.3g} vs numpy (atol {atol:.3g}) {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
