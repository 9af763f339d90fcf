"""The int8 micro-kernels (cgen.tensorize.int8_microkernel) for every way of every ISA row
(cgen.codegen.isa: Int8Ops): the u8 x s8 register tile at each MR and the s8 dot.

Per way, on a named target that enables it: the way's intrinsic in the C, its instruction
in the object code (gcc), a strict compile with gcc and clang, and a run (natively, or
under QEMU user mode with the CPU the way needs) against the exact integer numpy
reference, with extreme operands (255 x -128) and reductions with and without a tail.
A row added to isa.py fails `test_every_way_has_a_test_target` until it is listed here.
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from typing import NamedTuple

import numpy as np
import pytest

import cgen
from cgen.codegen import isa as ISA
from cgen.ops import quant as Q
from cgen.tensorize import TensorizeError, int8_microkernel as I8
from targets import compile_c, resolve
from targets.runner import Runner
from targets.target import _cpu_flags, cannot_run
from tests.util import extreme_operands, skip_without_system_qemu


class Way(NamedTuple):
    target: str             # a built-in target whose flags enable the way
    extra_cflags: tuple     # flags beyond the target's
    qemu_cpu: str           # QEMU user-mode -cpu for ARM ("" : run natively)
    intrinsic: str          # in the C of the tile
    instruction: str        # in the object code (gcc)
    cpu_flag: str = ""      # /proc/cpuinfo flag this machine needs to run it natively


WAYS = {
    "avx512-vnni": Way("x86-avx512", ("-mavx512vnni",), "", "_mm512_dpbusd_epi32", "vpdpbusd",
                       "avx512_vnni"),
    "avx512": Way("x86-avx512", (), "", "_mm512_madd_epi16", "vpmaddwd"),
    "avx2": Way("x86-avx2", (), "", "_mm256_madd_epi16", "vpmaddwd"),
    "neon-aarch64": Way("aarch64", (), "cortex-a53", "vmlal_high_s16", "smlal2"),
    "neon-armv7": Way("armv7", (), "cortex-a7", "vmlal_s16", "vmlal.s16"),
    "neon-dotprod": Way("rpi5", (), "cortex-a76", "vdotq_s32", "sdot"),
    # bare metal: run by the module's own runner (qemu-system-arm, semihosting)
    "arm-dsp": Way("cortex-m4", (), "", "__smlad", "smlad"),
    "c99": Way("generic-c", (), "", "cg_qtile_u8s8_", "imul"),
    "mve": Way("cortex-m55", (), "", "vmladavaq_s8", "vmlava.s8"),
}
OBJDUMP = {"x86_64": "objdump", "aarch64": "aarch64-linux-gnu-objdump",
           "armv7": "arm-linux-gnueabihf-objdump", "armv7e-m": "arm-none-eabi-objdump",
           "armv8m": "arm-none-eabi-objdump"}
# objdump decodes MVE only when told the architecture (the object's attributes do not)
OBJDUMP_FLAGS = {"armv8m": ("-m", "armv8.1-m.main")}
QEMU = {"aarch64": "qemu-aarch64", "armv7": "qemu-arm"}


def _all_ways():
    return [(row.name, w.name) for row in ISA.ROWS for w in row.int8]


def _target(way: Way):
    tgt = resolve(way.target)
    return dataclasses.replace(tgt, cflags=tgt.cflags + way.extra_cflags) if way.extra_cflags else tgt


def _way_row(name):
    return next(w for row in ISA.ROWS for w in row.int8 if w.name == name)


def test_every_way_has_a_test_target():
    """Adding an ISA is one row plus its test target here."""
    assert _all_ways(), "no ISA row has int8 ways"
    missing = [w for _, w in _all_ways() if w not in WAYS]
    assert not missing, f"int8 ways without a test target in WAYS: {missing}"


@pytest.mark.parametrize("name", sorted(WAYS))
def test_way_is_the_targets(name):
    """The way's target picks a row holding the way, and the last way of a row needs no guard."""
    row = ISA.kernel_isa(_target(WAYS[name]))
    assert name in [w.name for w in row.int8]
    assert row.int8[-1].guard_macro == ""
    assert all(w.guard_macro for w in row.int8[:-1])


