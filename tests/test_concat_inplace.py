"""Concats written in place: the producers of a channel concat's parts write straight into
their range of the concat's buffer (memory.concat_views), so the concat kernel is not
emitted; refused cases keep the copy kernel.  Each model is checked against onnxruntime,
on x86-avx2 and on aarch64 under QEMU."""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper as h  # noqa: E402

from cgen.graph.emit import emit_model  # noqa: E402
from cgen.graph.model import compile_model, random_feeds  # noqa: E402
from tests.test_graph_frontend import assert_close, make_model, ort_run, rng, w  # noqa: E402
from tests.test_models import need_target  # noqa: E402


def conv_relu(x, out, cin, cout, k, r, inits, pad=0):
    inits[f"{out}_w"] = w(r, cout, cin, k, k)
    inits[f"{out}_b"] = w(r, cout, scale=0.1)
    return [h.make_node("Conv", [x, f"{out}_w", f"{out}_b"], [f"{out}_c"], name=f"{out}_conv",
                        kernel_shape=[k, k], pads=[pad] * 4),
            h.make_node("Relu", [f"{out}_c"], [out], name=f"{out}_relu")]


def fire(x, name, cin, squeeze, expand, r, inits):
    """SqueezeNet's Fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""
    return (conv_relu(x, f"{name}_s", cin, squeeze, 1, r, inits)
            + conv_relu(f"{name}_s", f"{name}_e1", squeeze, expand, 1, r, inits)
            + conv_relu(f"{name}_s", f"{name}_e3", squeeze, expand, 3, r, inits, pad=1)
            + [h.make_node("Concat", [f"{name}_e1", f"{name}_e3"], [name], axis=1,
                           name=f"{name}_cat")])


def branches(axis: int = 1, part_is_input: bool = False):
    """conv -> relu, two branches (1x1: 6 channels, 3x3: 10) -> Concat(axis) -> 1x1 conv;
    with part_is_input the model input is the concat's first part instead."""
    r, inits = rng(7), {}
    nodes = conv_relu("x", "stem", 4, 8, 1, r, inits)
    nodes += conv_relu("stem", "a", 8, 10 if axis == 2 else 6, 1, r, inits)
    nodes += conv_relu("stem", "b", 8, 10, 3, r, inits, pad=1)
    first = "x" if part_is_input else "a"
    nodes.append(h.make_node("Concat", [first, "b"], ["cat"], axis=axis, name="cat"))
    cin = 10 if axis == 2 else (14 if part_is_input else 16)
    nodes += conv_relu("cat", "y", cin, 5, 1, r, inits)
    return make_model(nodes, {"x": (1, 4, 8, 8)}, ["y"], inits)


