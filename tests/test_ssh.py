"""SSH transport end to end against a real OpenSSH server on 127.0.0.1.

The fixture generates ed25519 host and user keys into a temporary directory,
starts `/usr/sbin/sshd -D -e -f CONFIG` on a random free loopback port and
kills it (and every process it started) at teardown, also on failure.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from targets.device import DeviceUnavailable, SshDevice, open_device
from targets.pool import DevicePool
from targets.ssh import SshOptions

SSHD = "/usr/sbin/sshd"

pytestmark = pytest.mark.skipif(not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None,
                                reason="needs openssh-server (/usr/sbin/sshd) and ssh-keygen; "
                                       "ci/setup.sh installs them")


# ---------------------------------------------------------------- the server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cgen-test", "-f", str(path)],
                   check=True, capture_output=True)


def _children() -> dict:
    """pid -> parent pid, for every process."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class SshServer:
    def __init__(self, tmp: Path):
        self.dir = tmp
        self.host_key = tmp / "host_ed25519"
        self.user_key = tmp / "user_ed25519"
        self.wrong_key = tmp / "wrong_ed25519"
        for k in (self.host_key, self.user_key, self.wrong_key):
            _keygen(k)
        (tmp / "authorized_keys").write_text(Path(f"{self.user_key}.pub").read_text())
        self.port = _free_port()
        self.user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        self.config = tmp / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {tmp / 'sshd.pid'}",
            f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
            "StrictModes no",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
            "",
        ]))
        self.known_hosts = tmp / "known_hosts"
        pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        self.remote_dir = str(tmp / "remote")      # where the agent file is uploaded
        self.agent_root = tmp / "agent-root"
        self.agent_root.mkdir()
        self.seen: set = set()
        self.proc = None

    def start(self):
        os.makedirs("/run/sshd", exist_ok=True)
        self.log = open(self.dir / "sshd.log", "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening within 10 s")

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def options(self, **kw) -> SshOptions:
        base = SshOptions(identity=(str(self.user_key),), known_hosts=str(self.known_hosts),
                          ssh_config=None, allow_agent=False, look_for_keys=False,
                          connect_timeout=5.0, remote_dir=self.remote_dir,
                          agent_root=str(self.agent_root))
        return replace(base, **kw)

    def device(self, name=None, **kw) -> SshDevice:
        return SshDevice(self.url, self.options(**kw), name=name, reconnect_attempts=1,
                         backoff_s=0.1)

    def descendants(self) -> set:
        if self.proc is None:
            return set()
        parents = _children()
        out, frontier = set(), {self.proc.pid}
        while frontier:
            new = {p for p, pp in parents.items() if pp in frontier} - out
            out |= new
            frontier = new
        self.seen |= out
        return out

    def kill(self):
        """Kill the listener and every sshd session process (their agents see end of input)."""
        if self.proc is None:
            return
        for pid in self.descendants():
            if _comm(pid) == "sshd":
                _sigkill(pid)
        _sigkill(self.proc.pid)
        self.proc.wait()
        self.proc = None
        self.log.close()

    def stop(self):
        self.descendants()
        self.kill()
        for pid in self.seen:       # agents and candidates left behind
            _sigkill(pid)


