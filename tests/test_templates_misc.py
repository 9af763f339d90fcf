"""The non-conv, non-int8 operator templates: depthwise (NCHW, NCHWc), pooling, global
average pooling, softmax / log-softmax, elementwise, reductions, concat, transpose, pad.

Fuzz: per template, WORKLOADS small random workloads (primes, extents below the split
factors and the vector width, tails everywhere) x CONFIGS random configs of each
workload's space plus its default: 50 configs per template and run, drawn from seeded
generators (derandomised).  Every config must build (the spaces are legal by
construction) and match the template's numpy reference; outputs start as NaN, so an
element a kernel never writes fails.  The templates' references are checked against
tests/test_ops.py's independent ones and, for pooling and depthwise semantics, against
onnxruntime.  A smaller sample runs under QEMU for aarch64 and armv7.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import cgen
from cgen.ops.space import ConfigSpace
from cgen.ops.depthwise import (DepthwiseNCHWTemplate, DepthwiseNCHWcTemplate, depthwise_templates,
                                from_nchwc_np, unpack_weights_np)
from cgen.ops.elemwise import BINARY, UNARY, ElemwiseTemplate, elemwise_templates
from cgen.ops.elemwise_layout import ConcatTemplate, PadTemplate, TransposeTemplate, layout_templates
from cgen.ops.elemwise_reduce import REDUCE_FNS, ReduceTemplate, reduce_templates
from cgen.ops.pool import GlobalAvgPoolTemplate, Pool2dTemplate, pool_reference, pool_templates
from cgen.ops.registry import templates
from cgen.ops.softmax_template import SoftmaxTemplate, softmax_templates
from tests.test_ops import SEED, conv2d_ref, pool_ref, softmax_ref
from tests.util import assert_matches


def misc_templates() -> list:
    """The templates this file covers: depthwise, pooling, softmax, elementwise,
    reductions, concat, transpose, pad."""
    return (depthwise_templates() + pool_templates() + softmax_templates() + elemwise_templates()
            + reduce_templates() + layout_templates())


WORKLOADS = 10          # per template
CONFIGS = 4             # random configs per workload, plus the default: 50 per template
TARGET_FAMILIES = ("host", "x86-avx2", "x86-avx512", "generic-c", "aarch64", "armv7")


# ------------------------------------------------------------ workload generators
def _dims(rng, rank, hi=8, long_last=0.25):
    """Small extents; now and then a last extent past one or two vectors."""
    d = [int(v) for v in rng.integers(1, hi, rank)]
    if rng.random() < long_last:
        d[-1] = int(rng.choice([17, 19, 23, 31, 37]))
    return d


def _pads(rng, limits, p_zero=0.3):
    return 0 if rng.random() < p_zero else [int(rng.integers(0, k + 1)) for k in limits]


def g_dw(rng):
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    return DepthwiseNCHWTemplate().workload(
        int(rng.integers(1, 3)), int(rng.integers(1, 6)), int(rng.integers(3, 12)),
        int(rng.choice([3, 5, 7, 11, 13, 19])), kh, kw,
        [int(v) for v in rng.integers(1, 3, 2)], _pads(rng, (2, 2, 2, 2)),
        [int(v) for v in rng.integers(1, 3, 2)], int(rng.integers(1, 3)))


def g_dwc(rng):
    bn = int(rng.choice([1, 2, 4, 8, 16]))
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    return DepthwiseNCHWcTemplate().workload(
        int(rng.integers(1, 3)), bn * int(rng.integers(1, 3)), int(rng.integers(3, 11)),
        int(rng.integers(3, 13)), kh, kw, [int(v) for v in rng.integers(1, 3, 2)],
        _pads(rng, (2, 2, 2, 2)), [int(v) for v in rng.integers(1, 3, 2)], bn=bn)


def g_pool(mode):
    def gen(rng):
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        return Pool2dTemplate(mode).workload(
            int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(2, 12)),
            int(rng.choice([2, 3, 5, 7, 11, 13, 19])), (kh, kw),
            [int(v) for v in rng.integers(1, 4, 2)], _pads(rng, (kh - 1, kw - 1, kh - 1, kw - 1)),
            [int(v) for v in rng.integers(1, 3, 2)], bool(rng.random() < 0.5),
            mode == "avg" and bool(rng.random() < 0.5))
    return gen


def g_gap(rng):
    return GlobalAvgPoolTemplate().workload(int(rng.integers(1, 3)), int(rng.integers(1, 5)),
                                            int(rng.integers(2, 9)),
                                            int(rng.choice([3, 7, 8, 13, 16, 17])))


def g_softmax(log):
    def gen(rng):
        s = _dims(rng, int(rng.integers(1, 5)))
        s[-1] = max(s[-1], 2)           # a space of at least 5 configs
        return SoftmaxTemplate(log).workload(s, int(rng.integers(-len(s), len(s))))
    return gen


def g_elemwise(rng):
    fn = str(rng.choice(sorted(UNARY) + sorted(BINARY)))
    a = _dims(rng, int(rng.integers(1, 5)))
    a[-1] = max(a[-1], 2)               # a space of at least 5 configs
    if fn in UNARY:
        return ElemwiseTemplate().workload(fn, a)
    b = [1 if rng.random() < 0.4 else n for n in a[len(a) - int(rng.integers(1, len(a) + 1)):]]
    return ElemwiseTemplate().workload(fn, *((a, b) if rng.random() < 0.5 else (b, a)))


def g_reduce(rng):
    s = _dims(rng, int(rng.integers(1, 5)))
    axes = sorted({int(v) for v in rng.integers(0, len(s), int(rng.integers(1, len(s) + 1)))})
    return ReduceTemplate().workload(str(rng.choice(REDUCE_FNS)), s, axes, bool(rng.random() < 0.5))


def g_concat(rng):
    s = _dims(rng, int(rng.integers(1, 5)))
    ax = int(rng.integers(0, len(s)))
    shapes = []
    for _ in range(int(rng.integers(1, 4))):
        t = list(s)
        t[ax] = int(rng.integers(1, 6))
        shapes.append(t)
    return ConcatTemplate().workload(shapes, ax)


def g_transpose(rng):
    s = _dims(rng, int(rng.integers(1, 5)))
    return TransposeTemplate().workload(s, [int(v) for v in rng.permutation(len(s))])


def g_pad(rng):
    s = _dims(rng, int(rng.integers(1, 5)))
    return PadTemplate().workload(s, [[int(v) for v in rng.integers(-1, 3, 2)] for _ in s],
                                  float(rng.standard_normal()))


GENERATORS = {
    "depthwise_conv2d": g_dw, "depthwise_conv2d_nchwc": g_dwc,
    "max_pool2d": g_pool("max"), "avg_pool2d": g_pool("avg"), "global_avg_pool2d": g_gap,
    "softmax": g_softmax(False), "log_softmax": g_softmax(True), "elemwise": g_elemwise,
    "reduce": g_reduce, "concat": g_concat, "transpose": g_transpose, "pad": g_pad,
}


def table() -> dict:
    return {t.name: t for t in misc_templates()}


def workloads(name: str, n: int, salt: int = 0) -> list:
    """n valid workloads of a template, from a generator seeded by (SEED, name, salt),
    each with room for CONFIGS random configs besides the default."""
    rng = np.random.default_rng([SEED, sum(map(ord, name)), salt])
    tmpl = table()[name]
    out = []
    while len(out) < n:
        try:
            wl = GENERATORS[name](rng)
        except ValueError:          # an invalid draw (window larger than the input, ...)
            continue
        if tmpl.space(wl, "host").size > CONFIGS:
            out.append(wl)
    return out


def configs(tmpl, wl: dict, target: str, n: int, salt: int = 0) -> list:
    """n seeded random configs of the workload's space, then the default."""
    rng = np.random.default_rng([SEED, sum(map(ord, tmpl.name)), salt, 7])
    d = tmpl.default(wl, target)
    out = [c for c in tmpl.space(wl, target).sample(rng, n + 1) if c.index != d.index]
    return out[:n] + [d]


