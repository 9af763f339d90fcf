"""Tuning logs: JSON lines, one record per measured candidate.

Each record is appended and flushed (and fsynced) as it arrives, so a killed
run loses nothing; a truncated last line from a kill is skipped on reading.
The schema is the one in the architecture notes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import os
import time
from pathlib import Path

from .record import ErrorKind, MeasureError, MeasureInput, MeasureResult  # noqa: F401 (re-exported)

VERSION = 1
COST_UNITS = ("s", "icount_ticks", "mca_cycles")


def canonical(obj) -> str:
    """Canonical JSON of a workload or config: the key used to match records."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Record:
    """One log line: a MeasureInput and its MeasureResult, flattened as the schema says
    (`Record.of(input, result)`; `.input` and `.result` give them back).  An error
    given as the log's {"kind", "msg"} dict becomes a MeasureError."""
    workload: dict
    target: str               # resolved target name, never "host" (use host-<isa>)
    toolchain: dict           # {"cc": ..., "version": ..., "flags": [...]}
    config: dict              # {"index": i, "knobs": {...}}
    costs: tuple              # seconds (or ticks) per call, one per repeat
    cost_unit: str = "s"
    error: MeasureError | None = None
    timestamp: float = field(default_factory=time.time)
    version: int = VERSION
    ram_bytes: int | None = None     # the config's own buffers (cgen.autotune.footprint)
    flash_bytes: int | None = None   # its code (.text) on the target; both absent in old logs
    selection: dict | None = None    # a verdict of cgen.autotune.baseline: this config is the
    #                                  one compile takes (default or tuned, and why); absent else

    def __post_init__(self):
        if self.error is not None and not isinstance(self.error, MeasureError):
            object.__setattr__(self, "error", MeasureError.from_json(self.error))
        object.__setattr__(self, "costs", tuple(self.costs))

    @staticmethod
    def of(inp: MeasureInput, res: MeasureResult) -> "Record":
        return Record(workload=inp.workload, target=inp.target, toolchain=inp.toolchain,
                      config=inp.config, costs=res.costs, cost_unit=res.cost_unit,
                      error=res.error, timestamp=res.timestamp)

    @property
    def input(self) -> MeasureInput:
        return MeasureInput(self.workload, self.target, self.config, self.toolchain)

    @property
    def result(self) -> MeasureResult:
        return MeasureResult(self.costs, self.cost_unit, self.error, self.timestamp)

    @property
    def ok(self) -> bool:
        return self.error is None and len(self.costs) > 0

    @property
    def mean_cost(self) -> float:
        return sum(self.costs) / len(self.costs) if self.costs else float("inf")

    def to_json(self) -> str:
        d = {"workload": self.workload, "target": self.target, "toolchain": self.toolchain,
             "config": self.config, "costs": list(self.costs), "cost_unit": self.cost_unit,
             "error": None if self.error is None else self.error.to_json(),
             "timestamp": self.timestamp, "version": self.version}
        if self.ram_bytes is not None:     # added fields: written only when known
            d["ram_bytes"], d["flash_bytes"] = self.ram_bytes, self.flash_bytes
        if self.selection is not None:
            d["selection"] = self.selection
        return json.dumps(d, sort_keys=True)

    @staticmethod
    def from_dict(d: dict) -> "Record":
        if d.get("cost_unit", "s") not in COST_UNITS:
            raise ValueError(f"unknown cost_unit {d.get('cost_unit')!r}")
        return Record(workload=d["workload"], target=d["target"], toolchain=d.get("toolchain", {}),
                      config=d["config"], costs=tuple(d.get("costs", ())),
                      cost_unit=d.get("cost_unit", "s"), error=d.get("error"),
                      timestamp=d.get("timestamp", 0.0), version=d.get("version", VERSION),
                      ram_bytes=d.get("ram_bytes"), flash_bytes=d.get("flash_bytes"),
                      selection=d.get("selection"))


def resolved_target_name(target) -> str:
    """The name a log records: host becomes host-<isa> so logs never say 'host'."""
    if target.name == "host":
        return f"host-{target.arch}-{target.isa}"
    return target.name


class LogWriter:
    """Appends records to a JSON-lines file, flushed and synced per record."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair_tail(self):
        # a kill mid-write leaves a partial last line: end it so the next record starts clean
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
            if last != b"\n":
                with open(self.path, "ab") as f:
                    f.write(b"\n")

    def write(self, rec: Record):
        self._f.write(rec.to_json() + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_log(path) -> list:
    """Every well-formed record of a log; malformed lines (a truncated tail) are skipped."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(Record.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
    return out


def best_records(records, cost_unit: str | None = None) -> dict:
    """(canonical workload, target, cost unit) -> the record whose config compile takes:
    the last selection record (cgen.autotune.baseline: the default and the fastest
    candidates re-measured together, a candidate kept only when it beat the default beyond
    the noise) when the workload has one, else the fastest successful record.

    Seconds and icount ticks are never compared: the unit is part of the key."""
    best, chosen = {}, {}
    for r in records:
        if not r.ok or (cost_unit and r.cost_unit != cost_unit):
            continue
        key = (canonical(r.workload), r.target, r.cost_unit)
        if r.selection is not None:
            chosen[key] = r
        if key not in best or r.mean_cost < best[key].mean_cost:
            best[key] = r
    return {**best, **chosen}


