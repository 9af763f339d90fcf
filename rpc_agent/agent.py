"""cgen measuring agent: runs harness executables in child processes and times them.

Standard library only, Python 3.9 syntax, no imports from cgen or targets:
this one file is what the host uploads to a board and starts with
`python3 -I -S agent.py` (from the source tree: `python3 -m rpc_agent`).

Protocol (version 1): JSON lines.  The host writes one request per line on
stdin, the agent answers each with one line on stdout, in order:

    request   {"id": ID, "op": OP, ...}
    answer    {"id": ID, "ok": true, ...}
           or {"id": ID, "ok": false, "error": {"kind": KIND, "msg": MSG}}

An answer with "ok": false means the request itself was refused (bad_request,
protocol_mismatch, unavailable); a candidate that crashes, hangs or exceeds a
limit is an "ok": true answer of a run whose "error" is one of the tuning
log's kinds (runtime_error, run_timeout).

Requests are checked before anything is done: a line longer than MAX_LINE_BYTES,
text that is not UTF-8 (lone surrogates, invalid bytes) or holds NUL, NaN/Infinity,
integers of more than 30 digits, nesting deeper than 8 and out-of-range fields are
refused with "ok": false, and the agent goes on serving.  Client limits above the
agent's maxima (hello's "limits") are lowered to them, never switched off.  A line
whose "op" is "bye" is honoured whatever else it holds.

ops:
  hello    {"protocol": 1} -> protocol, machine, bits, cpu_model, cores,
           governor, mem_free_bytes, mem_total_bytes, emulators, workdir, ...
  ping     -> {"time": seconds since the epoch}
  put      {"name", "data": base64, "sha256": of the decoded data,
           "offset": 0 (create) or the current size (append a chunk),
           "executable": bool} -> {"size", "sha256" of the whole file}
  run      {"exe": NAME, "files": [NAME or [NAME, AS]...], "argv": [STR...],
           "outputs": [NAME...], "repeat": R, "number": N, "min_repeat_ms": M,
           "cooldown_ms": C, "timeout": S, "emulator": null | "qemu-aarch64" |
           "qemu-arm", "limits": {"cpu_s", "fsize_bytes", "as_bytes"},
           "env": {STR: STR}, "return_outputs": "data" | "sha256"}
           Copies FILES (stored file NAME, as AS when given) into a fresh run
           directory, then runs `[EMULATOR] EXE [--time R N] ARGV...` there
           (an ARGV item "@AS" becomes the path of that copy; with R = 0 there
           is no --time; OUTPUTS name files of the run directory).  With R > 0 and M > 0, N is first raised (calibration
           runs of `--time 1 N`) until one repeat lasts M ms.  Answer: times
           (seconds per call, one per repeat), number, outputs {NAME: {size,
           sha256[, data]}}, exit_status, signal, stderr_tail, error, wall_s.
  cleanup  {"names": [NAME...] or absent for all} -> {"removed": n}
  bye      -> answered, then the work directory is removed and the agent exits.

Each child runs in its own process group with a wall-clock timeout that
SIGKILLs the whole group; on Linux the agent is also its runs' subreaper
(prctl PR_SET_CHILD_SUBREAPER through ctypes), so at timeout, at the child's
exit and at bye every descendant is killed, even one that left the group with
setsid (without ctypes/prctl only the group is killed).  Stdout and stderr are
read with caps, tails kept, and a pipe held by a descendant never delays the
answer.  A non-root run gets RLIMIT_NPROC = the user's processes + NPROC, and with limits on CPU time, file size and address
space (at least 5 GiB under QEMU, which does not start below ~4.5 GiB; never
RLIMIT_DATA, under which a runaway QEMU guest spins instead of dying).
The agent writes only inside its work directory, refuses names that escape
it, and removes it on `bye`, on end of input and on SIGTERM/SIGHUP/SIGINT
(those signals blocked while it does; permissions a candidate took away are
restored first).  Inside it every open, copy, list and remove goes through
directory descriptors with O_NOFOLLOW and O_EXCL temporaries, and an input is
copied only up to the size it was put with: a link planted by a candidate is
never followed.  Budgets (hello's "limits"): a run's bytes in its directory
(limits.disk_bytes) and the session's stored bytes plus the run's, measured
every CHECK_S during a run; outputs returned (limits.output_bytes); kept
stdout/stderr; an over-budget run is a runtime_error.  At start the agent
removes the work directories of dead agents of its user (agent.lock not held
by anyone).
"""
import argparse
import fcntl
import base64
import binascii
import hashlib
import json
import math
import os
import platform
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time

PROTOCOL_VERSION = 1
AGENT_NAME = "cgen-rpc-agent"
EMULATORS = ("qemu-aarch64", "qemu-arm")
QEMU_MIN_AS_BYTES = 5 << 30
MAX_NUMBER = 1 << 24
MAX_REPEAT = 1 << 16
MAX_CALIBRATION_RUNS = 12
TAIL_CHARS = 2000
GiB = 1 << 30
MiB = 1 << 20

# The agent's own maxima, announced in hello under "limits".  A client may ask for less,
# never for more: larger limits are capped, so no request can switch a limit off.
MAX_LINE_BYTES = 8 * MiB          # one request line (a 4 MiB put chunk is ~5.6 MB of base64)
MAX_DEPTH = 8                     # nesting of a request (the deepest real one has 3)
MAX_INT_DIGITS = 30               # parsing a huge decimal integer is quadratic
MAX_TIMEOUT_S = 86400.0
MAX_MIN_REPEAT_MS = 600000.0
MAX_CPU_S = 86400
MAX_FSIZE_BYTES = 2 * GiB
MAX_PUT_BYTES = 2 * GiB           # one stored file
RUN_DISK_BYTES = 4 * GiB          # bytes one run may add to its run directory
SESSION_DISK_BYTES = 8 * GiB      # bytes in the whole work directory
MAX_OUTPUT_BYTES = 256 * MiB      # output files one run may return
TAIL_BYTES = 64 * 1024            # kept of a child's stdout/stderr beyond the timing lines
STDOUT_BYTES = 4 * MiB            # kept of a child's stdout (the timing lines)
NPROC = 256                       # processes one run may have at once (when the agent can tell)
CHECK_S = 0.25                    # how often a running run's disk use is measured


