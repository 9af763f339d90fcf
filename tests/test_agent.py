"""rpc_agent: standard library only, Python 3.9 syntax, the JSON-lines protocol, and runs
through LocalDevice / QemuDevice (the agent as a local child process)."""
from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from targets.device import AgentError, LocalDevice, QemuDevice, open_device

ROOT = Path(__file__).resolve().parents[1]
AGENT_DIR = ROOT / "rpc_agent"
AGENT = AGENT_DIR / "agent.py"

# exe [--time R N] X Y: y = x + 1 over 256 floats; variants misbehave.
CANDIDATE = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
  int a0 = 1, repeat = 0, number = 1, r, i, k;
  float x[256], y[256];
  FILE *f;
  if (argc > 1 && strcmp(argv[1], "--time") == 0) { repeat = atoi(argv[2]); number = atoi(argv[3]); a0 = 4; }
  if (argc - a0 != 2) { fprintf(stderr, "expected 2 files\n"); return 2; }
  f = fopen(argv[a0], "rb"); if (!f || fread(x, 4, 256, f) != 256) return 2; fclose(f);
#if defined(FSIZE)
  f = fopen("big.bin", "wb"); for (;;) fwrite(x, 4, 256, f);
#elif defined(LOOP)
  { volatile unsigned long n = 0; for (;;) ++n; }
#elif defined(EXIT3)
  fprintf(stderr, "kernel returned 7\n"); return 3;
