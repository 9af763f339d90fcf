"""The README's demo: a small CNN (ONNX) to C for aarch64, run under QEMU, checked against
onnxruntime, with its memory report and its host latency against onnxruntime.

    python examples/model.py [--keep DIR]      (make demo runs it with the project's venv)

Steps (the same as the command line):
    1. build examples/small_cnn.onnx with onnx.helper (conv-bn-relu-pool x2, gemm-relu, gemm,
       softmax; 1x1x28x28 input)
    2. cgen compile small_cnn.onnx --target aarch64 -o DIR      -> small_cnn.h / .c / manifest
    3. cgen run small_cnn.onnx --target aarch64 --inputs in.npz --outputs out.npz  (QEMU)
       and compare with onnxruntime
    4. cgen bench small_cnn.onnx --target host                 -> latency ratio vs onnxruntime

Exits 0 and prints "... OK" when the outputs match onnxruntime within 1e-4 (relative).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    import cgen  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
from onnx import TensorProto, helper as h, numpy_helper  # noqa: E402

HERE = Path(__file__).resolve().parent
MODEL = HERE / "small_cnn.onnx"


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """A LeNet-style CNN for 1x28x28 images: two conv-BN-relu-maxpool stages, two dense layers."""
    r = np.random.default_rng(seed)

    def w(*shape, scale=None):
        fan_in = int(np.prod(shape[1:])) or 1
        return (r.standard_normal(shape) * (scale or 1 / np.sqrt(fan_in))).astype(np.float32)

    def bn(prefix, c):
        return {f"{prefix}_s": r.uniform(0.5, 1.5, c).astype(np.float32),
                f"{prefix}_b": (0.1 * r.standard_normal(c)).astype(np.float32),
                f"{prefix}_m": (0.1 * r.standard_normal(c)).astype(np.float32),
                f"{prefix}_v": r.uniform(0.5, 1.5, c).astype(np.float32)}
    inits = {"c1w": w(8, 1, 3, 3), "c1b": w(8, scale=0.1), **bn("bn1", 8),
             "c2w": w(16, 8, 3, 3), "c2b": w(16, scale=0.1), **bn("bn2", 16),
             "f1w": w(64, 784), "f1b": w(64, scale=0.1), "f2w": w(10, 64), "f2b": w(10, scale=0.1),
             "shape": np.array([1, 784], np.int64)}

    def bn_node(x, y, p):
        return h.make_node("BatchNormalization", [x, f"{p}_s", f"{p}_b", f"{p}_m", f"{p}_v"], [y],
                           name=p)
    nodes = [
        h.make_node("Conv", ["image", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        bn_node("c1", "b1", "bn1"),
        h.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        h.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        bn_node("c2", "b2", "bn2"),
        h.make_node("Relu", ["b2"], ["r2"], name="relu2"),
        h.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2], name="pool2"),
        h.make_node("Reshape", ["p2", "shape"], ["flat"], name="flatten"),
        h.make_node("Gemm", ["flat", "f1w", "f1b"], ["f1"], transB=1, name="fc1"),
        h.make_node("Relu", ["f1"], ["r3"], name="relu3"),
        h.make_node("Gemm", ["r3", "f2w", "f2b"], ["logits"], transB=1, name="fc2"),
        h.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    g = h.make_graph(nodes, "small_cnn",
                     [h.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 28, 28])],
                     [h.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
                     initializer=[numpy_helper.from_array(a, k) for k, a in inits.items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)], ir_version=10)
    onnx.checker.check_model(m)
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", metavar="DIR",
                    help="write the generated C here (default: a temporary directory)")
    ap.add_argument("--target", default="aarch64", help="the target to compile and run for")
    ap.add_argument("--onnx", default=str(MODEL), metavar="PATH",
                    help="where to write the ONNX model (default examples/small_cnn.onnx)")
    args = ap.parse_args(argv)
    model = Path(args.onnx)
    from cgen.graph.model import bench_model, compile_model, ort_session

    onnx.save(small_cnn(), str(model))
    print(f"1. built {model} with onnx.helper")

    out_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cgen-demo-"))
    cm = compile_model(model, args.target, "small_cnn")
    paths = cm.write(out_dir)
    print(f"2. cgen compile {model.name} --target {args.target} -o {out_dir}   "
          f"({cm.compile_seconds:.2f} s): {', '.join(p.name for p in paths)}")
    print(cm.report.table())
    print(cm.report.totals())

    image = np.random.default_rng(1).standard_normal((1, 1, 28, 28)).astype(np.float32)
    got = cm.run({"image": image})["probs"]
    want = ort_session(model).run(None, {"image": image})[0]
    err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    where = "under QEMU" if not cm.target.is_host else "on this machine"
    print(f"3. cgen run ... --target {args.target} ({where}): max relative error vs onnxruntime "
          f"{err:.1e}; class {int(got.argmax())} (onnxruntime: {int(want.argmax())})")

    res = bench_model(model, "host", {"image": image})
    print(f"4. cgen bench {model.name} --target host: {res.line()}")
    ok = err <= 1e-4 and res.max_rel_err <= 1e-4
    verdict = "OK" if ok else "FAILED"
    print(f"small_cnn: {args.target} and host outputs match onnxruntime: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
