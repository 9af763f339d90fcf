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

from typing import Sequence

from .device_base import Device, DeviceRunner
from .device_channel import (PROTOCOL_VERSION, AgentChannel, AgentError, DeviceError, DeviceLost,
                             DeviceUnavailable, FileRun, agent_file)
from .device_local import LocalDevice, QemuDevice, default_agent_root, reap_stale_workdirs
from .device_ssh import SshDevice

__all__ = ["open_device", "Device", "DeviceRunner", "LocalDevice", "QemuDevice", "SshDevice",
           "AgentChannel", "AgentError", "DeviceError", "DeviceLost", "DeviceUnavailable", "FileRun",
           "PROTOCOL_VERSION", "agent_file", "default_agent_root", "reap_stale_workdirs"]


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