class _Bad(object):
    """A JSON value the parser refuses (NaN, Infinity, a huge integer), kept as a marker so the
    line still parses: its "op" can still be read, and bye is honoured whatever else it holds."""

    def __init__(self, what):
        self.what = what


class BadRequest(Exception):
    """A request the agent refuses; answered with "ok": false."""

    def __init__(self, msg, kind="bad_request"):
        Exception.__init__(self, msg)
        self.kind = kind


class Terminated(BaseException):
    pass


# ---------------------------------------------------------------- machine facts
def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cpu_model():
    info = _read("/proc/cpuinfo") or ""
    keys = {}
    for line in info.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            keys.setdefault(k.strip().lower(), v.strip())
    for k in ("model name", "model", "hardware", "cpu model", "processor"):
        if keys.get(k) and not keys[k].isdigit():
            return keys[k]
    if "cpu part" in keys:
        return "ARM part %s (implementer %s)" % (keys["cpu part"], keys.get("cpu implementer", "?"))
    return platform.processor() or platform.machine()


def cpu_flags():
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if ":" in line and line.split(":", 1)[0].strip().lower() in ("flags", "features"):
            return sorted(set(line.split(":", 1)[1].split()))
    return []


def meminfo():
    out = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def governor():
    g = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return g.strip() if g else None


def process_start(pid):
    """A process's start time in clock ticks since boot (with the pid, a unique identity)."""
    stat = _read("/proc/%d/stat" % pid)
    try:
        return int(stat.rsplit(")", 1)[1].split()[19]) if stat else None
    except (IndexError, ValueError):
        return None


