"""The model zoo: every ONNX model the tests build, plus a transformer encoder block.

    from tests.zoo import ZOO, TARGETS
    model, feeds = ZOO["encoder_block"]()

Used by the fallback test (tests/test_zoo_fallback.py) and by the C snapshot that checks
refactors of the graph layer (`python -m tests.zoo snapshot OUTDIR [TARGET ...]`: one
directory per target, the emitted C and the layer report of every zoo model; diff two
snapshots with `diff -r`)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import helper as h

from tests import test_graph_frontend as fe
from tests import test_models as tm

# every built-in target a model can be compiled for, named (cortex-m4: bare metal)
TARGETS = ("host", "x86-avx2", "x86-avx512", "aarch64", "armv7", "cortex-m4", "cortex-m55",
           "generic-c")


def encoder_block(opset: int = 17, seq: int = 16, d: int = 32, heads: int = 2,
                  ff: int = 64):
    """One transformer encoder layer (post-norm, BERT style) over a batch of one sequence:
    Q/K/V projections, heads split by Reshape + Transpose, Q.K^T and P.V as MatMuls with
    batch dims (K transposed), Softmax, output projection + residual, LayerNormalization,
    a GELU feed-forward (Erf form), residual, and a LayerNorm decomposed into
    ReduceMean / Sub / Pow / Sqrt / Div as exporters write it."""
    r = fe.rng(7)
    dh = d // heads
    inits = {"wq": fe.w(r, d, d), "wk": fe.w(r, d, d), "wv": fe.w(r, d, d),
             "bq": fe.w(r, d, scale=0.1), "bk": fe.w(r, d, scale=0.1),
             "bv": fe.w(r, d, scale=0.1), "wo": fe.w(r, d, d), "bo": fe.w(r, d, scale=0.1),
             "w1": fe.w(r, d, ff), "b1": fe.w(r, ff, scale=0.1), "w2": fe.w(r, ff, d),
             "b2": fe.w(r, d, scale=0.1),
             "g1": r.uniform(0.5, 1.5, d).astype(np.float32), "be1": fe.w(r, d, scale=0.1),
             "g2": r.uniform(0.5, 1.5, d).astype(np.float32), "be2": fe.w(r, d, scale=0.1),
             "heads": np.array([1, seq, heads, dh], np.int64),
             "merged": np.array([1, seq, d], np.int64),
             "scale": np.array(1.0 / np.sqrt(dh), np.float32),
             "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32),
             "rsqrt2": np.array(1.0 / np.sqrt(2.0), np.float32),
             "two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32)}
    N = h.make_node
    nodes = []
    for p in "qkv":
        nodes += [N("MatMul", ["x", f"w{p}"], [f"{p}0"], name=f"{p}_proj"),
                  N("Add", [f"{p}0", f"b{p}"], [f"{p}1"], name=f"{p}_bias"),
                  N("Reshape", [f"{p}1", "heads"], [f"{p}2"], name=f"{p}_split")]
    nodes += [
        N("Transpose", ["q2"], ["q"], perm=[0, 2, 1, 3], name="q_heads"),
        N("Transpose", ["k2"], ["kt"], perm=[0, 2, 3, 1], name="k_heads_t"),
        N("Transpose", ["v2"], ["v"], perm=[0, 2, 1, 3], name="v_heads"),
        N("MatMul", ["q", "kt"], ["s0"], name="qk"),                  # (1,h,S,dh)x(1,h,dh,S)
        N("Mul", ["s0", "scale"], ["s"], name="qk_scale"),
        N("Softmax", ["s"], ["p"], axis=-1, name="softmax"),
        N("MatMul", ["p", "v"], ["o0"], name="pv"),                   # (1,h,S,S)x(1,h,S,dh)
        N("Transpose", ["o0"], ["o1"], perm=[0, 2, 1, 3], name="merge_t"),
        N("Reshape", ["o1", "merged"], ["o2"], name="merge"),
        N("MatMul", ["o2", "wo"], ["o3"], name="out_proj"),
        N("Add", ["o3", "bo"], ["o4"], name="out_bias"),
        N("Add", ["o4", "x"], ["r1"], name="residual1"),
        N("LayerNormalization", ["r1", "g1", "be1"], ["n1"], axis=-1, epsilon=1e-5,
          name="ln1"),
        N("MatMul", ["n1", "w1"], ["f0"], name="ff1"),
        N("Add", ["f0", "b1"], ["f1"], name="ff1_bias"),
        N("Mul", ["f1", "rsqrt2"], ["g0"], name="gelu_scale"),       # GELU, Erf form
        N("Erf", ["g0"], ["g1e"], name="gelu_erf"),
        N("Add", ["g1e", "one"], ["g2e"], name="gelu_add"),
        N("Mul", ["f1", "g2e"], ["g3"], name="gelu_mul"),
        N("Mul", ["g3", "half"], ["g4"], name="gelu_half"),
        N("MatMul", ["g4", "w2"], ["f2"], name="ff2"),
        N("Add", ["f2", "b2"], ["f3"], name="ff2_bias"),
        N("Add", ["f3", "n1"], ["r2"], name="residual2"),
        N("ReduceMean", ["r2"], ["mu"], axes=[-1], name="ln2_mean"),   # LayerNorm, decomposed
        N("Sub", ["r2", "mu"], ["dx"], name="ln2_sub"),
        N("Pow", ["dx", "two"], ["dx2"], name="ln2_sq"),
        N("ReduceMean", ["dx2"], ["var"], axes=[-1], name="ln2_var"),
        N("Add", ["var", "eps"], ["ve"], name="ln2_eps"),
        N("Sqrt", ["ve"], ["sd"], name="ln2_sqrt"),
        N("Div", ["dx", "sd"], ["nx"], name="ln2_div"),
        N("Mul", ["nx", "g2"], ["ng"], name="ln2_gamma"),
        N("Add", ["ng", "be2"], ["y"], name="ln2_beta"),
    ]
    model = fe.make_model(nodes, {"x": (1, seq, d)}, ["y"], inits, opset)
    return model, {"x": r.standard_normal((1, seq, d)).astype(np.float32)}


def _examples_small_cnn():
    from examples.model import small_cnn
    model = small_cnn()
    x = fe.rng(8).standard_normal((1, 1, 28, 28)).astype(np.float32)
    return model, {model.graph.input[0].name: x}


def mobilenet_v2_stem(size: int = 96, opset: int = 13, classes: int = 10):
    """The first stages of a MobileNetV2 (width 0.35, MCUNet-style) at size x size, then a
    pooled classifier: conv3x3/s2 + BN + ReLU6; a t=1 block (depthwise + pointwise); t=6
    inverted residual blocks 8->16 (s2), 16->16 (residual), 16->24 (s2), 24->24 (residual);
    GlobalAveragePool + Gemm.  The high-resolution first layers dominate the activation peak
    (the case patch-based inference is for, cgen.graph.patch)."""
    r = fe.rng(11)
    N = h.make_node
    inits = {"six": np.array(6.0, np.float32), "zero": np.array(0.0, np.float32)}
    nodes = []

    def conv(x, y, cin, cout, k=1, s=1, group=1, relu=True):
        name = f"{y}_conv"
        inits[f"{name}_w"] = fe.w(r, cout, cin // group, k, k)
        inits.update(fe.bn_params(r, cout, f"{y}_bn"))
        nodes.append(N("Conv", [x, f"{name}_w"], [f"{y}_c"], pads=[k // 2] * 4, strides=[s, s],
                       group=group, name=name))
        nodes.append(fe.bn(f"{y}_c", f"{y}_b" if relu else y, f"{y}_bn"))
        if relu:
            nodes.append(N("Clip", [f"{y}_b", "zero", "six"], [y], name=f"{y}_relu6"))
        return y

    def block(x, y, cin, cout, t, s):
        e = conv(x, f"{y}_e", cin, cin * t) if t != 1 else x
        d = conv(e, f"{y}_d", cin * t, cin * t, 3, s, group=cin * t)
        p = conv(d, f"{y}_p" if s == 1 and cin == cout else y, cin * t, cout, relu=False)
        if s == 1 and cin == cout:
            nodes.append(N("Add", [x, p], [y], name=f"{y}_add"))
        return y

    a = conv("x", "stem", 3, 16, 3, 2)
    a = block(a, "b1", 16, 8, 1, 1)
    a = block(a, "b2", 8, 16, 6, 2)
    a = block(a, "b3", 16, 16, 6, 1)
    a = block(a, "b4", 16, 24, 6, 2)
    a = block(a, "b5", 24, 24, 6, 1)
    inits["fc_w"], inits["fc_b"] = fe.w(r, classes, 24), fe.w(r, classes, scale=0.1)
    nodes += [N("GlobalAveragePool", [a], ["pool"], name="pool"),
              N("Flatten", ["pool"], ["flat"], name="flatten"),
              N("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1, name="fc")]
    model = fe.make_model(nodes, {"x": (1, 3, size, size)}, ["y"], inits, opset)
    return model, {"x": r.standard_normal((1, 3, size, size)).astype(np.float32)}


ZOO = {**tm.MODELS,
       "conv_bn_relu": fe.conv_bn_relu, "qdq_conv": fe.qdq_conv,
       "small_cnn": _examples_small_cnn, "encoder_block": encoder_block,
       "mobilenet_v2_stem_96": mobilenet_v2_stem}


def snapshot(out_dir, targets=TARGETS) -> list:
    """Write OUT/TARGET/MODEL.c and MODEL.report for every zoo model: the C a refactor of
    the graph layer must leave unchanged (or explain)."""
    from cgen.graph.model import compile_model
    paths = []
    for t in targets:
        d = Path(out_dir) / t
        d.mkdir(parents=True, exist_ok=True)
        for name, build in ZOO.items():
            cm = compile_model(build()[0], t, name=name)
            (d / f"{name}.c").write_text(cm.c_source)
            (d / f"{name}.report").write_text(cm.report.table() + "\n")
            paths.append(d / f"{name}.c")
    return paths


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "snapshot":
        sys.exit("usage: python -m tests.zoo snapshot OUTDIR [TARGET ...]")
    for p in snapshot(sys.argv[2], tuple(sys.argv[3:]) or TARGETS):
        print(p)
