"""Quantized operators (cgen.ops.quant): requantisation bit-exact in both rounding modes, and
the QLinear conv / depthwise / dense templates bit-exact on random configs.

* The numpy references of TFLite's integer functions are checked against independent
  Python formulations (exact fractions, big integers) on edge and random values; the te
  versions (floor division in place of shifts) against the numpy references, compiled.
* The ONNX mode: kernels equal the exact integer numpy reference; that reference equals
  onnxruntime's QLinearConv / QLinearMatMul on many random draws (no compile), and compiled
  kernels equal onnxruntime on a few, wherever onnxruntime is exact: int8 weights in
  [-64, 63] on any machine, full-range weights only with VNNI or on ARM (onnxruntime's x86
  u8 x s8 kernels without VNNI saturate int16 sums; see docs/QUANTIZATION.md).
* Fuzz: FUZZ_PER_TEMPLATE random configs of random small workloads per template (random
  dtypes, rounding, per-channel scales, zero points, strides, pads, groups, dilation,
  layouts), bit-exact against the numpy reference; every tenth also compiled strictly by
  clang.  QEMU (aarch64, armv7): a default and a random config per template.

Every draw comes from a seeded generator (one per test id), so a failure reproduces.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.ops.space import ConfigSpace
from cgen.ops import quant as Q
from cgen.tensorize import dot_i8_intrin
from targets import resolve

FUZZ_PER_TEMPLATE = 50
QEMU_PER_TEMPLATE = 2
ORT_DRAWS = 60
TEMPLATES = {"qconv2d": Q.QConv2dTemplate, "qdepthwise_conv2d": Q.QDepthwiseConv2dTemplate,
             "qdense": Q.QDenseTemplate}
I32 = np.iinfo(np.int32)
EDGES = np.array([0, 1, -1, 2, -2, 3, -3, 7, -7, 1 << 15, -(1 << 15), (1 << 30) - 1, 1 << 30,
                  -(1 << 30), I32.max, I32.max - 1, I32.min, I32.min + 1], np.int64)


def _qtypes(rng):
    return [str(rng.choice(("int8", "uint8"))) for _ in range(3)]


# ================================================================ Python references
def py_quantize_multiplier(real: float):
    """TFLite QuantizeMultiplier, scalar, from its definition (frexp, round half away)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    qf = int(math.floor(abs(q) * 2.0 ** 31 + 0.5)) * (1 if q >= 0 else -1)
    if qf == 1 << 31:
        qf //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return qf, shift


def py_srdhm(a: int, b: int) -> int:
    if a == b == I32.min:
        return I32.max
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    return int(Fraction(v, 1 << 31).__trunc__())


def py_rdbpot(x: int, e: int) -> int:
    """x / 2**e rounded to nearest, ties away from zero."""
    fr = Fraction(x, 1 << e)
    r = math.floor(abs(fr) + Fraction(1, 2))
    return r if fr >= 0 else -r


# ================================================================ numpy references
def test_quantize_multiplier_matches_definition():
    rng = np.random.default_rng(1)
    reals = np.concatenate([10.0 ** rng.uniform(-12, 2, 2000), [0.0, 0.5, 1.0, 2.0 ** -31,
                            2.0 ** -32, 2.0 ** -33, 1 - 2.0 ** -40, 0.99999999999]])
    qm, sh = Q.quantize_multiplier(reals)
    for r, m, s in zip(reals, qm, sh):
        assert (int(m), int(s)) == py_quantize_multiplier(float(r)), r
        if m:
            assert (1 << 30) <= m < (1 << 31)
            # the represented value is within half a unit of the multiplier's last place
            assert abs(float(r) - m * 2.0 ** (s - 31)) <= 2.0 ** (s - 32) * (1 + 1e-9)
    with pytest.raises(ValueError):
        Q.quantize_multiplier([-1.0])


def test_srdhm_reference():
    rng = np.random.default_rng(2)
    a = np.concatenate([np.repeat(EDGES, len(EDGES)), rng.integers(I32.min, I32.max, 3000,
                                                                    endpoint=True)])
    b = np.concatenate([np.tile(EDGES, len(EDGES)), rng.integers(I32.min, I32.max, 3000,
                                                                  endpoint=True)])
    got = Q.np_srdhm(a.astype(np.int32), b.astype(np.int32))
    assert [int(v) for v in got] == [py_srdhm(int(x), int(y)) for x, y in zip(a, b)]


