"""Devices: places that measure executables, all through the rpc_agent protocol.

    device = open_device("local" | "qemu:aarch64" | "qemu:arm" | "ssh://pi@raspberrypi.local")
    result = device.run(exe, {"A": a, "B": b, "C": c}, ["C"], repeat=5, min_repeat_ms=10,
                        timeout=60)          # -> targets.runner.Result

LocalDevice and QemuDevice start the agent as a local child process (the
single file rpc_agent/agent.py under `python -I -S`); QemuDevice asks it to
run executables under qemu-aarch64 / qemu-arm.  SshDevice uploads the same
file to a board over SFTP and starts it on an exec channel.  A candidate's
failure is a Result whose error has one of the tuning log's kinds; a broken
connection is a Result with error kind `device_lost` (the next call
reconnects, with backoff); a request the agent refuses raises AgentError.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .runner import Result, RunError

PROTOCOL_VERSION = 1
PUT_CHUNK = 4 << 20
REPLY_SLACK_S = 30.0          # beyond the run's own timeout, for transfers and start-up


class DeviceError(RuntimeError):
    """A device cannot be used (not reachable, misconfigured); one-line message."""


class AgentError(DeviceError):
    """The agent refused a request (bad_request, protocol_mismatch, unavailable)."""

    def __init__(self, kind: str, msg: str):
        super().__init__(f"{kind}: {msg}")
        self.kind = kind


class DeviceLost(DeviceError):
    """The connection to the agent broke, or it stopped answering (worth retrying)."""


class DeviceUnavailable(DeviceError):
    """The device refuses us for good: host key, authentication, no python3, no QEMU."""


def agent_file() -> str:
    from rpc_agent import agent_file as f
    return f()


# ---------------------------------------------------------------- the wire
class AgentChannel:
    """JSON-lines requests and answers over a byte stream pair, with a reader thread."""

    def __init__(self, rfile, send, close, name: str, stderr_tail=None):
        self._send = send
        self._close = close
        self.name = name
        self.stderr_tail = stderr_tail if stderr_tail is not None else deque(maxlen=50)
        self.noise = deque(maxlen=20)          # non-JSON lines (e.g. a login banner)
        self._answers: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.closed = False
        self._reader = threading.Thread(target=self._read, args=(rfile,), daemon=True,
                                        name=f"agent-reader-{name}")
        self._reader.start()

    def _read(self, rfile):
        try:
            for line in rfile:
                try:
                    msg = json.loads(line)
                except ValueError:
                    self.noise.append(line[:200].decode(errors="replace").rstrip())
                    continue
                if isinstance(msg, dict):
                    self._answers.put(msg)
        except Exception as e:  # noqa: BLE001 - any transport error ends the stream
            self.noise.append(f"read error: {e}")
        self._answers.put(None)

    def why(self) -> str:
        tail = [ln for ln in list(self.stderr_tail)[-3:] + list(self.noise)[-1:] if ln]
        return ("; agent said: " + " | ".join(tail)[-500:]) if tail else ""

    def request(self, op: str, wait: float, **fields) -> dict:
        """Send one request and return its answer within `wait` seconds."""
        with self._lock:
            if self.closed:
                raise DeviceLost(f"{self.name}: connection closed")
            rid = next(self._ids)
            line = json.dumps({"id": rid, "op": op, **fields}).encode() + b"\n"
            try:
                self._send(line)
            except Exception as e:  # noqa: BLE001 - broken pipe, closed channel, socket error
                self.closed = True
                raise DeviceLost(f"{self.name}: cannot send {op}: {e}{self.why()}") from None
            deadline = time.monotonic() + wait
            while True:
                left = deadline - time.monotonic()
                try:
                    msg = self._answers.get(timeout=max(left, 0.001))
                except queue.Empty:
                    self.closed = True
                    raise DeviceLost(f"{self.name}: no answer to {op} within {wait:g} s") from None
                if msg is None:
                    self.closed = True
                    self._answers.put(None)
                    raise DeviceLost(f"{self.name}: connection to the agent lost during {op}"
                                     f"{self.why()}")
                if msg.get("id") != rid:
                    continue                      # a late answer to an abandoned request
                if not msg.get("ok"):
                    err = msg.get("error") or {}
                    raise AgentError(err.get("kind", "bad_request"), err.get("msg", str(msg)))
                return msg

    def close(self, timeout: float = 5.0):
        if not self.closed:
            try:
                self.request("bye", wait=timeout)
            except DeviceError:
                pass
        self.closed = True
        try:
            self._close()
        except Exception:  # noqa: BLE001 - best effort
            pass


# ---------------------------------------------------------------- results of file runs
@dataclass(frozen=True)
class FileRun:
    """A run of an executable on files: the output files' bytes (or sha256 hex digests)."""
    outputs: dict | None
    times: tuple = ()
    error: RunError | None = None
    emulated: bool = False
    exit_status: int | None = None
    stderr_tail: str = ""
    number: int = 1