def test_no_int8_kernel_without_a_row():
    """A target whose ISA has no row gets no int8 kernel, in one clear error."""
    odd = dataclasses.replace(resolve("aarch64"), isa="sve")
    assert I8.tile_mrs(odd) == () and I8.tile_shape(odd) is None
    with pytest.raises(TensorizeError, match="no u8 x s8 tile kernel"):
        I8.u8s8_tile_intrin(odd)
    with pytest.raises(TensorizeError, match="no int8 dot micro-kernel"):
        I8.dot_i8_intrin(odd)


def _skip_unless_runnable(way: Way):
    tgt = _target(way)
    if tgt.bare_metal:
        skip_without_system_qemu(tgt)
    elif way.qemu_cpu:
        if shutil.which(QEMU[tgt.arch]) is None:
            pytest.skip(f"{QEMU[tgt.arch]} missing (qemu-user)")
    else:
        why = cannot_run(tgt)
        if why is None and way.cpu_flag and way.cpu_flag not in _cpu_flags():
            why = f"this CPU lacks {way.cpu_flag}"
        if why:
            pytest.skip(f"{way.target}: {why}")


def _run(mod, way: Way, arrays, cpu: str | None = None):
    """Call mod on arrays: natively (in-process), or under QEMU with the way's CPU."""
    if not way.qemu_cpu:
        mod(*arrays)
        return None
    runner = Runner(f"qemu-{cpu or way.qemu_cpu}", (QEMU[mod.target.arch], "-cpu", cpu or way.qemu_cpu),
                    "qemu-user", True)
    res = runner.run(mod.executable(), [p.name for p in mod.func.params], arrays, mod.func.outputs)
    if res.error is not None:
        return res.error
    for p, a in zip(mod.func.params, arrays):
        if p.name in res.outputs:
            a[...] = res.outputs[p.name]
    return None


def _dense(way: Way, algo: str, mr: int, K: int):
    tgt = _target(way)
    t = Q.QDenseTemplate()
    wl = t.workload(2 * mr + 1, 9, K, rounding="tflite", per_channel=True)
    cfg = {**t.default(wl, tgt).to_dict(), "algo": algo, "micro_m": mr, "tile_m": 2 * mr, "tile_n": 8}
    s, args = t.build(wl, tgt, cfg)
    return t, wl, cgen.build(s, args, target=tgt, name="qdense", load=False)


def _conv(way: Way, mr: int):
    """im2col at root: the tile's C has unit pixel stride (the vector add-store path)."""
    tgt = _target(way)
    t = Q.QConv2dTemplate()
    wl = t.workload(1, 24, 6, 6, 8, 3, 3, pads=1)
    cfg = {**t.default(wl, tgt).to_dict(), "algo": "packed_tile", "col_at": "root", "micro_x": mr,
           "tile_f": 8}
    s, args = t.build(wl, tgt, cfg)
    return t, wl, cgen.build(s, args, target=tgt, name="qconv", load=False)


def _check(t, wl, mod, way, seed):
    rng = np.random.default_rng(seed)
    inputs = extreme_operands(t.inputs(wl, rng), rng)
    err = _run(mod, way, inputs)
    assert err is None, f"{mod.target.name}: {err}"
    np.testing.assert_array_equal(inputs[-1], t.reference(wl, inputs)["Y"])