def fire_pair():
    """Two Fire modules: the first's concat is written in place, the second's is the
    model's output (the caller's buffer) and stays a copy."""
    r, inits = rng(3), {}
    nodes = conv_relu("x", "stem", 3, 16, 3, r, inits)
    nodes += fire("stem", "f1", 16, 4, 8, r, inits)
    nodes.append(h.make_node("MaxPool", ["f1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes += fire("p1", "f2", 16, 4, 8, r, inits)
    return make_model(nodes, {"x": (1, 3, 12, 12)}, ["f2"], inits)


def shuffle_unit():
    """ShuffleNetV2's unit without the shuffle: Split in halves, one through a branch,
    Concat; the split's halves are read in place from the stem's buffer."""
    r, inits = rng(5), {}
    nodes = conv_relu("x", "stem", 3, 8, 3, r, inits, pad=1)
    inits["sizes"] = np.array([4, 4], dtype=np.int64)
    nodes.append(h.make_node("Split", ["stem", "sizes"], ["s0", "s1"], axis=1, name="split"))
    nodes += conv_relu("s1", "br", 4, 4, 1, r, inits)
    nodes.append(h.make_node("Concat", ["s0", "br"], ["cat"], axis=1, name="cat"))
    nodes += conv_relu("cat", "y", 8, 6, 1, r, inits)
    return make_model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)


def concat_kernels(c_source: str, op: str = "concat") -> int:
    """Concat (or split) kernels defined in the model's C."""
    return len(set(re.findall(rf"\b(k\d+_{op})\(", c_source)))


def check(model, target: str, seed: int = 0):
    cm = compile_model(model, target)
    feeds = random_feeds(cm.graph, seed)
    assert_close(cm.run(feeds), ort_run(model, feeds))
    copied = emit_model(cm.graph, cm.kernels, cm.target, cm.name, concat_in_place=False,
                        **cm.source.plan_options)
    # in place never costs workspace
    assert cm.workspace_bytes <= copied.workspace_bytes
    return cm, copied


@pytest.mark.isa("avx2")
def test_branches_concat_written_in_place_x86_avx2():
    cm, copied = check(branches(), "x86-avx2")
    assert concat_kernels(copied.source) == 1
    assert concat_kernels(cm.c_source) == 0
    assert len(cm.source.views) == 1
    rows = {r.output: r for r in cm.report.rows}
    cat = rows["cat"]
    assert cat.storage == "in place"
    # each part's producer writes its range of the concat's buffer
    assert rows["a"].offset == cat.offset
    assert rows["b"].offset == cat.offset + rows["a"].bytes
    assert rows["a"].bytes + rows["b"].bytes == cat.bytes


@pytest.mark.isa("avx2")
def test_part_that_is_a_model_input_keeps_the_copy_x86_avx2():
    cm, _ = check(branches(part_is_input=True), "x86-avx2")
    assert cm.source.views == ()
    assert concat_kernels(cm.c_source) == 1


@pytest.mark.isa("avx2")
def test_concat_with_a_leading_dim_over_one_keeps_the_copy_x86_avx2():
    # axis 2 (rows): the channels before it make each part many ranges of the output
    cm, _ = check(branches(axis=2), "x86-avx2")
    assert cm.source.views == ()
    assert concat_kernels(cm.c_source) == 1


@pytest.mark.isa("avx2")
def test_fire_modules_x86_avx2():
    cm, copied = check(fire_pair(), "x86-avx2", seed=1)
    assert concat_kernels(copied.source) == 2
    assert concat_kernels(cm.c_source) == 1       # the output's concat is a copy
    assert len(cm.source.views) == 1


@pytest.mark.isa("avx2")
def test_split_read_in_place_x86_avx2():
    cm, copied = check(shuffle_unit(), "x86-avx2", seed=3)
    assert concat_kernels(copied.source, "split") == 1
    assert concat_kernels(cm.c_source, "split") == 0
    # the concat reads a split's part: it keeps its copy
    assert concat_kernels(cm.c_source) == 1
    rows = {r.output: r for r in cm.report.rows}
    assert rows["s0"].storage == "in place" and rows["s0"].offset == rows["stem"].offset


def test_fire_modules_aarch64_qemu():
    need_target("aarch64")
    cm, _ = check(fire_pair(), "aarch64", seed=2)
    assert len(cm.source.views) == 1 and concat_kernels(cm.c_source) == 1


def test_in_place_plan_keeps_parts_apart():
    """generic-c: the concat's buffer lives from its first part's producer on, and the
    parts have no buffer of their own."""
    cm = compile_model(fire_pair(), "generic-c")
    ivs = {iv.name: iv for iv in cm.source.intervals}
    (view,) = cm.source.views
    out = next(k.outputs[0] for k in cm.kernels if k.name == view)
    cat = ivs[f"v:{out}"]
    node = next(k for k in cm.kernels if k.name == view).group.nodes[0]
    starts = [next(i for i, k in enumerate(cm.kernels) if v.name in k.outputs)
              for v in node.inputs]
    assert cat.start == min(starts) and cat.end >= max(starts)
    assert all(f"v:{v.name}" not in ivs for v in node.inputs)


@pytest.mark.parametrize("model", [fire_pair, shuffle_unit])
def test_cortex_m4_workspace_never_grows(model):
    """cortex-m4 (the RAM objective, in-place elementwise): here writing the parts in
    place would keep the concat's (or split's) whole buffer live beside a convolution's
    scratch, so the static arena would grow; the copy is kept and the arena stays."""
    need_target("cortex-m4")
    cm, copied = check(model(), "cortex-m4")
    assert cm.workspace_bytes <= copied.workspace_bytes