def _inputs(input_arrays) -> list:
    """[(name, array)] from a mapping name -> array, or a sequence of arrays / (name, array)."""
    if isinstance(input_arrays, Mapping):
        items = list(input_arrays.items())
    else:
        items = []
        for k, a in enumerate(input_arrays):
            items.append(tuple(a) if isinstance(a, tuple) else (f"arg{k}", a))
    out = []
    for name, a in items:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"input {name!r} must be a numpy array, got {type(a).__name__}")
        out.append((str(name), np.ascontiguousarray(a)))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"input names repeat: {names}")
    return out


# ---------------------------------------------------------------- devices
class Device:
    """Base class: an agent reached through some transport (see open_device)."""

    kind = "device"
    emulated = False
    emulator: str | None = None

    def __init__(self, url: str, name: str | None = None, targets: Sequence[str] | None = None,
                 reconnect_attempts: int = 3, backoff_s: float = 0.5,
                 max_cached_bytes: int = 256 << 20):
        self.url = url
        self.name = name or url
        self.targets = tuple(targets) if targets else None
        self.reconnect_attempts = reconnect_attempts
        self.backoff_s = backoff_s
        self.max_cached_bytes = max_cached_bytes
        self.info: dict | None = None       # the agent's hello
        self._chan: AgentChannel | None = None
        self._blobs: OrderedDict = OrderedDict()   # sha256 -> (stored name, size)
        self._lock = threading.RLock()

    def __repr__(self):
        return f"{type(self).__name__}({self.url!r})"

    # ------------------------------------------------------------ transport (subclasses)
    def _open(self) -> AgentChannel:
        raise NotImplementedError

    def _permanent(self, exc: Exception) -> bool:
        """Errors not worth retrying (authentication, host keys, missing tools)."""
        return isinstance(exc, (AgentError, DeviceUnavailable))

    # ------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self._chan is not None and not self._chan.closed

    def connect(self, attempts: int | None = None) -> dict:
        """Start (or restart) the agent; its hello.  Retries with exponential backoff."""
        with self._lock:
            if self.connected:
                return self.info
            attempts = self.reconnect_attempts if attempts is None else attempts
            last = None
            for k in range(max(1, attempts)):
                if k:
                    time.sleep(self.backoff_s * 2 ** (k - 1))
                try:
                    chan = self._open()
                    try:
                        info = chan.request("hello", wait=30.0, protocol=PROTOCOL_VERSION)
                        self._check(info)
                    except BaseException:
                        chan.close(timeout=1.0)
                        raise
                    self._chan, self.info = chan, info
                    self._blobs.clear()
                    return info
                except DeviceError as e:
                    last = e
                    if self._permanent(e):
                        raise
            raise last

    def _check(self, info: dict) -> None:
        if info.get("protocol") != PROTOCOL_VERSION:
            raise AgentError("protocol_mismatch",
                             f"agent speaks protocol {info.get('protocol')}, host {PROTOCOL_VERSION}")

    def _channel(self) -> AgentChannel:
        if not self.connected:
            self.connect()
        return self._chan

    def _drop(self):
        if self._chan is not None:
            self._chan.closed = True
            try:
                self._chan._close()
            except Exception:  # noqa: BLE001
                pass
        self._chan = None

    def ping(self, timeout: float = 10.0) -> bool:
        """Health check: reconnects if needed; True when the agent answers."""
        with self._lock:
            try:
                self._channel().request("ping", wait=timeout)
                return True
            except DeviceError:
                self._drop()
                return False

    def close(self):
        with self._lock:
            if self._chan is not None:
                self._chan.close()
            self._chan = None

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ what it runs
    def supports(self, target) -> bool:
        """Whether executables built for target run here (None: any request)."""
        if target is None:
            return True
        from .target import resolve
        t = resolve(target)
        if self.targets is not None:
            return t.name in self.targets
        if t.bare_metal:
            return False
        return self._supports(t)

    def _supports(self, t) -> bool:
        return False

    def knows_targets(self) -> bool:
        """Whether supports() can answer yet (an SSH board's only after its hello)."""
        return self.targets is not None or self.info is not None

    # ------------------------------------------------------------ files
    def _put(self, chan: AgentChannel, data: bytes, executable: bool = False,
             keep: Sequence[str] = ()) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if sha in self._blobs:
            self._blobs.move_to_end(sha)
            return self._blobs[sha][0]
        name = f"{'exe' if executable else 'in'}-{sha[:24]}"
        for off in range(0, max(len(data), 1), PUT_CHUNK):
            chunk = data[off:off + PUT_CHUNK]
            ans = chan.request("put", wait=REPLY_SLACK_S + len(chunk) / 1e6, name=name,
                               data=base64.b64encode(chunk).decode(), offset=off,
                               sha256=hashlib.sha256(chunk).hexdigest(), executable=executable)
        if ans["sha256"] != sha:
            raise AgentError("bad_request", f"{name}: stored checksum {ans['sha256']} != {sha}")
        self._blobs[sha] = (name, len(data))
        self._evict(chan, keep=set(keep) | {name})
        return name

    def _evict(self, chan, keep):
        total = sum(s for _, s in self._blobs.values())
        drop = []
        for sha, (name, size) in self._blobs.items():
            if total <= self.max_cached_bytes:
                break
            if name not in keep:
                drop.append(sha)
                total -= size
        if drop:
            chan.request("cleanup", wait=REPLY_SLACK_S, names=[self._blobs[s][0] for s in drop])
            for s in drop:
                del self._blobs[s]

    # ------------------------------------------------------------ running
    def run_files(self, executable, files: Mapping[str, object] = {}, argv: Sequence[str] | None = None,
                  outputs: Sequence[str] = (), *, repeat: int = 0, number: int = 1,
                  min_repeat_ms: float = 0.0, cooldown_ms: float = 0.0, timeout: float = 60.0,
                  limits: dict | None = None, env: dict | None = None,
                  return_outputs: str = "data") -> FileRun:
        """Run EXE [--time R N] ARGV in a fresh directory holding FILES; OUTPUTS' bytes back.

        files: name -> bytes or a path; an ARGV item "@NAME" is the path of file NAME
        (default ARGV: every file, in order).  outputs: names of files in that directory
        after the run (return_outputs="sha256": their sha256 hex digests instead).
        executable: a path or the executable's bytes.
        """
        blobs = []
        for name, v in files.items():
            blobs.append((name, v if isinstance(v, (bytes, bytearray, memoryview))
                          else Path(v).read_bytes()))
        exe = executable if isinstance(executable, (bytes, bytearray)) else Path(executable).read_bytes()
        req = dict(argv=list(argv) if argv is not None else [f"@{n}" for n, _ in blobs],
                   outputs=list(outputs), repeat=int(repeat), number=int(number),
                   min_repeat_ms=float(min_repeat_ms), cooldown_ms=float(cooldown_ms),
                   timeout=float(timeout), limits=limits or {}, env=env or {},
                   emulator=self.emulator, return_outputs=return_outputs)
        wait = float(timeout) + float(cooldown_ms) / 1e3 + REPLY_SLACK_S
        with self._lock:
            try:
                chan = self._channel()
                exe_name = self._put(chan, bytes(exe), executable=True)
                stored = []
                for name, data in blobs:
                    stored.append([self._put(chan, bytes(data), keep=[exe_name] + [s for s, _ in stored]),
                                   name])
                ans = chan.request("run", wait=wait, exe=exe_name, files=stored, **req)
            except DeviceLost as e:
                self._drop()
                return FileRun(None, (), RunError("device_lost", str(e)), self.emulated)
            except DeviceError as e:
                if isinstance(e, AgentError):
                    raise
                self._drop()
                return FileRun(None, (), RunError("device_lost", f"{self.name}: {e}"), self.emulated)
        err = ans.get("error")
        if err:
            return FileRun(None, (), RunError(err["kind"], err["msg"]), self.emulated,
                           ans.get("exit_status"), ans.get("stderr_tail", ""), ans.get("number", 1))
        outs = {}
        for name, o in ans.get("outputs", {}).items():
            outs[name] = base64.b64decode(o["data"]) if return_outputs == "data" else o["sha256"]
        return FileRun(outs, tuple(ans.get("times", ())), None, self.emulated,
                       ans.get("exit_status"), ans.get("stderr_tail", ""), ans.get("number", 1))

    def run(self, executable, input_arrays, output_names: Sequence[str] = (), *, repeat: int = 0,
            number: int = 1, min_repeat_ms: float = 0.0, cooldown_ms: float = 0.0,
            timeout: float = 60.0, limits: dict | None = None, env: dict | None = None,
            return_outputs: str = "data") -> Result:
        """Run a harness executable (cgen.codegen.harness) on arrays; Result(outputs, times, error).

        input_arrays: name -> array in the kernel's parameter order (or a sequence of
        arrays, named arg0, arg1...); output_names: the parameters the kernel writes,
        returned as arrays of the same dtype and shape (with return_outputs="sha256":
        the sha256 hex digest of their bytes).  times: seconds per call, one per
        repeat, each repeat `number` calls (raised until it lasts min_repeat_ms).
        """
        items = _inputs(input_arrays)
        arrays = dict(items)
        for o in output_names:
            if o not in arrays:
                raise ValueError(f"output {o!r} is not one of the inputs {list(arrays)}")
        files = {f"{k}.bin": a.tobytes() for k, (_, a) in enumerate(items)}
        fname = {n: f"{k}.bin" for k, (n, _) in enumerate(items)}
        fr = self.run_files(executable, files, None, [fname[o] for o in output_names],
                            repeat=repeat, number=number, min_repeat_ms=min_repeat_ms,
                            cooldown_ms=cooldown_ms, timeout=timeout, limits=limits, env=env,
                            return_outputs=return_outputs)
        if fr.error is not None:
            return Result(None, (), fr.error, fr.emulated)
        outs = {}
        for o in output_names:
            v = fr.outputs[fname[o]]
            if return_outputs == "data":
                a = arrays[o]
                if len(v) != a.nbytes:
                    return Result(None, (), RunError("runtime_error", f"output {o}: {len(v)} bytes, "
                                                     f"expected {a.nbytes}"), fr.emulated)
                v = np.frombuffer(v, dtype=a.dtype).reshape(a.shape).copy()
            outs[o] = v
        return Result(outs, fr.times, None, fr.emulated)

    def runner(self) -> "DeviceRunner":
        """This device behind targets.runner.Runner's run(exe, params, arrays, outputs, ...)."""
        return DeviceRunner(self)

    def describe(self) -> dict:
        return {"name": self.name, "url": self.url, "kind": self.kind, "emulated": self.emulated,
                "hello": self.info}


