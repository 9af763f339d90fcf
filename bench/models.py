"""Whole models of the zoo (zoo/) against onnxruntime with one thread, on an x86 target.

Each model is written as ONNX by the zoo's builder at the chosen scale, then measured by
`cgen bench MODEL.onnx --json` itself (cgen.cli, cgen.graph.model.bench_model): the
model compiled with the default configs, its outputs checked against onnxruntime's,
then interleaved rounds of repeats of the compiled harness and of an onnxruntime
session with one intra-op thread; best repeats compared.  ratio = onnxruntime seconds /
cgen seconds (above 1: cgen faster).  onnxruntime runs in a child process at the target's
ISA (cgen.graph.ort_peer): on an AVX-512 machine, x86-avx2 masks the AVX-512 bits of CPUID
for it, since forced AVX2 there stands for an AVX2 host; each record's peer_isa says what
the peer ran with ("avx2 (cpuid-masked)", "native avx512", or native with the reason the
mask was unavailable).  With --tuning-log LOG the model is compiled again
with the log's best configs: ratio is the tuned figure, untuned_ratio the defaults'.

--scale auto (the default) is the published size (`full`) for every model but those in
FULL_TOO_LARGE, which run at the zoo's `ci` scale (same layers, narrower, smaller input);
each record names the scale it ran at.  --scale full asks for the published size of
every chosen model, ResNet-18 included.
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from . import common

TARGETS = ("x86-avx2", "x86-avx512")
# published sizes whose C does not compile in a bench run's time (weights are C text)
FULL_TOO_LARGE = {"resnet18": "11.7M parameters: about 220 MB of C"}


def add_arguments(p) -> None:
    from zoo import ZOO
    p.add_argument("--target", choices=TARGETS, default="x86-avx2",
                   help="the x86 target cgen compiles for (default x86-avx2)")
    p.add_argument("--scale", choices=("auto", "full", "ci"), default="auto",
                   help="full: the published sizes; ci: the zoo's CI scale; auto (default): "
                        "full except " + ", ".join(f"{k} ({v})" for k, v in FULL_TOO_LARGE.items())
                        + ", at ci")
    p.add_argument("--models", nargs="*", default=None, metavar="NAME",
                   help=f"only these models (default: all of {', '.join(ZOO)})")
    p.add_argument("--tuning-log", metavar="LOG",
                   help="also compile with the best configs of this log (`cgen tune`) and "
                        "report the tuned ratio")
    p.add_argument("--rounds", type=int, default=6,
                   help="interleaved rounds of cgen and onnxruntime repeats (default 6)")


def scale_of(name: str, scale: str) -> str:
    if scale == "auto":
        return "ci" if name in FULL_TOO_LARGE else "full"
    return scale


def bench_one(name: str, scale: str, args, workdir: Path) -> dict:
    """The `cgen bench --json` record of one zoo model, plus its target, scale and size."""
    from cgen.cli import main as cgen_main
    from zoo import ZOO
    import onnx
    model = ZOO[name].build(scale)
    path = workdir / f"{name}.onnx"     # the file's stem is the C name and the case
    onnx.save(model, path)
    argv = ["bench", str(path), "--target", args.target, "--json",
            "--repeat", str(args.repeats), "--rounds", str(args.rounds)]
    if args.tuning_log:
        argv += ["--tuning-log", args.tuning_log]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cgen_main(argv)        # a failure is one line on stderr
    if status != 0:
        raise RuntimeError(f"cgen bench {name} ({scale}) failed with status {status}")
    rec = json.loads(out.getvalue().strip().splitlines()[-1])
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    shape = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
             for i in model.graph.input}
    return {**rec, "suite": "models", "target": args.target, "scale": scale,
            "params": params, "input_shapes": shape}


def run(args) -> int:
    from zoo import ZOO
    names = args.models or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise SystemExit(f"unknown model(s): {', '.join(unknown)}; one of {', '.join(ZOO)}")
    recs, failed = [], []
    with common.single_thread(), tempfile.TemporaryDirectory(prefix="bench-models-") as d:
        for n in names:
            scale = scale_of(n, args.scale)
            common.progress(args, f"  {n} ({scale}) on {args.target} ...")
            try:
                recs.append(bench_one(n, scale, args, Path(d)))
            except RuntimeError as e:
                failed.append(n)
                common.progress(args, f"  {n}: {e}")
                continue
            if args.json:       # as measured: a long run interrupted keeps its records
                common.print_json_lines(recs[-1:])
    tuned = bool(args.tuning_log)
    below = [r["case"] for r in recs if r["ratio"] < (1.3 if tuned else 1.0)]
    isas = sorted({r["peer_isa"] for r in recs})
    note = (f"models on {args.target} (onnxruntime: {'; '.join(isas) or '-'}): "
            f"{len(recs)} of {len(names)} measured; ratio >= "
            f"{1.3 if tuned else 1.0:g}{' tuned' if tuned else ''}: {len(recs) - len(below)}"
            f" of {len(recs)}" + (f" (below: {', '.join(below)})" if below else "")
            + (f"; failed: {', '.join(failed)}" if failed else ""))
    if args.json:
        common.progress(args, note)
    else:
        heads = ["model", "scale", "params", "cgen ms", "ort ms", "ort isa", "ratio",
                 "max rel err"]
        rows = [[r["case"], r["scale"], r["params"], r["cgen_s"] * 1e3, r["peer_s"] * 1e3,
                 r["peer_isa"], r["ratio"], r["max_rel_err"]] for r in recs]
        if tuned:
            heads[6:6] = ["untuned ratio"]
            for row, r in zip(rows, recs):
                row[6:6] = [r["untuned_ratio"]]
        print(common.format_table(heads, rows))
        print(note)
    return 1 if failed else 0
