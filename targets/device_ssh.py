"""A board over SSH (`ssh://user@host`): the agent uploaded over SFTP and started on an
exec channel (targets.ssh holds the connection)."""
from __future__ import annotations

import time

from .device_base import Device
from .device_channel import AgentChannel, DeviceLost, DeviceUnavailable, agent_file


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
