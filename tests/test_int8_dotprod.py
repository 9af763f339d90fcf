"""int8 on Armv8.2 dot product: target "rpi5" (Cortex-A76) and TOML targets with
`dotprod = true` against target "aarch64" (Armv8.0).

The int8 conv, fully connected and matmul layers' default kernels are the s8 x s8 register
tile (cgen.ops.quant, algo packed_tile_s8) generated from the NEON row's ways
(cgen.codegen.isa): sdot (vdotq_s32) behind __ARM_FEATURE_DOTPROD, widening multiply-adds
after #else.  Checked: which flags enable it, sdot in the object code
(aarch64-linux-gnu-objdump) only there, bit-exact layers under `qemu-aarch64 -cpu
cortex-a76`, and, slow, the icount ticks (bare-metal `qemu-system-aarch64 -icount`,
targets/icount.py) of the same layers against the Armv8.0 build.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

import cgen
from cgen.ops import quant as Q
from targets import compile_c, resolve
from targets.icount import qemu_cpu
from targets.runner import Runner
from targets.target import load_toml
from tests.util import extreme_operands

OBJDUMP = "aarch64-linux-gnu-objdump"


@pytest.fixture(autouse=True)
def need_toolchain():
    for tool in (resolve("aarch64").cc, OBJDUMP):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


@pytest.fixture
def toml_target(tmp_path):
    """A user's board: Armv8.0 flags (a Cortex-A53's) with dotprod = true."""
    p = tmp_path / "a55board.toml"
    p.write_text('base = "aarch64"\ncflags = ["-mcpu=cortex-a53"]\ndotprod = true\n')
    return load_toml(p)


def _layers():
    conv, dense = Q.QConv2dTemplate(), Q.QDenseTemplate()
    return {"conv": (conv, conv.workload(1, 20, 6, 5, 12, 3, 3, pads=1, per_channel=True)),
            "fc": (dense, dense.workload(1, 12, 70, b_layout="NK", rounding="tflite")),
            "matmul": (dense, dense.workload(9, 8, 45, per_channel=True))}


def _build(tmpl, wl, tgt, **change):
    cfg = {**tmpl.default(wl, tgt).to_dict(), **change}
    s, args = tmpl.build(wl, tgt, cfg)
    return cgen.build(s, args, target=tgt, name=f"q{tmpl.name}", load=False)


def _defines_dotprod(tgt) -> bool:
    out = subprocess.run([tgt.cc, *tgt.flags(), "-dM", "-E", "-"], input="", capture_output=True,
                         text=True, check=True).stdout
    return "__ARM_FEATURE_DOTPROD" in out


def test_which_targets_enable_dotprod(toml_target):
    assert resolve("rpi5").dotprod and not resolve("aarch64").dotprod
    assert _defines_dotprod(resolve("rpi5")) and _defines_dotprod(toml_target)
    assert not _defines_dotprod(resolve("aarch64")) and not _defines_dotprod(resolve("rpi4"))


def test_the_dotprod_flag_in_a_target_file(tmp_path, toml_target):
    assert {"-march=armv8.2-a+dotprod", "-mtune=cortex-a53"} <= set(toml_target.flags())
    cases = {'cflags = ["-march=armv8-a+crc"]': "-march=armv8.2-a+crc+dotprod",
             'cflags = ["-march=armv8.4-a"]': "-march=armv8.4-a+dotprod",
             'cflags = []': "-march=armv8.2-a+dotprod",
             'cflags = ["-mcpu=cortex-a55"]': "-mcpu=cortex-a55"}     # the core has it
    for line, flag in cases.items():
        p = tmp_path / "t.toml"
        p.write_text(f'base = "aarch64"\n{line}\ndotprod = true\n')
        t = load_toml(p)
        assert flag in t.flags() and sum("dotprod" in f for f in t.flags()) <= 1, t.flags()
    p = tmp_path / "bad.toml"
    p.write_text('base = "armv7"\ndotprod = true\n')
    with pytest.raises(ValueError, match="dotprod = true needs an aarch64 target"):
        load_toml(p)


def test_icount_runs_dotprod_code_on_a_core_that_has_it(toml_target):
    assert qemu_cpu(resolve("rpi5").flags()) == "cortex-a76"
    assert qemu_cpu(resolve("rpi3").flags()) == "cortex-a53"
    assert qemu_cpu(resolve("aarch64").flags()) == "cortex-a72"
    assert qemu_cpu(toml_target.flags()) == "max"        # a Cortex-A53 has no sdot


def _objdump(mod) -> str:
    obj = compile_c(mod.c_source, mod.target, "object", strict=True)
    return subprocess.run([OBJDUMP, "-d", str(obj)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("name", ["conv", "fc", "matmul"])
def test_sdot_where_the_flags_enable_it(name, toml_target):
    tmpl, wl = _layers()[name]
    for tgt, sdot in ((resolve("rpi5"), True), (toml_target, True), (resolve("aarch64"), False)):
        mod = _build(tmpl, wl, tgt)
        assert tmpl.default(wl, tgt).to_dict()["algo"] == "packed_tile_s8"
        assert re.search(r"cg_qtile_s8s8_\dx4_neon_aarch64\(", mod.c_source)
        assert "vdotq_s32" in mod.c_source
        asm = _objdump(mod)
        assert bool(re.search(r"\bsdot\s+v\d+\.4s", asm)) == sdot, (tgt.name, name)
        if not sdot:
            assert re.search(r"\bsmlal2?\s+v\d+\.4s", asm)


def _run_a76(mod, inputs):
    runner = Runner("qemu-cortex-a76", ("qemu-aarch64", "-cpu", "cortex-a76"), "qemu-user", True)
    res = runner.run(mod.executable(), [p.name for p in mod.func.params], inputs, mod.func.outputs)
    assert res.error is None, res.error
    return res.outputs


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["rpi5", "toml"])
def test_layers_bit_exact_on_cortex_a76(target, toml_target):
    """Every layer on the s8 tile, conv and fc also on the u8 tile and the dot, int8 and
    uint8 activations, against the exact integer reference."""
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 missing (qemu-user)")
    tgt = toml_target if target == "toml" else resolve(target)
    conv = Q.QConv2dTemplate()
    layers = dict(_layers(), conv_s8=(conv, conv.workload(1, 16, 5, 5, 8, 3, 3, stride=2, pads=1,
                                                          x_dtype="int8")))
    for name, (tmpl, wl) in layers.items():
        for algo in ("packed_tile_s8",) + (("packed_tile", "packed_dot") if name in ("conv", "fc") else ()):
            mod = _build(tmpl, wl, tgt, algo=algo)
            rng = np.random.default_rng(len(name) * 7 + len(algo))
            inputs = extreme_operands(tmpl.inputs(wl, rng), rng)
            out = _run_a76(mod, inputs)
            np.testing.assert_array_equal(out["Y"], tmpl.reference(wl, inputs)["Y"],
                                          err_msg=f"{target} {name} {algo}")


# icount ticks, rpi5 / aarch64 on the same layer (weights in a model's packed layouts):
# the goal is 1/3; the bound each layer is held to is its measured ratio plus a margin
RATIO_LAYERS = {
    "conv3x3 256->256 4x4": (Q.QConv2dTemplate(), dict(N=1, C=256, H=4, W=4, F=256, KH=3, KW=3,
                                                       pads=1, w_layout="packed"), 1 / 3),
    "conv3x3 128->128 8x8": (Q.QConv2dTemplate(), dict(N=1, C=128, H=8, W=8, F=128, KH=3, KW=3,
                                                       pads=1, w_layout="packed"), 0.345),
    "fc 1024->256": (Q.QDenseTemplate(), dict(M=1, N=256, K=1024, b_layout="NK"), 1 / 3),
    "conv3x3 32->64 16x16": (Q.QConv2dTemplate(), dict(N=1, C=32, H=16, W=16, F=64, KH=3, KW=3,
                                                       pads=1, w_layout="packed"), 0.45),
}


@pytest.mark.slow
def test_dotprod_icount_against_armv8_0():
    from cgen.build_baremetal import icount_benchmark
    if shutil.which("qemu-system-aarch64") is None:
        pytest.skip("qemu-system-aarch64 missing")
    ratios = {}
    for name, (tmpl, kw, bound) in RATIO_LAYERS.items():
        wl = tmpl.workload(**kw)
        inputs = tmpl.inputs(wl, np.random.default_rng(0))
        ref = tmpl.reference(wl, inputs)["Y"]
        ticks = {}
        for t in ("aarch64", "rpi5"):
            res = icount_benchmark(_build(tmpl, wl, resolve(t)), *[a.copy() for a in inputs],
                                   repeat=1)
            assert res.error is None, res.error
            np.testing.assert_array_equal(res.outputs["Y"], ref)
            ticks[t] = res.times[0]
        ratios[name] = ticks["rpi5"] / ticks["aarch64"]
        print(f"{name}: aarch64 {ticks['aarch64']:.1f} rpi5 {ticks['rpi5']:.1f} ticks, "
              f"ratio {ratios[name]:.3f}")
    bad = {n: r for n, r in ratios.items() if r > RATIO_LAYERS[n][2]}
    assert not bad, bad
