"""DevicePool over Ray (the optional `cgen-compiler[cluster]` extra): each measurement is
a Ray task that needs its device's custom resource (`cgen_device_NAME: 1`), on whichever
node has that board attached; re-queueing stays the pool's own."""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from functools import lru_cache
from typing import Sequence

from .device import AgentError, Device, DeviceError, FileRun, open_device
from .pool import DevicePool
from .pool_toml import unique_names
from .runner import RunError

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
        names = unique_names(urls)
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
