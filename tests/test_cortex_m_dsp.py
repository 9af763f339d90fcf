"""int8 kernels of targets "cortex-m4" and "cortex-m7" on the Armv7E-M DSP extension.

The u8 x s8 tile and the s8 dot (cgen.tensorize.int8_microkernel, the SCALAR row's int8
ways in cgen.codegen.isa) use SMLAD on int16 pairs made by SXTB16 / UXTB16 (ACLE,
arm_acle.h) behind __ARM_FEATURE_DSP, with a portable C way after #else.  Checked here:
SMLAD in the object code (arm-none-eabi-objdump), none for a core without DSP (the
portable way, Cortex-M3 flags), bit-exact QLinear conv, fully connected and matmul layers
under qemu-system-arm (mps2-an386 for the M4, mps2-an500 for the M7), and, slow, the
executed instructions of a conv and a fully connected layer against the plain-C path.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import cgen
from cgen.ops import quant as Q
from targets import compile_c, resolve
from tests.util import extreme_operands
from targets.runner import runner_for
from targets.semihost import SemihostRunner

OBJDUMP = "arm-none-eabi-objdump"


@pytest.fixture(autouse=True)
def need_toolchain():
    for tool in (resolve("cortex-m4").cc, "qemu-system-arm", OBJDUMP):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


def _no_dsp():
    """A Cortex-M3 (Armv7-M: no DSP extension, no FPU) as a user's target would say it."""
    return dataclasses.replace(resolve("cortex-m4"), name="cortex-m3",
                               cflags=("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"))


def _layers():
    conv, dense = Q.QConv2dTemplate(), Q.QDenseTemplate()
    return {"conv": (conv, conv.workload(1, 12, 7, 7, 6, 3, 3, pads=1, per_channel=True)),
            "fc": (dense, dense.workload(1, 10, 70, rounding="tflite")),
            "matmul": (dense, dense.workload(5, 9, 45, rounding="tflite", per_channel=True))}


def _build(tmpl, wl, tgt, **change):
    cfg = {**tmpl.default(wl, tgt).to_dict(), **change}
    s, args = tmpl.build(wl, tgt, cfg)
    return cgen.build(s, args, target=tgt, name=f"q{tmpl.name}", load=False)


def _objdump(mod) -> str:
    obj = compile_c(mod.c_source, mod.target, "object", strict=True)
    return subprocess.run([OBJDUMP, "-d", str(obj)], capture_output=True, text=True,
                          check=True).stdout


def test_cortex_m7_is_an_armv7e_m_target_on_its_own_board():
    m7 = resolve("cortex-m7")
    assert "-mcpu=cortex-m7" in m7.cflags and m7.arch == "armv7e-m" and m7.bare_metal
    runner = runner_for(m7)
    assert isinstance(runner, SemihostRunner) and runner.board.machine == "mps2-an500"
    assert runner_for(resolve("cortex-m4")).board.machine == "mps2-an386"


@pytest.mark.parametrize("algo,kernel", [("packed_tile", "cg_qtile_u8s8_2x2"),
                                         ("packed_dot", "cg_dot_s8")])
def test_dsp_kernels_emit_smlad(algo, kernel):
    """The DSP way where the flags enable it (M4, M7), the portable way where not (M3)."""
    tmpl, wl = _layers()["matmul"]
    for name in ("cortex-m4", "cortex-m7"):
        mod = _build(tmpl, wl, resolve(name), algo=algo)
        assert kernel in mod.c_source and "#if defined(__ARM_FEATURE_DSP)" in mod.c_source
        asm = _objdump(mod)
        assert re.search(r"\bsmlad\b", asm) and re.search(r"\bsxtb16\b", asm), name
    asm = _objdump(_build(tmpl, wl, _no_dsp(), algo=algo))
    assert not re.search(r"\b(smlad|sxtb16|uxtb16)\b", asm)


def test_the_default_algorithm_is_the_tile():
    for name, (tmpl, wl) in _layers().items():
        assert tmpl.default(wl, resolve("cortex-m4")).to_dict()["algo"] == "packed_tile", name