@dataclass
class DeviceRunner:
    device: Device
    min_repeat_ms: float = 0.0

    def run(self, exe, params, arrays, outputs, repeat: int = 0, number: int = 1,
            timeout: float = 60.0) -> Result:
        return self.device.run(exe, dict(zip(params, arrays)), [p for p in params if p in outputs],
                               repeat=repeat, number=number, min_repeat_ms=self.min_repeat_ms,
                               timeout=timeout)


class _ProcessAgent:
    """The agent as a local child process: its pipes, its stderr tail, its end."""

    def __init__(self, python: str, root: str | None, name: str):
        cmd = [python, "-I", "-S", agent_file()]
        if root:
            cmd += ["--root", root]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise DeviceError(f"{name}: cannot start the agent with {python}: {e.strerror}") from None
        self.stderr = deque(maxlen=50)
        threading.Thread(target=self._pump, daemon=True, name=f"agent-stderr-{name}").start()
        self.channel = AgentChannel(self.proc.stdout, self._send, self._close, name, self.stderr)

    def _pump(self):
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    def _send(self, data: bytes):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            import signal
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the agent and any candidate it runs
            except ProcessLookupError:
                pass
            self.proc.wait()


def default_agent_root() -> str:
    """Where local agents make their work directories: <tmp>/cgen-agents-<uid>."""
    import tempfile
    root = os.path.join(tempfile.gettempdir(), f"cgen-agents-{os.getuid()}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    return root


def reap_stale_workdirs(root: str) -> int:
    """Remove agent work directories under root whose agent is gone (e.g. SIGKILLed)."""
    import shutil
    from rpc_agent.agent import process_start
    removed = 0
    for entry in os.scandir(root):
        if not entry.name.startswith("cgen-agent-") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            owner = json.loads(Path(entry.path, "agent.json").read_text())
        except (OSError, ValueError):
            continue            # starting up, or not ours: leave it
        pid = owner.get("pid")
        start = owner.get("start")
        if isinstance(pid, int) and start is not None and process_start(pid) == start:
            continue            # its agent still runs (same pid, same start time)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


class LocalDevice(Device):
    """This machine, through an agent in a child process (`local`).

    root: parent of the agents' work directories (default <tmp>/cgen-agents-<uid>,
    where directories left by killed agents are removed when an agent starts)."""

    kind = "local"

    def __init__(self, url: str = "local", python: str | None = None, root: str | None = None, **kw):
        super().__init__(url, **kw)
        self.python = python or sys.executable or "python3"
        self.root = root
        self._proc: _ProcessAgent | None = None

    def _open(self) -> AgentChannel:
        root = self.root
        if root is None:
            root = default_agent_root()
            reap_stale_workdirs(root)
        self._proc = _ProcessAgent(self.python, root, self.name)
        return self._proc.channel

    def knows_targets(self) -> bool:
        return True

    def _supports(self, t) -> bool:
        # what this CPU can run, not what host resolves to (CGEN_HOST may name a smaller ISA)
        from .target import cannot_run
        return t.runner == "local" and cannot_run(t) is None

    def kill_agent(self):
        """SIGKILL the agent process (tests: a device that dies)."""
        import signal
        if self._proc is not None:
            try:
                os.killpg(self._proc.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class QemuDevice(LocalDevice):
    """QEMU user mode on this machine (`qemu:aarch64`, `qemu:arm`): emulated timings."""

    kind = "qemu"
    emulated = True

    def __init__(self, url: str = "qemu:aarch64", **kw):
        arch = url.split(":", 1)[1] if ":" in url else "aarch64"
        arch = {"armv7": "arm", "armhf": "arm", "arm64": "aarch64"}.get(arch, arch)
        if arch not in ("aarch64", "arm"):
            raise ValueError(f"unknown QEMU architecture in {url!r}; use qemu:aarch64 or qemu:arm")
        super().__init__(url, **kw)
        self.emulator = f"qemu-{arch}"

    def _check(self, info):
        super()._check(info)
        if not (info.get("emulators") or {}).get(self.emulator):
            raise DeviceUnavailable(f"{self.emulator} is not installed (apt-get install qemu-user)")

    def _supports(self, t) -> bool:
        return t.runner == self.emulator


class SshDevice(Device):
    """A board over SSH (`ssh://user@host[:port][?emulator=qemu-aarch64]`)."""

    kind = "ssh"

    def __init__(self, url: str, options=None, **kw):
        from .ssh import SshOptions, parse_ssh_url
        super().__init__(url, **kw)
        self.address = parse_ssh_url(url)
        self.options = options or SshOptions()
        self.emulator = self.address.params.get("emulator")
        self.emulated = self.emulator is not None
        self.ssh = None

    def _open(self) -> AgentChannel:
        import paramiko
        from .ssh import AuthFailed, HostKeyMismatch, SshConnection, SshError, UnknownHostKey
        if self.ssh is not None:
            self.ssh.close()
        try:
            self.ssh = SshConnection(self.address, self.options).connect()
            remote = self.ssh.upload_agent(agent_file())
            chan, rfile, stderr = self.ssh.start_agent(remote)
        except SshError as e:
            permanent = isinstance(e, (AuthFailed, HostKeyMismatch, UnknownHostKey))
            raise (DeviceUnavailable if permanent else DeviceLost)(str(e)) from e
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise DeviceLost(f"{self.url}: {e}") from None
        ssh = self.ssh

        def close():
            chan.close()
            ssh.close()
        ch = AgentChannel(rfile, chan.sendall, close, self.name, stderr)
        try:
            ch.request("ping", wait=30.0)
        except DeviceLost as e:
            deadline = time.monotonic() + 2
            while not chan.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.02)
            status = chan.recv_exit_status() if chan.exit_status_ready() else None
            time.sleep(0.05)
            text = " | ".join(stderr)
            ssh.close()
            if status == 127 or "no python" in text:
                raise DeviceUnavailable(f"no {self.options.python} on {ssh.label} "
                                        f"(install python3 >= 3.9)") from None
            raise DeviceLost(f"{self.url}: the agent did not start (exit status {status}): "
                             f"{text[-300:] or e}") from None
        return ch

    def _supports(self, t) -> bool:
        info = self.info or {}
        if self.emulator:
            return t.runner == self.emulator
        machine, bits = info.get("machine", ""), info.get("bits", 64)
        flags = set(info.get("cpu_flags") or ())
        if machine in ("aarch64", "arm64") and bits == 64:
            return t.arch == "aarch64" and (t.isa != "neon" or "asimd" in flags or not flags)
        if machine.startswith("arm") or (machine == "aarch64" and bits == 32):
            return t.arch == "armv7" and (t.isa != "neon" or "neon" in flags or "asimd" in flags)
        if machine == "x86_64":
            need = {"none": set(), "avx2": {"avx2", "fma"}, "avx512": {"avx512f", "avx512bw",
                                                                        "avx512vl", "avx512dq"}}
            return t.arch == "x86_64" and t.isa in need and need[t.isa] <= flags
        return False

    def kill_connection(self):
        """Drop the TCP connection abruptly (tests)."""
        if self.ssh is not None and self.ssh.client is not None:
            self.ssh.client.get_transport().sock.close()


def open_device(url: str, *, name: str | None = None, targets: Sequence[str] | None = None,
                identity: Sequence[str] | str | None = None, known_hosts: str | None = None,
                trust_on_first_use: bool = False, ssh_options=None, **kw) -> Device:
    """A Device from a URL: `local`, `qemu:aarch64`, `qemu:arm`, `ssh://[user@]host[:port]`.

    The device connects on first use (or `connect()`); identity/known_hosts/
    trust_on_first_use are the SSH options (see targets.ssh.SshOptions)."""
    if url in ("local", "local:", "localhost-agent"):
        return LocalDevice("local", name=name, targets=targets, **kw)
    if url.startswith("qemu:") or url in ("qemu-aarch64", "qemu-arm"):
        return QemuDevice(url.replace("qemu-", "qemu:", 1), name=name, targets=targets, **kw)
    if url.startswith("ssh://"):
        from dataclasses import replace
        from .ssh import SshOptions
        opts = ssh_options or SshOptions()
        if identity:
            opts = replace(opts, identity=(identity,) if isinstance(identity, str) else tuple(identity))
        if known_hosts:
            opts = replace(opts, known_hosts=known_hosts)
        if trust_on_first_use:
            opts = replace(opts, trust_on_first_use=True)
        return SshDevice(url, opts, name=name, targets=targets, **kw)
    raise ValueError(f"unknown device URL {url!r}; use local, qemu:aarch64, qemu:arm or "
                     f"ssh://[user@]host[:port]")
