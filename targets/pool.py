"""A pool of devices serving measurement requests from many tuning tasks at once.

    pool = DevicePool.from_urls(["local", "local", "qemu:aarch64", "ssh://pi@pi4.local"])
    fut = pool.submit(exe, {"A": a, "B": b, "C": c}, ["C"], target="rpi4", repeat=5)
    result = fut.result()          # targets.runner.Result

Requests go to a device that serves their target, highest priority first and
FIFO within a priority.  Each device has one worker thread, so a device runs
one request at a time.  Devices are health-checked (a ping when idle, a
reconnect with backoff when dead).  When a device is lost in the middle of a
request, it is taken out and the request is re-queued in its place for
another device; a request is resolved exactly once (a future set once), so
none is lost or completed twice.  A device that stays dead for
`retire_after` seconds is retired; requests that no remaining device can
serve then resolve to a `device_lost` error.

Sharing one pool across processes and machines uses Ray (the optional
`cgen-compiler[cluster]` extra): RayDevicePool runs each measurement as a Ray
task with max_retries=0 that needs the device's custom resource
(`cgen_device_NAME: 1`), on whichever node has that board attached;
re-queueing stays this pool's own.  Without Ray the pool runs in-process.
"""
from __future__ import annotations

import bisect
import itertools
import os
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from .device import (AgentError, Device, DeviceError, DeviceUnavailable, FileRun, open_device)
from .runner import Result, RunError


@dataclass(eq=False)
class _Request:
    key: tuple                    # (-priority, seq): the queue order
    method: str                   # "run" or "run_files"
    args: tuple
    kwargs: dict
    target: object
    device: str | None            # only this device (by name), or any that serves target
    tag: object
    future: Future = field(default_factory=Future)
    attempts: int = 0
    lost_on: list = field(default_factory=list)

    def lost(self, msg: str):
        err = RunError("device_lost", msg)
        return FileRun(None, (), err) if self.method == "run_files" else Result(None, (), err)


class _Worker:
    def __init__(self, device: Device):
        self.device = device
        self.state = "new"          # new | alive | dead | retired
        self.dead_since = None
        self.failures = 0
        self.reason = ""
        self.current: _Request | None = None
        self.served = 0
        self.last_ok = time.monotonic()
        self.supports: dict = {}
        self.thread: threading.Thread | None = None

    def serves(self, req: _Request) -> bool:
        if req.device is not None and req.device != self.device.name:
            return False
        key = req.target
        if key not in self.supports:
            self.supports[key] = self.device.supports(req.target)
        return self.supports[key]

    def knows_targets(self) -> bool:
        return self.device.knows_targets()


