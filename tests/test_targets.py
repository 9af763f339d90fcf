"""Targets as data, the CLI listing, user TOML targets and missing toolchains."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cgen
from cgen import te
from targets import resolve
from targets.target import builtin_targets, load_toml
from targets.toolchain import ToolchainMissing
from tests.util import assert_matches

ROOT = Path(__file__).resolve().parents[1]


def _matmul(M=9, N=11, K=5):
    A = te.placeholder((M, K), name="A")
    B = te.placeholder((K, N), name="B")
    k = te.reduce_axis((0, K), name="k")
    C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = te.create_schedule(C)
    i, j = s[C].op.axis
    s[C].reorder(i, k, j)
    s[C].vectorize(j)
    return s, [A, B, C]


def test_builtin_targets_have_required_flags():
    t = builtin_targets()
    for name in ("host", "generic-c", "x86-avx2", "x86-avx512", "aarch64", "armv7",
                 "rpi3", "rpi4", "rpi5", "rpi2", "rpi3-32", "rpi4-32"):
        assert name in t
    for name in ("armv7", "rpi2", "rpi3-32", "rpi4-32"):
        assert "-mfpu=neon-vfpv4" in t[name].cflags and "-mfloat-abi=hard" in t[name].cflags
        assert t[name].static and t[name].runner == "qemu-arm"
    assert "-mcpu=cortex-a72" in t["rpi4"].cflags and t["rpi4"].arch == "aarch64"
    assert "-mcpu=cortex-a7" in t["rpi2"].cflags
    assert resolve("host").name == "host"
    with pytest.raises(ValueError, match="unknown target"):
        resolve("pdp11")


def test_cli_lists_targets():
    out = subprocess.run([sys.executable, "-m", "cgen.cli", "targets"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    for name, cc in (("aarch64", "aarch64-linux-gnu-gcc"), ("armv7", "arm-linux-gnueabihf-gcc"),
                     ("rpi4", "aarch64-linux-gnu-gcc")):
        line = next(l for l in out.splitlines() if l.split()[0] == name)
        assert cc in line and "neon" in line


@pytest.mark.qemu
def test_user_toml_target_end_to_end(tmp_path):
    p = tmp_path / "myboard.toml"
    p.write_text('name = "myboard"\nbase = "aarch64"\ncflags = ["-mcpu=cortex-a55"]\n')
    t = load_toml(p)
    assert t.name == "myboard" and t.arch == "aarch64" and t.cflags == ("-mcpu=cortex-a55",)
    s, args = _matmul()
    mod = cgen.build(s, args, target=str(p), name="mm")
    assert "vfmaq_f32" in mod.c_source
    rng = np.random.default_rng(1)
    a = rng.random((9, 5), dtype=np.float32)
    b = rng.random((5, 11), dtype=np.float32)
    c = np.zeros((9, 11), np.float32)
    mod(a, b, c)
    assert_matches(c, a @ b)
    out = subprocess.run([sys.executable, "-m", "cgen.cli", "targets", str(p)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "myboard" in out


def test_bad_toml_is_one_line_error(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("name = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_toml(p)
    p.write_text('base = "aarch64"\ncolour = "red"\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_toml(p)
    r = subprocess.run([sys.executable, "-m", "cgen.cli", "targets", str(tmp_path / "none.toml")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_missing_toolchain_names_the_package(tmp_path):
    p = tmp_path / "ghost.toml"
    p.write_text('base = "aarch64"\ncc = "ghost-linux-gnu-gcc"\napt_package = "gcc-ghost-linux-gnu"\n')
    s, args = _matmul()
    with pytest.raises(ToolchainMissing) as e:
        cgen.build(s, args, target=str(p), name="mm")
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install gcc-ghost-linux-gnu" in msg


def test_missing_qemu_names_the_package(monkeypatch):
    from targets import runner
    fake = runner.Runner("qemu-ghost", ("qemu-ghost",), "qemu-user", True)
    with pytest.raises(runner.ToolMissing, match="apt-get install qemu-user"):
        fake.check()


def test_code_this_cpu_cannot_run_is_refused_in_one_line(monkeypatch, tmp_path):
    """x86-avx512 on an AVX2-only CPU (an AMD laptop): one line naming what the CPU lacks
    before anything runs, not a SIGILL with nothing said."""
    from targets import runner, target as tmod
    monkeypatch.setattr(tmod, "_cpu_flags", lambda: {"sse2", "avx", "avx2", "fma"})
    monkeypatch.setattr(tmod.platform, "machine", lambda: "x86_64")
    r = runner.runner_for(resolve("x86-avx512"))
    with pytest.raises(runner.CannotRunHere) as e:
        r.run(tmp_path / "never-built", ["x"], [np.zeros(1, np.float32)], ["x"])
    msg = str(e.value)
    assert "\n" not in msg and "x86-avx512" in msg and "avx512f" in msg
    assert runner.runner_for(resolve("x86-avx2")).refusal == ""      # what the CPU has
    assert runner.runner_for(resolve("aarch64")).refusal == ""       # QEMU runs it


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["aarch64", "armv7", "rpi4", "rpi2"])
def test_cross_module_called_like_host(target):
    s, args = _matmul(13, 17, 7)
    mod = cgen.build(s, args, target=target, name="mm")
    rng = np.random.default_rng(2)
    a = rng.random((13, 7), dtype=np.float32)
    b = rng.random((7, 17), dtype=np.float32)
    c = np.zeros((13, 17), np.float32)
    mod(a, b, c)
    assert_matches(c, a @ b)
    res = mod.benchmark(a, b, c, repeat=3)
    assert res.error is None and res.emulated and len(res.times) == 3 and min(res.times) > 0


def test_host_benchmark_runs_in_child_process():
    s, args = _matmul(31, 33, 17)
    mod = cgen.build(s, args, target="host", name="mm")
    a = np.ones((31, 17), np.float32)
    b = np.ones((17, 33), np.float32)
    c = np.zeros((31, 33), np.float32)
    res = mod.benchmark(a, b, c, repeat=4, number=2)
    assert res.error is None and not res.emulated and len(res.times) == 4
    assert_matches(res.outputs["C"], a @ b)