def _objdump(obj, arch) -> str:
    tool = shutil.which(OBJDUMP[arch])
    if tool is None:
        pytest.skip(f"{OBJDUMP[arch]} missing (binutils)")
    return subprocess.run([tool, "-d", *OBJDUMP_FLAGS.get(arch, ()), str(obj)], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize("name", sorted(WAYS))
def test_tile_code(name):
    """The way's intrinsic in the C, its instruction in gcc's object; gcc and clang compile
    the kernel strictly (-Wall -Wextra -Werror -pedantic)."""
    way = WAYS[name]
    tgt = _target(way)
    w = _way_row(name)
    _, _, mod = _dense(way, "packed_tile", max(w.tile_mrs), 2 * w.tile.step + 5)
    assert way.intrinsic in mod.c_source
    obj = compile_c(mod.c_source, tgt, "object", strict=True)
    assert way.instruction in _objdump(obj, tgt.arch)
    if not tgt.bare_metal:      # clang has no bare-metal C library here
        compile_c(mod.c_source, tgt.with_cc("clang"), "object", strict=True)


def test_guards_choose_the_way():
    """The same C for aarch64 and rpi5: sdot only where the target's flags enable dotprod,
    vpdpbusd only with -mavx512vnni."""
    _, _, plain = _dense(WAYS["neon-aarch64"], "packed_tile", 4, 40)
    assert "vdotq_s32" in plain.c_source
    assert "sdot" not in _objdump(compile_c(plain.c_source, resolve("aarch64"), "object"), "aarch64")
    _, _, x86 = _dense(WAYS["avx512"], "packed_tile", 4, 40)
    assert "vpdpbusd" not in _objdump(compile_c(x86.c_source, resolve("x86-avx512"), "object"), "x86_64")


@pytest.mark.qemu
@pytest.mark.parametrize("name", sorted(WAYS))
def test_tile_and_dot_run_exact(name):
    """Every MR of the tile (a K with a tail, and K below one step), a conv whose tile
    writes contiguous C, and the s8 dot: bit-exact against the integer reference."""
    way = WAYS[name]
    _skip_unless_runnable(way)
    w = _way_row(name)
    step = w.tile.step
    for mr in w.tile_mrs:
        for K in ((2 * step + 5, max(step - 3, 2)) if mr == max(w.tile_mrs) else (2 * step + 5,)):
            t, wl, mod = _dense(way, "packed_tile", mr, K)
            assert I8.u8s8_tile_intrin(mod.target, mr).body.name + "(" in mod.c_source
            _check(t, wl, mod, way, 10 * mr + K)
    t, wl, mod = _conv(way, max(w.tile_mrs))
    assert "cg_qtile_u8s8" in mod.c_source
    _check(t, wl, mod, way, 1)
    t, wl, mod = _dense(way, "packed_dot", 1, 2 * w.dot.step + 7)
    assert I8.dot_i8_intrin(mod.target).body.name + "(" in mod.c_source
    _check(t, wl, mod, way, 2)


@pytest.mark.qemu
def test_dotprod_code_needs_a_dotprod_cpu():
    """The rpi5 build really executes sdot: a Cortex-A53 (armv8.0, no dotprod) stops on it,
    while the plain aarch64 build runs there."""
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 missing (qemu-user)")
    for name, fails in (("neon-dotprod", True), ("neon-aarch64", False)):
        way = WAYS[name]
        t, wl, mod = _dense(way, "packed_tile", 4, 40)
        inputs = t.inputs(wl, np.random.default_rng(3))
        err = _run(mod, way, inputs, cpu="cortex-a53")
        assert (err is not None) == fails, (name, err)
        if not fails:
            np.testing.assert_array_equal(inputs[-1], t.reference(wl, inputs)["Y"])


@pytest.mark.parametrize("target", ["armv7", "aarch64"])
def test_dot_tail_compiles_strictly(target):
    """The dot's scalar tail starts at K - K % step: with the vector loop's exit test alone
    (k + 16 > K) gcc for a 32-bit target followed a path where the tail wraps around
    (-Werror=aggressive-loop-optimizations on this conv, K = 576, before the fix)."""
    t = Q.QConv2dTemplate()
    wl = t.workload(1, 64, 28, 28, 64, 3, 3, pads=1)
    tgt = resolve(target)
    s, args = t.build(wl, tgt, {**t.default(wl, tgt).to_dict(), "algo": "packed_dot"})
    mod = cgen.build(s, args, target=tgt, name="qconv", load=False)
    assert I8.dot_i8_intrin(tgt).body.name + "(" in mod.c_source
    compile_c(mod.c_source, tgt, "object", strict=True)