def apply_best(log, target=None, cost_unit: str | None = None, templates=None) -> dict:
    """canonical workload -> the knob values of its fastest correct record: the
    `tuned` mapping compilation takes (cgen.graph.kernels.group_config).

    log: a path or a list of records; target: only records of this target (a
    name or a Target; "host" means this machine's resolved name).  With a
    target, a record counts only when its config is a point of its template's
    space for that target (a threaded config never reaches a model's
    single-thread kernels; a config of an older space is passed over).  When
    records of one workload exist in several units, seconds win over icount ticks."""
    records = read_log(log) if isinstance(log, (str, Path)) else list(log)
    tgt, want = None, None
    if isinstance(target, str) and target.startswith("host-"):
        want = target
    elif target is not None:
        from targets import resolve
        tgt = resolve(target)
        want = resolved_target_name(tgt)
    if want is not None:
        records = [r for r in records if r.target == want]
    if tgt is not None:
        records = _valid_for(records, tgt, templates)
    out: dict = {}
    for unit in ("s", "icount_ticks"):
        if cost_unit not in (None, unit):
            continue
        for (wkey, _t, _u), rec in sorted(best_records(records, unit).items()):
            out.setdefault(wkey, dict(rec.config.get("knobs", rec.config)))
    return out


def _dominates(a, b) -> bool:
    pa = (a.mean_cost, a.ram_bytes, a.flash_bytes or 0)
    pb = (b.mean_cost, b.ram_bytes, b.flash_bytes or 0)
    return all(x <= y for x, y in zip(pa, pb)) and pa != pb


def pareto_front(records, cost_unit: str = "s") -> dict:
    """(canonical workload, target) -> the correct records with a footprint that no other
    is at least as good as in time, RAM and flash and better in one; fastest first."""
    groups: dict = {}
    for r in records:
        if r.ok and r.ram_bytes is not None and r.cost_unit == cost_unit:
            groups.setdefault((canonical(r.workload), r.target), []).append(r)
    front = {}
    for key, rs in groups.items():
        keep = [r for r in rs if not any(_dominates(o, r) for o in rs)]
        front[key] = sorted(keep, key=lambda r: (r.mean_cost, r.ram_bytes, r.timestamp))
    return front


class TunedConfigs(dict):
    """workload key -> the fastest knobs (what apply_best gives), and per objective the
    pick from the Pareto front: "ram" the least RAM (then the least time); a workload
    without a front keeps its fastest config for every objective.  `smallest_code()`:
    the same picks with the least-code config of each front instead (compile's second
    try when the objective's picks do not fit --budget-flash)."""

    def __init__(self, fastest: dict, least_ram: dict, least_flash: dict | None = None,
                 code_first: bool = False):
        super().__init__(fastest)
        self.least_ram = least_ram
        self.least_flash = least_flash or {}
        self.code_first = code_first

    def for_objective(self, key: str, objective: str = "latency"):
        if self.code_first and key in self.least_flash:
            return self.least_flash[key]
        if objective == "ram" and key in self.least_ram:
            return self.least_ram[key]
        return self.get(key)

    def smallest_code(self) -> "TunedConfigs | None":
        """None when no front knows a config's code bytes (nothing smaller to pick)."""
        if not self.least_flash:
            return None
        return TunedConfigs(self, self.least_ram, self.least_flash, code_first=True)


def apply_pareto(log, target=None, templates=None) -> TunedConfigs:
    """apply_best's configs, and the least-RAM config of each front (group_config asks
    for the objective's pick; cgen.graph.objective's balanced choice takes either)."""
    records = read_log(log) if isinstance(log, (str, Path)) else list(log)
    fastest = apply_best(records, target, templates=templates)
    if target is not None and not (isinstance(target, str) and target.startswith("host-")):
        from targets import resolve
        tgt = resolve(target)
        want = resolved_target_name(tgt)
        records = _valid_for([r for r in records if r.target == want], tgt, templates)
    least, smallest = {}, {}
    for (wkey, _t), rs in sorted(pareto_front(records).items()):
        best = min(rs, key=lambda r: (r.ram_bytes, r.mean_cost))
        least.setdefault(wkey, dict(best.config.get("knobs", best.config)))
        sized = [r for r in rs if r.flash_bytes is not None]
        if sized:
            small = min(sized, key=lambda r: (r.flash_bytes, r.mean_cost))
            smallest.setdefault(wkey, dict(small.config.get("knobs", small.config)))
    return TunedConfigs(fastest, least, smallest)


def _valid_for(records, tgt, templates=None) -> list:
    """The records whose config lies in their template's space for tgt (unknown
    templates are kept: nothing here can judge them)."""
    if templates is None:
        from ..ops.registry import templates as all_templates
        templates = all_templates()
    spaces: dict = {}
    out = []
    for r in records:
        t = templates.get(r.workload.get("op"))
        if t is None:
            out.append(r)
            continue
        key = canonical(r.workload)
        if key not in spaces:
            try:
                spaces[key] = t.space(r.workload, tgt)
            except (ValueError, KeyError, TypeError):
                spaces[key] = None
        try:
            knobs = r.config.get("knobs", r.config)
            if spaces[key] is not None and set(knobs) == set(spaces[key].names()):
                spaces[key].index_of(knobs)
                out.append(r)
        except (KeyError, ValueError, AttributeError):
            continue
    return out