def check(tmpl, wl: dict, cfg, target="host", sanitize=False, builder=None) -> None:
    rng = np.random.default_rng([SEED, 1])
    inputs = tmpl.inputs(wl, rng)
    ref = tmpl.reference(wl, inputs)
    s, args = tmpl.build(wl, target, cfg)
    if builder is not None:
        mod = builder(s, args, target=target, name=tmpl.name)
    else:
        mod = cgen.build(s, args, target=target, name=tmpl.name, sanitize=sanitize)
    arrays = [a.copy() for a in inputs]
    names = [a.name for a in args]
    for k in ref:
        arrays[names.index(k)][...] = np.nan
    mod(*arrays)
    for k, r in ref.items():
        try:
            assert_matches(arrays[names.index(k)], r)
        except AssertionError as e:
            raise AssertionError(f"{tmpl.name} {json.dumps(wl)} config {cfg.to_dict()}: {e}") from None


# ------------------------------------------------------------ fuzz on the host
@pytest.mark.sanitize
@pytest.mark.parametrize("k", range(WORKLOADS))
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_fuzz_host(name, k, sanitize):
    tmpl = table()[name]
    wl = workloads(name, WORKLOADS)[k]
    for cfg in configs(tmpl, wl, "host", CONFIGS, salt=k):
        check(tmpl, wl, cfg, "host", sanitize)


