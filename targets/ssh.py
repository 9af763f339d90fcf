"""SSH transport to boards (paramiko): verified connection, agent upload, agent start.

Host keys are checked against known_hosts and an unknown key is refused
unless trust-on-first-use is asked for explicitly (the key is then appended to
the known_hosts file).  Authentication is by key: the identity files given
(or the ssh config's IdentityFile), the ssh-agent, and the default keys.
`~/.ssh/config` is honoured (HostName, User, Port, IdentityFile,
UserKnownHostsFile, ProxyCommand, ConnectTimeout).  Every failure is an
SshError whose message is one line naming the cause.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import socket
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import paramiko

DEFAULT_REMOTE_DIR = ".cache/cgen"   # relative to the login directory


class SshError(RuntimeError):
    """A connection could not be made or used; str() is a one-line reason."""


class UnknownHostKey(SshError):
    pass


class HostKeyMismatch(SshError):
    pass


class AuthFailed(SshError):
    pass


class ConnectFailed(SshError):
    pass


class NoPython(SshError):
    pass


@dataclass(frozen=True)
class SshOptions:
    """How to reach a board.  None means: the ssh config's value, then ssh's default."""
    identity: tuple = ()                 # identity (private key) files
    known_hosts: str | None = None       # verify against this file only
    trust_on_first_use: bool = False     # accept and record an unknown host key
    ssh_config: str | None = "~/.ssh/config"
    allow_agent: bool = True
    look_for_keys: bool = True           # ~/.ssh/id_* when no identity is given
    connect_timeout: float = 10.0
    keepalive_s: int = 5
    python: str = "python3"              # the board's interpreter
    remote_dir: str = DEFAULT_REMOTE_DIR  # where the agent file is uploaded
    agent_root: str | None = None        # parent of the agent's work directory (default: its temp dir)


@dataclass(frozen=True)
class SshAddress:
    host: str
    user: str | None = None
    port: int | None = None
    query: tuple = ()                    # (key, value) pairs of the URL's query

    @property
    def params(self) -> dict:
        return dict(self.query)


def parse_ssh_url(url: str) -> SshAddress:
    """ssh://[user@]host[:port][?key=value...] (also [v6addr])."""
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ValueError(f"not an ssh URL: {url!r} (expected ssh://[user@]host[:port])")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    return SshAddress(parts.hostname, unquote(parts.username) if parts.username else None, port,
                      tuple(parse_qsl(parts.query)))


