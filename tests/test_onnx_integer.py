"""MatMulInteger, ConvInteger, BitShift and the Bitwise ops beyond the ONNX backend node
cases: exact int32 results with zero points per tensor, per row and per channel, sums
too long for float32, constant weights as exporters write them; and a MatMul of a dtype
cgen does not compile refused by `cgen compile` in one line."""
from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from cgen.graph import ModelError
from cgen.graph.model import compile_model
from cgen.graph.onnx_frontend import load_onnx

TT = {np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8, np.int32: TensorProto.INT32,
      np.int64: TensorProto.INT64}


def _graph_model(nodes, ins, outs, inits=(), opset=13):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, t, s) for n, t, s in ins],
                     [h.make_tensor_value_info(n, t, s) for n, t, s in outs], list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def _centred(x, z):
    return x.astype(np.int64) - z.astype(np.int64)


@pytest.mark.parametrize("adt,bdt", [(np.uint8, np.int8), (np.int8, np.uint8)])
def test_matmul_integer_is_exact_with_per_row_and_per_column_zero_points_on_x86_avx2(adt, bdt):
    """K = 600: sums past 2^24, which float32 would round."""
    rng = np.random.default_rng(0)
    M, K, N = 5, 600, 7
    info_a, info_b = np.iinfo(adt), np.iinfo(bdt)
    a = rng.integers(info_a.min, info_a.max, (2, M, K), endpoint=True).astype(adt)
    b = rng.integers(info_b.min, info_b.max, (K, N), endpoint=True).astype(bdt)
    za = rng.integers(info_a.min, info_a.max, (M,)).astype(adt)
    zb = rng.integers(info_b.min, info_b.max, (N,)).astype(bdt)
    a[:, 0, :], b[:, 0], za[0], zb[0] = info_a.max, info_b.max, info_a.min, info_b.min
    model = _graph_model([h.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])],
                         [("a", TT[adt], a.shape)], [("y", TensorProto.INT32, (2, M, N))],
                         [nh.from_array(b, "b"), nh.from_array(za, "za"), nh.from_array(zb, "zb")])
    want = np.matmul(_centred(a, za.reshape(M, 1)), _centred(b, zb))
    assert np.abs(want).max() > 2 ** 24
    got = compile_model(model, "x86-avx2").run({"a": a})["y"]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_conv_integer_groups_strides_and_channel_zero_points_on_x86_avx2():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (1, 4, 9, 8), endpoint=True).astype(np.uint8)
    w = rng.integers(-128, 127, (6, 2, 3, 3), endpoint=True).astype(np.int8)
    zx = np.array(117, np.uint8)
    zw = rng.integers(-5, 5, (6,)).astype(np.int8)
    node = h.make_node("ConvInteger", ["x", "w", "zx", "zw"], ["y"], group=2, strides=[2, 1],
                       pads=[1, 0, 1, 2], dilations=[1, 2])
    model = _graph_model([node], [("x", TensorProto.UINT8, x.shape)],
                         [("y", TensorProto.INT32, (1, 6, 5, 6))],
                         [nh.from_array(w, "w"), nh.from_array(zx, "zx"), nh.from_array(zw, "zw")])
    xc = np.pad(_centred(x, zx), ((0, 0), (0, 0), (1, 1), (0, 2)))
    wc = _centred(w, zw.reshape(6, 1, 1, 1))
    want = np.zeros((1, 6, 5, 6), np.int64)
    for f in range(6):
        g = f // 3
        for oy in range(5):
            for ox in range(6):
                patch = xc[0, 2 * g:2 * g + 2, 2 * oy:2 * oy + 3, ox:ox + 5:2]
                want[0, f, oy, ox] = (patch * wc[f]).sum()
    got = compile_model(model, "x86-avx2").run({"x": x})["y"]
    np.testing.assert_array_equal(got, want)


def test_bit_ops_on_x86_avx2():
    """Every bit op over int32 in one model: shifts by counts in and out of range."""
    x = np.array([-8, -1, 5, 2 ** 30, -2 ** 31, 7, 3, 1], np.int32)
    y = np.array([1, 31, 32, -1, 1, 0, 2, 33], np.int32)
    ops = [("BitShift", {"direction": "LEFT"}), ("BitShift", {"direction": "RIGHT"}),
           ("BitwiseAnd", {}), ("BitwiseOr", {}), ("BitwiseXor", {})]
    nodes = [h.make_node(op, ["x", "y"], [f"o{k}"], **kw) for k, (op, kw) in enumerate(ops)]
    nodes.append(h.make_node("BitwiseNot", ["x"], ["o5"]))
    model = _graph_model(nodes, [("x", TensorProto.INT32, (8,)), ("y", TensorProto.INT32, (8,))],
                         [(f"o{k}", TensorProto.INT32, (8,)) for k in range(6)], opset=18)
    got = compile_model(model, "x86-avx2").run({"x": x, "y": y})
    ok = (y >= 0) & (y < 32)
    shl = np.where(ok, (x.astype(np.int64) << np.clip(y, 0, 31)).astype(np.uint32).view(np.int32), 0)
    shr = np.where(ok, x >> np.clip(y, 0, 31), np.where(x < 0, -1, 0))
    for k, want in enumerate([shl, shr, x & y, x | y, x ^ y, ~x]):
        np.testing.assert_array_equal(got[f"o{k}"], want.astype(np.int32), err_msg=str(k))


def test_bit_ops_refuse_float_in_one_line():
    model = _graph_model([h.make_node("BitwiseAnd", ["x", "y"], ["z"])],
                         [("x", TensorProto.FLOAT, (2,)), ("y", TensorProto.FLOAT, (2,))],
                         [("z", TensorProto.FLOAT, (2,))], opset=18)
    # the onnx checker refuses a float BitwiseAnd already; any refusal must be one line
    with pytest.raises(ModelError) as e:
        load_onnx(model)
    assert "\n" not in str(e.value)


def _cgen() -> list:
    script = Path(sys.executable).with_name("cgen")
    return [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from cgen.cli import main; sys.exit(main())"]


def test_integer_matmul_is_refused_by_cgen_compile_in_one_line(tmp_path):
    dtype = TensorProto.INT32
    model = _graph_model([h.make_node("MatMul", ["a", "b"], ["y"])],
                         [("a", dtype, (4, 8)), ("b", dtype, (8, 3))], [("y", dtype, (4, 3))])
    onnx.save(model, str(tmp_path / "m.onnx"))
    out = tmp_path / "out"
    proc = subprocess.run(_cgen() + ["compile", str(tmp_path / "m.onnx"), "--target", "x86-avx2",
                                     "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "(MatMul): matmul takes float32, got int" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