class DevicePool:
    def __init__(self, devices: Sequence[Device] = (), *, health_interval: float = 5.0,
                 retire_after: float = 60.0, max_attempts: int = 3):
        self.health_interval = health_interval
        self.retire_after = retire_after
        self.max_attempts = max_attempts
        self._cond = threading.Condition()
        self._pending: list = []            # sorted by key
        self._seq = itertools.count()
        self._workers: list = []
        self._closed = False
        self._completed: list = []          # (tag, device name) in completion order
        self._requeued = 0
        for d in devices:
            self.add(d)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_urls(cls, urls: Sequence[str], pool_options: dict | None = None, **device_kw):
        """One device per URL (repeat a URL, e.g. `local`, for several agents)."""
        names = _unique_names(urls)
        return cls([open_device(u, name=n, **device_kw) for u, n in zip(urls, names)],
                   **(pool_options or {}))

    @classmethod
    def from_toml(cls, path, **pool_kw):
        devices, opts = load_pool_toml(path)
        opts.update(pool_kw)
        return cls(devices, **opts)

    def add(self, device: Device) -> None:
        """Add a device; it connects in its own worker thread."""
        with self._cond:
            if self._closed:
                raise RuntimeError("pool is closed")
            if any(w.device.name == device.name for w in self._workers):
                raise ValueError(f"a device named {device.name!r} is already in the pool")
            w = _Worker(device)
            self._workers.append(w)
            w.thread = threading.Thread(target=self._serve, args=(w,), daemon=True,
                                        name=f"pool-{device.name}")
            w.thread.start()
            self._cond.notify_all()

    @property
    def devices(self) -> list:
        return [w.device for w in self._workers]

    # ------------------------------------------------------------ requests
    def submit(self, executable, input_arrays, output_names: Sequence[str] = (), *, target=None,
               priority: int = 0, device: str | None = None, tag=None, **run_kw) -> Future:
        """Queue Device.run(executable, input_arrays, output_names, **run_kw); a Future of its Result.

        target: only devices serving it (a name, a .toml path or a Target; None: any);
        priority: higher first, FIFO within a priority; device: only the device of that name.
        """
        return self._submit("run", (executable, input_arrays, tuple(output_names)), run_kw,
                            target, priority, device, tag)

    def submit_files(self, executable, files, argv=None, outputs: Sequence[str] = (), *,
                     target=None, priority: int = 0, device: str | None = None, tag=None,
                     **run_kw) -> Future:
        """Queue Device.run_files(...) (a model run: input files in, output files back)."""
        return self._submit("run_files", (executable, dict(files), argv, tuple(outputs)), run_kw,
                            target, priority, device, tag)

    def map(self, requests: Sequence[dict]) -> list:
        """Submit dicts of submit()'s arguments; their results in order."""
        futs = [self.submit(**r) for r in requests]
        return [f.result() for f in futs]

    def _submit(self, method, args, kw, target, priority, device, tag) -> Future:
        req = _Request((-int(priority), next(self._seq)), method, args, kw, target, device, tag)
        with self._cond:
            if self._closed:
                raise RuntimeError("pool is closed")
            bisect.insort(self._pending, req, key=lambda r: r.key)
            self._fail_orphans()
            self._cond.notify_all()
        return req.future

    # ------------------------------------------------------------ introspection
    def in_flight(self) -> dict:
        """device name -> tag of the request it is running."""
        with self._cond:
            return {w.device.name: w.current.tag for w in self._workers if w.current is not None}

    def completed(self) -> list:
        """(tag, device name) of every resolved request, in order of completion."""
        with self._cond:
            return list(self._completed)

    def stats(self) -> dict:
        with self._cond:
            return {"pending": len(self._pending), "requeued": self._requeued,
                    "completed": len(self._completed),
                    "devices": [{"name": w.device.name, "url": w.device.url, "state": w.state,
                                 "served": w.served, "reason": w.reason,
                                 "busy": w.current is not None} for w in self._workers]}

    # ------------------------------------------------------------ the workers
    def _serve(self, w: _Worker) -> None:
        dev = w.device
        while True:
            with self._cond:
                if self._closed:
                    return
                state = w.state
            if state == "retired":
                return
            if state in ("new", "dead"):
                if not self._revive(w):
                    continue
            req = self._take(w)
            if req is None:
                if self._closed:
                    return
                if time.monotonic() - w.last_ok >= self.health_interval and w.state == "alive":
                    if dev.ping():
                        w.last_ok = time.monotonic()
                    else:
                        self._mark_dead(w, f"{dev.name}: health check failed")
                continue
            try:
                res = getattr(dev, req.method)(*req.args, **req.kwargs)
            except Exception as e:  # noqa: BLE001 - a refused request or a bug: the caller's error
                self._finish(w, req, exc=e)
                continue
            if res.error is not None and res.error.kind == "device_lost":
                self._lose(w, req, res)
            else:
                w.last_ok = time.monotonic()
                self._finish(w, req, res)

    def _revive(self, w: _Worker) -> bool:
        """Connect a new or dead device; False (after a wait) while it stays down."""
        dev = w.device
        try:
            dev.connect(attempts=1)
            ok = dev.ping()
            reason = "" if ok else "no answer to ping"
        except DeviceUnavailable as e:
            self._retire(w, str(e))
            return False
        except AgentError as e:
            self._retire(w, str(e))
            return False
        except DeviceError as e:
            ok, reason = False, str(e)
        except Exception as e:  # noqa: BLE001 - a broken transport is a dead device
            ok, reason = False, f"{type(e).__name__}: {e}"
        with self._cond:
            if ok:
                w.state, w.dead_since, w.failures, w.reason = "alive", None, 0, ""
                w.last_ok = time.monotonic()
                w.supports.clear()
                self._fail_orphans()
                self._cond.notify_all()
                return True
            if w.dead_since is None:
                w.dead_since = time.monotonic()
            w.state, w.reason = "dead", reason
            w.failures += 1
            if time.monotonic() - w.dead_since >= self.retire_after:
                self._retire_locked(w, f"dead for {self.retire_after:g} s: {reason}")
                return False
            delay = min(self.health_interval, 0.25 * 2 ** min(w.failures - 1, 8))
            self._cond.wait(timeout=delay)
            return False

    def _take(self, w: _Worker):
        with self._cond:
            deadline = time.monotonic() + self.health_interval
            while not self._closed and w.state == "alive":
                for i, req in enumerate(self._pending):
                    if w.serves(req):
                        del self._pending[i]
                        w.current = req
                        return req
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(timeout=left)
            return None

    def _finish(self, w: _Worker, req: _Request, res=None, exc=None) -> None:
        with self._cond:
            w.current = None
            w.served += 1
            self._resolve(req, res, exc, w.device.name)
            self._cond.notify_all()

    def _resolve(self, req, res, exc, where):
        if req.future.done():
            return
        if exc is not None:
            req.future.set_exception(exc)
        else:
            req.future.set_result(res)
        self._completed.append((req.tag, where))

    def _lose(self, w: _Worker, req: _Request, res) -> None:
        with self._cond:
            w.current = None
            req.attempts += 1
            req.lost_on.append(w.device.name)
            if req.attempts >= self.max_attempts:
                self._resolve(req, res, None, w.device.name)
            else:
                self._requeued += 1
                bisect.insort(self._pending, req, key=lambda r: r.key)
            self._mark_dead_locked(w, res.error.msg)
            self._cond.notify_all()

    def _mark_dead(self, w, reason):
        with self._cond:
            self._mark_dead_locked(w, reason)

    def _mark_dead_locked(self, w, reason):
        if w.state != "retired":
            w.state, w.reason = "dead", reason
            if w.dead_since is None:
                w.dead_since = time.monotonic()
        self._fail_orphans()

    def _retire(self, w, reason):
        with self._cond:
            self._retire_locked(w, reason)

    def _retire_locked(self, w, reason):
        w.state, w.reason = "retired", reason
        self._fail_orphans()
        self._cond.notify_all()

    def _fail_orphans(self):
        """Resolve pending requests that no device that is (or may come) alive can serve."""
        live = [w for w in self._workers if w.state != "retired"]
        if any(not w.knows_targets() for w in live):
            return
        keep = []
        for req in self._pending:
            if any(w.serves(req) for w in live):
                keep.append(req)
            else:
                why = f"no device in the pool serves target {getattr(req.target, 'name', req.target)}"
                if req.device is not None:
                    why = f"device {req.device!r} is not in the pool (or retired)"
                retired = [f"{w.device.name}: {w.reason}" for w in self._workers if w.state == "retired"]
                if retired:
                    why += " (retired: " + "; ".join(retired)[:500] + ")"
                self._resolve(req, req.lost(why), None, None)
        self._pending[:] = keep

    # ------------------------------------------------------------ end
    def close(self, timeout: float = 30.0) -> None:
        """Stop the workers (a running request finishes), resolve what is left, close devices."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for w in self._workers:
            if w.thread is not None:
                w.thread.join(timeout)
        with self._cond:
            for req in self._pending:
                self._resolve(req, req.lost("the pool was closed"), None, None)
            self._pending.clear()
        for w in self._workers:
            try:
                w.device.close()
            except Exception:  # noqa: BLE001 - best effort
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _unique_names(urls) -> list:
    seen: dict = {}
    out = []
    for u in urls:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", u.split("://", 1)[-1]).strip("_") or "device"
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.append(base if k == 0 else f"{base}-{k}")
    # a URL given once keeps its plain name; repeated ones are numbered from the second
    return out


# ---------------------------------------------------------------- pool files
_POOL_KEYS = {"health_interval", "retire_after", "max_attempts"}
_DEVICE_KEYS = {"url", "name", "count", "targets", "identity", "known_hosts", "trust_on_first_use",
                "python"}


def load_pool_toml(path) -> tuple:
    """(devices, pool options) from a TOML file:

        health_interval = 5          # optional pool options
        [[device]]
        url = "ssh://pi@raspberrypi.local"
        name = "pi4-a"               # optional
        targets = ["rpi4"]           # optional: only these targets
        identity = "~/.ssh/id_ed25519"
        [[device]]
        url = "local"
        count = 2                    # two agents on this machine
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise ValueError(f"cannot read pool file {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"pool file {p} is not valid TOML: {e}") from None
    entries = data.pop("device", [])
    unknown = set(data) - _POOL_KEYS
    if unknown:
        raise ValueError(f"pool file {p}: unknown keys {sorted(unknown)}; known: {sorted(_POOL_KEYS)} "
                         f"and [[device]] tables")
    if not entries:
        raise ValueError(f"pool file {p}: no [[device]] tables")
    devices, names = [], set()
    for e in entries:
        bad = set(e) - _DEVICE_KEYS
        if bad or "url" not in e:
            raise ValueError(f"pool file {p}: device {e}: needs 'url'; unknown keys {sorted(bad)}; "
                             f"known: {sorted(_DEVICE_KEYS)}")
        count = int(e.get("count", 1))
        base = e.get("name") or _unique_names([e["url"]])[0]
        for k in range(count):
            name = base if count == 1 else f"{base}-{k}"
            while name in names:
                name += "'"
            names.add(name)
            devices.append(open_device(e["url"], name=name, targets=e.get("targets"),
                                       identity=e.get("identity"), known_hosts=e.get("known_hosts"),
                                       trust_on_first_use=bool(e.get("trust_on_first_use", False)),
                                       **_python_kw(e)))
    return devices, dict(data)


def _python_kw(entry) -> dict:
    if "python" not in entry:
        return {}
    if entry["url"].startswith("ssh://"):
        from .ssh import SshOptions
        return {"ssh_options": SshOptions(python=entry["python"])}
    return {"python": entry["python"]}


# ---------------------------------------------------------------- Ray
RESOURCE_PREFIX = "cgen_device_"


def resource_name(device_name: str) -> str:
    """The Ray custom resource of a device: one unit, held by the measurement running on it."""
    return RESOURCE_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", device_name)


@dataclass(frozen=True)
class DeviceSpec:
    """What a Ray worker needs to open a device (picklable; the connection is made there)."""
    url: str
    name: str
    targets: tuple | None = None
    options: dict = field(default_factory=dict)   # open_device keyword arguments

    def open(self) -> Device:
        return open_device(self.url, name=self.name, targets=self.targets, **self.options)

    @property
    def resource(self) -> str:
        return resource_name(self.name)


# Per Ray worker process: devices opened by measurement tasks, kept connected across tasks.
_WORKER_DEVICES: dict = {}
_WORKER_LOCK = threading.Lock()


def _worker_device(spec: DeviceSpec) -> Device:
    key = (spec.url, spec.name, spec.targets, repr(sorted(spec.options.items())))
    with _WORKER_LOCK:
        dev = _WORKER_DEVICES.get(key)
        if dev is None:
            dev = _WORKER_DEVICES[key] = spec.open()
        return dev


def _ray_call(spec: DeviceSpec, method: str, args: tuple, kwargs: dict):
    """Body of every Ray task: one call on the device, in the worker that holds its resource."""
    dev = _worker_device(spec)
    if method == "hello":
        return dev.connect()
    if method == "ping":
        return dev.ping()
    return getattr(dev, method)(*args, **kwargs)


@lru_cache(maxsize=None)
def _ray_task():
    import ray
    return ray.remote(max_retries=0)(_ray_call)


class RayDevice(Device):
    """A device reached through Ray tasks that hold its custom resource (see DevicePool)."""

    kind = "ray"

    def __init__(self, spec: DeviceSpec, call_slack_s: float = 120.0):
        super().__init__(spec.url, name=spec.name, targets=spec.targets)
        self.spec = spec
        self.call_slack_s = call_slack_s
        self._local = spec.open()             # never connected here: target matching only
        self.emulated = self._local.emulated
        self.emulator = self._local.emulator
        self._alive = False

    def _call(self, method, args=(), kwargs=None, wait=60.0):
        import ray
        ref = _ray_task().options(resources={self.spec.resource: 1}, num_cpus=0).remote(
            self.spec, method, args, kwargs or {})
        try:
            return ray.get(ref, timeout=wait)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            raise

    @property
    def connected(self) -> bool:
        return self._alive

    def connect(self, attempts: int | None = None) -> dict:
        import ray
        try:
            self.info = self._call("hello", wait=self.call_slack_s)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else None
            if isinstance(cause, DeviceError):
                raise cause from None
            raise DeviceError(f"{self.name}: {e}") from None
        except ray.exceptions.RayError as e:
            raise DeviceError(f"{self.name}: Ray: {type(e).__name__}: {str(e)[:300]}") from None
        self._local.info = self.info
        self._alive = True
        return self.info

    def ping(self, timeout: float = 10.0) -> bool:
        import ray
        try:
            self._alive = bool(self._call("ping", wait=timeout + self.call_slack_s))
        except ray.exceptions.RayError:
            self._alive = False
        return self._alive

    def supports(self, target) -> bool:
        return self._local.supports(target)

    def knows_targets(self) -> bool:
        return self._local.knows_targets()

    def run_files(self, executable, files={}, argv=None, outputs=(), **kw) -> FileRun:
        import ray
        exe = executable if isinstance(executable, (bytes, bytearray)) else Path(executable).read_bytes()
        blobs = {n: (v if isinstance(v, (bytes, bytearray, memoryview)) else Path(v).read_bytes())
                 for n, v in files.items()}
        wait = float(kw.get("timeout", 60.0)) + float(kw.get("cooldown_ms", 0.0)) / 1e3 \
            + self.call_slack_s
        try:
            return self._call("run_files", (bytes(exe), blobs, argv, tuple(outputs)), kw, wait)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, AgentError):
                raise cause from None
            self._alive = False
            return FileRun(None, (), RunError("device_lost", f"{self.name}: {str(e)[:500]}"),
                           self.emulated)
        except ray.exceptions.RayError as e:   # worker or node died, timeout, cancelled
            self._alive = False
            return FileRun(None, (), RunError("device_lost", f"{self.name}: Ray: {type(e).__name__}: "
                                              f"{str(e)[:300]}"), self.emulated)

    def close(self):
        self._alive = False