def test_fuzz_counts():
    """At least 50 configs per template and run."""
    for name in GENERATORS:
        tmpl = table()[name]
        n = sum(len(configs(tmpl, wl, "host", CONFIGS, salt=k))
                for k, wl in enumerate(workloads(name, WORKLOADS)))
        assert n >= 50, (name, n)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_strict_clang(name, kbuild):
    """The default config's C also compiles strictly with clang (kbuild) and runs."""
    tmpl = table()[name]
    wl = workloads(name, 1, salt=3)[0]
    check(tmpl, wl, tmpl.default(wl, "host"), "host", builder=kbuild)


# ------------------------------------------------------------ QEMU
@pytest.mark.qemu
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_fuzz_qemu(name, target):
    tmpl = table()[name]
    wl = workloads(name, 1, salt=11)[0]
    for cfg in configs(tmpl, wl, target, 1, salt=11):
        check(tmpl, wl, cfg, target)


# ------------------------------------------------------------ spaces and defaults
def test_registry_has_every_template():
    reg = templates()
    for name in GENERATORS:
        assert name in reg and reg[name].name == name
    assert sorted(t.name for t in misc_templates()) == sorted(GENERATORS)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_space_roundtrip_and_defaults(name):
    tmpl = table()[name]
    rng = np.random.default_rng(SEED)
    for wl in workloads(name, 3, salt=5):
        json.dumps(wl)
        for target in TARGET_FAMILIES:
            sp = tmpl.space(wl, target)
            assert isinstance(sp, ConfigSpace) and sp.size >= 1
            for i in {0, sp.size - 1, int(rng.integers(sp.size))}:
                cfg = sp.get(i)
                assert sp.index_of(cfg.to_dict()) == i
                assert sp.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
            d = tmpl.default(wl, target)
            assert sp.get(d.index) == d
            tmpl.build(wl, target, d)            # schedules without compiling
            for q in getattr(tmpl, "quick_configs", lambda *a: [])(wl, target):
                assert sp.get(q.index) == q


def test_default_mobilenet_configs():
    """The defaults of the bench layers: vector-wide tiles, the pad where it measured best."""
    dw, dwc = DepthwiseNCHWTemplate(), DepthwiseNCHWcTemplate()
    wl = dw.workload(1, 32, 112, 112, 3, 3, 1, 1)
    d = dw.default(wl, "x86-avx512").to_dict()
    assert (d["tile_x"], d["pad_at"], d["taps"]) == (16, "band", "expr")
    wl = dwc.workload(1, 384, 14, 14, 3, 3, 1, 1, bn=16)
    assert dwc.default(wl, "x86-avx512").to_dict()["pad_at"] == "plane"
    wl = dwc.workload(1, 144, 56, 56, 3, 3, 1, 1, bn=16)
    assert dwc.default(wl, "x86-avx512").to_dict()["pad_at"] == "tile"


def test_bad_workloads_raise():
    dw, dwc = DepthwiseNCHWTemplate(), DepthwiseNCHWcTemplate()
    with pytest.raises(ValueError):
        dw.workload(1, 4, 2, 2, 3, 3)                    # window larger than the input
    with pytest.raises(ValueError):
        dwc.workload(1, 6, 8, 8, 3, 3, bn=4)             # block does not divide C
    with pytest.raises(ValueError):
        dwc.workload(1, 8, 8, 8, 3, 3, multiplier=2, bn=4)
    with pytest.raises(ValueError):
        Pool2dTemplate("max").workload(1, 1, 5, 5, 2, pad=2)      # pad not below the kernel
    with pytest.raises(ValueError):
        Pool2dTemplate("max").workload(1, 1, 5, 5, 2, count_include_pad=True)
    with pytest.raises(ValueError):
        ReduceTemplate().workload("sum", [2, 3], [0, -2])         # the same axis twice
    with pytest.raises(ValueError):
        ReduceTemplate().workload("prod", [2, 3], [0])
    with pytest.raises(ValueError):
        ConcatTemplate().workload([[2, 3], [3, 3]], 1)
    with pytest.raises(ValueError):
        TransposeTemplate().workload([2, 3], [0, 0])
    with pytest.raises(ValueError):
        PadTemplate().workload([2, 1], [[0, 0], [-1, 2]])           # crops X away entirely
    with pytest.raises(ValueError):
        ElemwiseTemplate().workload("add", [2, 3], [4])
    with pytest.raises(ValueError):
        SoftmaxTemplate().workload([2, 3], 2)
    with pytest.raises(ValueError):
        dw.space({"op": "max_pool2d"}, "host")


