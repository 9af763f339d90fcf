"""The micro-kernel generator on every ISA row: each (kernel family x row) is generated,
compiled for the row's target, run (natively, or under QEMU for NEON) against numpy,
and disassembled for the FMA instructions the row promises.  A new row of
cgen.codegen.isa.ROWS must name its target here, or test_every_row_has_a_target fails."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from cgen import te
from cgen.codegen import isa as I
from cgen.tensorize.kernels import gemm_intrin, tile_definition
from cgen.tensorize.microkernel import (NOINLINE, blis_kernel, blis_rows, tile_dispatch, tile_kernel,
                                       tile_mask_type)
from targets import compile_c, resolve
from tests.util import assert_matches, conv_clip_model, external_kernel

# row -> (target that runs its code, objdump, regex of its FMA instruction)
ROW_TARGET = {
    "avx2": ("x86-avx2", "objdump", r"vfmadd\d+ps\s+\S*%ymm"),
    "avx512": ("x86-avx512", "objdump", r"vfmadd\d+ps\s+\S*%zmm"),
    "neon-aarch64": ("aarch64", "aarch64-linux-gnu-objdump", r"\bfmla\s+v\d+\.4s"),
    "neon-armv7": ("armv7", "arm-linux-gnueabihf-objdump", r"\bv(fma|mla)\.f32\s+q\d+"),
    # objdump decodes MVE's FMA by a scalar only when told the architecture
    "mve": ("cortex-m55", "arm-none-eabi-objdump -m armv8.1-m.main", r"\bvfma\.f32\s+q\d+"),
    "scalar": ("generic-c", "objdump", None),
}
ROWS = {r.name: r for r in I.ROWS}


def _param(row):
    marks = [pytest.mark.isa("avx512")] if row == "avx512" else \
        [pytest.mark.isa("avx2")] if row == "avx2" else []
    return pytest.param(row, marks=marks, id=row)


def test_every_row_has_a_target():
    assert set(ROWS) == set(ROW_TARGET)


@pytest.mark.parametrize("row", list(ROW_TARGET))
def test_row_agrees_with_its_target(row):
    """targets/ cannot import the table, so Target keeps its own register and lane
    counts: they must be the row's (the SCALAR row's 32 are a Cortex-M4's s registers)."""
    isa, tgt = ROWS[row], resolve(ROW_TARGET[row][0])
    assert I.kernel_isa(tgt) is isa
    assert tgt.lanes("float32") == isa.lanes
    assert tgt.vector_registers == (0 if isa.scalar else isa.vregs)


# kernel family -> (source maker(name, isa, MR, NR), rows of A contiguous, rows fixed, cols fixed)
def _families(isa):
    out = {
        "tile": (lambda n, MR, NR: tile_kernel(n, isa, MR, NR), False, True, True),
        "tile_pf": (lambda n, MR, NR: tile_kernel(n, isa, MR, NR, prefetch=3), False, True, True),
        "rows": (lambda n, MR, NR: tile_dispatch(n, isa, MR, NR, prefetch=2, rows=True),
                 False, False, True),
        "blis": (lambda n, MR, NR: blis_kernel(n, isa, MR, NR, unroll=2, prefetch=4, a_unit=False),
                 False, True, True),
        "blis_packed": (lambda n, MR, NR: blis_kernel(n, isa, MR, NR, unroll=3, a_unit=True),
                        True, True, True),
        # A read in place by the GEMM template: k contiguous, no a_sk parameter
        "blis_k1": (lambda n, MR, NR: blis_kernel(n, isa, MR, NR, unroll=2, prefetch=4, a_unit=False,
                                                  a_k_unit=True), False, True, True),
        "blis_rows": (lambda n, MR, NR: blis_rows(n, isa, MR, NR, unroll=2, prefetch=4, a_unit=False,
                                                  a_k_unit=True), False, False, True),
    }
    if isa.lane_fma:
        out["lanes"] = (lambda n, MR, NR: tile_kernel(n, isa, MR, NR, a_read="lanes"), True, True, True)
    if tile_mask_type(isa) is not None:     # native masks, or AVX2's vector masks
        out["masked"] = (lambda n, MR, NR: tile_dispatch(n, isa, MR, NR, masked=True, rows=True),
                         False, False, False)
    return out


def _shapes(isa, family):
    W = isa.lanes
    if family == "lanes":
        return [(W, W), (2 * W, 2 * W)]
    # two rows at least: a unit-extent row loop is simplified away before it could match
    return [(2, W), (3, 2 * W), (isa.gemm_tile[0], isa.gemm_tile[1])]


