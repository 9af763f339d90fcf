"""Device: the base of every device kind (connection with backoff, uploads cached by
content, runs on files or arrays); see targets.device for the kinds."""
from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .device_channel import (PROTOCOL_VERSION, PUT_CHUNK, REPLY_SLACK_S, AgentChannel, AgentError, DeviceError,
                             DeviceLost, DeviceUnavailable, FileRun, _inputs)
from .runner import Result, RunError


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
