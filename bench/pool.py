"""Device pool throughput: a batch of short measurements on two local devices against one.

Each request measures a small cgen kernel (a 64 x 64 float32 GEMM harness
executable) through the rpc_agent protocol: upload (cached after the first),
warm-up, `number` calibrated until a repeat lasts --min-repeat-ms, then
--measure-repeats repeats; every output is checked against numpy.  The same
batch runs on a pool of one local device and on a pool of two, alternately,
--trials times; the figure is the median batch time of each.
ratio = one-device time / two-device time (the rate with two over the rate
with one; ideally the number of cores, up to 2).
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from . import common

N = 64


def add_arguments(p) -> None:
    p.add_argument("--requests", type=int, default=24, help="measurements per batch (default 24)")
    p.add_argument("--trials", type=int, default=3,
                   help="batches per pool size, alternated; the median is reported (default 3)")
    p.add_argument("--measure-repeats", type=int, default=3,
                   help="timed repeats inside each measurement (default 3)")


def _kernel():
    import cgen
    from cgen import te
    a = te.placeholder((N, N), "float32", name="A")
    b = te.placeholder((N, N), "float32", name="B")
    k = te.reduce_axis((0, N), name="k")
    c = te.compute((N, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    s = te.create_schedule(c)
    i, j = s[c].op.axis
    (kk,) = s[c].op.reduce_axis
    s[c].reorder(i, kk, j)
    s[c].vectorize(j)
    return cgen.build(s, [a, b, c], "host", name="pool_gemm").executable()


def _batch(pool, exe, inputs, ref, args) -> float:
    t0 = time.perf_counter()
    futs = [pool.submit(exe, inputs, ["C"], repeat=args.measure_repeats,
                        min_repeat_ms=args.min_repeat_ms, timeout=60, tag=k)
            for k in range(args.requests)]
    results = [f.result() for f in futs]
    took = time.perf_counter() - t0
    for r in results:
        if r.error is not None:
            raise SystemExit(f"pool bench: a measurement failed: {r.error.kind}: {r.error.msg}")
        ok, err, _ = common.check_close(r.outputs["C"], ref)
        if not ok:
            raise SystemExit(f"pool bench: wrong answer from a device (max abs error {err:.3g})")
    return took


def run(args) -> int:
    from targets.device import LocalDevice
    from targets.pool import DevicePool
    if args.requests < 1 or args.trials < 1:
        raise SystemExit("--requests and --trials must be >= 1")
    exe = _kernel()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    b = rng.standard_normal((N, N), dtype=np.float32)
    inputs = {"A": a, "B": b, "C": np.zeros((N, N), np.float32)}
    ref = a @ b
    one = DevicePool([LocalDevice(name="one-0")])
    two = DevicePool([LocalDevice(name="two-0"), LocalDevice(name="two-1")])
    try:
        for pool in (one, two):               # start the agents, upload the executable
            _batch(pool, exe, inputs, ref, _small(args))
        t1, t2 = [], []
        for trial in range(args.trials):
            t1.append(_batch(one, exe, inputs, ref, args))
            t2.append(_batch(two, exe, inputs, ref, args))
            common.progress(args, f"  trial {trial + 1}: one device {args.requests / t1[-1]:.1f} req/s, "
                                  f"two devices {args.requests / t2[-1]:.1f} req/s")
        used = {name for _, name in two.completed()}
    finally:
        one.close()
        two.close()
    s1, s2 = statistics.median(t1), statistics.median(t2)
    rec = {"suite": "pool", "case": f"local-2-vs-1-{args.requests}", "ratio": s1 / s2, "unit": "x",
           "cgen_s": s2, "peer": "one local device", "peer_s": s1,
           "rate_one": args.requests / s1, "rate_two": args.requests / s2,
           "requests": args.requests, "trials": args.trials, "measure_repeats": args.measure_repeats,
           "min_repeat_ms": args.min_repeat_ms, "cores": os.cpu_count(),
           "devices_used": sorted(used), "times_one": t1, "times_two": t2}
    if args.json:
        common.print_json_lines([rec])
        return 0
    print("pool: a batch of short measurements (64x64 GEMM harness, checked) through the agent "
          "protocol; ratio = rate with two local devices / rate with one")
    print(common.format_table(["requests", "one dev req/s", "two dev req/s", "ratio", "cores"],
                              [(rec["requests"], rec["rate_one"], rec["rate_two"], rec["ratio"],
                                rec["cores"])]))
    print(f"median of {args.trials} alternated batches per pool; each measurement: warm-up, number "
          f"calibrated to >= {args.min_repeat_ms:g} ms per repeat, {args.measure_repeats} repeats")
    return 0


def _small(args):
    import argparse
    return argparse.Namespace(**{**vars(args), "requests": 2})
