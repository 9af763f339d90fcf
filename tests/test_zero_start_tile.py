"""Zero-start register tiles and per-tile epilogues of 1x1 convolutions.

Where a reduction's zero init covers exactly the elements of the tile that follows it (the
depth is one block), cgen.lower.passes.tensorize calls the intrinsic's zero-start kernel
instead: no zero pass, C never read.  A 1x1 conv whose depth is one block, read in place
(col "direct") and tiled without tails gets its epilogue per register tile
(cgen.graph.routes.gemm_epilogue_blocks), which is where that happens.  Checked: the rule,
the IR analysis that keeps the tile's workspace unfilled, a tile with a row tail whose
fallback must still zero C (x86-avx2, natively), and one-layer models on x86-avx2,
aarch64 and armv7 (QEMU) against numpy."""
from __future__ import annotations

import re

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.graph.routes import gemm_epilogue_blocks
from cgen.lower.ir import Address, Buffer, CallKernel, For, Seq, Store
from cgen.lower.written import written_before_read
from cgen.ops.conv import Conv2dGemmTemplate
from cgen.ops.conv.tile import tile_intrin
from cgen.te.expr import Const, Var
from tests.util import assert_matches, conv1x1_relu6_model

T = Conv2dGemmTemplate("conv2d_1x1", only_1x1=True)
CFG = {"mr": 6, "nr": 16, "mc": 16, "kc": 16, "nc": 448, "micro": "masked", "col": "direct",
       "order": "ji"}


def test_tile_blocks_only_where_tiles_are_whole():
    wl = T.workload(1, 16, 56, 56, 96, 1, 1)
    assert gemm_epilogue_blocks(CFG, wl, 8) == [(3, 448), (2, 6), (3, 16)]
    rows = [(3, 448), (2, 6)]           # EPILOGUE_BLOCK_BYTES / (448 * 4) rounded to mr
    for change in ({"kc": 8}, {"col": "copy"}, {"micro": "off"}, {"nr": 24}):
        assert gemm_epilogue_blocks(CFG | change, wl, 8) == rows, change
    # F not a multiple of mr, pixels not a multiple of the tile: row blocks
    assert gemm_epilogue_blocks(CFG, T.workload(1, 16, 56, 56, 100, 1, 1), 8)[:2] == rows
    assert len(gemm_epilogue_blocks(CFG | {"nc": 196}, T.workload(1, 16, 14, 14, 96, 1, 1), 8)) == 2


def test_a_zero_start_call_counts_as_the_writer_of_its_tile():
    y = Buffer("Y", "float32", (96,), "local")
    a = Buffer("A", "float32", (96,), "global")
    i = Var("i", "int64")
    zero = For(i, Const(0, "int64"), Const(96, "int64"), "serial",
               Store(y, i, Const(0.0, "float32")))
    call = CallKernel("cg_tile_z", (Address(a, Const(0, "int64")), Address(y, Const(0, "int64"))),
                      zero)
    assert written_before_read(y, Seq((call,)))
    # the same call reads A: it is no writer of A
    assert not written_before_read(a, Seq((call,)))
    # without the stores it stands for, a call is an unknown reader
    assert not written_before_read(y, CallKernel("cg_tile", call.args))


@pytest.mark.isa("avx2")
def test_a_row_tail_falls_back_with_its_zero_init_x86_avx2():
    """10 rows in 6-row tiles: the full tile starts from zero in the kernel, the 4-row tail
    runs the scalar nest after the zero init; C starts as NaN, so a read of it shows."""
    M, N, K = 10, 16, 7
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = te.create_schedule(C)
    i, j = C.op.axis
    io, ii = s[C].split(i, factor=6)
    s[C].reorder(io, k, ii, j)
    s[C].vectorize(j)
    s[C].tensorize(k, tile_intrin("x86-avx2", 6, 16, masked=True))
    mod = cgen.build(s, [A, B, C], target="x86-avx2", name="zs_tail")
    assert re.search(r"cg_tile_6x16m_avx2_z\(", mod.c_source)
    rng = np.random.default_rng(2)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    c = np.full((M, N), np.nan, np.float32)
    mod(a, b, c)
    assert_matches(c, (a.astype(np.float64) @ b).astype(np.float32))


@pytest.mark.parametrize("target", [
    pytest.param("x86-avx2", marks=pytest.mark.isa("avx2")),
    pytest.param("aarch64", marks=pytest.mark.qemu),
    pytest.param("armv7", marks=pytest.mark.qemu)])
def test_model_1x1_relu6_per_tile(target):
    """The conv's default has one depth block and whole tiles: its epilogue runs per tile on
    a zero-start tile (no zero fill of the workspace), and the output matches numpy."""
    pytest.importorskip("onnx")
    from cgen.graph.model import compile_model
    model, ref = conv1x1_relu6_model(16, 24, 16)
    cm = compile_model(model, target, name="zs")
    conv = [k for k in cm.kernels if k.template == "conv2d_1x1"]
    assert len(conv) == 1
    src = cm.c_source
    assert re.search(r"cg_tile_\w+_z\(", src), "the tile does not start from zero"
    assert not re.search(r"float Y\[\d+\] = \{0\}", src)
    x = np.random.default_rng(1).standard_normal((1, 16, 16, 16)).astype(np.float32)
    assert_matches(cm.run({"x": x})["y"], ref(x))
