"""Cortex-M55 (target "cortex-m55"): Helium (MVE) kernels, bare metal under `qemu-system-arm
-M mps3-an547` with semihosting.  Single float32 and int8 kernels against numpy, their MVE
instructions in the image, and models with any number of inputs and outputs, as on the
cortex-m4 (tests/test_cortex_m4.py)."""
from __future__ import annotations

from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cgen
from cgen import te
from cgen.cli import main
from cgen.codegen.isa import MVE, kernel_isa
from cgen.ops import quant as Q
from cgen.ops.registry import template
from cgen.tensorize import int8_microkernel as I8
from targets import compile_c, resolve
from targets.runner import runner_for
from targets.semihost import SemihostRunner, board_for
from tests.util import extreme_operands, skip_without_system_qemu

TARGET = "cortex-m55"
OBJDUMP = "arm-none-eabi-objdump"


@pytest.fixture(autouse=True)
def need_cortex_m55():
    skip_without_system_qemu(TARGET)


def disassembly(path) -> str:
    """objdump decodes MVE only when told the architecture (the attributes do not)."""
    if shutil.which(OBJDUMP) is None:
        pytest.skip(f"{OBJDUMP} not installed")
    return subprocess.run([OBJDUMP, "-d", "-m", "armv8.1-m.main", str(path)], capture_output=True,
                          text=True, check=True).stdout