def default_as_bytes(emulated):
    """Address-space limit when the host sets none: 3/4 of RAM, 1..4 GiB; >= 5 GiB under QEMU."""
    total = meminfo().get("MemTotal", 4 * GiB)
    limit = max(GiB, min(4 * GiB, total * 3 // 4))
    if struct.calcsize("P") == 4:
        limit = min(limit, 3 * GiB)
    if emulated:
        limit = max(limit, QEMU_MIN_AS_BYTES)
    return int(limit)


_LIMITS = {}


def agent_limits():
    """The agent's maxima and budgets (bytes, seconds, processes), announced in hello (computed
    once: reading /proc/meminfo on every run costs the measurement overhead)."""
    if not _LIMITS:
        _LIMITS.update(_agent_limits())
    return dict(_LIMITS)


def _agent_limits():
    return {"max_line_bytes": MAX_LINE_BYTES, "max_put_bytes": MAX_PUT_BYTES,
            "run_disk_bytes": RUN_DISK_BYTES, "session_disk_bytes": SESSION_DISK_BYTES,
            "max_output_bytes": MAX_OUTPUT_BYTES, "tail_bytes": TAIL_BYTES,
            "cpu_s": MAX_CPU_S, "fsize_bytes": MAX_FSIZE_BYTES,
            "as_bytes": max(default_as_bytes(True), meminfo().get("MemTotal", 0)),
            "nproc": NPROC, "default_as_bytes": default_as_bytes(False),
            "default_as_bytes_emulated": default_as_bytes(True)}


def hello_info(workdir):
    mem = meminfo()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "agent": AGENT_NAME,
        "protocol": PROTOCOL_VERSION,
        "python": platform.python_version(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "bits": struct.calcsize("P") * 8,
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "governor": governor(),
        "mem_free_bytes": mem.get("MemAvailable", mem.get("MemFree")),
        "mem_total_bytes": mem.get("MemTotal"),
        "load": load,
        "emulators": {e: shutil.which(e) for e in EMULATORS},
        "workdir": workdir,
        "pid": os.getpid(),
        "limits": agent_limits(),
    }


# ---------------------------------------------------------------- the agent
def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tail(data):
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
    return text.strip()[-TAIL_CHARS:]


def _signal_name(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return "signal %d" % num


def _parse_int(text):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _Bad("an integer of %d digits" % len(text))
    return int(text)


def _parse_float(text):
    v = float(text)
    return v if math.isfinite(v) else _Bad("a number out of the double range (%s...)" % text[:20])


def _parse_constant(name):
    return _Bad("%s (not a finite number)" % name)


def parse_line(line):
    """A request line (bytes) -> a dict, or raises BadRequest.  Invalid UTF-8 bytes become lone
    surrogates (refused by check_tree unless the request is bye); nothing here raises otherwise."""
    text = line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else line
    try:
        req = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                         parse_constant=_parse_constant)
    except (ValueError, RecursionError, MemoryError) as e:
        raise BadRequest("not JSON: %s" % (str(e)[:200],))
    if not isinstance(req, dict):
        raise BadRequest("a request is a JSON object, got %s" % type(req).__name__)
    return req


def _bad_text(s):
    if "\0" in s:
        return "contains NUL"
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (lone surrogate or invalid byte)"
    return None


def check_tree(req):
    """Refuses, without recursion, anything but finite numbers, bounded integers and UTF-8 text
    without NUL, nested at most MAX_DEPTH deep."""
    stack = [(req, 1, "request")]
    while stack:
        v, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest("%s is nested more than %d deep" % (where, MAX_DEPTH))
        if isinstance(v, _Bad):
            raise BadRequest("%s: %s" % (where, v.what))
        if isinstance(v, str):
            why = _bad_text(v)
            if why:
                raise BadRequest("a string in %s %s" % (where, why))
        elif isinstance(v, dict):
            for k, x in v.items():
                why = _bad_text(k)
                if why:
                    raise BadRequest("a key in %s %s" % (where, why))
                stack.append((x, depth + 1, k if depth == 1 else where))
        elif isinstance(v, list):
            stack.extend((x, depth + 1, where) for x in v)


def _num(req, key, default, lo, hi, integral=False, cap=False):
    """req[key] (default when absent or null) as a finite number in [lo, hi]; with cap, a
    larger value is lowered to hi instead of refused (a client limit above the agent's)."""
    v = req.get(key, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadRequest("%s must be a finite number, got %r" % (key, v))
    if integral and isinstance(v, float):
        if not v.is_integer():
            raise BadRequest("%s must be an integer, got %r" % (key, v))
        v = int(v)
    if cap and v > hi:
        v = hi
    if v < lo or v > hi:
        raise BadRequest("%s=%r out of range [%r, %r]" % (key, v, lo, hi))
    return v


def _bool(req, key, default):
    v = req.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise BadRequest("%s must be true or false, got %r" % (key, v))
    return v


class Agent:
    def __init__(self, root=None):
        self.workdir = os.path.realpath(tempfile.mkdtemp(prefix="cgen-agent-", dir=root))
        self.files = os.path.join(self.workdir, "files")
        self.runs = os.path.join(self.workdir, "runs")
        # Every later open, copy, list and remove goes through this descriptor (and those
        # opened from it with O_NOFOLLOW), never through a path a candidate may have relinked.
        self.wfd = os.open(self.workdir, O_DIR)
        os.mkdir("files", 0o700, dir_fd=self.wfd)
        os.mkdir("runs", 0o700, dir_fd=self.wfd)
        # Held while the agent lives: an agent that starts later and can take it knows this
        # directory is stale (see reap_stale); agent.json is for hosts that reap (by pid).
        # It is locked under another name and then renamed, so a reaper never finds an
        # agent.lock that nobody holds yet in a directory whose agent is starting up.
        self.lock = os.open("agent.lock.new", os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_SAFE,
                            0o600, dir_fd=self.wfd)
        _flock(self.lock, False)
        os.rename("agent.lock.new", "agent.lock", src_dir_fd=self.wfd, dst_dir_fd=self.wfd)
        fd = os.open("agent.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_SAFE, 0o600,
                     dir_fd=self.wfd)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "start": process_start(os.getpid())}, f)
        self.sizes = {}    # stored name -> size: copies read no more than this
        self.run_count = 0
        self.last_run_end = 0.0
        self.child = None  # the running child, killed on exit
        self.closing = False  # set by bye

    # ------------------------------------------------------------ paths
    def path_in(self, base, name):
        """base/name, refused unless it stays inside base (and so the work directory)."""
        if not isinstance(name, str) or not name or "\0" in name:
            raise BadRequest("file name must be a non-empty string, got %r" % (name,))
        if os.path.isabs(name) or name.startswith("~"):
            raise BadRequest("path %r escapes the work directory (absolute)" % name)
        full = os.path.normpath(os.path.join(base, name))
        real = os.path.realpath(full)
        if full == base or os.path.commonpath([base, full]) != base \
                or os.path.commonpath([base, real]) != base:
            raise BadRequest("path %r escapes the work directory" % name)
        return full

    def stored(self, name):
        p = self.path_in(self.files, name)
        if name not in self.sizes:
            raise BadRequest("no file %r was put" % name)
        return p

    def base_fd(self, base):
        """A descriptor of files/ or runs/; one a candidate replaced by a link is put back."""
        try:
            return os.open(base, O_DIR, dir_fd=self.wfd)
        except OSError:
            _rmtree_at(self.wfd, base)
            os.mkdir(base, 0o700, dir_fd=self.wfd)
            if base == "files":
                self.sizes.clear()
            return os.open(base, O_DIR, dir_fd=self.wfd)

    # ------------------------------------------------------------ ops
    def op_hello(self, req):
        want = req.get("protocol", PROTOCOL_VERSION)
        if isinstance(want, bool) or not isinstance(want, int):
            raise BadRequest("protocol must be an integer, got %r" % (want,))
        if want != PROTOCOL_VERSION:
            raise BadRequest("host speaks protocol %r, agent speaks %d" % (want, PROTOCOL_VERSION),
                             "protocol_mismatch")
        return hello_info(self.workdir)

    def op_ping(self, req):
        return {"time": time.time()}

    def op_put(self, req):
        path = self.path_in(self.files, req.get("name"))
        data = req.get("data", "")
        if not isinstance(data, str):
            raise BadRequest("put: data must be a base64 string")
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise BadRequest("put %s: data is not base64: %s" % (req.get("name"), e))
        want = req.get("sha256")
        if want is not None and not isinstance(want, str):
            raise BadRequest("put: sha256 must be a hex string")
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise BadRequest("put %s: checksum mismatch (sent %s, received %s)"
                             % (req["name"], want, hashlib.sha256(data).hexdigest()))
        offset = _num(req, "offset", 0, 0, MAX_PUT_BYTES, integral=True)
        executable = _bool(req, "executable", False)
        name = req["name"]
        if offset + len(data) > MAX_PUT_BYTES:
            raise BadRequest("put %s: %d bytes is over the %d-byte cap of a file"
                             % (name, offset + len(data), MAX_PUT_BYTES))
        stored = sum(v for k, v in self.sizes.items() if k != name) + offset + len(data)
        if stored > SESSION_DISK_BYTES:
            raise BadRequest("put %s: the session's disk quota of %d bytes would be exceeded"
                             % (name, SESSION_DISK_BYTES))
        parts = _parts(name)
        ffd = self.base_fd("files")
        try:
            pfd = _opendir_at(ffd, parts[:-1], create=True)
        finally:
            os.close(ffd)
        leaf = parts[-1]
        try:
            if offset:
                try:
                    fd = os.open(leaf, os.O_RDWR | os.O_APPEND | O_SAFE, dir_fd=pfd)
                except OSError:
                    fd, size = None, -1
                else:
                    st = os.fstat(fd)
                    size = st.st_size if stat.S_ISREG(st.st_mode) else -1
                if size != offset:
                    if fd is not None:
                        os.close(fd)
                    raise BadRequest("put %s: append at offset %d but the file has %d bytes"
                                     % (name, offset, size))
            else:
                try:
                    if stat.S_ISDIR(os.lstat(leaf, dir_fd=pfd).st_mode):
                        raise BadRequest("put %s: not a regular file" % name)
                except FileNotFoundError:
                    pass
                tmp = leaf + ".part"
                fd = _create_at(pfd, tmp)
            try:
                _write_all(fd, data)
                os.fchmod(fd, 0o700 if executable else 0o600)
                size = os.fstat(fd).st_size
                digest = _sha256_fd(fd)
            finally:
                os.close(fd)
            if not offset:
                os.replace(tmp, leaf, src_dir_fd=pfd, dst_dir_fd=pfd)
        finally:
            os.close(pfd)
        self.sizes[name] = size
        return {"size": size, "sha256": digest}

    def op_cleanup(self, req):
        names = req.get("names")
        removed = 0
        if names is None:
            for base in ("files", "runs"):
                fd = self.base_fd(base)
                try:
                    entries = os.listdir(fd)
                    removed += sum(_rmtree_at(fd, e) for e in entries)
                finally:
                    os.close(fd)
            self.sizes.clear()
        else:
            if not isinstance(names, list):
                raise BadRequest("names must be a list")
            for n in names:
                self.path_in(self.files, n)
            ffd = self.base_fd("files")
            try:
                for n in names:
                    parts = _parts(n)
                    try:
                        pfd = _opendir_at(ffd, parts[:-1])
                    except OSError:
                        continue
                    try:
                        os.lstat(parts[-1], dir_fd=pfd)
                    except OSError:
                        continue
                    finally:
                        removed += _rmtree_at(pfd, parts[-1])
                        os.close(pfd)
                    self.sizes.pop(n, None)
            finally:
                os.close(ffd)
        return {"removed": removed}

    def op_run(self, req):
        exe = self.stored(req.get("exe"))
        files = req.get("files", [])
        if not isinstance(files, list):
            raise BadRequest("files must be a list")
        pairs = []
        for f in files:
            if isinstance(f, str):
                pairs.append((f, f))
            elif isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f):
                pairs.append((f[0], f[1]))
            else:
                raise BadRequest("files items are NAME or [NAME, AS], got %r" % (f,))
        outputs = req.get("outputs", [])
        argv = req.get("argv", ["@" + dst for _, dst in pairs])
        for key, val in (("outputs", outputs), ("argv", argv)):
            if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
                raise BadRequest("%s must be a list of strings" % key)
        sources = [self.stored(src) for src, _ in pairs]
        repeat = _num(req, "repeat", 0, 0, MAX_REPEAT, integral=True)
        number = _num(req, "number", 1, 1, MAX_NUMBER, integral=True)
        min_repeat_ms = float(_num(req, "min_repeat_ms", 0, 0, MAX_MIN_REPEAT_MS))
        cooldown_ms = float(_num(req, "cooldown_ms", 0, 0, 3.6e6))
        timeout = float(_num(req, "timeout", 60, 0.001, MAX_TIMEOUT_S))
        ret = req.get("return_outputs", "data")
        if not isinstance(ret, str) or ret not in ("data", "sha256"):
            raise BadRequest("return_outputs must be 'data' or 'sha256'")
        env = req.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in env.items()):
            raise BadRequest("env must map strings to strings")
        for k in env:
            if not k or "=" in k:
                raise BadRequest("env name %r is empty or contains '='" % k)
        emulator = req.get("emulator")
        prefix = []
        if emulator is not None:
            if not isinstance(emulator, str) or emulator not in EMULATORS:
                raise BadRequest("emulator must be one of %s, got %r" % (", ".join(EMULATORS), emulator))
            path = shutil.which(emulator)
            if path is None:
                raise BadRequest("%s is not installed on this device (apt-get install qemu-user)"
                                 % emulator, "unavailable")
            prefix = [path]
        limits = self.limits(req.get("limits") or {}, timeout, emulator is not None)

        wait = cooldown_ms / 1e3 - (time.monotonic() - self.last_run_end)
        if wait > 0:
            time.sleep(wait)
        self.run_count += 1
        rname = str(self.run_count)
        rundir = os.path.join(self.runs, rname)
        runs_fd = self.base_fd("runs")
        try:
            os.mkdir(rname, 0o700, dir_fd=runs_fd)
            rfd = os.open(rname, O_DIR, dir_fd=runs_fd)
        except OSError:
            os.close(runs_fd)
            raise
        try:
            copies = {}
            for _, name in pairs:
                if name in copies:
                    raise BadRequest("two files of this run are named %r" % name)
                copies[name] = self.path_in(rundir, name)
            for a in argv:
                if a.startswith("@") and a[1:] not in copies:
                    raise BadRequest("argv item %r names no file of this run" % a)
            args = [copies[a[1:]] if a.startswith("@") else a for a in argv]
            child_env = dict(os.environ)
            child_env.update(env)
            self.rfd = rfd
            res = self.measure(prefix + [exe], args, [src for src, _ in pairs], list(copies),
                               outputs, rundir, repeat, number, min_repeat_ms, timeout,
                               limits, child_env, ret)
            res["limits"] = limits          # the limits in force (client's, capped)
            return res
        finally:
            self.last_run_end = time.monotonic()
            os.close(rfd)
            _rmtree_at(runs_fd, rname)
            os.close(runs_fd)

    # ------------------------------------------------------------ running
    def limits(self, req, timeout, emulated):
        if not isinstance(req, dict):
            raise BadRequest("limits must be an object")
        caps = agent_limits()
        cpu = _num(req, "cpu_s", min(math.ceil(timeout) + 1, MAX_CPU_S), 1, caps["cpu_s"], cap=True)
        fsize = _num(req, "fsize_bytes", GiB, 1, caps["fsize_bytes"], cap=True)
        as_bytes = _num(req, "as_bytes", caps["default_as_bytes_emulated" if emulated else
                                             "default_as_bytes"], 1 << 20, caps["as_bytes"], cap=True)
        disk = _num(req, "disk_bytes", RUN_DISK_BYTES, 1, RUN_DISK_BYTES, cap=True)
        output = _num(req, "output_bytes", MAX_OUTPUT_BYTES, 0, MAX_OUTPUT_BYTES, cap=True)
        if emulated:
            as_bytes = max(as_bytes, QEMU_MIN_AS_BYTES)
        return {"cpu_s": int(math.ceil(cpu)), "fsize_bytes": int(fsize), "as_bytes": int(as_bytes),
                "disk_bytes": int(disk), "output_bytes": int(output)}

    def disk_over(self, limits):
        """Why the run directory is over its quota (per run, or with the stored files over the
        session's), else None."""
        room = min(limits["disk_bytes"], SESSION_DISK_BYTES - sum(self.sizes.values()))
        used = _tree_bytes(self.rfd, room + 1)
        if used > room:
            which = "run's" if room == limits["disk_bytes"] else "session's"
            return "the run wrote more than the %s disk quota of %d bytes" % (which, room)
        return None

    def measure(self, cmd, args, sources, copies, outputs, rundir, repeat, number,
                min_repeat_ms, timeout, limits, env, ret):
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        calibrated = 0
        if repeat > 0 and min_repeat_ms > 0:
            while calibrated < MAX_CALIBRATION_RUNS:
                calibrated += 1
                res = self.invoke(cmd, ["--time", "1", str(number)] + args, sources, copies,
                                  rundir, 1, deadline, timeout, limits, env)
                if res["error"] is not None:
                    return self.answer(res, number, calibrated, t0, {})
                per_call = max(res["times"][0], 1e-9)
                if per_call * number * 1e3 >= min_repeat_ms or number >= MAX_NUMBER:
                    break
                want = int(math.ceil(min_repeat_ms / 1e3 / per_call * 1.1))
                number = min(MAX_NUMBER, max(number * 2, want))
        timing = ["--time", str(repeat), str(number)] if repeat > 0 else []
        res = self.invoke(cmd, timing + args, sources, copies, rundir, repeat, deadline, timeout,
                          limits, env)
        outs = {}
        budget = limits["output_bytes"]
        if res["error"] is None:
            for name in outputs:
                self.path_in(rundir, name)
                try:
                    data = _read_at(self.rfd, name, budget)
                except OSError as e:
                    res["error"] = {"kind": "runtime_error",
                                    "msg": "output file %r was not written (%s)" % (name, e.strerror or e)}
                    break
                except _TooBig as e:
                    res["error"] = {"kind": "runtime_error",
                                    "msg": "output %r is %d bytes: over the %d-byte cap of a run's outputs"
                                    % (name, e.args[0], limits["output_bytes"])}
                    break
                budget -= len(data)
                o = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                if ret == "data":
                    o["data"] = base64.b64encode(data).decode("ascii")
                outs[name] = o
        return self.answer(res, number, calibrated, t0, outs if res["error"] is None else {})

    def answer(self, res, number, calibrated, t0, outs):
        res = dict(res)
        res.update(number=number, calibration_runs=calibrated, outputs=outs,
                   wall_s=time.monotonic() - t0)
        if res["error"] is not None:
            res["times"] = []
        return res

    def invoke(self, cmd, args, sources, copies, rundir, repeat, deadline, timeout, limits, env):
        """One child process on fresh copies of the inputs; a dict with error None or {kind, msg}."""
        out = {"times": [], "exit_status": None, "signal": None, "stderr_tail": "", "error": None}
        try:
            ffd = self.base_fd("files")
            try:
                for src, dst in zip(sources, copies):
                    _copy_at(ffd, src, self.rfd, dst, self.sizes.get(src, -1))
            finally:
                os.close(ffd)
        except (OSError, _TooBig) as e:
            out["error"] = {"kind": "runtime_error", "msg": "cannot copy the inputs into the run "
                            "directory (changed by the candidate?): %s" % (e,)}
            return out
        full = cmd + args
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            out["error"] = {"kind": "run_timeout", "msg": "no answer within %g s" % timeout}
            return out
        try:
            proc = subprocess.Popen(full, cwd=rundir, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    start_new_session=True, close_fds=True,
                                    preexec_fn=_limit_child(limits, _nproc_limit()))
        except OSError as e:
            hint = " (built for another architecture?)" if e.errno == 8 else ""
            out["error"] = {"kind": "runtime_error", "msg": "cannot execute %s: %s%s"
                            % (os.path.basename(cmd[0]), e.strerror, hint)}
            return out
        self.child = proc
        try:
            stdout, stderr, killed = _collect(proc, deadline, lambda: self.disk_over(limits))
        finally:
            _kill_group(proc.pid)  # leftovers of the group, if any
            kill_descendants()     # and those that left it (setsid), found as the subreaper's
            self.child = None
        rc = proc.returncode
        out["stderr_tail"] = _tail(stderr)
        over = killed if isinstance(killed, str) else self.disk_over(limits)
        if over:
            out["error"] = {"kind": "runtime_error", "msg": over}
            return out
        if killed:
            out["signal"] = "SIGKILL"
            out["error"] = {"kind": "run_timeout", "msg": "no answer within %g s (killed)" % timeout}
            return out
        if rc < 0:
            sig = _signal_name(-rc)
            out["signal"] = sig
            if sig == "SIGXCPU":
                kind, msg = "run_timeout", "CPU time limit of %d s hit" % limits["cpu_s"]
            elif sig == "SIGXFSZ":
                kind, msg = "runtime_error", "file size limit of %d bytes hit" % limits["fsize_bytes"]
            elif sig == "SIGKILL":
                kind, msg = "runtime_error", "killed by SIGKILL (out of memory?)"
            else:
                kind, msg = "runtime_error", "killed by %s" % sig
            if sig in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGKILL"):
                msg += " (address-space limit %d MiB)" % (limits["as_bytes"] >> 20)
            out["error"] = {"kind": kind, "msg": _with_tail(msg, out["stderr_tail"])}
            return out
        out["exit_status"] = rc
        if rc != 0:
            out["error"] = {"kind": "runtime_error",
                            "msg": _with_tail("exit status %d" % rc, out["stderr_tail"])}
            return out
        if repeat:
            try:
                times = [float(x) for x in stdout.split()]
            except ValueError:
                times = []
            if len(times) != repeat or not all(math.isfinite(t) for t in times):
                out["error"] = {"kind": "runtime_error", "msg": "expected %d timing lines, got: %r"
                                % (repeat, _tail(stdout)[:200])}
                return out
            out["times"] = times
        return out

    # ------------------------------------------------------------ serving
    def handle(self, line):
        """One request line -> its answer; never raises (a request is refused, never fatal)."""
        rid = None
        try:
            req = parse_line(line)
            rid = req.get("id")
            if not (rid is None or isinstance(rid, (int, float, str))) or _bad_id(rid):
                rid = None
            op = req.get("op")
            if op == "bye":                 # honoured whatever else is on its line
                self.closing = True
                return {"bye": True, "id": rid, "ok": True}
            check_tree(req)
            fn = OPS.get(op) if isinstance(op, str) else None
            if fn is None:
                raise BadRequest("unknown op %r" % (op,))
            body = fn(self, req)
        except BadRequest as e:
            return {"id": rid, "ok": False, "error": {"kind": e.kind, "msg": str(e)}}
        except Terminated:
            raise
        except OSError as e:
            return {"id": rid, "ok": False, "error": {"kind": "agent_error", "msg": str(e)[:500]}}
        except Exception as e:  # a bug of the agent: answered, and the agent goes on
            return {"id": rid, "ok": False, "error": {"kind": "agent_error", "msg": "internal error: %s: %s"
                                                      % (type(e).__name__, str(e)[:300])}}
        body.update(id=rid, ok=True)
        return body

    def serve(self, rfile, wfile):
        """Answer requests until bye or end of input; a line longer than MAX_LINE_BYTES is
        refused without being held in memory."""
        while not self.closing:
            line = rfile.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = rfile.readline(MiB)
                answer = {"id": None, "ok": False, "error": {
                    "kind": "bad_request", "msg": "request line longer than %d bytes" % MAX_LINE_BYTES}}
            elif not line.strip():
                continue
            else:
                answer = self.handle(line)
            try:
                text = json.dumps(answer)
            except (TypeError, ValueError) as e:
                text = json.dumps({"id": None, "ok": False, "error": {
                    "kind": "agent_error", "msg": "unencodable answer: %s" % e}})
            wfile.write(text.encode("utf-8") + b"\n")
            wfile.flush()

    def close(self, final=False):
        """Kills what is left of the run and removes the work directory, with SIGTERM, SIGHUP
        and SIGINT blocked so a second signal cannot interrupt the removal (final: they stay
        blocked, the agent is exiting)."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, EXIT_SIGNALS)
        try:
            if self.child is not None:
                _kill_group(self.child.pid)
            kill_descendants()
            if self.wfd is None:
                return
            for e in os.listdir(self.wfd):
                if e != "agent.lock":
                    _rmtree_at(self.wfd, e)
            parent, base = os.path.split(self.workdir)
            try:
                pfd = os.open(parent, O_DIR)
            except OSError:
                pfd = None
            if pfd is not None:
                try:     # the directory itself, unless a candidate renamed another one here
                    if os.lstat(base, dir_fd=pfd).st_ino == os.fstat(self.wfd).st_ino:
                        os.unlink("agent.lock", dir_fd=self.wfd)
                        os.rmdir(base, dir_fd=pfd)
                except OSError:
                    pass
                os.close(pfd)
            os.close(self.lock)
            os.close(self.wfd)
            self.wfd = None
        finally:
            if not final:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _bad_id(rid):
    if isinstance(rid, str):
        return _bad_text(rid) is not None
    return isinstance(rid, float) and not math.isfinite(rid)


OPS = {"hello": Agent.op_hello, "ping": Agent.op_ping, "put": Agent.op_put,
       "cleanup": Agent.op_cleanup, "run": Agent.op_run}


def _with_tail(msg, tail):
    return msg + (": " + tail.splitlines()[-1][-300:] if tail else "")


def _limit_child(limits, nproc=None):
    import resource

    def apply():
        if nproc is not None:
            try:
                soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
                if hard == resource.RLIM_INFINITY or nproc < hard:
                    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, hard))
            except (ValueError, OverflowError, OSError):
                pass
        for res, val in ((resource.RLIMIT_CPU, limits["cpu_s"]),
                         (resource.RLIMIT_FSIZE, limits["fsize_bytes"]),
                         (resource.RLIMIT_AS, limits["as_bytes"])):
            try:
                soft, hard = resource.getrlimit(res)
                if hard != resource.RLIM_INFINITY:
                    val = min(val, hard)
                resource.setrlimit(res, (val, hard))
            except (ValueError, OverflowError, OSError):
                pass
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


# ---------------------------------------------------------------- files, by descriptor
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_SAFE = os.O_NOFOLLOW | O_CLOEXEC
O_DIR = os.O_RDONLY | os.O_DIRECTORY | O_SAFE


class _TooBig(Exception):
    """A file larger than it may be (args: its size)."""


def _flock(fd, try_only):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if try_only else 0))
        return True
    except OSError:
        return False


def _parts(name):
    return [p for p in os.path.normpath(name).split("/") if p not in ("", ".")]


def _opendir_at(fd, parts, create=False):
    """A new descriptor of fd/parts..., each step opened with O_NOFOLLOW (a link is an error)."""
    cur = os.dup(fd)
    try:
        for p in parts:
            if create:
                try:
                    os.mkdir(p, 0o700, dir_fd=cur)
                except FileExistsError:
                    pass
            nxt = os.open(p, O_DIR, dir_fd=cur)
            os.close(cur)
            cur = nxt
    except BaseException:
        os.close(cur)
        raise
    return cur


def _create_at(dfd, name):
    """A fresh regular file dfd/name (O_EXCL); whatever had that name (a planted link) is
    unlinked first, never followed."""
    try:
        return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_SAFE, 0o600, dir_fd=dfd)
    except FileExistsError:
        os.unlink(name, dir_fd=dfd)
        return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_SAFE, 0o600, dir_fd=dfd)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _sha256_fd(fd):
    h = hashlib.sha256()
    off = 0
    while True:
        chunk = os.pread(fd, 1 << 20, off)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)
        off += len(chunk)


def _open_file_at(dfd, name):
    """(descriptor, size) of the regular file dfd/name, opened without following any link."""
    parts = _parts(name)
    pfd = _opendir_at(dfd, parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_RDONLY | O_SAFE | getattr(os, "O_NONBLOCK", 0), dir_fd=pfd)
    finally:
        os.close(pfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(21, "not a regular file", name)
    return fd, st.st_size


def _read_at(dfd, name, cap):
    fd, size = _open_file_at(dfd, name)
    try:
        if size > cap:
            raise _TooBig(size)
        chunks, left = [], size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _copy_at(sfd, src, dfd, dst, size):
    """Copies the stored file sfd/src (which must still have the size it was put with) to a
    fresh file dfd/dst, never following a link on either side, never past size bytes."""
    fd, have = _open_file_at(sfd, src)
    try:
        if have != size:
            raise _TooBig("stored file %r has %d bytes, was put with %d" % (src, have, size))
        parts = _parts(dst)
        pfd = _opendir_at(dfd, parts[:-1], create=True)
        try:
            out = _create_at(pfd, parts[-1])
        finally:
            os.close(pfd)
        try:
            off = 0
            while off < size:
                try:
                    n = os.sendfile(out, fd, off, size - off)
                except OSError:
                    n = os.write(out, os.pread(fd, min(size - off, 1 << 20), off))
                if n <= 0:
                    break
                off += n
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _open_dir_fixing(pfd, name):
    """Opens the directory pfd/name (no link), first giving the owner rwx back if a candidate
    took it away (chmod 000), so its entries can be removed."""
    try:
        fd = os.open(name, O_DIR, dir_fd=pfd)
    except PermissionError:
        path_fd = os.open(name, getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | O_SAFE,
                          dir_fd=pfd)
        try:
            os.chmod("/proc/self/fd/%d" % path_fd, 0o700)
        finally:
            os.close(path_fd)
        fd = os.open(name, O_DIR, dir_fd=pfd)
    if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
        os.fchmod(fd, 0o700)
    return fd


def _rmtree_at(pfd, name):
    """Removes pfd/name and all below it through descriptors: a link is removed as a link, never
    followed; permissions are fixed first; no recursion.  True when it is gone."""
    try:
        if not stat.S_ISDIR(os.lstat(name, dir_fd=pfd).st_mode):
            os.unlink(name, dir_fd=pfd)
            return True
        stack = [(os.dup(pfd), name, _open_dir_fixing(pfd, name))]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    tried = set()
    while stack:
        parent, nm, fd = stack[-1]
        child = None
        with os.scandir(fd) as it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        key = (e.inode(), nm)
                        if key not in tried:
                            tried.add(key)
                            child = (os.dup(fd), e.name, _open_dir_fixing(fd, e.name))
                            break
                    else:
                        os.unlink(e.name, dir_fd=fd)
                except OSError:
                    pass
        if child is not None:
            stack.append(child)
            continue
        stack.pop()
        os.close(fd)
        try:
            os.rmdir(nm, dir_fd=parent)
        except OSError:
            pass
        os.close(parent)
    try:
        os.lstat(name, dir_fd=pfd)
        return False
    except FileNotFoundError:
        return True


def _tree_bytes(fd, stop):
    """Bytes allocated under the directory fd (links not followed); counting stops past stop."""
    total, stack = 0, [os.dup(fd)]
    try:
        while stack and total < stop:
            d = stack.pop()
            try:
                with os.scandir(d) as it:
                    for e in it:
                        try:
                            st = e.stat(follow_symlinks=False)
                            total += max(st.st_size, st.st_blocks * 512)
                            if stat.S_ISDIR(st.st_mode):
                                stack.append(os.open(e.name, O_DIR, dir_fd=d))
                        except OSError:
                            pass
            finally:
                os.close(d)
    finally:
        for d in stack:
            os.close(d)
    return total


def _keep(buf, data, cap):
    """Appends data to buf, keeping only the last cap bytes; True when something was dropped."""
    buf += data
    if len(buf) > cap:
        del buf[:len(buf) - cap]
        return True
    return False


def _collect(proc, deadline, check=None):
    """Reads the child's stdout (up to STDOUT_BYTES, tail kept) and stderr (TAIL_BYTES, tail)
    until both reach end of file, the child exits with its pipes held by a descendant, or the
    deadline; -> (stdout, stderr, killed: True at the deadline, or check()'s message when the
    periodic check (the disk quota, every CHECK_S) said to stop the run).  Never buffers a flood whole and
    never waits on a pipe held by a process that left the group."""
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    caps = {proc.stdout: STDOUT_BYTES, proc.stderr: TAIL_BYTES}
    killed = False
    grace = None            # after the child exited: how long its pipes may stay open
    next_check = time.monotonic() + CHECK_S
    with selectors.DefaultSelector() as sel:
        for f in bufs:
            sel.register(f, selectors.EVENT_READ)
        while sel.get_map():
            now = time.monotonic()
            if grace is None and check is not None and now >= next_check:
                next_check = now + CHECK_S
                killed = check() or False
            if grace is None and (now >= deadline or killed):
                killed = killed or True
                _kill_group(proc.pid)
                proc.kill()
                proc.wait()
                kill_descendants()
                grace = now + 1.0
            if grace is not None and now >= grace:
                break
            for key, _ in sel.select(max(0.0, min((grace or deadline) - now, 0.1))):
                data = os.read(key.fd, 1 << 16)
                if data:
                    _keep(bufs[key.fileobj], data, caps[key.fileobj])
                else:
                    sel.unregister(key.fileobj)
            if grace is None and sel.get_map() and proc.poll() is not None:
                kill_descendants()      # whoever holds the pipes dies with the run
                grace = time.monotonic() + 1.0
    for f in bufs:
        f.close()
    proc.wait()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), killed


def _subreaper():
    """Makes the agent the subreaper of its runs (Linux >= 3.4), so a descendant that leaves
    its process group (setsid) and is orphaned becomes the agent's child, where kill_descendants
    finds it.  Without ctypes or prctl, only the run's process group is killed."""
    global SUBREAPER
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        SUBREAPER = libc.prctl(36, 1, 0, 0, 0) == 0     # PR_SET_CHILD_SUBREAPER
    except (ImportError, OSError, AttributeError):
        SUBREAPER = False
    return SUBREAPER


