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
re-queueing stays this pool's own (targets.pool_ray).  Without Ray the pool runs
in-process.  Pool files (TOML) are read by targets.pool_toml.
"""
from __future__ import annotations

import bisect
import itertools
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Sequence

from .device import AgentError, Device, DeviceError, DeviceUnavailable, FileRun, open_device
from .pool_toml import load_pool_toml, unique_names
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
        names = unique_names(urls)
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
                    if w.serves(req) and not self._better_elsewhere(w, req):
                        del self._pending[i]
                        w.current = req
                        return req
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(timeout=left)
            return None

    def _better_elsewhere(self, w: _Worker, req: _Request) -> bool:
        """A device that lost this request takes it back only when no other live
        device serves it: a device revived by its health check is still the
        likeliest to fail the same request again."""
        if w.device.name not in req.lost_on:
            return False
        return any(o is not w and o.state == "alive" and o.device.name not in req.lost_on
                   and o.serves(req) for o in self._workers)

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