def _sigkill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def sshd(tmp_path):
    if os.geteuid() != 0 and not os.path.isdir("/run/sshd"):
        pytest.skip("sshd needs /run/sshd (create it as root, or run the tests as root)")
    server = SshServer(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- candidates
HARNESS_ADD = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
/* The harness CLI: exe [--time R N] X Y -- y = x + 1 over 1024 floats. */
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
  int a0 = 1, repeat = 0, number = 1, r, i, k;
  float x[1024], y[1024];
  FILE *f;
  if (argc > 1 && strcmp(argv[1], "--time") == 0) { repeat = atoi(argv[2]); number = atoi(argv[3]); a0 = 4; }
  if (argc - a0 != 2) { fprintf(stderr, "expected 2 files\n"); return 2; }
  f = fopen(argv[a0], "rb"); if (!f || fread(x, 4, 1024, f) != 1024) return 2; fclose(f);
#if defined(SEGV)
  { volatile int *p = (int *)0; *p = 1; }
#elif defined(LOOP)
  { volatile unsigned long n = 0; for (;;) ++n; }
#elif defined(OOM)
  for (;;) { char *p = malloc(1 << 20); if (!p) { fprintf(stderr, "out of memory\n"); abort(); } memset(p, 1, 1 << 20); }
#endif
  for (k = 0; k < 1024; ++k) y[k] = x[k] + 1.0f;
  f = fopen(argv[a0 + 1], "wb"); if (!f || fwrite(y, 4, 1024, f) != 1024) return 2; fclose(f);
  for (r = 0; r < repeat; ++r) {
    double t0 = now();
    for (i = 0; i < number; ++i) for (k = 0; k < 1024; ++k) ((volatile float *)y)[k] = x[k] + 1.0f;
    printf("%.9e\n", (now() - t0) / number);
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> dict:
    """Host executables following the harness CLI: ok, segv, loop, oom."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("candidates")
    (d / "cand.c").write_text(HARNESS_ADD)
    out = {}
    for name, flag in (("ok", None), ("segv", "SEGV"), ("loop", "LOOP"), ("oom", "OOM")):
        exe = d / name
        cmd = [cc, "-O1", "-std=c99", "-D_POSIX_C_SOURCE=200809L", str(d / "cand.c"), "-o", str(exe)]
        if flag:
            cmd.insert(1, f"-D{flag}")
        subprocess.run(cmd, check=True, capture_output=True)
        out[name] = exe
    return out


X = np.arange(1024, dtype=np.float32)


def _ok(device, cands, **kw):
    res = device.run(cands["ok"], {"x": X, "y": np.zeros(1024, np.float32)}, ["y"], **kw)
    assert res.error is None, res.error
    np.testing.assert_array_equal(res.outputs["y"], X + 1)
    return res


# ---------------------------------------------------------------- tests
def test_measure_a_kernel_end_to_end(sshd, candidates):
    dev = sshd.device()
    try:
        info = dev.connect()
        assert info["protocol"] == 1 and info["cores"] >= 1 and info["machine"]
        res = _ok(dev, candidates, repeat=3, min_repeat_ms=2, timeout=20)
        assert len(res.times) == 3 and all(t > 0 for t in res.times)
        assert dev.supports("generic-c") and not dev.supports("aarch64")
        # checksums instead of data
        res = dev.run(candidates["ok"], {"x": X, "y": np.zeros(1024, np.float32)}, ["y"],
                      return_outputs="sha256")
        import hashlib
        assert res.outputs["y"] == hashlib.sha256((X + 1).tobytes()).hexdigest()
    finally:
        dev.close()


def test_agent_uploaded_once_and_removes_its_work_directory(sshd, candidates):
    dev = sshd.device()
    try:
        work = dev.connect()["workdir"]
        assert work.startswith(str(sshd.agent_root)) and os.path.isdir(work)
        uploaded = list(Path(sshd.remote_dir).glob("agent-*.py"))
        assert len(uploaded) == 1
    finally:
        dev.close()
    deadline = time.monotonic() + 5
    while os.path.exists(work) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(work)
    dev2 = sshd.device()
    try:
        dev2.connect()
        assert list(Path(sshd.remote_dir).glob("agent-*.py")) == uploaded
    finally:
        dev2.close()


def test_unknown_host_key_is_refused(sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    dev = sshd.device(known_hosts=str(empty))
    with pytest.raises(DeviceUnavailable, match="unknown host key for \\[127.0.0.1\\]"):
        dev.connect()
    assert empty.read_text() == ""     # nothing recorded without the opt-in


def test_trust_on_first_use_records_the_key(sshd, tmp_path):
    kh = tmp_path / "tofu_known_hosts"
    dev = sshd.device(known_hosts=str(kh), trust_on_first_use=True)
    try:
        dev.connect()
    finally:
        dev.close()
    line = kh.read_text().split()
    assert line[0] == f"[127.0.0.1]:{sshd.port}" and line[1] == "ssh-ed25519"
    assert line[2] == Path(f"{sshd.host_key}.pub").read_text().split()[1]
    dev = sshd.device(known_hosts=str(kh))          # now known: no opt-in needed
    try:
        dev.connect()
    finally:
        dev.close()


def test_changed_host_key_is_refused(sshd, tmp_path):
    kh = tmp_path / "other_known_hosts"
    other = Path(f"{sshd.wrong_key}.pub").read_text().split()
    kh.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(DeviceUnavailable, match="does not match"):
        sshd.device(known_hosts=str(kh), trust_on_first_use=True).connect()


def test_wrong_key_is_refused(sshd):
    dev = sshd.device(identity=(str(sshd.wrong_key),))
    with pytest.raises(DeviceUnavailable, match="authentication failed"):
        dev.connect()


def test_connection_refused_and_no_python(sshd, tmp_path):
    closed = SshDevice(f"ssh://{sshd.user}@127.0.0.1:{_free_port()}", sshd.options(),
                       reconnect_attempts=1)
    with pytest.raises(Exception, match="connection refused"):
        closed.connect()
    with pytest.raises(DeviceUnavailable, match="no python3-missing"):
        sshd.device(python="python3-missing").connect()


def test_ssh_config_is_honoured(sshd, tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host testboard\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
                   f"  IdentityFile {sshd.user_key}\n  UserKnownHostsFile {sshd.known_hosts}\n")
    opts = replace(sshd.options(), identity=(), known_hosts=None, ssh_config=str(cfg))
    dev = SshDevice("ssh://testboard", opts)
    try:
        assert dev.connect()["protocol"] == 1
    finally:
        dev.close()


def test_faulty_candidates_come_back_as_errors_and_the_device_goes_on(sshd, candidates):
    dev = sshd.device()
    y = np.zeros(1024, np.float32)
    try:
        dev.connect()
        pid = dev.info["pid"]
        cases = {"segv": ("runtime_error", "SIGSEGV", 5.0),
                 "loop": ("run_timeout", "within", 2.0),
                 "oom": (None, "", 3.0)}
        for name, (kind, text, timeout) in cases.items():
            t0 = time.monotonic()
            res = dev.run(candidates[name], {"x": X, "y": y}, ["y"], repeat=1, timeout=timeout)
            took = time.monotonic() - t0
            assert res.error is not None, name
            assert res.error.kind in ("runtime_error", "run_timeout"), res.error
            if kind:
                assert res.error.kind == kind and text in res.error.msg, res.error
            assert took < timeout + 3, (name, took)
            _ok(dev, candidates, repeat=1)                  # the very next request succeeds
        # a small address-space limit stops the unbounded allocation early, as a runtime error
        res = dev.run(candidates["oom"], {"x": X, "y": y}, ["y"], timeout=20,
                      limits={"as_bytes": 256 << 20})
        assert res.error.kind == "runtime_error" and "address-space limit 256 MiB" in res.error.msg
        _ok(dev, candidates)
        assert dev.info["pid"] == pid                      # same agent all along
    finally:
        dev.close()


def test_dropped_connection_reconnects(sshd, candidates):
    dev = sshd.device()
    try:
        dev.connect()
        dev.kill_connection()
        res = dev.run(candidates["ok"], {"x": X, "y": np.zeros(1024, np.float32)}, ["y"])
        assert res.error is not None and res.error.kind == "device_lost"
        _ok(dev, candidates)                              # reconnected on the next call
    finally:
        dev.close()


def test_killed_server_requeues_to_another_device_exactly_once(sshd, candidates):
    """Kill sshd while the board runs a request: the pool re-runs it on the local device."""
    board = sshd.device(name="board")
    local = open_device("local", name="local")
    slow = candidates["loop"]
    pool = DevicePool([board], health_interval=0.5, retire_after=5.0)
    try:
        # The board takes the first request (a 3 s loop, i.e. a run_timeout); then a local
        # device joins, quick requests follow, and the server is killed mid-request.
        futs = [pool.submit(slow, {"x": X, "y": np.zeros(1024, np.float32)}, ["y"], timeout=3.0,
                            tag="slow")]
        deadline = time.monotonic() + 20
        while pool.in_flight().get("board") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.in_flight().get("board") == "slow", pool.stats()
        pool.add(local)
        futs += [pool.submit(candidates["ok"], {"x": X + k, "y": np.zeros(1024, np.float32)}, ["y"],
                             tag=f"ok{k}") for k in range(6)]
        time.sleep(0.3)
        sshd.kill()
        results = [f.result(timeout=60) for f in futs]
        # The slow one was re-queued and finished (as a timeout) on the local device.
        assert results[0].error is not None and results[0].error.kind == "run_timeout"
        for k, r in enumerate(results[1:]):
            assert r.error is None, r.error
            np.testing.assert_array_equal(r.outputs["y"], X + k + 1)
        log = pool.completed()
        assert sorted(t for t, _ in log) == sorted(["slow"] + [f"ok{k}" for k in range(6)])
        assert dict(log)["slow"] == "local"
        assert pool.stats()["requeued"] >= 1
    finally:
        pool.close()


def test_devices_check_cli(sshd):
    from cgen.cli import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["devices", "check", sshd.url, "--identity", str(sshd.user_key),
                   "--known-hosts", str(sshd.known_hosts), "--no-ssh-config",
                   "--remote-dir", sshd.remote_dir])
    assert rc == 0, err.getvalue()
    text = out.getvalue()
    assert "protocol" in text and "machine" in text and "ok" in text.lower()

    empty = sshd.dir / "none_known"
    empty.write_text("")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["devices", "check", sshd.url, "--identity", str(sshd.user_key),
                   "--known-hosts", str(empty), "--no-ssh-config",
                   "--remote-dir", sshd.remote_dir])
    assert rc != 0
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "unknown host key" in lines[0]


def test_cgen_run_model_on_a_device_over_ssh(sshd, tmp_path, capsys):
    """`cgen run MODEL --device ssh://...` gives the same outputs as the local path."""
    from cgen.cli import main
    from tests.test_graph_frontend import ort_run
    from tests.test_models import mlp
    model, feeds = mlp()
    path = tmp_path / "mlp.onnx"
    import onnx
    onnx.save(model, str(path))
    np.savez(tmp_path / "in.npz", **feeds)
    args = ["run", str(path), "--target", "generic-c", "--inputs", str(tmp_path / "in.npz")]
    assert main(args + ["--outputs", str(tmp_path / "local.npz")]) == 0
    assert main(args + ["--outputs", str(tmp_path / "ssh.npz"), "--device", sshd.url,
                        "--identity", str(sshd.user_key),
                        "--known-hosts", str(sshd.known_hosts)]) == 0
    with np.load(tmp_path / "local.npz") as a, np.load(tmp_path / "ssh.npz") as b:
        assert set(a.files) == set(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
        want = ort_run(model, feeds)
        for k in a.files:
            np.testing.assert_allclose(a[k], want[k], rtol=1e-4, atol=1e-4 * float(np.abs(want[k]).max()))


def test_host_key_policy_is_reject_unless_opted_in(sshd):
    """Unknown keys go to a RejectPolicy by default; recording needs trust_on_first_use."""
    import paramiko
    from targets.ssh import SshConnection, SshOptions, parse_ssh_url
    seen = []

    class Spy(paramiko.SSHClient):
        def set_missing_host_key_policy(self, policy):
            seen.append(policy)
            super().set_missing_host_key_policy(policy)
    import targets.ssh as ssh_mod
    real = ssh_mod.paramiko.SSHClient
    ssh_mod.paramiko.SSHClient = Spy
    try:
        for trust in (False, True):
            conn = SshConnection(parse_ssh_url(sshd.url), sshd.options(trust_on_first_use=trust))
            try:
                conn.connect()
            except Exception:  # noqa: BLE001 - only the policy chosen matters here
                pass
            finally:
                conn.close()
    finally:
        ssh_mod.paramiko.SSHClient = real
    # refusal by default; only the opt-in records a key, and never by paramiko's blanket
    # accept-everything policy
    assert isinstance(seen[0], paramiko.RejectPolicy)
    assert type(seen[0]) is ssh_mod._RefuseUnknownHostKey
    assert not isinstance(seen[1], paramiko.RejectPolicy)
    assert type(seen[1]) is ssh_mod._RecordUnknownHostKey
