"""The host target: detected from the CPU as a built-in target, or named with CGEN_HOST.

Detection is checked on made-up CPUs (flag sets), so these tests hold on any machine."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cgen
from cgen import te
from targets import compile_c, resolve
from targets.target import _host, builtin_targets, cannot_run

ROOT = Path(__file__).resolve().parents[1]
AVX2 = {"avx2", "fma", "sse4_2"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}
NAMED = builtin_targets(host=False)


@pytest.mark.parametrize("cpu, machine, base, extra", [
    (AVX2, "x86_64", "x86-avx2", ()),
    (AVX2 | {"avx512f"}, "x86_64", "x86-avx2", ()),          # avx512f alone is not our x86-avx512
    (AVX512, "x86_64", "x86-avx512", ()),
    (AVX512 | {"avx512_vnni"}, "x86_64", "x86-avx512", ("-mavx512vnni",)),
    ({"sse2"}, "x86_64", "generic-c", ()),
    ({"asimd"}, "aarch64", "aarch64", ()),
])
def test_detected_host_is_a_builtin_target_with_its_flags(cpu, machine, base, extra):
    h = _host(NAMED, env={}, cpu_flags=cpu, machine=machine)
    b = NAMED[base]
    assert (h.name, h.runner, h.cc, h.triple, h.static) == ("host", "local", "cc", "", False)
    assert (h.isa, h.vector_bits) == (b.isa, b.vector_bits)
    assert h.cflags == b.cflags + extra
    assert not any("native" in f for f in h.flags())   # the cache key names what the code uses


@pytest.mark.parametrize("name", ["x86-avx2", "generic-c", "x86-avx512"])
def test_cgen_host_names_the_target(name):
    h = _host(NAMED, env={"CGEN_HOST": name}, cpu_flags=AVX512 | {"avx512_vnni"}, machine="x86_64")
    assert (h.name, h.runner, h.threads) == ("host", "local", True)
    assert (h.isa, h.cflags) == (NAMED[name].isa, NAMED[name].cflags)   # no detected extras
    assert name in h.description


@pytest.mark.parametrize("name, cpu, machine, why", [
    ("x86-avx512", AVX2, "x86_64", "lacks avx512f"),
    ("x86-avx2", {"sse2"}, "x86_64", "lacks avx2 fma"),
    ("aarch64", AVX512, "x86_64", "aarch64 code and this machine is x86_64"),
    ("x86-avx2", {"asimd"}, "aarch64", "x86_64 code and this machine is aarch64"),
    ("armv7", AVX512, "x86_64", "armv7 code"),
    ("pdp11", AVX512, "x86_64", "not a built-in target"),
    ("host", AVX512, "x86_64", "not a built-in target"),
])
def test_cgen_host_refuses_what_this_machine_cannot_run(name, cpu, machine, why):
    with pytest.raises(ValueError, match=re.escape(why)) as e:
        _host(NAMED, env={"CGEN_HOST": name}, cpu_flags=cpu, machine=machine)
    assert str(e.value).startswith(f"CGEN_HOST={name}: ") and "\n" not in str(e.value)


def test_bare_metal_never_runs_here():
    from dataclasses import replace
    assert "bare-metal" in cannot_run(replace(NAMED["generic-c"], bare_metal=True))


def test_cli_bad_cgen_host_is_one_line():
    env = {**os.environ, "CGEN_HOST": "pdp11"}
    p = subprocess.run([sys.executable, "-m", "cgen.cli", "targets"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "CGEN_HOST=pdp11" in p.stderr


@pytest.mark.isa("avx2")
def test_host_forced_avx2_compiles_avx2_code(monkeypatch):
    """On an AVX-512 machine too: ymm FMAs, never a zmm register."""
    monkeypatch.setenv("CGEN_HOST", "x86-avx2")
    A = te.placeholder((4, 8), name="A")
    B = te.placeholder((8, 64), name="B")
    k = te.reduce_axis((0, 8), name="k")
    C = te.compute((4, 64), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    s = te.create_schedule(C)
    i, j = s[C].op.axis
    jo, ji = s[C].split(j, 32)
    s[C].reorder(i, jo, k, ji)
    s[C].vectorize(ji)
    mod = cgen.build(s, [A, B, C], target="host", name="forced")
    assert "_mm256_fmadd_ps" in mod.c_source and "_mm512" not in mod.c_source
    text = subprocess.run(["objdump", "-d", str(compile_c(mod.c_source, resolve("host"), "object",
                                                          name="forced"))],
                          capture_output=True, text=True, check=True).stdout
    assert re.search(r"vfmadd\d+ps\s+\S*%ymm", text) and "%zmm" not in text