def _cases():
    """(row, family, shape) cases; the quick tier runs the last shape of each (the row's
    own GEMM tile, or the widest lane tile), the others are slow."""
    out = []
    for r in ROW_TARGET:
        for f in _families(ROWS[r]):
            shapes = _shapes(ROWS[r], f)
            for n, (MR, NR) in enumerate(shapes):
                marks = list(_param(r).marks) + ([pytest.mark.slow] if n < len(shapes) - 1 else [])
                out.append(pytest.param(r, f, MR, NR, marks=marks, id=f"{r}-{f}-{MR}x{NR}"))
    return out


def _gemm(intr, MR, NR, a_unit, M, N, K):
    """C = A @ B with the tile tensorized at k; A stored (K, M) when the tile needs its
    rows contiguous."""
    A = te.placeholder((K, M) if a_unit else (M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum((A[k, i] if a_unit else A[i, k]) * B[k, j], axis=k),
                   name="C")
    s = te.create_schedule(C)
    i, j = s[C].op.axis
    io, ii = s[C].split(i, factor=MR)
    jo, ji = s[C].split(j, factor=NR)
    s[C].reorder(io, jo, k, ii, ji)
    s[C].tensorize(k, intr)
    return s, [A, B, C]


@pytest.mark.parametrize("row,family,MR,NR", _cases())
def test_generated_tiles_match_numpy(kbuild, row, family, MR, NR):
    isa = ROWS[row]
    target = ROW_TARGET[row][0]
    make, a_unit, fixed_rows, fixed_cols = _families(isa)[family]
    rng = np.random.default_rng(7)
    name = f"cg_t_{family}_{MR}x{NR}"
    intr = tile_definition(name, make(name, MR, NR), MR, NR, fixed_rows, fixed_cols, a_unit,
                           a_k_unit=family in ("blis_k1", "blis_rows"))
    # whole tiles unless the kernel takes the counts (then a row / column tail too);
    # K = 23 leaves an unrolled kernel's remainder steps
    M = 2 * MR + (0 if fixed_rows else MR - 1 if MR > 1 else 0)
    N = 2 * NR + (0 if fixed_cols else NR // 2 + 1)
    K = 23
    s, args = _gemm(intr, MR, NR, a_unit, M, N, K)
    mod = kbuild(s, args, target=target, name=f"mk_{family}")
    assert name + "(" in mod.c_source
    a = rng.standard_normal((K, M) if a_unit else (M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    c = np.full((M, N), np.nan, np.float32)
    mod(a, b, c)
    ref = (a.T if a_unit else a).astype(np.float64) @ b
    assert_matches(c, ref.astype(np.float32))


@pytest.mark.parametrize("row", [r for r in ROW_TARGET if ROW_TARGET[r][2]])
@pytest.mark.parametrize("family", ["tile", "blis", "lanes"])
def test_fma_instructions_in_the_object(row, family):
    """The FMA of the row in the disassembly: at least one per accumulator vector."""
    isa = ROWS[row]
    target, objdump, fma = ROW_TARGET[row]
    if family not in _families(isa):
        pytest.skip(f"{row} has no {family} tile")
    objdump, *flags = objdump.split()
    if shutil.which(objdump) is None or shutil.which(resolve(target).cc) is None:
        pytest.skip(f"{objdump} or {resolve(target).cc} not installed")
    MR, NR = isa.gemm_tile[:2]
    src = _families(isa)[family][0]("cg_ukernel", MR, NR)
    obj = compile_c(f"#include <stdint.h>\n#include <{isa.header}>\n"
                    + external_kernel(src), resolve(target), "object",
                    name="ukernel")
    text = subprocess.run([objdump, "-d", *flags, str(obj)], capture_output=True, text=True,
                          check=True).stdout
    assert len(re.findall(fma, text)) >= MR * NR // isa.lanes


def test_scalar_tile_on_cortex_m4_uses_the_fpu():
    """The plain-C register tile compiles for the Cortex-M4 (FPv4-SP): fused multiply-adds
    on s registers, no calls (no soft-float)."""
    tgt = resolve("cortex-m4")
    if shutil.which(tgt.cc) is None or shutil.which("arm-none-eabi-objdump") is None:
        pytest.skip(f"{tgt.cc} not installed")
    intr = gemm_intrin(tgt)
    assert intr.name == "cg_gemm_4x4_scalar"
    src = "#include <stdint.h>\n" + external_kernel(intr.body.source)
    obj = compile_c(src, tgt, "object", name="ukernel")
    text = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True, text=True,
                          check=True).stdout
    assert len(re.findall(r"\bv(fma|mla)\.f32\s+s\d+", text)) >= 16
    assert not re.search(r"\bbl\s", text)


def test_scalar_tile_is_plain_c():
    src = gemm_intrin(resolve("generic-c")).body.source
    assert "float c3_3 = C[" in src and "#include" not in src
    assert not re.search(r"_mm|vld1|vfma|__m\d|float32x", src)


def test_the_generator_refuses_what_a_row_lacks():
    with pytest.raises(ValueError, match="lane masks"):
        tile_dispatch("k", I.NEON_AARCH64, 2, 8, masked=True)
    with pytest.raises(ValueError, match="by-lane FMA"):
        tile_kernel("k", I.AVX512, 4, 32, a_read="lanes")
    with pytest.raises(ValueError, match="whole"):
        tile_kernel("k", I.NEON_AARCH64, 4, 6)
    with pytest.raises(ValueError, match="unroll"):
        blis_kernel("k", I.SCALAR, 4, 4, unroll=0)


def test_kernels_are_printed_by_the_one_printer():
    """Printing the parsed kernel again gives the same text: it is the printer's output."""
    from pycparser import c_parser
    from cgen.codegen.c import print_c
    src = tile_dispatch("cg_k", I.AVX512, 2, 32, prefetch=2, masked=True, rows=True)
    types = "typedef long int64_t; typedef int __m512; typedef int __mmask16;\n"
    ast = c_parser.CParser().parse(types + src.replace(NOINLINE, ""))
    again = "\n".join(print_c(e).rstrip("\n") for e in ast.ext[3:])
    assert again.replace("inline static", "static inline") == src.replace(NOINLINE, "")
    assert "static void cg_k_r2v1(" in src


def test_register_tiles_stay_out_of_line_and_unspilled():
    """Every leaf register tile is kept out of line (NOINLINE); the dispatch that picks
    one is not.  Inlined into MobileNetV2's 160 -> 960 1x1 conv, GCC kept two of a 6x16
    AVX2 tile's accumulators on the stack (a load and a store per k step, 2x slower):
    the conv, built for x86-avx2 with its fused clip, has the tile as a function of its
    own, and no FMA of that tile reads the stack."""
    src = tile_dispatch("cg_k", I.AVX2, 6, 16, masked=True)
    leaves = re.findall(r"static void (cg_k_r\d+v?\d*)\(", src)
    assert len(leaves) == 3 and all(f"{NOINLINE}static void {n}(" in src for n in leaves)
    assert "static inline void cg_k(" in src and f"{NOINLINE}static inline" not in src
    pytest.importorskip("onnx")
    from cgen.graph.model import compile_model
    cm = compile_model(conv_clip_model(160, 960, 7, 1, 7), "x86-avx2")
    tile = "cg_tile_6x16m_avx2_r6"
    assert f"{tile}(" in cm.source.source, "the default tile of this conv changed: pick another"
    obj = compile_c(cm.source.source, resolve("x86-avx2"), "object", name="conv960")
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(obj)], capture_output=True,
                          text=True, check=True).stdout
    # gcc may specialise the static tile for its constant strides (tile.constprop.0)
    start = re.search(rf"<{tile}(\.\w+\.\d+)?>:", text)
    assert start, f"{tile} was inlined"
    body = text[start.start():]
    body = body[:body.index("\n\n")]
    fmas = re.findall(r"vfmadd\d+ps\s+(\S+)", body)
    assert len(fmas) >= 12 and not [f for f in fmas if "(%rsp)" in f or "(%rbp)" in f], body


@pytest.mark.parametrize("row", ["avx2", "neon-aarch64", "mve"])
def test_narrow_tail_tiles_split_k_among_accumulator_sets(row):
    """A tile variant with fewer accumulators than FMA_LATENCY_SETS (a one-vector column
    tail of a 5-row tile: 5 chains, one FMA latency per k step) splits k among sets of
    accumulators within the row's registers; the full tile keeps one set.  Values:
    test_generated_tiles_match_numpy (K = 23 leaves a remainder step)."""
    from cgen.tensorize.microkernel import FMA_LATENCY_SETS
    isa = ROWS[row]
    masked = tile_mask_type(isa) is not None
    src = tile_dispatch("t", isa, 5 if row != "mve" else 3, 2 * isa.lanes, masked=masked,
                        rows=True)
    kernels = dict(re.findall(r"void (t_r\d+v\d+)\((.*?)\n}\n", src, re.S))
    narrow, full = kernels[min(kernels)], kernels[max(kernels)]     # 1 row; all rows
    sets = 1 + len(set(re.findall(r"\bs(\d+)_0_0\b", narrow)))
    assert sets > 1 and f"k += {sets}" in narrow
    assert sets * 1 <= FMA_LATENCY_SETS and sets + 3 <= isa.vregs
    assert "s1_" not in full and "k += " not in full