@pytest.mark.qemu
@pytest.mark.parametrize("target,algos", [
    ("cortex-m4", ("packed_tile", "packed_dot")), ("cortex-m7", ("packed_tile",)),
    pytest.param("cortex-m3", ("packed_tile", "packed_dot"), marks=pytest.mark.slow)])
def test_layers_bit_exact(target, algos):
    """conv (3x3, padded, per-channel weights), fully connected and matmul, on the tile
    (and the dot), against the exact integer reference."""
    tgt = _no_dsp() if target == "cortex-m3" else resolve(target)
    for name, (tmpl, wl) in _layers().items():
        for algo in algos:
            mod = _build(tmpl, wl, tgt, algo=algo)
            rng = np.random.default_rng(len(name) + len(algo))
            inputs = extreme_operands(tmpl.inputs(wl, rng), rng)
            mod(*inputs)
            np.testing.assert_array_equal(inputs[-1], tmpl.reference(wl, inputs)["Y"],
                                          err_msg=f"{target} {name} {algo}")


# ----------------------------------------------------------------------------- instructions
@dataclasses.dataclass(frozen=True)
class _Traced(SemihostRunner):
    """The semihosting runner with QEMU's log of translated blocks and of each block run."""
    log: str = ""

    def command(self, exe, paths, repeat, number):
        return super().command(exe, paths, repeat, number) + ["-d", "in_asm,exec,nochain",
                                                              "-D", self.log]


def _executed(log: Path) -> int:
    """Instructions executed: per block run (a Trace line, its pc the second field), the
    instructions of the last translation of the block at that pc."""
    size, pc, total = {}, None, 0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Trace "):
            total += size[int(line.split("[", 1)[1].split("/")[1], 16)]
        elif line.startswith("IN:"):
            pc = None
        elif re.match(r"0x[0-9a-f]+:\s", line):
            addr = int(line.split(":", 1)[0], 16)
            if pc is None:
                pc = addr
                size[pc] = 0
            size[pc] += 1
    return total


def instructions_per_call(mod, inputs) -> int:
    """The instructions of one call of mod: runs of 1 and 2 calls (after the harness's
    first) differ by exactly one call."""
    exe = mod.executable()
    counts = []
    with tempfile.TemporaryDirectory(prefix="cgen-trace-") as d:
        for number in (1, 2):
            log = Path(d, f"q{number}.log")
            runner = _Traced(**{f.name: getattr(runner_for(mod.target), f.name)
                                for f in dataclasses.fields(SemihostRunner)}, log=str(log))
            res = runner.run(exe, [p.name for p in mod.func.params], [a.copy() for a in inputs],
                             mod.func.outputs, repeat=1, number=number, timeout=600)
            assert res.error is None, res.error
            counts.append(_executed(log))
    return counts[1] - counts[0]


@pytest.mark.slow
@pytest.mark.qemu
def test_dsp_needs_fewer_instructions_than_plain_c():
    """cortex-m4, a DS-CNN-like conv and a fully connected layer: the DSP tile (the default
    now) against the direct algorithm (the default before the DSP way) and the same tile
    in portable C (-U__ARM_FEATURE_DSP)."""
    conv, dense = Q.QConv2dTemplate(), Q.QDenseTemplate()
    tgt = resolve("cortex-m4")
    plain = dataclasses.replace(tgt, cflags=tgt.cflags + ("-U__ARM_FEATURE_DSP",))
    found = {}
    # weights in the layouts a compiled model passes them (packed at compile time)
    for tmpl, wl in ((conv, conv.workload(1, 16, 10, 10, 32, 3, 3, pads=1, w_layout="packed")),
                     (dense, dense.workload(1, 512, 128, b_layout="NK"))):
        inputs = tmpl.inputs(wl, np.random.default_rng(0))
        counts = {}
        for label, t, change in (("dsp", tgt, {}), ("direct", tgt, {"algo": "direct"}),
                                 ("c99", plain, {})):
            mod = _build(tmpl, wl, t, **change)
            counts[label] = instructions_per_call(mod, inputs)
        print(tmpl.name, counts, {k: round(counts["dsp"] / v, 3) for k, v in counts.items()})
        found[tmpl.name] = counts
    assert all(c["dsp"] < 0.8 * c["c99"] and c["dsp"] < 0.7 * c["direct"] for c in found.values()), found
