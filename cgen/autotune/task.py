"""Tuning tasks: (operator template, workload, target), and the command-line forms.

A task's identity in a log is the canonical JSON of its workload (which names
the template in its `op`) plus the resolved target name, so records of one
task are found again whatever process wrote them.

Command-line workloads (`cgen tune --workload SPEC`):

    gemm:M,N,K                                  C = A @ B (the packed GEMM template)
    dense:M,N,K                                 Y = X @ W + bias, W pre-packed (N outputs, K inputs)
    conv2d:N,C,H,W,O,KH,KW,stride,pad[,dilation,groups]
                                                NCHW, weights pre-packed, the family the
                                                compiler picks for the shape (winograd, nchwc, 1x1...)
    depthwise:N,C,H,W,KH,KW,stride,pad          depthwise 3x3 and friends, NCHW
    TEMPLATE:{JSON}                             any template with its workload's keyword
                                                arguments, e.g. conv2d_nchwc:{"N":1,...}
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json

from .log import canonical, resolved_target_name


class WorkloadError(ValueError):
    """A workload spec that cannot be parsed (one line, for the CLI)."""


@dataclass(frozen=True, eq=False)
class Task:
    template: object            # an operator template (cgen.ops protocol)
    workload: dict
    target: object              # a resolved targets.Target
    name: str = field(default="")

    @property
    def key(self) -> str:
        return canonical(self.workload)

    @property
    def target_name(self) -> str:
        return resolved_target_name(self.target)

    def space(self):
        return self.template.space(self.workload, self.target)

    def flops(self) -> int:
        return int(self.template.flops(self.workload))

    def matches(self, record) -> bool:
        return canonical(record.workload) == self.key and record.target == self.target_name

    def describe(self) -> str:
        return self.name or f"{self.template.name} {self.key}"


def make_task(template_name: str, workload: dict, target, templates=None, name: str = "") -> Task:
    from targets import resolve
    from ..ops.registry import templates as all_templates
    table = templates if templates is not None else all_templates()
    if template_name not in table:
        raise WorkloadError(f"unknown operator template {template_name!r}; known: "
                            f"{', '.join(sorted(table))}")
    return Task(table[template_name], dict(workload), resolve(target), name)


def _ints(spec: str, text: str, lo: int, hi: int, form: str) -> list:
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise WorkloadError(f"workload {spec!r}: expected integers, as in {form}") from None
    if not lo <= len(vals) <= hi:
        raise WorkloadError(f"workload {spec!r}: expected {form}")
    return vals


def parse_workload(spec: str, target) -> Task:
    """A task from a command-line workload spec (see the module docstring)."""
    from targets import resolve
    from ..ops.registry import templates
    tgt = resolve(target)
    op, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise WorkloadError(f"workload {spec!r}: expected OP:ARGS, e.g. gemm:512,512,512")
    table = templates()
    try:
        if rest.lstrip().startswith("{"):
            try:
                kw = json.loads(rest)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"workload {spec!r}: bad JSON: {e}") from None
            if op not in table:
                raise WorkloadError(f"workload {spec!r}: unknown template {op!r}; known: "
                                    f"{', '.join(sorted(table))}")
            return Task(table[op], table[op].workload(**kw), tgt, spec)
        if op == "gemm":
            M, N, K = _ints(spec, rest, 3, 3, "gemm:M,N,K")
            return Task(table["gemm"], table["gemm"].workload(M, N, K), tgt, spec)
        if op == "dense":
            M, N, K = _ints(spec, rest, 3, 3, "dense:M,N,K")
            t = table["dense"]
            # the panels a compiled model packs for this target: its tuning log applies there
            return Task(t, t.workload(M, N, K, epilogue=["bias"], weights="packed",
                                      b_block=t.panel_columns(tgt)), tgt, spec)
        if op == "conv2d":
            form = "conv2d:N,C,H,W,O,KH,KW,stride,pad[,dilation,groups]"
            v = _ints(spec, rest, 9, 11, form)
            N, C, H, W, O, KH, KW, stride, pad = v[:9]
            dil = v[9] if len(v) > 9 else 1
            groups = v[10] if len(v) > 10 else 1
            from ..ops.conv.dispatch import conv2d_template_for
            tmpl, wl = conv2d_template_for(
                {"op": "conv2d", "N": N, "C": C, "H": H, "W": W, "F": O, "KH": KH, "KW": KW,
                 "stride": [stride, stride], "pad": [pad] * 4, "dilation": [dil, dil],
                 "groups": groups, "layout": "NCHW", "weights": "packed"}, tgt)
            return Task(tmpl, wl, tgt, spec)
        if op == "depthwise":
            N, C, H, W, KH, KW, stride, pad = _ints(spec, rest, 8, 8,
                                                    "depthwise:N,C,H,W,KH,KW,stride,pad")
            t = table["depthwise_conv2d"]
            return Task(t, t.workload(N, C, H, W, KH, KW, stride=stride, pad=pad), tgt, spec)
    except WorkloadError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise WorkloadError(f"workload {spec!r}: {e}") from None
    raise WorkloadError(f"workload {spec!r}: unknown form {op!r}; use gemm:, dense:, conv2d:, "
                        f"depthwise: or TEMPLATE:{{JSON}}")


def task_of_record(record, templates=None) -> Task | None:
    """The task a log record belongs to (None when its template is unknown here)."""
    from targets import resolve
    from ..ops.registry import templates as all_templates
    table = templates if templates is not None else all_templates()
    t = table.get(record.workload.get("op"))
    if t is None:
        return None
    try:
        return Task(t, dict(record.workload), resolve(_base_target(record.target)))
    except (ValueError, KeyError):
        return None


def _base_target(name: str) -> str:
    # logs say host-<arch>-<isa>; the host is the only target that can be measured as such
    return "host" if name.startswith("host-") else name