def test_rounding_divide_by_pot_reference():
    rng = np.random.default_rng(3)
    x = np.concatenate([np.repeat(EDGES, 32), rng.integers(I32.min, I32.max, 3000, endpoint=True)])
    e = np.concatenate([np.tile(np.arange(32), len(EDGES)), rng.integers(0, 32, 3000)])
    got = Q.np_rounding_divide_by_pot(x.astype(np.int32), e)
    assert [int(v) for v in got] == [py_rdbpot(int(xx), int(ee)) for xx, ee in zip(x, e)]


def test_multiply_by_quantized_multiplier_reference():
    rng = np.random.default_rng(4)
    x = rng.integers(-(1 << 20), 1 << 20, 2000)
    real = 10.0 ** rng.uniform(-6, 1, 2000)
    qm, sh = Q.quantize_multiplier(real)
    got = Q.np_multiply_by_quantized_multiplier(x.astype(np.int32), qm, sh)
    for xx, m, s, g in zip(x, qm, sh, got):
        left, right = max(int(s), 0), max(-int(s), 0)
        want = py_rdbpot(py_srdhm(int(xx) << left, int(m)), right)
        assert int(g) == want
    # and it approximates x * real
    approx = x * real
    assert np.all(np.abs(got - approx) <= 1 + 1e-6 * np.abs(approx))


def test_onnx_requantize_reference_ties_to_even():
    acc = np.arange(-9, 10, dtype=np.int32)
    got = Q.np_requantize_onnx(acc, np.float32(0.5), 0, "int8")
    assert list(got) == [int(np.rint(a / 2)) for a in acc]   # ties to even
    assert list(got[:4]) == [-4, -4, -4, -3]                   # -4.5, -4, -3.5, -3
    sat = Q.np_requantize_onnx(np.array([10 ** 6, -10 ** 6], np.int32), np.float32(1.0), 3, "uint8")
    assert list(sat) == [255, 0]


# ================================================================ te requantisation, compiled
def _elementwise(name, fn, arrays: dict, out_dtype, kbuild):
    """Build out[i] = fn(*loads) over 1-D arrays and run it."""
    n = len(next(iter(arrays.values())))
    ph = {k: te.placeholder((n,), str(v.dtype), name=k) for k, v in arrays.items()}
    out = te.compute((n,), lambda i: fn(*[p[i] for p in ph.values()]), name="out")
    s = te.create_schedule(out)
    mod = kbuild(s, list(ph.values()) + [out], name=name)
    res = np.full(n, 77, out_dtype)
    mod(*arrays.values(), res)
    return res


def test_round_half_even_intrinsic(kbuild):
    rng = np.random.default_rng(5)
    ties = np.arange(-40, 40) + 0.5
    x = np.concatenate([ties, rng.uniform(-1e6, 1e6, 500), [0.0, -0.0, 2.0 ** 23 + 1, -(2.0 ** 23) - 1,
                        2.0 ** 24, 0.49999997, -0.49999997, 1e30, -1e30]]).astype(np.float32)
    got = _elementwise("rhe", te.round_half_even, {"x": x}, np.float32, kbuild)
    np.testing.assert_array_equal(got, np.rint(x))
    with pytest.raises(TypeError):
        te.round_half_even(te.placeholder((2,), "int32", name="i")[0])