# ------------------------------------------------------------ the references
def test_references_agree_with_test_ops():
    """The templates' references against tests/test_ops.py's independent ones."""
    rng = np.random.default_rng(SEED)
    for wl in workloads("depthwise_conv2d", 12, salt=21):
        if wl["multiplier"] != 1:
            continue
        t = DepthwiseNCHWTemplate()
        x, w, _ = t.inputs(wl, rng)
        assert_matches(t.reference(wl, [x, w])["Y"],
                       conv2d_ref(x, w, wl["stride"], wl["pad"], wl["dilation"], depthwise=True))
    for wl in workloads("depthwise_conv2d_nchwc", 6, salt=21):
        t = DepthwiseNCHWcTemplate()
        x, w, _ = t.inputs(wl, rng)
        ref = conv2d_ref(from_nchwc_np(x), unpack_weights_np(w), wl["stride"], wl["pad"],
                         wl["dilation"], depthwise=True)
        assert_matches(from_nchwc_np(t.reference(wl, [x, w])["Y"]), ref)
    for mode in ("max", "avg"):
        for wl in workloads(f"{mode}_pool2d", 12, salt=21):
            if wl["dilation"] != [1, 1]:
                continue
            x = Pool2dTemplate(mode).inputs(wl, rng)[0]
            assert_matches(pool_reference(x, wl),
                           pool_ref(x, wl["kernel"], wl["stride"], wl["pad"], wl["ceil_mode"],
                                    mode, wl["count_include_pad"]))
    for log in (False, True):
        for wl in workloads("log_softmax" if log else "softmax", 6, salt=21):
            t = SoftmaxTemplate(log)
            x = t.inputs(wl, rng)[0]
            ref = softmax_ref(x, wl["axis"])
            assert_matches(t.reference(wl, [x])["Y"], np.log(ref) if log else ref)


