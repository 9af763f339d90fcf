"""Devices on this machine: the agent as a child process (`local`), and QEMU user mode
(`qemu:aarch64`, `qemu:arm`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from .device_base import Device
from .device_channel import AgentChannel, DeviceError, DeviceUnavailable, agent_file


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