def test_te_srdhm_and_rounding_divide(kbuild):
    rng = np.random.default_rng(6)
    a = np.concatenate([np.repeat(EDGES, len(EDGES)), rng.integers(I32.min, I32.max, 2000,
                                                                    endpoint=True)]).astype(np.int32)
    b = np.concatenate([np.tile(EDGES, len(EDGES)), rng.integers(I32.min, I32.max, 2000,
                                                                  endpoint=True)]).astype(np.int32)
    got = _elementwise("srdhm", Q.srdhm, {"a": a, "b": b}, np.int32, kbuild)
    np.testing.assert_array_equal(got, Q.np_srdhm(a, b))
    e = rng.integers(0, 32, len(a)).astype(np.int32)
    e[:32] = np.arange(32)
    got = _elementwise("rdbpot", Q.rounding_divide_by_pot, {"x": a, "e": e}, np.int32, kbuild)
    np.testing.assert_array_equal(got, Q.np_rounding_divide_by_pot(a, e))
    p = _elementwise("pow2", lambda v: Q.pow2(v), {"e": e}, np.int64, kbuild)
    np.testing.assert_array_equal(p, np.int64(1) << e.astype(np.int64))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_te_requantize_both_modes(dtype, kbuild):
    rng = np.random.default_rng(7 if dtype == "int8" else 8)
    acc = np.concatenate([rng.integers(-(1 << 24), 1 << 24, 2400),
                          rng.integers(-1000, 1000, 400), np.repeat(EDGES, 11)]).astype(np.int32)
    n = len(acc)
    info = np.iinfo(dtype)
    yz = rng.integers(int(info.min), int(info.max) + 1, n).astype(np.int32)
    # onnx: random float32 multipliers, some exactly halves (ties)
    mult = (10.0 ** rng.uniform(-7, 0, n)).astype(np.float32)
    mult[:300] = np.float32(0.5)
    got = _elementwise(f"rq_onnx_{dtype}", lambda a, m, z: Q.requantize_onnx(a, m, z, dtype),
                       {"acc": acc, "m": mult, "z": yz}, dtype, kbuild)
    want = Q.np_requantize_onnx(acc, mult, yz, dtype)
    np.testing.assert_array_equal(got, want)
    # tflite: multipliers and shifts from random reals, left shifts included
    real = 10.0 ** rng.uniform(-8, 0.6, n)
    qm, sh = Q.quantize_multiplier(real)
    pots = Q.pot_params

    def rq(a, m, s, z):
        return Q.requantize_tflite(a, m, pots(s), z, dtype)
    got = _elementwise(f"rq_tfl_{dtype}", rq, {"acc": acc, "m": qm, "s": sh, "z": yz}, dtype, kbuild)
    want = Q.np_requantize_tflite(acc, qm, sh, yz, dtype)
    np.testing.assert_array_equal(got, want)
    assert np.any(sh > 0)          # left shifts exercised


# ================================================================ onnxruntime
def ort_int8_inexact() -> str | None:
    """Why onnxruntime's int8 x int8 products may be inexact on this machine, or None.

    Without VNNI its x86 u8 x s8 kernels (pmaddubsw) add two products in a saturating int16:
    255 * -128 * 2 overflows it, 255 * -64 * 2 does not.  VNNI (vpdpbusd) and ARM sum in int32."""
    import platform
    from targets.target import _cpu_flags
    if platform.machine() in ("aarch64", "arm64") or platform.machine().startswith("arm"):
        return None
    if {"avx512_vnni", "avx_vnni"} & _cpu_flags():
        return None
    return "onnxruntime's x86 u8 x s8 kernels saturate int16 sums without VNNI"


def reduce_range(t, wl: dict, inputs: list) -> list:
    """int8 weights and their zero points halved into [-64, 63], where onnxruntime is exact."""
    if wl["b_dtype" if t.name == "qdense" else "w_dtype"] == "int8":
        inputs[1] >>= 1
        inputs[4] >>= 1
    return inputs


WEIGHTS = ["reduced", pytest.param("full", marks=pytest.mark.skipif(
    ort_int8_inexact() is not None, reason=str(ort_int8_inexact())))]


def _ort_conv_workload(rng):
    t = Q.QConv2dTemplate()
    while True:
        xt = str(rng.choice(("int8", "uint8")))
        wt = "int8" if xt == "int8" else str(rng.choice(("int8", "uint8")))  # no s8 x u8 in ORT
        G = int(rng.choice((1, 1, 2, 3)))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        try:
            return t.workload(int(rng.integers(1, 3)), G * int(rng.integers(1, 6)),
                              int(rng.integers(3, 10)), int(rng.integers(3, 10)),
                              G * int(rng.integers(1, 6)), kh, kw,
                              stride=tuple(int(v) for v in rng.integers(1, 3, 2)),
                              pads=tuple(int(v) for v in rng.integers(0, 2, 4)),
                              dilation=tuple(int(v) for v in rng.integers(1, 3, 2)), groups=G,
                              x_dtype=xt, w_dtype=wt, rounding="onnx",
                              per_channel=bool(rng.random() < 0.5),
                              w_layout=str(rng.choice(("OIHW", "packed"))))
        except ValueError:
            continue


