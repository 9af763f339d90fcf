"""simd_op_check in Halide's spirit: the expected intrinsics in the C and the
expected instructions in the object code, per ISA."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.ops.gemm import GemmConfig, packed_gemm
from cgen.tensorize import gemm_intrin
from targets import compile_c, resolve
from tests.util import assert_matches, external_kernel

OBJDUMP = {"aarch64": "aarch64-linux-gnu-objdump", "armv7": "arm-linux-gnueabihf-objdump",
           "x86_64": "objdump"}
CASES = {
    # target: (intrinsics in the C, regex of instructions in the object)
    "aarch64": (("vld1q_f32", "vfmaq_f32", "vst1q_f32"), r"\bfmla\s+v\d+\.4s"),
    "armv7": (("vld1q_f32", "vfmaq_f32"), r"\bv(fma|mla)\.f32\s+q\d+"),
    "x86-avx2": (("_mm256_loadu_ps", "_mm256_fmadd_ps"), r"vfmadd\d+ps\s+\S*%ymm"),
    "x86-avx512": (("_mm512_loadu_ps", "_mm512_fmadd_ps", "_mm512_mask_storeu_ps"), r"vfmadd\d+ps\s+\S*%zmm"),
}


def _disasm(path, target) -> str:
    tool = OBJDUMP[resolve(target).arch]
    return subprocess.run([tool, "-d", str(path)], capture_output=True, text=True, check=True).stdout


def _axpy_matmul(M, N, K):
    A = te.placeholder((M, K), name="A")
    B = te.placeholder((K, N), name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = te.create_schedule(C)
    i, j = s[C].op.axis
    jo, ji = s[C].split(j, 32)
    s[C].reorder(i, jo, k, ji)
    s[C].vectorize(ji)
    return s, [A, B, C]


@pytest.mark.parametrize("target", sorted(CASES))
def test_vectorized_loop_uses_intrinsics(target):
    intrinsics, insn = CASES[target]
    s, args = _axpy_matmul(5, 37, 3)  # 37 columns: full vectors and a tail
    mod = cgen.build(s, args, target=target, name="mm")
    for name in intrinsics:
        assert name in mod.c_source, name
    obj = compile_c(mod.c_source, resolve(target), "object", name="mm")
    assert re.search(insn, _disasm(obj, target)), f"no {insn} in {target} object"


def test_generic_c_has_no_intrinsics():
    s, args = _axpy_matmul(5, 37, 3)
    mod = cgen.build(s, args, target="generic-c", name="mm")
    assert "intrin" not in mod.c_source and "arm_neon" not in mod.c_source
    assert "_mm" not in mod.c_source and "vld1q" not in mod.c_source


def _kernel_object(target):
    """The target's GEMM micro-kernel compiled on its own, as an external function."""
    tgt = resolve(target)
    intr = gemm_intrin(tgt)
    header = "#include <stdint.h>\n#include <arm_neon.h>\n" if tgt.isa == "neon" else \
        "#include <stdint.h>\n#include <immintrin.h>\n"
    src = header + external_kernel(intr.body.source)
    return intr, compile_c(src, tgt, "object", name="ukernel")


@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_neon_micro_kernel_is_fma_without_scalar_loads(target):
    intr, obj = _kernel_object(target)
    text = _disasm(obj, target)
    body = text[text.index(f"<{intr.body.name}>:"):]
    lines = [l for l in body.splitlines()[1:] if "\t" in l]
    if target == "aarch64":
        assert sum("fmla" in l for l in lines) >= 16
        scalar = [l for l in lines if re.search(r"\bldr\s+[sd]\d", l) or re.search(r"\bld1r\b", l)]
    else:
        assert sum(re.search(r"\bv(mla|fma)\.f32\s+q", l) is not None for l in lines) >= 8
        scalar = [l for l in lines if re.search(r"\bvldr\b|\bvld1\.32\s+\{d\d+\[", l)]
    assert not scalar, scalar


@pytest.mark.parametrize("target", ["x86-avx512", "x86-avx2"])
def test_x86_micro_kernel_fma_registers(target):
    intr, obj = _kernel_object(target)
    text = _disasm(obj, target)
    reg = "zmm" if resolve(target).isa == "avx512" else "ymm"
    assert len(re.findall(rf"vfmadd\d+ps\s+\S*%{reg}", text)) >= 12


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_tensorized_gemm_under_qemu(target):
    M, N, K = 67, 45, 38
    s, args = packed_gemm(M, N, K, target, GemmConfig(MC=32, NC=32, KC=16))
    mod = cgen.build(s, args, target=target, name="gemm")
    assert gemm_intrin(resolve(target)).body.name in mod.c_source
    rng = np.random.default_rng(3)
    a = rng.random((M, K), dtype=np.float32)
    b = rng.random((K, N), dtype=np.float32)
    c = np.zeros((M, N), np.float32)
    mod(a, b, c)
    assert_matches(c, a @ b)


def test_openmp_only_when_parallel():
    s, args = packed_gemm(64, 64, 64, "host", GemmConfig(MC=24, NC=32, KC=32, parallel=True))
    mod = cgen.build(s, args, target="host", name="gemm")
    assert "#pragma omp parallel for" in mod.c_source and "-fopenmp" in mod.extra_flags
    a = np.random.default_rng(4).random((64, 64), dtype=np.float32)
    c = np.zeros((64, 64), np.float32)
    mod(a, a, c)
    assert_matches(c, a @ a)
    s, args = packed_gemm(64, 64, 64, "host", GemmConfig(MC=24, NC=32, KC=32))
    mod = cgen.build(s, args, target="host", name="gemm")
    assert "omp" not in mod.c_source and mod.extra_flags == ()


def test_parallel_never_on_bare_metal():
    from dataclasses import replace
    from cgen.codegen.c import emit_c
    from cgen.lower.lower import lower
    from cgen.codegen.isa import isa_for
    tgt = replace(resolve("generic-c"), name="bare", bare_metal=True, threads=False)
    s, args = _axpy_matmul(8, 8, 8)
    i = s[args[2]].leaf_axes[0]
    s[args[2]].parallel(i)
    func = lower(s, args, "mm", tgt)
    src, _ = emit_c(func, isa_for(tgt), (), openmp=tgt.threads and not tgt.bare_metal)
    assert "omp" not in src


@pytest.mark.qemu
def test_threaded_cross_build_runs():
    s, args = packed_gemm(40, 48, 24, "aarch64", GemmConfig(MC=16, NC=16, KC=8, parallel=True))
    mod = cgen.build(s, args, target="aarch64", name="gemm")
    assert "#pragma omp parallel for" in mod.c_source
    rng = np.random.default_rng(5)
    a = rng.random((40, 24), dtype=np.float32)
    b = rng.random((24, 48), dtype=np.float32)
    c = np.zeros((40, 48), np.float32)
    mod(a, b, c)
    assert_matches(c, a @ b)


def test_prefetch_emits_builtin():
    s, args = _axpy_matmul(16, 64, 32)
    C = args[2]
    k = s[C].op.reduce_axis[0]
    s[C].prefetch(args[1], k, 4)
    mod = cgen.build(s, args, target="host", name="mm")
    assert "__builtin_prefetch" in mod.c_source
    rng = np.random.default_rng(6)
    a = rng.random((16, 32), dtype=np.float32)
    b = rng.random((32, 64), dtype=np.float32)
    c = np.zeros((16, 64), np.float32)
    mod(a, b, c)
    assert_matches(c, a @ b)