def _ort_run(node, x: np.ndarray, inits=()) -> np.ndarray:
    """onnxruntime's output of a one-node model on input X."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    g = helper.make_graph([node], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    so = ort.SessionOptions()
    so.log_severity_level = 3          # the shape-inference warnings of ceil mode
    return ort.InferenceSession(m.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]


def test_pool_semantics_match_onnxruntime():
    """ceil_mode, dilations, count_include_pad: pool_reference against onnxruntime."""
    pytest.importorskip("onnx")
    from onnx import helper
    rng = np.random.default_rng(SEED)
    for mode in ("max", "avg"):
        for wl in workloads(f"{mode}_pool2d", 15, salt=31):
            x = rng.standard_normal((1, 2, wl["H"], wl["W"])).astype(np.float32)
            wl1 = dict(wl, N=1, C=2)
            attrs = dict(kernel_shape=wl["kernel"], pads=wl["pad"], strides=wl["stride"],
                         dilations=wl["dilation"], ceil_mode=int(wl["ceil_mode"]))
            if mode == "avg":
                attrs["count_include_pad"] = int(wl["count_include_pad"])
            node = helper.make_node("MaxPool" if mode == "max" else "AveragePool", ["X"], ["Y"],
                                    **attrs)
            assert_matches(pool_reference(x, wl1), _ort_run(node, x))


def test_depthwise_semantics_match_onnxruntime():
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    rng = np.random.default_rng(SEED)
    for wl in workloads("depthwise_conv2d", 8, salt=41):
        t = DepthwiseNCHWTemplate()
        x, w, _ = t.inputs(wl, rng)
        node = helper.make_node("Conv", ["X", "W"], ["Y"], group=wl["C"], pads=wl["pad"],
                                kernel_shape=[wl["KH"], wl["KW"]], strides=wl["stride"],
                                dilations=wl["dilation"])
        y = _ort_run(node, x, [numpy_helper.from_array(w, "W")])
        assert_matches(t.reference(wl, [x, w])["Y"], y)


# ------------------------------------------------------------ the bench cases
def test_bench_cases_describe_themselves():
    from bench.ops_dw import LAYERS, cases
    cs = cases("host")
    assert len(cs) == 2 * len(LAYERS)
    for c in cs:
        assert {"name", "template", "workload", "layout", "peer_name", "peer_fn", "peer_call",
                "flops"} <= set(c)
        assert c["flops"] > 0 and c["peer_name"] == "onnxruntime"
        c["template"].space(c["workload"], "host")
    assert {c["layout"] for c in cs} == {"NCHW", "NCHW16c"}


@pytest.mark.parametrize("target", ["x86-avx2", "x86-avx512"])
def test_padded_pool_fills_its_interior_with_a_plain_copy(target):
    """A padded 3x3 stride-2 max pool with its padded copy computed per band: the copy's
    interior has no padding test (borders only), and the result matches numpy."""
    import re
    import cgen
    from cgen.ops.registry import templates
    tm = templates()["max_pool2d"]
    wl = tm.workload(1, 8, 20, 20, (3, 3), stride=(2, 2), pad=(1, 1, 1, 1))
    cfg = tm.space(wl, target).nearest({**tm.default(wl, target).to_dict(), "pad_at": "band"})
    s, args = tm.build(wl, target, cfg)
    mod = cgen.build(s, args, target=target)
    assert re.search(r"P\[[^;?]*\] = X\[[^;?]*\];", mod.c_source)
    x, y = tm.inputs(wl, np.random.default_rng(0))
    mod(x, y)
    np.testing.assert_allclose(y, tm.reference(wl, [x, y])["Y"], rtol=1e-6)


@pytest.mark.parametrize("target,vmax,vload", [
    pytest.param("x86-avx2", "_mm256_max_ps(", "_mm256_loadu_ps(&P[", marks=pytest.mark.isa("avx2")),
    pytest.param("x86-avx512", "_mm512_max_ps(", "_mm512_loadu_ps(&P[", marks=pytest.mark.isa("avx512")),
    ("aarch64", "vmaxq_f32(", "vld1q_f32(&P[")])
def test_stride_2_pools_read_their_input_deinterleaved_in_vectors(target, vmax, vload):
    """A stride-2 pool reads its input deinterleaved (as depthwise does), so its output rows
    are vector loads and maxes (was: a 3x3/2 max pool read its input at stride 2 in
    scalar code, 5x slower than onnxruntime's on x86-avx2), padded or not, for max and
    average, ceil mode included; the results match numpy."""
    import cgen
    from cgen.ops.registry import templates
    cases = [("max_pool2d", dict(pad=(1, 1, 1, 1))), ("max_pool2d", dict(pad=0)),
             ("max_pool2d", dict(pad=(0, 1, 1, 0), ceil_mode=True)),
             ("avg_pool2d", dict(pad=(1, 1, 1, 1), count_include_pad=True)),
             ("avg_pool2d", dict(pad=(1, 0, 0, 1), ceil_mode=True))]
    for op, kw in cases:
        tm = templates()[op]
        wl = tm.workload(1, 3, 21, 38, (3, 3), stride=(2, 2), **kw)
        for cfg in (tm.default(wl, target), *(tm.space(wl, target).nearest(
                {**tm.default(wl, target).to_dict(), "pad_at": p}) for p in ("band", "plane"))):
            s, args = tm.build(wl, target, cfg)
            mod = cgen.build(s, args, target=target)
            if op == "max_pool2d":
                assert vmax in mod.c_source and vload in mod.c_source, (op, kw, cfg)
            x, y = tm.inputs(wl, np.random.default_rng(3))
            mod(x, y)
            np.testing.assert_allclose(y, tm.reference(wl, [x, y])["Y"], rtol=1e-6, atol=1e-6,
                                       err_msg=f"{op} {kw} {cfg}")


@pytest.mark.isa("avx2")
def test_an_unpadded_stride_2_pool_copies_its_input_per_band():
    """SqueezeNet's 3x3/2 max pool over 64x111x111 has no padding, so no pad_at knob: its
    deinterleaved copy is made per band of tile rows, small enough for L1 (made per
    plane, 49 KB, it ran slower than the strided reads it replaced)."""
    import re
    import cgen
    from cgen.ops.registry import templates
    tm = templates()["max_pool2d"]
    wl = tm.workload(1, 4, 111, 111, (3, 3), stride=(2, 2), pad=0, ceil_mode=True)
    cfg = tm.default(wl, "x86-avx2")
    assert "pad_at" not in cfg.to_dict()
    s, args = tm.build(wl, "x86-avx2", cfg)
    mod = cgen.build(s, args, target="x86-avx2")
    sizes = [int(n) for n in re.findall(r"float P\[(\d+)\]", mod.c_source)]
    assert sizes and max(sizes) <= (2 * cfg.to_dict()["tile_y"] + 1) * 2 * 56, sizes
    assert "malloc" not in mod.c_source
    x, y = tm.inputs(wl, np.random.default_rng(2))
    mod(x, y)
    np.testing.assert_array_equal(y, tm.reference(wl, [x, y])["Y"])