def _ort_dense_workload(rng):
    at = str(rng.choice(("int8", "uint8")))
    bt = "int8" if at == "int8" else str(rng.choice(("int8", "uint8")))
    return Q.QDenseTemplate().workload(int(rng.integers(1, 12)), int(rng.integers(1, 40)),
                                       int(rng.integers(1, 80)), a_dtype=at, b_dtype=bt,
                                       per_channel=bool(rng.random() < 0.5),
                                       b_layout=str(rng.choice(("KN", "NK"))))


@pytest.mark.parametrize("weights", WEIGHTS)
def test_reference_matches_onnxruntime_qlinearconv(weights):
    pytest.importorskip("onnxruntime")
    from bench.ops_int8 import qlinearconv_session
    rng = np.random.default_rng(11)
    t = Q.QConv2dTemplate()
    for _ in range(ORT_DRAWS):
        wl = _ort_conv_workload(rng)
        inputs = t.inputs(wl, rng)
        if weights == "reduced":
            reduce_range(t, wl, inputs)
        sess, feeds = qlinearconv_session(wl, inputs)
        y = sess.run(None, feeds)[0]
        ref = t.reference(wl, inputs)["Y"]
        assert y.dtype == ref.dtype
        np.testing.assert_array_equal(y, ref, err_msg=json.dumps(wl))


@pytest.mark.parametrize("weights", WEIGHTS)
def test_reference_matches_onnxruntime_qlinearmatmul(weights):
    pytest.importorskip("onnxruntime")
    from bench.ops_int8 import qlinearmatmul_session
    rng = np.random.default_rng(12)
    t = Q.QDenseTemplate()
    for _ in range(ORT_DRAWS):
        wl = _ort_dense_workload(rng)
        inputs = t.inputs(wl, rng)
        if weights == "reduced":
            reduce_range(t, wl, inputs)
        inputs[2][...] = 0                       # QLinearMatMul has no bias
        sess, feeds = qlinearmatmul_session(wl, inputs)
        np.testing.assert_array_equal(sess.run(None, feeds)[0], t.reference(wl, inputs)["Y"],
                                      err_msg=json.dumps(wl))


@pytest.mark.parametrize("case", range(6))
def test_kernels_match_onnxruntime(case):
    pytest.importorskip("onnxruntime")
    from bench.ops_int8 import qlinearconv_session, qlinearmatmul_session
    rng = np.random.default_rng(100 + case)
    if case < 2:      # the bench's layer shape, default and a random config
        t = Q.QConv2dTemplate()
        wl = t.workload(1, 16, 12, 12, 24, 3, 3, pads=1, per_channel=case == 1)
    elif case < 4:
        t = Q.QConv2dTemplate() if case == 2 else Q.QDepthwiseConv2dTemplate()
        wl = _ort_conv_workload(rng) if case == 2 else t.workload(
            1, 6, 11, 9, 3, 3, stride=2, pads=(1, 0, 1, 1), multiplier=2, per_channel=True)
    else:
        t = Q.QDenseTemplate()
        wl = _ort_dense_workload(rng)
    sp = t.space(wl, "host")
    cfg = t.default(wl, "host") if case % 2 == 0 else sp.get(int(rng.integers(sp.size)))
    s, args = t.build(wl, "host", cfg)
    mod = cgen.build(s, args, target="host", name=t.name)
    inputs = t.inputs(wl, rng)
    if t.name == "qdense":
        inputs[2][...] = 0
    mod(*inputs)
    np.testing.assert_array_equal(inputs[-1], t.reference(wl, inputs)["Y"],
                                  err_msg=f"{json.dumps(wl)} {cfg.to_dict()}")
    if ort_int8_inexact() is not None:   # onnxruntime is checked only where it is exact
        mod(*reduce_range(t, wl, inputs))
    sess, feeds = (qlinearmatmul_session if t.name == "qdense" else qlinearconv_session)(wl, inputs)
    np.testing.assert_array_equal(inputs[-1], sess.run(None, feeds)[0],
                                  err_msg=f"{json.dumps(wl)} {cfg.to_dict()}")