class RayDevicePool(DevicePool):
    """DevicePool whose measurements run as Ray tasks (max_retries=0) on the devices' resources.

    Every process that builds a RayDevicePool over the same devices (same names)
    shares them: Ray grants each device's single resource unit to one
    measurement at a time, across drivers and machines.
    """

    def __init__(self, specs: Sequence[DeviceSpec], **pool_kw):
        super().__init__([RayDevice(s) for s in specs], **pool_kw)

    @classmethod
    def from_urls(cls, urls: Sequence[str], pool_options: dict | None = None, **device_kw):
        names = _unique_names(urls)
        return cls([DeviceSpec(u, n, None, dict(device_kw)) for u, n in zip(urls, names)],
                   **(pool_options or {}))


def start_local_ray(specs: Sequence[DeviceSpec], num_cpus: int | None = None, **init_kw):
    """Start (or join) a single-machine Ray instance holding the devices' resources.

    The instance listens on loopback only: Ray binds its servers to 127.0.0.1
    when its "no cluster" mode is on (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read
    when Ray is imported; set here, and in the already imported module if need
    be).  On a real cluster, start each node with
    `ray start --resources '{"cgen_device_NAME": 1}'` for the boards it reaches.
    """
    import sys
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"      # inherited by Ray's processes
    try:
        import ray
    except ImportError:
        raise RuntimeError("Ray is not installed: pip install 'cgen-compiler[cluster]'") from None
    if ray.is_initialized():
        return ray
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        constants.ENABLE_RAY_CLUSTER = False      # Ray was imported before the variable was set
    ray.init(num_cpus=num_cpus, resources={s.resource: 1 for s in specs}, include_dashboard=False,
             log_to_driver=False, configure_logging=False, **init_kw)
    return ray
