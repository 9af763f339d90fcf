"""Typed measurement records: what was measured (`MeasureInput`) and what came of
it (`MeasureResult`, with a `MeasureError` whose kind is an `ErrorKind`).

A log line (cgen.autotune.log.Record) is one input and one result side by side;
its JSON keeps the flat schema of the architecture notes, so logs written
before these types read back unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
import time


class ErrorKind(str, Enum):
    """Why a candidate has no timing.  The values are the log's strings."""
    COMPILE_ERROR = "compile_error"        # the schedule, lowering or the C compiler refused it
    BUILD_TIMEOUT = "build_timeout"        # building took longer than the measurer allows
    RUNTIME_ERROR = "runtime_error"        # it crashed or exited non-zero
    RUN_TIMEOUT = "run_timeout"            # it ran past its timeout
    WRONG_ANSWER = "wrong_answer"          # it ran and its output differs from the reference
    DEVICE_LOST = "device_lost"            # the device (agent, QEMU, board) went away
    BAD_REQUEST = "bad_request"            # the agent refused the request
    PROTOCOL_MISMATCH = "protocol_mismatch"
    AGENT_ERROR = "agent_error"            # the agent failed on its side
    OTHER = "other"                        # a kind this version does not know (from a log)

    @classmethod
    def parse(cls, kind) -> "ErrorKind":
        try:
            return cls(kind)
        except ValueError:
            return cls.OTHER

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class MeasureError:
    kind: ErrorKind
    msg: str = ""

    @staticmethod
    def from_json(d) -> "MeasureError":
        """From the log's {"kind", "msg"} (or a runner's error with .kind/.msg)."""
        if isinstance(d, MeasureError):
            return d
        if not isinstance(d, dict):
            d = {"kind": getattr(d, "kind", "other"), "msg": getattr(d, "msg", "")}
        kind = ErrorKind.parse(d.get("kind"))
        msg = str(d.get("msg", ""))
        if kind is ErrorKind.OTHER and d.get("kind") not in (None, "other"):
            msg = f"{d.get('kind')}: {msg}"
        return MeasureError(kind, msg)

    def to_json(self) -> dict:
        return {"kind": self.kind.value, "msg": self.msg}

    # read as the log's dict, for callers that index it (error["kind"])
    def __getitem__(self, key):
        return self.to_json()[key]

    def get(self, key, default=None):
        return self.to_json().get(key, default)


@dataclass(frozen=True)
class MeasureInput:
    """One candidate: a workload of a template, on a target, with one config, built
    by one toolchain."""
    workload: dict            # the template's workload (JSON)
    target: str               # resolved target name, never "host" (log.resolved_target_name)
    config: dict              # {"index": i, "knobs": {...}}
    toolchain: dict = field(default_factory=dict)   # {"cc", "version", "flags"}


@dataclass(frozen=True)
class MeasureResult:
    costs: tuple = ()         # one cost per repeat
    cost_unit: str = "s"      # "s" or "icount_ticks"
    error: MeasureError | None = None
    timestamp: float = field(default_factory=time.time)

    @staticmethod
    def failed(kind: ErrorKind | str, msg, cost_unit: str = "s") -> "MeasureResult":
        return MeasureResult((), cost_unit, MeasureError(ErrorKind.parse(kind), str(msg)[:2000]))

    @property
    def ok(self) -> bool:
        return self.error is None and len(self.costs) > 0
