"""bench arm: row schema, packing, the peer copy's checks, and small counted cases.

Targets named: aarch64 (XNNPACK rows, QEMU icount), cortex-m4 (bound rows, qemu-system-arm
icount), rpi3/rpi4/rpi5 (llvm-mca FMA-bound rows).  Nothing is downloaded: the XNNPACK rows
run only when the peer cache (bench/arm_peers.py) already holds Debian's library.
"""
from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from bench import arm, arm_peers
from targets import resolve
from bench.peers import mclass, xnnpack_run

ROW_KEYS = {"suite", "case", "target", "dtype", "kind", "macs", "unit", "ratio", "peer",
            "peer_cost", "cgen_cost"}

needs_qemu_a64 = pytest.mark.skipif(shutil.which("qemu-system-aarch64") is None,
                                    reason="qemu-system-aarch64 not installed")
needs_qemu_arm = pytest.mark.skipif(shutil.which("qemu-system-arm") is None,
                                    reason="qemu-system-arm not installed")
needs_peer = pytest.mark.skipif(arm_peers.cached_xnnpack() is None,
                                reason="XNNPACK peer not in the cache (`python -m bench arm` fetches it)")


def _check_row(r, unit):
    assert ROW_KEYS <= set(r), r
    assert r["suite"] == "arm" and r["unit"] == unit
    assert r.get("note") is None or "unavailable" not in r["note"], r
    assert r["peer_cost"] > 0 and r["cgen_cost"] > 0, r
    assert r["ratio"] == pytest.approx(r["peer_cost"] / r["cgen_cost"])


def test_pack_gemm_layout():
    # 3 output channels, 5 inputs, NR=2, KR=4: blocks of (bias[2], k-groups of 2x4)
    w = np.arange(15, dtype=np.int8).reshape(3, 5)
    b = np.array([100, 200, 300], np.int32)
    p = xnnpack_run.pack_gemm(w, b, nr=2, kr=4)
    assert p.size == 2 * (2 * 4 + 2 * 8)
    assert list(p[:8].view(np.int32)) == [100, 200]
    assert list(p[8:24].view(np.int8)) == [0, 1, 2, 3, 5, 6, 7, 8, 4, 0, 0, 0, 9, 0, 0, 0]
    tail = p[24:]
    assert list(tail[:8].view(np.int32)) == [300, 0]
    assert list(tail[8:12].view(np.int8)) == [10, 11, 12, 13]


def test_pack_dw_layout():
    w = np.arange(2 * 9, dtype=np.float32).reshape(2, 9)
    p = xnnpack_run.pack_dw(w, np.array([7.0, 8.0], np.float32), cr=4)
    assert list(p[:4]) == [7, 8, 0, 0]
    assert list(p[4:8]) == [0, 9, 0, 0]          # tap 0 of channels 0..3
    assert list(p[-4:]) == [8, 17, 0, 0]         # tap 8


def test_copy_refuses_position_dependent_code():
    ret = 0xd65f03c0
    assert arm_peers._checked_words("ok", struct.pack("<3I", 0x54000040, 0xd503201f, ret))
    with pytest.raises(arm_peers.PeerError, match="adr"):
        arm_peers._checked_words("adrp", struct.pack("<2I", 0x90000000, ret))
    with pytest.raises(arm_peers.PeerError, match="leaves"):
        arm_peers._checked_words("bl", struct.pack("<2I", 0x94000010, ret))   # bl +64
    with pytest.raises(arm_peers.PeerError, match="literal"):
        arm_peers._checked_words("ldr", struct.pack("<2I", 0x58000040, ret))


def test_tests_never_download(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert arm_peers.cached_xnnpack() is None
    with pytest.raises(arm_peers.PeerError, match="not in"):
        arm_peers.fetch_xnnpack(download=False)


def test_cases_cover_the_issue():
    kinds = {(c.kind, c.dtype) for c in arm.CASES if not c.slow}
    assert kinds == {(k, d) for k in ("gemm", "fc", "pw", "dw") for d in ("float32", "int8")}
    assert any(c.name.startswith("dscnn") for c in arm.CASES)


@needs_qemu_arm
def test_cortex_m4_bound_row_counts_deterministically():
    case = arm.Case("fc-32x64-i8", "fc", "int8", {"N": 32, "K": 64})
    r1 = mclass.m_class_row(case, "cortex-m4", arm.row)
    _check_row(r1, "instructions")
    assert r1["peer"] == "bound-smlad-2mac" and r1["peer_cost"] == 32 * 64 / 2
    r2 = mclass.m_class_row(case, "cortex-m4", arm.row)
    assert r2["cgen_cost"] == r1["cgen_cost"]


def test_missing_target_is_a_row_with_a_reason():
    case = arm.Case("fc-32x64-i8", "fc", "int8", {"N": 32, "K": 64})
    r = mclass.m_class_row(case, "cortex-m99", arm.row)
    assert r["ratio"] is None and "target missing" in r["note"]


@needs_qemu_a64
@needs_peer
@pytest.mark.parametrize("case", [
    arm.Case("gemm16-f32", "gemm", "float32", {"M": 16, "N": 16, "K": 16}),
    arm.Case("dw-8x6x6-f32", "dw", "float32", {"C": 8, "H": 6, "W": 6}),
    arm.Case("gemm16-i8", "gemm", "int8", {"M": 16, "N": 16, "K": 16}),
], ids=lambda c: c.name)
def test_aarch64_xnnpack_rows(case):
    lib = arm_peers.cached_xnnpack()
    r = arm.a_class_row(case, "aarch64", lib)
    _check_row(r, "icount_ticks")
    assert r["peer_kernel"].startswith("xnn_")
    if case.kind == "dw":       # one kernel only: the cheapest to count twice
        ticks, kernel = xnnpack_run.peer_count(case, resolve("aarch64"), lib)
        assert (ticks, kernel) == (r["peer_cost"], r["peer_kernel"])


@pytest.mark.slow
def test_fma_bound_rows():
    from cgen.autotune import mca
    if mca.missing("aarch64"):
        pytest.skip(mca.missing("aarch64"))
    rows = arm.fma_bound_rows()
    assert [r["peer"] for r in rows] == ["fma-bound-a53", "fma-bound-a72", "fma-bound-a76"]
    for r in rows:
        _check_row(r, "mca_cycles")


@pytest.mark.parametrize("argv, says", [
    (["arm", "--targets", "x86-avx2"], "unknown target"),
    (["arm", "--cases", "no-such-layer"], "no case matches"),
])
def test_bad_arguments_one_line_nonzero(argv, says, capsys):
    from bench.__main__ import main
    assert main(argv + ["--offline", "--no-fma-bound"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