# ================================================================ fuzz: templates
def random_workload(name: str, rng) -> dict:
    t = TEMPLATES[name]()
    xt, wt, yt = _qtypes(rng)
    rounding = str(rng.choice(Q.ROUNDINGS))
    per = bool(rng.random() < 0.5)
    if name == "qdense":
        return t.workload(int(rng.integers(1, 10)), int(rng.integers(1, 21)),
                          int(rng.integers(1, 70)), a_dtype=xt, b_dtype=wt, y_dtype=yt,
                          rounding=rounding, per_channel=per, b_layout=str(rng.choice(("KN", "NK"))))
    while True:
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        common = dict(stride=tuple(int(v) for v in rng.integers(1, 3, 2)),
                      pads=tuple(int(v) for v in rng.integers(0, 3, 4)),
                      dilation=tuple(int(v) for v in rng.choice((1, 1, 2), 2)),
                      x_dtype=xt, w_dtype=wt, y_dtype=yt, rounding=rounding, per_channel=per,
                      w_layout=str(rng.choice(("OIHW", "packed"))))
        N, H, W = int(rng.integers(1, 3)), int(rng.integers(2, 12)), int(rng.integers(2, 12))
        try:
            if name == "qdepthwise_conv2d":
                return t.workload(N, int(rng.integers(1, 7)), H, W, kh, kw,
                                  multiplier=int(rng.choice((1, 1, 2))), **common)
            G = int(rng.choice((1, 1, 1, 2, 3)))
            return t.workload(N, G * int(rng.integers(1, 7)), H, W, G * int(rng.integers(1, 7)),
                              kh, kw, groups=G, **common)
        except ValueError:
            continue


def check_case(name: str, seed: int, target: str = "host", kbuild=None, default: bool = False):
    rng = np.random.default_rng(seed)
    t = TEMPLATES[name]()
    wl = random_workload(name, rng)
    space = t.space(wl, target)
    cfg = t.default(wl, target) if default else space.get(int(rng.integers(space.size)))
    s, args = t.build(wl, target, cfg)
    mod = (kbuild or cgen.build)(s, args, target=target, name=name)
    inputs = t.inputs(wl, rng)
    inputs[-1][...] = rng.integers(0, 100, inputs[-1].shape)   # unwritten elements show
    ref = t.reference(wl, inputs)["Y"]
    mod(*inputs)
    if not np.array_equal(inputs[-1], ref):
        bad = np.argwhere(inputs[-1] != ref)
        raise AssertionError(f"{name} {json.dumps(wl)} config {cfg.to_dict()}: {len(bad)} of "
                             f"{ref.size} differ, first at {bad[0].tolist()}: "
                             f"{inputs[-1][tuple(bad[0])]} != {ref[tuple(bad[0])]}")
    return mod


@pytest.mark.parametrize("seed", range(FUZZ_PER_TEMPLATE))
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_random_configs_bit_exact(name, seed, kbuild):
    check_case(name, 5000 + seed, "host", kbuild if seed % 10 == 0 else None)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_default_configs_bit_exact(name, seed):
    check_case(name, 7000 + seed, "host", default=True)


BLOCKING = [  # K blocks, flat im2col with the ones pixel, grouped tiles: K = 360 > tile_k
    dict(algo="packed_tile", col_at="root", tile_k=256, tile_f=8, micro_x=4),
    dict(algo="packed_tile", col_at="root", tile_k=256, tile_f=12, micro_x=2, order=1),
    dict(algo="packed_tile", col_at="tile", tile_k=256, tile_f=12, tile_x=2, micro_x=2),
    dict(algo="packed_dot", col_at="root", tile_k=256, tile_f=4, micro_x=2, micro_f=2, unroll=2),
    dict(algo="packed", col_at="tile", tile_k=256, tile_f=8, tile_x=2, micro_x=2, micro_f=4),
    dict(algo="direct", tile_f=8, tile_x=2, order=0, unroll=2),
]


