"""DevicePool: matching by target, priorities, health checks, re-queueing exactly once; the
Ray-backed variant on a local (loopback-only) Ray instance; the `pool` bench suite."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from targets.device import LocalDevice, open_device
from targets.pool import DevicePool
from targets.pool_ray import DeviceSpec, RayDevicePool, resource_name
from targets.pool_toml import load_pool_toml

ROOT = Path(__file__).resolve().parents[1]

# exe [--time R N] X Y: y = x + 1 over 64 floats (the harness CLI)
ADD = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
int main(int argc, char **argv) {
  int a0 = 1, repeat = 0, r, k;
  float x[64];
  FILE *f;
  if (argc > 1 && strcmp(argv[1], "--time") == 0) { repeat = atoi(argv[2]); a0 = 4; }
  f = fopen(argv[a0], "rb"); if (!f || fread(x, 4, 64, f) != 64) return 2; fclose(f);
  for (k = 0; k < 64; ++k) x[k] += 1.0f;
  f = fopen(argv[a0 + 1], "wb"); if (!f || fwrite(x, 4, 64, f) != 64) return 2; fclose(f);
  for (r = 0; r < repeat; ++r) printf("%.9e\n", 1e-6);
  return 0;
}
"""
X = np.arange(64, dtype=np.float32)
SLEEP = b"#!/bin/sh\nsleep 1.5\n"                  # a slow request (no outputs)
KILLS_ITS_AGENT = b"#!/bin/sh\nkill -9 $PPID\nsleep 5\n"


