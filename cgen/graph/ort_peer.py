"""onnxruntime, the bench's peer, in a child process that sees the target's ISA.

onnxruntime's MLAS picks its kernels from CPUID at run time and has no switch to stay
below what the CPU has, so on an AVX-512 machine `cgen bench --target x86-avx2` would time
cgen's AVX2 code against AVX-512 kernels (twice the FMA width).  Forced AVX2 on an AVX-512
machine stands for an AVX2 host, so the peer must be AVX2 too: its child process preloads
cpuid_mask.c (built with the system C compiler into the compile cache, never the source
tree), which turns on CPUID faulting and hides the AVX-512, AMX and newer VEX feature bits
from every CPUID the child executes afterwards.  The child checks the mask (numpy's CPU
features: AVX2 and FMA3 without AVX512F) before anything is timed.  Where faulting is
unavailable (the kernel or the CPU refuses ARCH_SET_CPUID) the peer runs natively and its
label, `OrtPeer.isa`, says so; `OrtPeer.note` is then the one-line reason.

    with OrtPeer(model, feeds, target) as peer:     # peer.outputs: name -> array
        peer.isa                                    # "avx2 (cpuid-masked)", "native avx512"
        peer.time(repeat, min_repeat_s, warmup)     # seconds per call, timed in the child
        peer.node_seconds(runs)                     # ONNX node -> seconds, its profiler

The child is long-lived so that the bench interleaves its repeats with cgen's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import platform
import select
import subprocess
import sys
import tempfile

import numpy as np

_HERE = Path(__file__).resolve().parent
_CHILD = _HERE / "ort_peer_child.py"
_SHIM = _HERE / "cpuid_mask.c"
# x86 ISAs best first: the first one this machine runs is what an unmasked peer uses
_X86_ISAS = (("avx512", "x86-avx512"), ("avx2", "x86-avx2"))
# (target ISA, host ISA) -> the ISA the peer is masked down to; other pairs run natively
_MASKED = {("avx2", "avx512"): "avx2"}
# a child runs its script without its own directory on sys.path (cgen/graph/profile.py
# would shadow the standard library's profile)
_RUN = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def host_isa() -> str:
    """The widest x86 ISA this CPU runs (avx512, avx2), else the machine's name."""
    from targets import resolve
    from targets.target import cannot_run
    return next((isa for isa, name in _X86_ISAS if cannot_run(resolve(name)) is None),
                platform.machine())


def masked_isa(target) -> str | None:
    """The ISA the peer is masked down to for `target` on this machine, or None (native)."""
    if target.arch != "x86_64":
        return None
    return _MASKED.get((target.isa, host_isa()))


def build_mask() -> Path:
    """cpuid_mask.c as a shared library in the compile cache (built once per source)."""
    from targets import compile_c, resolve
    return compile_c(_SHIM.read_text(), resolve("generic-c"), "shared", name="cpuid_mask")


def peer_label(native: str, want: str | None, why: str = "") -> tuple:
    """(OrtPeer.isa, OrtPeer.note): the ISA the peer runs with, given the host's (native),
    the one it is masked down to (want, None for native) and why masking failed, if it did;
    the note is empty unless the peer is not at the ISA the target asks for."""
    if want is None:
        return f"native {native}", ""
    if not why:
        return f"{want} (cpuid-masked)", ""
    return (f"native {native} ({why})",
            f"onnxruntime runs with this machine's {native}, not {want} as the target asks: "
            f"{why}")


def _one_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class OrtPeer:
    """onnxruntime with one thread in a child process (see the module's docstring)."""

    def __init__(self, model, feeds: dict, target, timeout: float = 600.0):
        self.timeout = timeout
        self._dir = tempfile.TemporaryDirectory(prefix="cgen-ort-peer-")
        d = Path(self._dir.name)
        if hasattr(model, "SerializeToString") or isinstance(model, bytes):
            path = d / "model.onnx"
            path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
        else:
            path = Path(model)
        np.savez(d / "feeds.npz", **{k: np.ascontiguousarray(v) for k, v in feeds.items()})
        native, want, why = host_isa(), masked_isa(target), ""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
        argv = [sys.executable, "-c", _RUN, str(_CHILD), str(path), str(d / "feeds.npz"),
                str(d / "outputs.npz")]
        if want:
            try:
                lib = build_mask()
            except Exception as e:      # no compiler: say so, run natively
                why = f"cpuid mask not built: {_one_line(e)}"
            else:
                env["LD_PRELOAD"] = ":".join(p for p in (str(lib), env.get("LD_PRELOAD"))
                                             if p)
                argv.append("--masked")
        self._err = open(d / "stderr.txt", "w+")
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._err, env=env, text=True)
        try:
            ready = self._read()
            if "mask" in ready and ready["mask"]["status"] != 0:
                why = ("cpuid faulting unavailable: arch_prctl(ARCH_SET_CPUID): "
                       + ready["mask"]["why"])
            self.isa, self.note = peer_label(native, want, why)
            with np.load(d / "outputs.npz", allow_pickle=False) as z:
                self.outputs = {n: z[f"arr_{k}"] for k, n in enumerate(ready["outputs"])}
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict:
        out = self._proc.stdout
        ready, _, _ = select.select([out], [], [], self.timeout)
        line = out.readline() if ready else None
        if line is None:
            raise RuntimeError(f"onnxruntime peer: no answer in {self.timeout:g} s")
        if not line:
            self._proc.wait(timeout=10)
            self._err.seek(0)
            tail = self._err.read().strip().splitlines()[-1:] or ["no message"]
            raise RuntimeError(f"onnxruntime peer exited with status {self._proc.returncode}:"
                               f" {tail[0]}")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"onnxruntime peer: {msg['error']}")
        return msg

    def time(self, repeat: int, min_repeat_s: float, warmup: int = 3) -> list:
        """Seconds per call of each repeat (cgen.graph.ort_peer_child.time_ort, in the child)."""
        self._proc.stdin.write(json.dumps({"time": [repeat, min_repeat_s, warmup]}) + "\n")
        self._proc.stdin.flush()
        return [float(t) for t in self._read()["times"]]

    def node_seconds(self, runs: int = 20) -> dict:
        """ONNX node name -> seconds of its kernel (ort_peer_child.node_seconds, in the child,
        so a masked peer's profile is the masked ISA's too)."""
        self._proc.stdin.write(json.dumps({"profile": int(runs)}) + "\n")
        self._proc.stdin.flush()
        return {n: float(t) for n, t in self._read()["nodes"].items()}

    def close(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.write(json.dumps({"quit": True}) + "\n")
                proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        if proc is not None:
            proc.stdout.close()
        if getattr(self, "_err", None) is not None:
            self._err.close()
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["OrtPeer", "host_isa", "masked_isa", "build_mask", "peer_label"]
