"""The client side of the rpc_agent protocol: errors, the JSON-lines channel to an agent,
and what a run on files returns (see targets.device for the devices)."""
from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .runner import RunError

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