def _fingerprint(key) -> str:
    import base64
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _RefuseUnknownHostKey(paramiko.RejectPolicy):
    """The default: an unknown host key is refused, with a message that says how to fix it."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        fp = f"{key.get_name()} {_fingerprint(key)}"
        raise UnknownHostKey(
            f"unknown host key for {hostname} ({fp}): not in {self.known_hosts}; verify it and "
            f"add it (ssh-keyscan), or pass --trust-on-first-use to record it")


class _RecordUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Only with the explicit trust-on-first-use opt-in: accept an unknown key and record it
    in known_hosts (a key that differs from a recorded one is still refused by paramiko)."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts
        self.recorded = None

    def missing_host_key(self, client, hostname, key):
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.recorded = f"{key.get_name()} {_fingerprint(key)}"


class SshConnection:
    """One authenticated, host-verified SSH connection to a board."""

    def __init__(self, address: SshAddress, options: SshOptions = SshOptions()):
        self.address = address
        self.options = options
        self.client: paramiko.SSHClient | None = None
        self.recorded_host_key = None
        cfg = self._config()
        self.hostname = cfg.get("hostname", address.host)
        self.port = int(address.port or cfg.get("port", 22))
        self.user = address.user or cfg.get("user") or _local_user()
        ids = tuple(str(Path(p).expanduser()) for p in options.identity)
        self.identities = ids or tuple(str(Path(p).expanduser()) for p in cfg.get("identityfile", ())
                                       if Path(p).expanduser().exists())
        if options.known_hosts:
            self.known_hosts = Path(options.known_hosts).expanduser()
        elif cfg.get("userknownhostsfile"):
            self.known_hosts = Path(cfg["userknownhostsfile"].split()[0]).expanduser()
        else:
            self.known_hosts = Path("~/.ssh/known_hosts").expanduser()
        self.proxy_command = cfg.get("proxycommand")
        self.timeout = float(cfg.get("connecttimeout", options.connect_timeout))
        self.identities_only = cfg.get("identitiesonly", "no").lower() == "yes"

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def _config(self) -> dict:
        path = self.options.ssh_config
        if not path or not Path(path).expanduser().exists():
            return {}
        try:
            cfg = paramiko.SSHConfig.from_path(str(Path(path).expanduser()))
        except (OSError, paramiko.SSHException) as e:
            raise SshError(f"cannot read ssh config {path}: {e}") from None
        return cfg.lookup(self.address.host)

    # ------------------------------------------------------------ connect
    def connect(self) -> "SshConnection":
        for p in self.identities:
            if not Path(p).exists():
                raise AuthFailed(f"identity file {p} not found")
        client = paramiko.SSHClient()
        if self.known_hosts.exists():
            try:
                client.load_host_keys(str(self.known_hosts))
            except (OSError, paramiko.SSHException) as e:
                raise SshError(f"cannot read known_hosts {self.known_hosts}: {e}") from None
        if not self.options.known_hosts:
            system = Path("/etc/ssh/ssh_known_hosts")
            if system.exists():
                try:
                    client.load_system_host_keys(str(system))
                except (OSError, paramiko.SSHException):
                    pass
        policy = (_RecordUnknownHostKey(self.known_hosts) if self.options.trust_on_first_use
                  else _RefuseUnknownHostKey(self.known_hosts))
        client.set_missing_host_key_policy(policy)
        sock = paramiko.ProxyCommand(self.proxy_command) if self.proxy_command else None
        explicit = bool(self.identities)
        try:
            client.connect(self.hostname, self.port, self.user,
                           key_filename=list(self.identities) or None,
                           allow_agent=self.options.allow_agent and not self.identities_only,
                           look_for_keys=self.options.look_for_keys and not explicit,
                           timeout=self.timeout, banner_timeout=self.timeout,
                           auth_timeout=self.timeout, sock=sock)
        except UnknownHostKey:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyMismatch(
                f"host key for {self.hostname}:{self.port} does not match {self.known_hosts} "
                f"(got {e.key.get_name()} {_fingerprint(e.key)}): possible man-in-the-middle; "
                f"if the board was reinstalled, remove the old entry") from None
        except paramiko.AuthenticationException as e:
            client.close()
            tried = ", ".join(self.identities) if self.identities else "default keys"
            if self.options.allow_agent and not self.identities_only:
                tried += ", ssh-agent"
            raise AuthFailed(f"authentication failed for {self.label} (tried {tried}): {e}") from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            client.close()
            raise ConnectFailed(f"connection refused by {self.hostname}:{self.port}") from None
        except socket.gaierror as e:
            client.close()
            raise ConnectFailed(f"cannot resolve host {self.hostname}: {e.strerror}") from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise ConnectFailed(f"connection to {self.hostname}:{self.port} timed out "
                                f"after {self.timeout:g} s") from None
        except paramiko.SSHException as e:
            client.close()
            raise SshError(f"SSH error with {self.label}: {e}") from None
        except OSError as e:
            client.close()
            raise ConnectFailed(f"cannot connect to {self.hostname}:{self.port}: "
                                f"{e.strerror or e}") from None
        self.recorded_host_key = getattr(policy, "recorded", None)
        client.get_transport().set_keepalive(self.options.keepalive_s)
        self.client = client
        return self

    def alive(self) -> bool:
        t = self.client.get_transport() if self.client else None
        return bool(t and t.is_active())

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    # ------------------------------------------------------------ use
    def exec(self, command: str, timeout: float = 30.0) -> tuple:
        """(exit status, stdout, stderr) of a short command."""
        _, out, err = self.client.exec_command(command, timeout=timeout)
        o, e = out.read(), err.read()
        return out.channel.recv_exit_status(), o.decode(errors="replace"), e.decode(errors="replace")

    def upload_agent(self, local_path) -> str:
        """SFTP the agent file to REMOTE_DIR/agent-SHA.py unless there; its path (relative to home)."""
        data = Path(local_path).read_bytes()
        name = f"agent-{hashlib.sha256(data).hexdigest()[:16]}.py"
        rdir = self.options.remote_dir.rstrip("/")
        remote = f"{rdir}/{name}"
        try:
            sftp = self.client.open_sftp()
        except paramiko.SSHException as e:
            raise SshError(f"cannot open SFTP on {self.label} (is the sftp subsystem enabled?): {e}") from None
        try:
            try:
                if sftp.stat(remote).st_size == len(data):
                    return remote
            except OSError:
                pass
            path = ""
            for part in rdir.split("/"):
                path = f"{path}/{part}" if path or rdir.startswith("/") else part
                if not part:
                    continue
                try:
                    sftp.stat(path)
                except OSError:
                    sftp.mkdir(path, 0o700)
            tmp = f"{remote}.{os.getpid()}.part"
            with sftp.open(tmp, "wb") as f:
                f.write(data)
            sftp.posix_rename(tmp, remote)
        except OSError as e:
            raise SshError(f"cannot upload the agent to {self.label}:{remote}: {e}") from None
        finally:
            sftp.close()
        return remote

    def start_agent(self, remote_path: str):
        """Start `python3 -I -S AGENT` on an exec channel; (channel, stdout file, stderr tail)."""
        py = shlex.quote(self.options.python)
        args = [shlex.quote(remote_path)]
        if self.options.agent_root:
            args += ["--root", shlex.quote(self.options.agent_root)]
        script = (f"command -v {py} >/dev/null 2>&1 || "
                  f"{{ echo 'cgen-agent: no {self.options.python} on this device' >&2; exit 127; }}; "
                  f"exec {py} -I -S {' '.join(args)}")
        chan = self.client.get_transport().open_session()
        chan.exec_command("sh -c " + shlex.quote(script))
        stderr = deque(maxlen=50)
        err_file = chan.makefile_stderr("rb")

        def pump():
            try:
                for line in err_file:
                    stderr.append(line.decode(errors="replace").rstrip())
            except (OSError, EOFError, paramiko.SSHException):
                pass
        threading.Thread(target=pump, name=f"ssh-stderr-{self.hostname}", daemon=True).start()
        return chan, chan.makefile("rb"), stderr


def _local_user() -> str:
    import getpass
    return getpass.getuser()