@pytest.fixture(scope="module")
def add_exe(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("pool")
    (d / "add.c").write_text(ADD)
    subprocess.run([cc, "-O1", "-std=c99", str(d / "add.c"), "-o", str(d / "add")], check=True,
                   capture_output=True)
    return d / "add"


def _io(k=0):
    return {"x": X + k, "y": np.zeros(64, np.float32)}


def _wait_in_flight(pool, tag, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, t in pool.in_flight().items():
            if t == tag:
                return name
        time.sleep(0.01)
    raise AssertionError(f"{tag} never started: {pool.stats()}")


def _wait_alive(pool, timeout=30):
    """Every device's agent is up: a test about where a request goes again must not
    race a device that is still starting (on a loaded CI runner that takes seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(d["state"] == "alive" for d in pool.stats()["devices"]):
            return
        time.sleep(0.01)
    raise AssertionError(f"devices never came up: {pool.stats()}")


def test_batch_on_two_devices_every_request_exactly_once(add_exe):
    with DevicePool([LocalDevice(name="a"), LocalDevice(name="b")]) as pool:
        _wait_alive(pool)
        futs = [pool.submit(add_exe, _io(k), ["y"], repeat=1, tag=k) for k in range(20)]
        results = [f.result(timeout=60) for f in futs]
        for k, r in enumerate(results):
            assert r.error is None, r.error
            np.testing.assert_array_equal(r.outputs["y"], X + k + 1)
        done = pool.completed()
        assert sorted(t for t, _ in done) == list(range(20))
        assert {d for _, d in done} == {"a", "b"}


def test_priorities_then_fifo(add_exe):
    with DevicePool([LocalDevice(name="only")]) as pool:
        first = pool.submit(SLEEP, {"x": X}, [], tag="first")
        _wait_in_flight(pool, "first")
        futs = [pool.submit(add_exe, _io(), ["y"], tag=t, priority=p)
                for t, p in (("low1", 0), ("low2", 0), ("high", 5), ("low3", 0), ("high2", 5))]
        for f in [first] + futs:
            assert f.result(timeout=60).error is None
        order = [t for t, _ in pool.completed()]
        assert order == ["first", "high", "high2", "low1", "low2", "low3"]


@pytest.mark.qemu
def test_requests_go_to_devices_serving_their_target(add_exe, tmp_path):
    if shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("needs qemu-user and gcc-aarch64-linux-gnu")
    src = tmp_path / "add.c"
    src.write_text(ADD)
    a64 = tmp_path / "add-a64"
    subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O1", str(src), "-o", str(a64)], check=True)
    with DevicePool([LocalDevice(name="host"), open_device("qemu:aarch64", name="qemu")]) as pool:
        futs = []
        for k in range(4):
            futs.append(pool.submit(a64, _io(k), ["y"], target="rpi4", tag=f"arm{k}"))
            futs.append(pool.submit(add_exe, _io(k), ["y"], target="host", tag=f"x86{k}"))
        nobody = pool.submit(add_exe, _io(), ["y"], target="armv7", tag="nobody")
        for f in futs:
            assert f.result(timeout=60).error is None
        res = nobody.result(timeout=10)
        assert res.error.kind == "device_lost" and "armv7" in res.error.msg
        for tag, dev in pool.completed():
            if tag != "nobody":
                assert dev == ("qemu" if tag.startswith("arm") else "host"), (tag, dev)
        assert all(r.emulated for r in (f.result() for f in futs[0::2]))


def test_device_dying_mid_request_requeues_it_exactly_once(add_exe):
    a, b = LocalDevice(name="a"), LocalDevice(name="b")
    with DevicePool([a, b], health_interval=0.3) as pool:
        _wait_alive(pool)
        slow = pool.submit(SLEEP, {"x": X}, [], tag="slow")
        victim = _wait_in_flight(pool, "slow")
        quick = [pool.submit(add_exe, _io(k), ["y"], tag=k) for k in range(6)]
        {"a": a, "b": b}[victim].kill_agent()
        assert slow.result(timeout=60).error is None
        for k, f in enumerate(quick):
            np.testing.assert_array_equal(f.result(timeout=60).outputs["y"], X + k + 1)
        done = pool.completed()
        assert sorted(map(str, (t for t, _ in done))) == sorted(["slow"] + [str(k) for k in range(6)])
        assert dict(done)["slow"] != victim
        assert pool.stats()["requeued"] == 1
        # the health check brings the dead device back
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = {d["name"]: d["state"] for d in pool.stats()["devices"]}
            if states[victim] == "alive":
                break
            time.sleep(0.05)
        assert states[victim] == "alive"


def test_a_lost_request_waits_for_another_device_rather_than_its_revived_one(add_exe):
    # the other device is busy for longer than the victim takes to come back
    with DevicePool([LocalDevice(name="a"), LocalDevice(name="b")], health_interval=0.2) as pool:
        _wait_alive(pool)
        lost = pool.submit(SLEEP, {"x": X}, [], tag="lost")
        victim = _wait_in_flight(pool, "lost")
        busy = pool.submit(SLEEP, {"x": X}, [], tag="busy")
        other = _wait_in_flight(pool, "busy")
        assert other != victim
        pool.devices[["a", "b"].index(victim)].kill_agent()
        after = pool.submit(add_exe, _io(3), ["y"], tag="after")
        np.testing.assert_array_equal(after.result(timeout=60).outputs["y"], X + 4)
        assert lost.result(timeout=60).error is None and busy.result(timeout=60).error is None
        done = dict(pool.completed())
        assert done["after"] == victim          # the revived device serves other requests
        assert done["lost"] == other
        assert pool.stats()["requeued"] == 1


def test_a_candidate_that_kills_every_device_gives_up_after_max_attempts(add_exe):
    with DevicePool([LocalDevice(name="a"), LocalDevice(name="b")], max_attempts=2,
                    health_interval=0.3) as pool:
        res = pool.submit(KILLS_ITS_AGENT, {"x": X}, [], tag="killer").result(timeout=60)
        assert res.error.kind == "device_lost"
        assert pool.submit(add_exe, _io(), ["y"]).result(timeout=60).error is None
        assert [t for t, _ in pool.completed()].count("killer") == 1


def test_unreachable_device_is_retired_and_others_serve(add_exe):
    broken = LocalDevice(name="broken", python="/nonexistent/python3")
    with DevicePool([broken, LocalDevice(name="ok")], health_interval=0.2, retire_after=0.5) as pool:
        futs = [pool.submit(add_exe, _io(k), ["y"], tag=k) for k in range(5)]
        assert all(f.result(timeout=60).error is None for f in futs)
        assert {d for _, d in pool.completed()} == {"ok"}
        deadline = time.monotonic() + 10
        while pool.stats()["devices"][0]["state"] != "retired" and time.monotonic() < deadline:
            time.sleep(0.05)
        st = pool.stats()["devices"][0]
        assert st["state"] == "retired" and "cannot start the agent" in st["reason"]
    with DevicePool([LocalDevice(name="broken", python="/nonexistent/python3")],
                    health_interval=0.2, retire_after=0.5) as pool:
        res = pool.submit(add_exe, _io(), ["y"]).result(timeout=30)
        assert res.error.kind == "device_lost" and "retired" in res.error.msg


def test_close_resolves_what_is_left(add_exe):
    pool = DevicePool([LocalDevice(name="a")])
    first = pool.submit(SLEEP, {"x": X}, [])
    _wait_in_flight(pool, None)
    rest = [pool.submit(add_exe, _io(), ["y"]) for _ in range(3)]
    pool.close()
    assert first.result(timeout=1).error is None            # the running one finished
    assert all(f.result(timeout=1).error.kind == "device_lost" for f in rest)
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(add_exe, _io(), ["y"])


def test_pool_toml(tmp_path):
    f = tmp_path / "pool.toml"
    f.write_text('health_interval = 2\n'
                 '[[device]]\nurl = "local"\ncount = 2\n'
                 '[[device]]\nurl = "qemu:arm"\nname = "arm"\n'
                 '[[device]]\nurl = "ssh://pi@raspberrypi.local:2222"\ntargets = ["rpi4"]\n'
                 'identity = "~/.ssh/id_test"\n')
    devices, opts = load_pool_toml(f)
    assert opts == {"health_interval": 2}
    assert [d.name for d in devices] == ["local-0", "local-1", "arm", "pi_raspberrypi.local_2222"]
    assert devices[2].emulator == "qemu-arm"
    ssh = devices[3]
    assert ssh.kind == "ssh" and ssh.address.port == 2222 and ssh.supports("rpi4")
    assert not ssh.supports("aarch64") and ssh.options.identity == ("~/.ssh/id_test",)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[device]]\nurl = "local"\ncolour = "red"\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_pool_toml(bad)


def test_pool_toml_host_key_trust_is_an_explicit_boolean(tmp_path):
    """Unknown SSH host keys are refused unless a device says trust_on_first_use = true;
    a string (even "no") is refused, never read as the opt-in."""
    f = tmp_path / "pool.toml"
    url = '[[device]]\nurl = "ssh://pi@raspberrypi.local"\n'
    f.write_text(url)
    assert load_pool_toml(f)[0][0].options.trust_on_first_use is False
    f.write_text(url + "trust_on_first_use = true\n")
    assert load_pool_toml(f)[0][0].options.trust_on_first_use is True
    f.write_text(url + 'trust_on_first_use = "no"\n')
    with pytest.raises(ValueError, match="trust_on_first_use must be true or false"):
        load_pool_toml(f)


# ---------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_local():
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (the optional cgen-compiler[cluster] extra)")
    from targets.pool_ray import start_local_ray
    specs = [DeviceSpec("local", "ray-a"), DeviceSpec("local", "ray-b"),
             DeviceSpec("ssh://nobody@127.0.0.1:1", "ray-dead",
                        options={"ssh_options": _dead_ssh_options()})]
    ray = start_local_ray(specs, num_cpus=2)
    try:
        yield ray, specs
    finally:
        ray.shutdown()


def _dead_ssh_options():
    from targets.ssh import SshOptions
    return SshOptions(ssh_config=None, allow_agent=False, look_for_keys=False, connect_timeout=2)


def test_ray_pool_listens_on_loopback_only(ray_local):
    ray, _ = ray_local
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())
    ss = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True)
    if ss.returncode != 0:
        return
    ours = []
    for line in ss.stdout.splitlines():
        m = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
        if m and (m.group(1) in ("raylet", "gcs_server") or m.group(1).startswith("ray::")
                  or int(m.group(2)) == os.getpid()):
            ours.append(line.split()[3])
    assert ours, ss.stdout
    for addr in ours:
        assert addr.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")), ours


def test_ray_pool_runs_every_request_exactly_once(ray_local, add_exe):
    ray, specs = ray_local
    assert ray.cluster_resources()[resource_name("ray-a")] == 1
    with RayDevicePool(specs, health_interval=0.5, retire_after=2.0) as pool:
        futs = [pool.submit(add_exe, _io(k), ["y"], repeat=1, tag=k) for k in range(12)]
        for k, f in enumerate(futs):
            r = f.result(timeout=120)
            assert r.error is None, r.error
            np.testing.assert_array_equal(r.outputs["y"], X + k + 1)
        done = pool.completed()
        assert sorted(t for t, _ in done) == list(range(12))
        assert {d for _, d in done} <= {"ray-a", "ray-b"}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = {d["name"]: d["state"] for d in pool.stats()["devices"]}
            if state["ray-dead"] == "retired":
                break
            time.sleep(0.1)
        assert state["ray-dead"] == "retired"


def test_ray_device_lost_mid_request_is_requeued(ray_local, add_exe):
    """The Ray worker running a measurement dies (its agent kills it): re-queued, once."""
    ray, specs = ray_local
    with RayDevicePool(specs[:2], health_interval=0.5, max_attempts=3) as pool:
        killer = pool.submit(KILLS_ITS_AGENT, {"x": X}, [], tag="killer")
        quick = [pool.submit(add_exe, _io(k), ["y"], tag=k) for k in range(4)]
        assert killer.result(timeout=120).error.kind == "device_lost"
        assert all(f.result(timeout=120).error is None for f in quick)
        tags = [t for t, _ in pool.completed()]
        assert sorted(map(str, tags)) == sorted(["killer", "0", "1", "2", "3"])
        assert pool.stats()["requeued"] == 2


# ---------------------------------------------------------------- bench
def test_pool_bench_json():
    proc = subprocess.run([sys.executable, "-m", "bench", "pool", "--json", "--requests", "4",
                           "--trials", "1", "--min-repeat-ms", "2", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip()]
    assert {"suite", "case", "ratio", "unit", "cgen_s", "peer", "peer_s", "rate_one",
            "rate_two"} <= set(rec)
    assert rec["suite"] == "pool" and rec["ratio"] > 0
    assert rec["ratio"] == pytest.approx(rec["rate_two"] / rec["rate_one"])