#endif
  for (k = 0; k < 256; ++k) y[k] = x[k] + 1.0f;
  f = fopen(argv[a0 + 1], "wb"); if (!f || fwrite(y, 4, 256, f) != 256) return 2; fclose(f);
  for (r = 0; r < repeat; ++r) {
    double t0 = now();
    for (i = 0; i < number; ++i) for (k = 0; k < 256; ++k) ((volatile float *)y)[k] = x[k] * 1.0001f + 1.0f;
    printf("%.9e\n", (now() - t0) / number);
  }
  return 0;
}
"""
X = np.arange(256, dtype=np.float32)


def _compile(tmp: Path, name: str, flag=None, cc="cc", static=False) -> Path:
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    src = tmp / "cand.c"
    src.write_text(CANDIDATE)
    exe = tmp / name
    cmd = [cc, "-O1", "-std=c99", str(src), "-o", str(exe)] + (["-static"] if static else [])
    if flag:
        cmd.insert(1, f"-D{flag}")
    subprocess.run(cmd, check=True, capture_output=True)
    return exe


@pytest.fixture(scope="module")
def cands(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("agent-cands")
    return {name: _compile(d, name, flag) for name, flag in
            (("ok", None), ("loop", "LOOP"), ("fsize", "FSIZE"), ("exit3", "EXIT3"))}


@pytest.fixture
def device():
    dev = LocalDevice(name="test-local")
    try:
        yield dev
    finally:
        dev.close()


# ---------------------------------------------------------------- the agent as a file
def test_every_agent_file_parses_as_python_3_9():
    files = sorted(AGENT_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "__main__.py", "agent.py"}
    for f in files:
        ast.parse(f.read_text(), filename=str(f), feature_version=(3, 9))


def test_agent_imports_only_the_standard_library():
    tree = ast.parse(AGENT.read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "agent.py must stay a single uploadable file"
            mods.add(node.module.split(".")[0])
    assert mods <= set(sys.stdlib_module_names), mods - set(sys.stdlib_module_names)


def _talk(cmd, lines, cwd=None, env=None):
    proc = subprocess.run(cmd, input="".join(json.dumps(x) + "\n" for x in lines), text=True,
                          capture_output=True, timeout=30, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(ln) for ln in proc.stdout.splitlines()]


def test_runs_under_isolated_python_without_site(tmp_path):
    """`python -I -S`: no site-packages, no cwd on the path; as a file and as a package."""
    reqs = [{"id": 1, "op": "hello"}, {"id": 2, "op": "bye"}]
    as_file = _talk([sys.executable, "-I", "-S", str(AGENT), "--root", str(tmp_path)], reqs)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import rpc_agent; "
            f"sys.exit(rpc_agent.main(['--root', {str(tmp_path)!r}]))")
    as_pkg = _talk([sys.executable, "-I", "-S", "-c", code], reqs)
    as_module = _talk([sys.executable, "-m", "rpc_agent", "--root", str(tmp_path)], reqs, cwd=ROOT)
    for answers in (as_file, as_pkg, as_module):
        hello = answers[0]
        assert hello["ok"] and hello["protocol"] == 1 and hello["agent"] == "cgen-rpc-agent"
        for key in ("machine", "cpu_model", "cores", "governor", "mem_free_bytes", "workdir"):
            assert key in hello
        assert answers[1] == {"bye": True, "id": 2, "ok": True}
    assert list(tmp_path.iterdir()) == []          # every work directory removed on bye


def test_protocol_errors_are_answers_and_the_agent_goes_on(tmp_path):
    data = b"\x7fELF not really"
    good = base64.b64encode(data).decode()
    answers = _talk([sys.executable, "-I", "-S", str(AGENT), "--root", str(tmp_path)], [
        "not an object",
        {"id": 1, "op": "fly"},
        {"id": 2, "op": "hello", "protocol": 99},
        {"id": 3, "op": "put", "name": "a", "data": good, "sha256": "0" * 64},
        {"id": 4, "op": "put", "name": "a", "data": good, "sha256": hashlib.sha256(data).hexdigest()},
        {"id": 5, "op": "put", "name": "a", "data": good, "offset": len(data)},
        {"id": 6, "op": "put", "name": "a", "data": good, "offset": 3},
        {"id": 7, "op": "run", "exe": "missing"},
        {"id": 8, "op": "run", "exe": "a", "repeat": "many"},
        {"id": 9, "op": "cleanup"},
        {"id": 10, "op": "ping"},
        {"id": 11, "op": "bye"},
    ])
    assert answers[0]["ok"] is False and answers[0]["error"]["kind"] == "bad_request"
    assert "unknown op" in answers[1]["error"]["msg"]
    assert answers[2]["error"]["kind"] == "protocol_mismatch"
    assert "checksum mismatch" in answers[3]["error"]["msg"]
    assert answers[4]["ok"] and answers[4]["size"] == len(data)
    assert answers[5]["ok"] and answers[5]["sha256"] == hashlib.sha256(data + data).hexdigest()
    assert "offset 3" in answers[6]["error"]["msg"]
    assert "no file 'missing'" in answers[7]["error"]["msg"]
    assert answers[8]["error"]["kind"] == "bad_request"
    assert answers[9]["ok"] and answers[9]["removed"] == 1
    assert answers[10]["ok"] and answers[11]["ok"]


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../x", "files/../../x", "~root/x",
                                  "", "."])
def test_refuses_paths_that_escape_the_work_directory(tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    answers = _talk([sys.executable, "-I", "-S", str(AGENT), "--root", str(root)], [
        {"id": 1, "op": "put", "name": name, "data": ""},
        {"id": 2, "op": "cleanup", "names": [name]},
        {"id": 3, "op": "put", "name": "ok", "data": "", "executable": True},
        {"id": 4, "op": "run", "exe": "ok", "files": [["ok", name]]},
        {"id": 5, "op": "run", "exe": "ok", "outputs": [name]},
        {"id": 6, "op": "bye"},
    ], cwd=outside)
    for a in (answers[0], answers[1], answers[3]):
        assert a["ok"] is False and a["error"]["kind"] == "bad_request", a
    assert answers[4]["ok"] is False or answers[4]["error"] is not None
    assert list(outside.iterdir()) == [] and list(root.iterdir()) == []


def test_refuses_a_symlink_out_of_the_work_directory(tmp_path):
    from rpc_agent.agent import Agent, BadRequest
    agent = Agent(str(tmp_path))
    try:
        os.symlink(str(tmp_path), os.path.join(agent.files, "link"))
        with pytest.raises(BadRequest, match="escapes"):
            agent.path_in(agent.files, "link/x")
    finally:
        agent.close()
    assert not os.path.exists(agent.workdir)


def test_work_directory_removed_on_end_of_input_and_on_sigterm(tmp_path):
    for how in ("eof", "sigterm"):
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(AGENT), "--root", str(tmp_path)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        proc.stdin.write(json.dumps({"id": 1, "op": "hello"}) + "\n")
        proc.stdin.flush()
        work = json.loads(proc.stdout.readline())["workdir"]
        assert os.path.isdir(work)
        if how == "eof":
            proc.stdin.close()
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert not os.path.exists(work), how
        proc.stdout.close()
        if how == "sigterm":
            proc.stdin.close()


# ---------------------------------------------------------------- runs through a device
def test_run_outputs_times_and_calibration(device, cands):
    res = device.run(cands["ok"], {"x": X, "y": np.zeros(256, np.float32)}, ["y"])
    assert res.error is None and res.times == () and not res.emulated
    np.testing.assert_array_equal(res.outputs["y"], X + 1)
    fr = device.run_files(cands["ok"], {"x.bin": X.tobytes(), "y.bin": bytes(1024)}, None, ["y.bin"],
                          repeat=4, min_repeat_ms=5, timeout=30)
    assert fr.error is None and len(fr.times) == 4
    assert fr.number > 1 and fr.number * min(fr.times) * 1e3 >= 5 * 0.5   # calibrated
    assert np.array_equal(np.frombuffer(fr.outputs["y.bin"], np.float32), X + 1)


def test_inputs_and_executables_are_uploaded_once(device, cands):
    y = np.zeros(256, np.float32)
    device.run(cands["ok"], {"x": X, "y": y}, ["y"])
    n = len(device._blobs)
    assert n == 3                                       # the executable, x, y
    device.run(cands["ok"], {"x": X, "y": y}, ["y"])
    assert len(device._blobs) == n
    res = device.run(cands["ok"], {"x": X * 2, "y": y}, ["y"])     # only x is new
    np.testing.assert_array_equal(res.outputs["y"], X * 2 + 1)
    assert len(device._blobs) == n + 1


def test_error_kinds_timeouts_and_limits(device, cands):
    y = np.zeros(256, np.float32)
    io = {"x": X, "y": y}
    t0 = time.monotonic()
    res = device.run(cands["loop"], io, ["y"], timeout=1.0)
    assert res.error.kind == "run_timeout" and time.monotonic() - t0 < 4
    res = device.run(cands["loop"], io, ["y"], timeout=30, limits={"cpu_s": 1})
    assert res.error.kind == "run_timeout" and "CPU time limit" in res.error.msg
    res = device.run(cands["fsize"], io, ["y"], timeout=30, limits={"fsize_bytes": 1 << 16})
    assert res.error.kind == "runtime_error" and "file size limit" in res.error.msg
    res = device.run(cands["exit3"], io, ["y"])
    assert res.error.kind == "runtime_error" and "exit status 3" in res.error.msg
    assert "kernel returned 7" in res.error.msg
    res = device.run(b"#!/bin/sh\necho 'no timing'\n", io, ["y"], repeat=2)
    assert res.error.kind == "runtime_error" and "timing lines" in res.error.msg
    res = device.run(b"\x00\x01garbage", io, ["y"])
    assert res.error.kind == "runtime_error" and "cannot execute" in res.error.msg
    assert device.run(cands["ok"], io, ["y"]).error is None


def test_timeout_kills_the_whole_process_group(device, tmp_path):
    marker = tmp_path / "grandchild-alive"
    script = f"#!/bin/sh\n(sleep 3; touch {marker}) &\nsleep 30\n".encode()
    t0 = time.monotonic()
    res = device.run(script, {"x": X}, [], timeout=0.5)
    assert res.error.kind == "run_timeout" and time.monotonic() - t0 < 3
    time.sleep(3.5)
    assert not marker.exists()                       # the background child died with the group


def test_cooldown_between_candidates(device, cands):
    # the cooldown runs from the end of the previous run (inside the agent), so only
    # the time across both calls is bounded below by it
    io = {"x": X, "y": np.zeros(256, np.float32)}
    t0 = time.monotonic()
    device.run(cands["ok"], io, ["y"])
    device.run(cands["ok"], io, ["y"], cooldown_ms=1000)
    assert time.monotonic() - t0 >= 1.0


def test_a_dead_agent_is_device_lost_then_restarted(device, cands):
    io = {"x": X, "y": np.zeros(256, np.float32)}
    pid = device.connect()["pid"]
    device.kill_agent()
    res = device.run(cands["ok"], io, ["y"])
    assert res.error.kind == "device_lost"
    res = device.run(cands["ok"], io, ["y"])
    assert res.error is None and device.info["pid"] != pid


def test_bad_requests_raise(device, cands):
    with pytest.raises(ValueError, match="not one of the inputs"):
        device.run(cands["ok"], {"x": X}, ["z"])
    with pytest.raises(AgentError, match="argv item"):
        device.run_files(cands["ok"], {"x": b""}, ["@nope"])


def test_device_urls_and_targets():
    assert isinstance(open_device("local"), LocalDevice)
    q = open_device("qemu:aarch64")
    assert isinstance(q, QemuDevice) and q.emulator == "qemu-aarch64" and q.emulated
    assert open_device("qemu:arm").emulator == "qemu-arm"
    assert q.supports("rpi4") and q.supports("aarch64") and not q.supports("armv7")
    assert not q.supports("host")
    local = open_device("local")
    assert local.supports("host") and local.supports("generic-c") and not local.supports("aarch64")
    assert open_device("local", targets=["generic-c"]).supports("host") is False
    with pytest.raises(ValueError, match="unknown device URL"):
        open_device("tcp://x")
    with pytest.raises(ValueError, match="QEMU architecture"):
        open_device("qemu:mips")


@pytest.mark.qemu
@pytest.mark.parametrize("arch,cc", [("aarch64", "aarch64-linux-gnu-gcc"),
                                     ("arm", "arm-linux-gnueabihf-gcc")])
def test_qemu_runs_go_through_the_same_agent(tmp_path, arch, cc):
    if shutil.which(f"qemu-{arch}") is None:
        pytest.skip(f"qemu-{arch} not installed (apt-get install qemu-user)")
    ok = _compile(tmp_path, "ok", cc=cc, static=True)
    loop = _compile(tmp_path, "loop", "LOOP", cc=cc, static=True)
    dev = open_device(f"qemu:{arch}")
    try:
        io = {"x": X, "y": np.zeros(256, np.float32)}
        res = dev.run(ok, io, ["y"], repeat=2, timeout=30)
        assert res.error is None and res.emulated and len(res.times) == 2
        np.testing.assert_array_equal(res.outputs["y"], X + 1)
        t0 = time.monotonic()
        res = dev.run(loop, io, ["y"], timeout=1.0)
        assert res.error.kind == "run_timeout" and time.monotonic() - t0 < 4
        assert dev.run(ok, io, ["y"]).error is None
        # an address-space limit below QEMU's minimum is raised to 5 GiB, so QEMU still starts
        assert dev.run(ok, io, ["y"], limits={"as_bytes": 1 << 30}).error is None
    finally:
        dev.close()


def test_work_directories_of_killed_agents_are_reaped(tmp_path, cands):
    from targets.device import reap_stale_workdirs
    dead = LocalDevice(name="dead", root=str(tmp_path))
    live = LocalDevice(name="live", root=str(tmp_path))
    try:
        dead_dir, live_dir = dead.connect()["workdir"], live.connect()["workdir"]
        dead.kill_agent()
        dead._proc.proc.wait(timeout=10)
        (tmp_path / "cgen-agent-starting").mkdir()        # no agent.json yet: left alone
        assert reap_stale_workdirs(str(tmp_path)) == 1
        assert not os.path.exists(dead_dir) and os.path.isdir(live_dir)
        assert (tmp_path / "cgen-agent-starting").is_dir()
    finally:
        dead.close()
        live.close()


def test_an_agent_starting_up_is_never_reaped(tmp_path, monkeypatch):
    """Another agent's reaper may look at any step of this one's start-up: a pool of two
    local devices once lost a work directory, reaped between agent.lock's creation and its
    lock.  Here a reaper runs after every open the start-up makes."""
    from rpc_agent import agent as A
    real_open, busy = os.open, []

    def open_then_reap(*args, **kw):
        fd = real_open(*args, **kw)
        if not busy:
            busy.append(True)
            try:
                A.reap_stale(str(tmp_path))
            finally:
                busy.pop()
        return fd

    monkeypatch.setattr(A.os, "open", open_then_reap)
    try:
        agent = A.Agent(str(tmp_path))
    finally:
        monkeypatch.undo()
    try:
        assert os.path.isdir(os.path.join(agent.workdir, "files"))
        assert A.reap_stale(str(tmp_path)) == 0
    finally:
        agent.close()


def _python39():
    import glob
    for cand in ["python3.9", "/usr/bin/python3.9",
                 *sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.9*/bin/python3.9")))]:
        try:
            out = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 9)":
            return cand
    return None


def test_agent_serves_under_python_3_9(cands, tmp_path):
    """A board with Raspberry Pi OS 11 has Python 3.9: the same runs work there."""
    py = _python39()
    if py is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    dev = LocalDevice(name="py39", python=py, root=str(tmp_path))
    try:
        assert dev.connect()["python"].startswith("3.9")
        res = dev.run(cands["ok"], {"x": X, "y": np.zeros(256, np.float32)}, ["y"], repeat=2,
                      min_repeat_ms=1)
        assert res.error is None and len(res.times) == 2
        np.testing.assert_array_equal(res.outputs["y"], X + 1)
        assert dev.run(cands["loop"], {"x": X, "y": X}, ["y"], timeout=0.5).error.kind == "run_timeout"
    finally:
        dev.close()


def test_module_runs_on_a_device():
    """A module's call and benchmark go through a device's agent when bound to one."""
    import cgen
    from cgen import te
    from targets.device import open_device
    A = te.placeholder((8, 8), name="A")
    B = te.compute((8, 8), lambda i, j: A[i, j] * 2.0, name="B")
    mod = cgen.build(te.create_schedule(B), [A, B], target="host", name="dbl")
    with open_device("local") as dev:
        mod.on(dev)
        a = np.arange(64, dtype=np.float32).reshape(8, 8)
        b = np.zeros((8, 8), np.float32)
        mod(a, b)
        np.testing.assert_array_equal(b, 2 * a)
        res = mod.benchmark(a, b, repeat=2)
        assert res.error is None and len(res.times) == 2