SUBREAPER = False
OWN_PROCESS = False     # set by main(): every child of this process is a run's


def _children(pid):
    """The direct children of pid, from /proc/PID/task/*/children, else from a /proc scan."""
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    try:
        for t in tasks:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out.extend(int(x) for x in f.read().split())
        return out
    except (OSError, ValueError):
        pass
    for d in os.listdir("/proc"):
        if d.isdigit():
            stat = _read("/proc/%s/stat" % d)
            try:
                if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
            except (IndexError, ValueError):
                pass
    return out


def kill_descendants():
    """SIGKILLs every descendant of the agent and reaps it; the agent runs one child at a time,
    so its descendants are the run's (with SUBREAPER, also those that escaped with setsid).
    Only in the agent's own process (main): an Agent used as a library must not kill or reap
    its host's other children."""
    if not OWN_PROCESS:
        return
    me = os.getpid()
    for _ in range(100):
        todo, seen = [me], []
        while todo:
            for c in _children(todo.pop()):
                if c not in seen:
                    seen.append(c)
                    todo.append(c)
        if not seen:
            break
        for pid in seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap()
    _reap()


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _nproc_limit():
    """RLIMIT_NPROC for a run: the agent user's processes now plus NPROC, so a fork bomb stops
    without starving the user's other processes; None (no limit) for root, which ignores it."""
    uid = os.getuid()
    if uid == 0:
        return None
    n = 0
    try:
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if os.stat("/proc/" + d).st_uid == uid:
                        n += 1
                except OSError:
                    pass
    except OSError:
        return None
    return n + NPROC


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def reap_stale(root):
    """Removes the work directories under root left by dead agents of this user: those whose
    agent.lock nobody holds (or, from agents without one, whose agent.json names a dead
    process).  A directory with neither is an agent starting up, and is left alone."""
    try:
        rfd = os.open(root, O_DIR)
    except OSError:
        return 0
    n = 0
    try:
        for name in os.listdir(rfd):
            if not name.startswith("cgen-agent-"):
                continue
            try:
                st = os.lstat(name, dir_fd=rfd)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                    continue
                dfd = os.open(name, O_DIR, dir_fd=rfd)
            except OSError:
                continue
            try:
                stale = _is_stale(dfd)
            finally:
                os.close(dfd)
            if stale:
                n += _rmtree_at(rfd, name)
    finally:
        os.close(rfd)
    return n


