"""Instruction-count costs: kernels on bare-metal AArch64 under QEMU's icount (targets/icount.py).

The scalar baseline is an AArch64 build of the plain (unscheduled) GEMM with
`-fno-tree-vectorize` added to the kernel's compile: gcc vectorises plain
loops at -O3 otherwise, so "generic C" would already be NEON code.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.build import Module
from cgen.autotune.log import LogWriter, Record, best_records, read_log
from cgen.codegen.baremetal import harness_source
from targets import resolve
from cgen.build_baremetal import build_elf, default_inputs, icount_benchmark, uses_libm
from targets.icount import COST_UNIT, QEMU_PACKAGE, IcountRunner, ticks_per_call
from targets.runner import ToolMissing
from tests.util import assert_matches

_HAVE = shutil.which("qemu-system-aarch64") is not None and shutil.which("aarch64-linux-gnu-gcc") is not None


def qemu(f):
    return pytest.mark.qemu(pytest.mark.skipif(
        not _HAVE, reason=f"needs qemu-system-aarch64 (apt-get install {QEMU_PACKAGE}) "
                          "and gcc-aarch64-linux-gnu")(f))


def _gemm(n: int, vector: int = 0):
    A = te.placeholder((n, n), name="A")
    B = te.placeholder((n, n), name="B")
    k = te.reduce_axis((0, n), name="k")
    C = te.compute((n, n), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = te.create_schedule(C)
    if vector:
        i, j = s[C].op.axis
        jo, ji = s[C].split(j, vector)
        s[C].reorder(i, jo, k, ji)
        s[C].vectorize(ji)
    return s, [A, B, C]


def _module_with_body(body: str) -> Module:
    """An AArch64 module whose kernel is hand-written C (to crash or hang on purpose)."""
    X = te.placeholder((16,), name="X")
    Y = te.compute((16,), lambda i: X[i] * 2.0, name="Y")
    mod = cgen.build(te.create_schedule(Y), [X, Y], target="aarch64", name="bad")
    src = f"#include <stdint.h>\n{mod.prototype[:-1]}\n{{\n  (void)X; (void)Y;\n  {body}\n  return 0;\n}}\n"
    return Module(mod.func, src, mod.prototype, mod.target)


@qemu
def test_same_binary_same_ticks():
    s, args = _gemm(32)
    mod = cgen.build(s, args, target="aarch64", name="mm")
    elf = build_elf(mod)
    arrays = default_inputs(mod.func, seed=1)
    runs = [IcountRunner().run(elf, ["A", "B", "C"], arrays, mod.func.outputs, repeat=3) for _ in range(2)]
    for r in runs:
        assert r.error is None, r.error
        assert r.cost_unit == COST_UNIT and r.counter == "pmccntr"
        assert len(set(r.times)) == 1, r.times        # every repeat of one run
        assert_matches(r.outputs["C"], arrays[0] @ arrays[1])
    assert runs[0].times == runs[1].times           # two separate QEMU invocations
    assert runs[0].checksum == runs[1].checksum
    # number calls per repeat: ticks per call, within a tick of a single call
    r4 = IcountRunner().run(elf, ["A", "B", "C"], arrays, mod.func.outputs, repeat=1, number=4)
    assert abs(r4.times[0] - runs[0].times[0]) < 1.0, (r4.times, runs[0].times)


def test_ticks_per_call_prefers_the_instruction_counter():
    # cntvct (16 instructions a tick) jitters by one with phase; PMCCNTR agrees and is exact
    assert ticks_per_call([(100, 1605), (101, 1605)], 1) == ((1605 / 16,) * 2, "pmccntr")
    assert ticks_per_call([(200, 3210)], 2) == ((3210 / 32,), "pmccntr")
    assert ticks_per_call([(100, 0), (101, 0)], 1) == ((100.0, 101.0), "cntvct")      # no PMU
    assert ticks_per_call([(100, 99999)], 1) == ((100.0,), "cntvct")                  # not on icount


def _disasm_function(elf, name: str) -> str:
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.skip("aarch64-linux-gnu-objdump missing (binutils-aarch64-linux-gnu)")
    out = subprocess.run([objdump, "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^[0-9a-f]+ <{name}>:\n(.*?)(?:\n\n|\Z)", out, re.M | re.S)
    assert m, f"no {name} in the disassembly"
    return m.group(1)


@qemu
def test_neon_gemm_costs_3x_fewer_ticks_than_scalar():
    n = 32
    s, args = _gemm(n, vector=16)
    neon = cgen.build(s, args, target="aarch64", name="mm")
    assert "vfmaq_f32" in neon.c_source
    s, args = _gemm(n)
    plain = cgen.build(s, args, target="aarch64", name="mm")
    assert "arm_neon" not in plain.c_source
    scalar_flags = ("-fno-tree-vectorize",)
    assert not re.search(r"\bv\d+\.4s", _disasm_function(build_elf(plain, scalar_flags), "mm"))
    arrays = default_inputs(neon.func)
    ref = arrays[0] @ arrays[1]
    rn = icount_benchmark(neon, *[a.copy() for a in arrays], repeat=2)
    rs = icount_benchmark(plain, *[a.copy() for a in arrays], repeat=2, extra_flags=scalar_flags)
    for r in (rn, rs):
        assert r.error is None, r.error
        assert_matches(r.outputs["C"], ref)
    ratio = rs.times[0] / rn.times[0]
    print(f"GEMM {n}^3 ticks: NEON {rn.times[0]:g}, scalar {rs.times[0]:g}, ratio {ratio:.1f}")
    assert ratio >= 3.0, (rn.times, rs.times)


@qemu
def test_libm_kernel_links_and_runs():
    X = te.placeholder((64,), name="X")
    Y = te.compute((64,), lambda i: te.exp(X[i]) + te.tanh(X[i]) + te.erf(X[i]) + te.sqrt(te.abs(X[i])),
                   name="Y")
    mod = cgen.build(te.create_schedule(Y), [X, Y], target="aarch64", name="mathk")
    assert uses_libm(mod.c_source)
    r = icount_benchmark(mod, repeat=1)
    assert r.error is None, r.error
    x = default_inputs(mod.func)[0].astype(np.float64)
    ref = np.exp(x) + np.tanh(x) + np.vectorize(math.erf)(x) + np.sqrt(np.abs(x))
    assert_matches(r.outputs["Y"], ref.astype(np.float32))


@qemu
def test_crash_and_hang_come_back_as_errors():
    r = icount_benchmark(_module_with_body("__builtin_trap();"), repeat=1, timeout=20)
    assert r.error is not None and r.error.kind == "runtime_error" and r.outputs is None
    assert "brk" in r.error.msg and "in bad" in r.error.msg, r.error.msg
    r = icount_benchmark(_module_with_body("*(volatile float *)(uintptr_t)0x09fff000u = X[0];"), repeat=1)
    assert r.error.kind == "runtime_error" and "data abort" in r.error.msg, r.error.msg
    r = icount_benchmark(_module_with_body("return 7;"), repeat=1)
    assert r.error.kind == "runtime_error" and "returned 7" in r.error.msg, r.error.msg
    t0 = time.monotonic()
    r = icount_benchmark(_module_with_body('for (;;) { __asm__ volatile(""); }'), repeat=1, timeout=2)
    assert r.error.kind == "run_timeout" and time.monotonic() - t0 < 15
    r = icount_benchmark(_module_with_body("not C;"), repeat=1)
    assert r.error.kind == "compile_error"


def test_record_with_icount_ticks_roundtrips(tmp_path):
    wl = {"op": "gemm", "M": 32, "N": 32, "K": 32}
    ticks = Record(workload=wl, target="aarch64", toolchain={"cc": "aarch64-linux-gnu-gcc"},
                   config={"index": 3, "knobs": {"vector": 16}}, costs=(1601.5, 1601.5),
                   cost_unit=COST_UNIT)
    secs = Record(workload=wl, target="aarch64", toolchain={}, config={"index": 4, "knobs": {}},
                  costs=(1e-6,))
    with LogWriter(tmp_path / "log.jsonl") as w:
        w.write(ticks)
        w.write(secs)
    back = read_log(tmp_path / "log.jsonl")
    assert back[0] == ticks and back[0].cost_unit == "icount_ticks" and back[0].mean_cost == 1601.5
    assert back[1].cost_unit == "s"
    best = best_records(back, cost_unit=COST_UNIT)
    assert [r.config["index"] for r in best.values()] == [3]
    with pytest.raises(ValueError):
        Record.from_dict(dict(json.loads(ticks.to_json()), cost_unit="cycles"))


def test_missing_qemu_is_one_line_naming_the_package():
    with pytest.raises(ToolMissing) as e:
        IcountRunner(qemu="qemu-system-aarch64-not-installed").check()
    assert "\n" not in str(e.value) and "apt-get install qemu-system-arm" in str(e.value)


def test_only_aarch64_modules_and_deterministic_harness():
    s, args = _gemm(8)
    from cgen.lower.lower import lower
    from cgen.codegen.c import emit_c
    func = lower(s, args, "mm", resolve("armv7"))
    src, proto = emit_c(func)
    with pytest.raises(ValueError, match="AArch64"):
        build_elf(Module(func, src, proto, resolve("armv7")))
    assert harness_source(func, proto) == harness_source(func, proto)
    assert "hlt #0xf000" in harness_source(func, proto) and not uses_libm(src)