def matmul(M, N, K):
    A = te.placeholder((M, K), "float32", name="A")
    B = te.placeholder((K, N), "float32", name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    return te.create_schedule(C), [A, B, C]


# ====================================================================== the target
def test_cortex_m55_is_a_builtin_target():
    t = resolve(TARGET)
    assert t.name == TARGET and t.bare_metal and not t.threads and t.isa == "mve"
    assert "-mcpu=cortex-m55" in t.cflags and "-mfloat-abi=hard" in t.cflags
    assert t.vector_registers == 8 and t.lanes("float32") == 4 and t.lanes("int8") == 16
    assert kernel_isa(t) is MVE
    assert board_for(t).machine == "mps3-an547"
    r = runner_for(t)
    assert isinstance(r, SemihostRunner) and r.emulated and r.board.machine == "mps3-an547"
    out = subprocess.run([sys.executable, "-m", "cgen.cli", "targets"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    line = next(ln for ln in out.splitlines() if ln.split()[0] == TARGET)
    assert "arm-none-eabi-gcc" in line and "qemu-system-arm" in line


def test_flags_enable_float_mve():
    """__ARM_FEATURE_MVE is 3 (integer and float32 vectors): the FPU and MVE's float half
    come from -mcpu=cortex-m55 with the default -mfpu=auto; a +nomve.fp build would not
    compile the float32 kernels."""
    t = resolve(TARGET)
    macros = subprocess.run([t.cc, *t.flags(), "-dM", "-E", "-"], input="", capture_output=True,
                            text=True, check=True).stdout
    assert "#define __ARM_FEATURE_MVE 3" in macros.splitlines()
    assert f"#define {MVE.guard_macro} 3" in macros.splitlines()


# ====================================================================== float32 kernels
def test_matmul_te_default_schedule():
    """Odd sizes (no tile divides them): the harness runs on the AN547's memory map."""
    rng = np.random.default_rng(0)
    mod = cgen.build(*matmul(13, 17, 11), target=TARGET, name="mm")
    a, b = rng.standard_normal((13, 11), np.float32), rng.standard_normal((11, 17), np.float32)
    c = np.full((13, 17), np.nan, np.float32)
    mod(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,shape,fma", [
    ("gemm", (24, 20, 16), True), ("dense", (5, 24, 36), True),
    ("conv2d_im2col", (1, 4, 7, 7, 6, 3, 3, 1, 1), True),
    # lenet's first layer: gcc 12 scheduled lane accesses across vst1q_f32 (targets/target.py)
    ("conv2d_nchw", (2, 1, 24, 24, 6, 5, 5, 1, 2), False)])
def test_template_default_config_uses_mve(name, shape, fma):
    """Templates tensorize with the MVE row's micro-kernels: vfmaq_n_f32 (A by a scalar
    register) in the C, vfma.f32 on q registers in the image, outputs against the
    templates' numpy references."""
    tmpl = template(name)
    wl = tmpl.workload(*shape)
    s, args = tmpl.build(wl, TARGET, tmpl.default(wl, TARGET))
    mod = cgen.build(s, args, target=TARGET, name=name)
    assert "arm_mve.h" in mod.c_source and ("vfmaq_n_f32" in mod.c_source) == fma
    asm = disassembly(mod.executable())
    assert "vstrw.32\tq" in asm and ("vfma.f32\tq" in asm) == fma
    inputs = tmpl.inputs(wl, np.random.default_rng(2))
    arrays = [a.copy() for a in inputs]
    for a in arrays[len(arrays) - len(mod.func.outputs):]:
        a.fill(np.nan)
    mod(*arrays)
    want = tmpl.reference(wl, inputs)
    got = dict(zip([p.name for p in mod.params], arrays))
    assert want and set(want) <= set(got)
    for out, ref in want.items():
        np.testing.assert_allclose(got[out], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


# ====================================================================== int8 kernels
def _run_exact(t, wl, cfg, name, seed):
    s, args = t.build(wl, TARGET, cfg)
    mod = cgen.build(s, args, target=TARGET, name=name)
    rng = np.random.default_rng(seed)
    inputs = extreme_operands(t.inputs(wl, rng), rng)
    mod(*inputs)
    np.testing.assert_array_equal(inputs[-1], t.reference(wl, inputs)["Y"])
    return mod


@pytest.mark.parametrize("mr", [pytest.param(m, marks=[pytest.mark.slow] if m != max(I8.tile_mrs(TARGET))
                                              else []) for m in I8.tile_mrs(TARGET)])
def test_qdense_tile_runs_exact(mr):
    """Each MR of the u8 x s8 tile (vmladavaq_s8 on A - 128), K with a tail of 5."""
    t = Q.QDenseTemplate()
    wl = t.workload(2 * mr + 1, 9, 37, rounding="tflite", per_channel=True)
    cfg = {**t.default(wl, TARGET).to_dict(), "algo": "packed_tile", "micro_m": mr,
           "tile_m": 2 * mr, "tile_n": 8}
    mod = _run_exact(t, wl, cfg, f"qdense{mr}", mr)
    assert I8.u8s8_tile_intrin(TARGET, mr).body.name + "(" in mod.c_source
    assert "vmladavaq_s8" in mod.c_source
    assert "vmlava.s8" in disassembly(mod.executable())


def test_qdense_dot_and_qconv_run_exact():
    t = Q.QDenseTemplate()
    wl = t.workload(3, 7, 39)
    mod = _run_exact(t, wl, {**t.default(wl, TARGET).to_dict(), "algo": "packed_dot"}, "qdot", 3)
    assert I8.dot_i8_intrin(TARGET).body.name + "(" in mod.c_source
    t = Q.QConv2dTemplate()
    wl = t.workload(1, 24, 6, 6, 8, 3, 3, pads=1)
    mod = _run_exact(t, wl, t.default(wl, TARGET).to_dict(), "qconv", 4)
    assert "cg_qtile_u8s8" in mod.c_source and "vmlava.s8" in disassembly(mod.executable())


def test_int8_kernels_compile_strictly():
    """gcc -Wall -Wextra -Werror -pedantic on the tile (every MR) and the dot, each a
    vmlava.s8 per accumulator in its loop (MR * NR products and NR sums of B)."""
    way = kernel_isa(resolve(TARGET)).int8[-1]
    nr, mrs = way.tile_nr, way.tile_mrs
    funcs = [I8.tile_source(f"t{mr}", (way,), mr, nr) for mr in mrs] + [I8.dot_source("d", (way,))]
    src = "\n".join(["#include <stdint.h>", "#include <arm_mve.h>"]
                    + [f.replace("static inline ", "", 1) for f in funcs])
    asm = disassembly(compile_c(src, resolve(TARGET), "object", strict=True))
    assert asm.count("vmlava.s8") >= sum(mr * nr + nr for mr in mrs) + 1


# ====================================================================== models
@pytest.mark.parametrize("name", ["mlp", pytest.param("lenet", marks=pytest.mark.slow)])
def test_models_match_the_reference(name, capsys):
    """mlp (f32 dense) and lenet (conv, pool, dense) from tests, strict (no kernel falls
    back), against onnxruntime; the memory report printed."""
    pytest.importorskip("onnxruntime")
    from cgen.graph.model import compile_model
    from tests import test_graph_frontend as fe
    model, feeds = getattr(fe, name)()
    cm = compile_model(model, TARGET, name=name, strict=True)
    print(f"{name} on {TARGET}: {cm.report.totals()}\n{cm.report.table()}")
    assert not cm.report.fallbacks and "vfmaq_n_f32" in cm.source.source
    got, want = cm.run(feeds, timeout=120), fe.ort_run(model, feeds)
    assert set(got) == set(want)
    for k, a in want.items():
        np.testing.assert_allclose(got[k], a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()),
                                   err_msg=f"{name}:{k}")
    out = capsys.readouterr().out
    assert "(flash)" in out and "(RAM)" in out


def test_cli_run_two_inputs_two_outputs(tmp_path, capsys):
    """`cgen run --target cortex-m55` on a model of 2 inputs and 2 outputs of mixed dtypes,
    exact; `cgen compile --report` prints the RAM / flash report."""
    import onnx
    from tests.test_cortex_m4 import io_model
    model, feeds, want = io_model(2, 2)
    path, ins, outs = tmp_path / "io.onnx", tmp_path / "in.npz", tmp_path / "out.npz"
    onnx.save(model, str(path))
    np.savez(ins, **feeds)
    assert main(["run", str(path), "--target", TARGET, "--inputs", str(ins),
                 "--outputs", str(outs), "--timeout", "120"]) == 0
    got = np.load(outs)
    assert set(got.files) == set(want)
    for k, a in want.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape, k
        np.testing.assert_array_equal(got[k], a, err_msg=k)
    assert main(["compile", str(path), "--target", TARGET, "-o", str(tmp_path / "c"),
                 "--report"]) == 0
    out = capsys.readouterr().out
    assert "(RAM)" in out and "(flash)" in out and "plan:" in out


@pytest.mark.parametrize("n_in,n_out", [(8, 8), pytest.param(3, 7, marks=pytest.mark.slow)])
def test_inputs_and_outputs_of_mixed_dtypes(n_in, n_out):
    """Many parameter files of every dtype, exact, and --time beside them (the harness opens
    its files itself, as on cortex-m4)."""
    from cgen.graph.model import compile_model
    from tests.test_cortex_m4 import io_model, run_exact
    model, feeds, want = io_model(n_in, n_out)
    cm = compile_model(model, TARGET, name=f"io_{n_in}_{n_out}")
    assert "argv[a0" not in cm.harness_source()
    run_exact(cm, feeds, want)
    times = cm.time(feeds, repeat=2, min_repeat_s=0.001, timeout=120)
    assert len(times) == 2 and all(t > 0 for t in times)