@pytest.mark.parametrize("target", [pytest.param("x86-avx512", marks=pytest.mark.isa("avx512")),
                                    pytest.param("x86-avx2", marks=pytest.mark.isa("avx2"))])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("cfg", BLOCKING, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_blocking_variants_bit_exact(cfg, groups, target):
    t = Q.QConv2dTemplate()
    wl = t.workload(2, 40 * groups, 7, 6, 12 * groups, 3, 3, stride=(1, 2), pads=(1, 0, 2, 1),
                    groups=groups, x_dtype="int8", w_dtype="uint8", rounding="tflite",
                    per_channel=True, w_layout="packed" if groups == 1 else "OIHW")
    sp = t.space(wl, target)
    c = sp.get(sp.index_of({**t.default(wl, target).to_dict(), **cfg}))
    s, args = t.build(wl, target, c)
    mod = cgen.build(s, args, target=target, name="qconv2d")
    if cfg["algo"] == "packed_tile":
        assert "cg_qtile_u8s8_" in mod.c_source
    inputs = t.inputs(wl, np.random.default_rng(groups))
    mod(*inputs)
    np.testing.assert_array_equal(inputs[-1], t.reference(wl, inputs)["Y"], err_msg=str(c.to_dict()))


@pytest.mark.qemu
@pytest.mark.parametrize("seed", range(QEMU_PER_TEMPLATE))
@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_random_configs_under_qemu(target, name, seed):
    mod = check_case(name, 6000 + seed, target, default=seed == 0)
    assert mod.target.name == target


# ================================================================ kernels and codegen
@pytest.mark.parametrize("target", ["host", "x86-avx2", "aarch64", "armv7"])
def test_tile_kernels_compile_strictly(target):
    """Each u8 x s8 tile kernel (every MR) compiles under -Werror with gcc and clang."""
    from tests.util import build_checked
    tgt = resolve(target)
    t = Q.QDenseTemplate()
    for mr in Q.tile_mrs(tgt):
        wl = t.workload(2 * mr, 8, 70)
        cfg = {**t.default(wl, tgt).to_dict(), "algo": "packed_tile", "micro_m": mr,
               "tile_m": 2 * mr, "tile_n": 8}
        s, args = t.build(wl, tgt, cfg)
        mod = cgen.build(s, args, target=tgt, name="qdense")
        assert Q.u8s8_tile_intrin(tgt, mr).body.name + "(" in mod.c_source
        from targets import compile_c
        for cc_target in (tgt, tgt.with_cc("clang")):
            compile_c(mod.c_source, cc_target, "object", strict=True)


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_tile_kernels_run_under_qemu(target):
    """The NEON tile kernels (every MR, a K with a scalar tail) and the int8 dot kernel."""
    tgt = resolve(target)
    t = Q.QDenseTemplate()
    cases = [("packed_tile", mr) for mr in Q.tile_mrs(tgt)] + [("packed_dot", 1)]
    for algo, mr in cases:
        wl = t.workload(2 * mr + 1, 9, 70, a_dtype="int8", b_dtype="uint8", rounding="tflite",
                        per_channel=True)
        cfg = {**t.default(wl, tgt).to_dict(), "algo": algo, "micro_m": mr, "tile_m": 2 * mr,
               "tile_n": 8}
        s, args = t.build(wl, tgt, cfg)
        mod = cgen.build(s, args, target=tgt, name="qdense")
        kernel = (Q.u8s8_tile_intrin(tgt, mr) if algo == "packed_tile" else
                  dot_i8_intrin(tgt)).body.name
        assert kernel + "(" in mod.c_source
        inputs = t.inputs(wl, np.random.default_rng(mr))
        mod(*inputs)
        np.testing.assert_array_equal(inputs[-1], t.reference(wl, inputs)["Y"], err_msg=str(cfg))


@pytest.mark.isa("avx2")
def test_tile_kernel_with_one_row_is_called():
    """A tensorized loop of extent 1 (the MR=1 kernel) survives simplification."""
    t = Q.QDenseTemplate()
    wl = t.workload(1, 12, 40)
    cfg = {**t.default(wl, "x86-avx2").to_dict(), "algo": "packed_tile", "micro_m": 1}
    s, args = t.build(wl, "x86-avx2", cfg)
    mod = cgen.build(s, args, target="x86-avx2", name="qdense")
    assert Q.u8s8_tile_intrin(resolve("x86-avx2"), 1).body.name + "(" in mod.c_source
    inputs = t.inputs(wl, np.random.default_rng(0))
    mod(*inputs)
    np.testing.assert_array_equal(inputs[-1], t.reference(wl, inputs)["Y"])


def test_onnx_requantisation_prints_rintf():
    t = Q.QConv2dTemplate()
    wl = t.workload(1, 4, 5, 5, 4, 3, 3, pads=1)
    s, args = t.build(wl, "host", t.default(wl, "host"))
    assert "rintf(" in cgen.build(s, args, target="host", name="qconv2d").c_source


# ================================================================ spaces and workloads
WORKLOADS = [
    ("qconv2d", dict(N=1, C=64, H=28, W=28, F=64, KH=3, KW=3, pads=1)),
    ("qconv2d", dict(N=1, C=512, H=7, W=7, F=512, KH=3, KW=3, pads=1, w_layout="packed",
                     rounding="tflite", per_channel=True)),
    ("qconv2d", dict(N=2, C=6, H=9, W=5, F=4, KH=2, KW=3, groups=2, stride=2, dilation=(2, 1))),
    ("qdepthwise_conv2d", dict(N=1, C=32, H=112, W=112, KH=3, KW=3, pads=1)),
    ("qdepthwise_conv2d", dict(N=1, C=3, H=5, W=5, KH=3, KW=3, multiplier=2, stride=2)),
    ("qdense", dict(M=1, N=1000, K=1024, b_layout="NK")),
    ("qdense", dict(M=9, N=70, K=33, a_dtype="int8", rounding="tflite")),
]


@pytest.mark.parametrize("target", ["host", "x86-avx2", "aarch64", "armv7", "generic-c"])
@pytest.mark.parametrize("name,kw", WORKLOADS)
def test_space_is_enumerable_and_default_is_in_it(name, kw, target):
    t = TEMPLATES[name]()
    wl = t.workload(**kw)
    assert json.loads(json.dumps(wl)) == wl
    sp = t.space(wl, target)
    assert isinstance(sp, ConfigSpace) and sp.size >= 2
    d = t.default(wl, target)
    assert sp.get(d.index) == d
    for c in sp.sample(np.random.default_rng(0), 20) + [sp.get(sp.size - 1)]:
        assert sp.from_json(json.loads(json.dumps(c.to_json()))) == c
        assert sp.index_of(c.to_dict()) == c.index
    if name != "qdepthwise_conv2d" and resolve(target).isa != "none":
        assert "packed_tile" in dict(d.values).get("algo", "packed_tile")
    t.build(wl, target, d)           # builds the schedule without compiling
    assert t.flops(wl) > 0


def test_registered_in_the_template_table():
    from cgen.ops.registry import templates
    table = templates()
    for name, cls in TEMPLATES.items():
        assert isinstance(table[name], cls)


@pytest.mark.parametrize("bad", [
    dict(x_dtype="int16"), dict(rounding="nearest"), dict(groups=3), dict(KH=20),
    dict(w_layout="HWIO"), dict(y_dtype="float32")])
def test_bad_workloads_raise(bad):
    kw = dict(N=1, C=4, H=5, W=5, F=4, KH=3, KW=3)
    kw.update(bad)
    with pytest.raises((ValueError, TypeError)):
        Q.QConv2dTemplate().workload(**kw)
    with pytest.raises((ValueError, TypeError)):
        Q.QDenseTemplate().workload(0, 3, 4)


def test_measure_config_records_a_checked_time(tmp_path):
    from cgen.autotune.measure import measure_config
    t = Q.QConv2dTemplate()
    wl = t.workload(1, 8, 10, 10, 8, 3, 3, pads=1, rounding="tflite", per_channel=True)
    rec = measure_config(t, wl, "host", t.default(wl, "host"), repeat=2, min_repeat_ms=1.0)
    assert rec.ok, rec.error
    assert rec.workload == wl and len(rec.costs) == 2
