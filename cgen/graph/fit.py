"""Does a model fit the device: the RAM and flash budgets, and outputs written only when it does.

    flash = check_budgets(src, kernels, target, budget_ram=..., budget_flash=...)
    write_outputs(files, out_dir)

A budget is refused with one line (ModelError "budget") naming how many bytes are
needed, by how much the budget is exceeded and the three largest contributors:
for RAM, the kernels at whose step the most workspace bytes are live (with
those buffers: values by name, and scratch); for flash, each kernel's weights
plus its code, NAME_run, the shared helpers and the constants (cgen.graph.flash).  RAM is checked first,
from the plan alone; flash needs the object, compiled into the toolchain's
private cache, so nothing reaches the output directory before both pass.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import tempfile

from .flash import FlashReport, measure_flash
from .graph_ir import ModelError


def _largest(items, n: int = 3) -> str:
    """The n largest of [(what, bytes, detail)] as "what BYTES (detail)", largest first."""
    top = sorted((t for t in items if t[1] > 0), key=lambda t: (-t[1], t[0]))[:n]
    return ", ".join(f"{what} {b}" + (f" ({detail})" if detail else "") for what, b, detail in top)


def ram_contributors(source, kernels) -> list:
    """[(kernel, live workspace bytes at its step, its live buffers)] per step: where the
    workspace is needed (a buffer is a value by name, or a kernel's scratch)."""
    ivs = list(source.intervals)
    out = []
    for step in range(len(kernels) + 1):
        live = sorted((iv for iv in ivs if iv.start <= step <= iv.end),
                      key=lambda iv: (-iv.size, iv.name))
        if not live:
            continue
        what = kernels[step].name if step < len(kernels) else "output copies"
        parts = [("scratch" if iv.name.startswith("s:") else iv.name.partition(":")[2])
                 + f" {iv.size}" for iv in live]
        out.append((what, sum(iv.size for iv in live), " + ".join(parts[:3])
                    + (f" + {len(parts) - 3} more" if len(parts) > 3 else "")))
    return out


def flash_contributors(flash: FlashReport, report) -> list:
    """[(what, bytes, detail)]: each kernel's weights + code, NAME_run, helpers, constants,
    other."""
    weights = {r.kernel: r.weight_bytes for r in report.rows}
    out = []
    for k, code in flash.kernel_code:
        w = weights.get(k, 0)
        out.append((k, w + code, f"weights {w} + code {code}"))
    out += [(f"{flash.entry} code", flash.entry_code, ""),
            ("shared helpers code", flash.helper_code, ""),
            ("constants", flash.const_bytes, ""), ("other", flash.other_bytes, "")]
    return out


def check_budgets(source, kernels, target, budget_ram: int | None = None,
                  budget_flash: int | None = None) -> FlashReport | None:
    """Refuse (ModelError "budget", one line) a model over a budget; the FlashReport when
    the flash was measured (budget_flash given), else None."""
    rep = source.report
    if budget_ram is not None and rep.workspace_bytes > budget_ram:
        raise ModelError(f"the workspace needs {rep.workspace_bytes} bytes, over the RAM budget "
                         f"of {budget_ram} bytes by {rep.workspace_bytes - budget_ram}; most "
                         f"live at: {_largest(ram_contributors(source, kernels))}", "budget")
    if budget_flash is None:
        return None
    if rep.weight_bytes > budget_flash:
        # the weights alone do not fit: say so before building anything to measure code
        raise ModelError(f"flash needs more than {rep.weight_bytes} bytes (weights alone, code "
                         f"not yet counted), over the flash budget of {budget_flash} bytes by "
                         f"{rep.weight_bytes - budget_flash} at least; largest: "
                         f"{_largest([(r.kernel, r.weight_bytes, 'weights') for r in rep.rows])}",
                         "budget")
    flash = measure_flash(source, kernels, target)
    if flash.total_bytes > budget_flash:
        raise ModelError(f"flash needs {flash.total_bytes} bytes (code {flash.code_bytes} + "
                         f"weights {flash.weight_bytes} + constants {flash.const_bytes}"
                         + (f" + other {flash.other_bytes}" if flash.other_bytes else "")
                         + f"), over the flash budget of {budget_flash} bytes by "
                         f"{flash.total_bytes - budget_flash}; largest: "
                         f"{_largest(flash_contributors(flash, rep))}", "budget")
    return flash


def manifest_with_flash(manifest: dict, flash: FlashReport) -> str:
    """manifest.json's text: the emitted manifest (its keys kept) plus the measured flash:
    `flash_bytes`, `code_bytes` and the `flash` block (FlashReport.to_json)."""
    out = dict(manifest, flash_bytes=flash.total_bytes, code_bytes=flash.code_bytes,
               flash=flash.to_json())
    return json.dumps(out, indent=2) + "\n"


def write_outputs(files: dict, out_dir) -> list:
    """Write file name -> text into out_dir, all or nothing: into a private directory
    beside it first, then each file moved into place (a failure leaves no new file)."""
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise OSError(f"output {d} is not a directory")
    # what a move could not replace is refused before anything moves
    for fname in files:
        if (d / fname).is_dir():
            raise OSError(f"cannot write {d / fname}: it is a directory")
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.cgen-", dir=d.parent))
    try:
        for fname, text in files.items():
            (tmp / fname).write_text(text)
        if not d.exists():
            os.rename(tmp, d)
            return [d / f for f in files]
        for fname in files:
            os.replace(tmp / fname, d / fname)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [d / f for f in files]