def _is_stale(dfd):
    try:
        lock = os.open("agent.lock", os.O_RDONLY | O_SAFE, dir_fd=dfd)
    except OSError:
        lock = None
    if lock is not None:
        try:
            return _flock(lock, True)
        finally:
            os.close(lock)
    try:
        fd = os.open("agent.json", os.O_RDONLY | O_SAFE, dir_fd=dfd)
        with os.fdopen(fd) as f:
            owner = json.loads(f.read(4096))
        pid, start = int(owner["pid"]), owner.get("start")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    now = process_start(pid)
    return now is None or (start is not None and now != start)


def _terminate(signum, frame):
    raise Terminated()


def main(argv=None):
    p = argparse.ArgumentParser(prog="rpc_agent", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None,
                   help="parent of the agent's fresh work directory (default: the system temp dir)")
    p.add_argument("--version", action="store_true", help="print the protocol version and exit")
    args = p.parse_args(argv)
    if args.version:
        print("%s protocol %d" % (AGENT_NAME, PROTOCOL_VERSION))
        return 0
    # The protocol owns the real stdout; anything else printed goes to stderr.
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    proto_in = sys.stdin.buffer
    global OWN_PROCESS
    OWN_PROCESS = True
    _subreaper()
    reap_stale(args.root or tempfile.gettempdir())
    agent = Agent(args.root)
    for s in EXIT_SIGNALS:
        signal.signal(s, _terminate)
    try:
        agent.serve(proto_in, proto_out)
    except (Terminated, BrokenPipeError):
        pass
    finally:
        agent.close(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
