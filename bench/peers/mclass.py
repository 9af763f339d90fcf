"""Cortex-M rows of `python -m bench arm`: cgen's int8 kernel in instructions, against the
core's physical bound (no registry ships CMSIS-NN, so there is no library peer).

Counting: the kernel runs in a bare-metal image on the board QEMU models for the target
(targets/semihost.py: mps2-an386 for cortex-m4, the cortex-m55 board when the target has
one) under `qemu-system-arm -icount shift=0,sleep=off`, where virtual time advances one
nanosecond per instruction and the SysTick timer (processor clock, 24 bits) runs on that
virtual clock.  The harness here times a fixed loop of known length first (LOOP
iterations of `subs; bne`, 2 instructions each) and then the kernel, so instructions per
SysTick tick are measured in the same run, never assumed from a board's clock.  The
image is cgen's module C with the target's own flags and start-up code
(cgen.build.bare_metal_link); only the main() differs from cgen's semihosting harness.

Bounds (instructions per layer, from the MAC count):
  cortex-m4  (DSP): SMLAD does 2 int8 MACs (two 16-bit products) per instruction
  cortex-m55 (MVE): VMLADAVA.S8 does 16 int8 MACs per instruction
The kernel's output is checked against the template's reference before its count is used.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

# target -> (bound's name, int8 MACs per instruction at the bound)
BOUNDS = {
    "cortex-m4": ("bound-smlad-2mac", 2),
    "cortex-m55": ("bound-mve-vmladava-16mac", 16),
}
LOOP = 200_000
QEMU_ICOUNT = ("-icount", "shift=0,sleep=off")

_MAIN = """
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#define CG_SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define CG_SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define CG_SYST_CVR (*(volatile uint32_t *)0xE000E018u)
{proto}
static void *cg_load(const char *name, size_t n, int write_back) {{
  void *p = malloc(n ? n : 1);
  FILE *f;
  if (!p) {{ printf("error no RAM for parameter %s (%lu bytes)\\n", name, (unsigned long)n); exit(2); }}
  f = fopen(name, "rb");
  if (!f || fread(p, 1, n, f) != n) {{ printf("error cannot read %s\\n", name); exit(2); }}
  fclose(f);
  (void)write_back;
  return p;
}}
static void cg_save(const char *name, const void *p, size_t n) {{
  FILE *f = fopen(name, "wb");
  if (!f || fwrite(p, 1, n, f) != n) {{ printf("error cannot write %s\\n", name); exit(2); }}
  fclose(f);
}}
static uint32_t cg_elapsed(uint32_t t0) {{ return (t0 - CG_SYST_CVR) & 0xFFFFFFu; }}
int main(void) {{
  uint32_t t0, loop_ticks, kernel_ticks, n = {loop}u;
{decls}
  if ({call} != 0) {{ puts("error kernel returned nonzero"); return 3; }}
{saves}
  CG_SYST_RVR = 0xFFFFFFu; CG_SYST_CVR = 0u; CG_SYST_CSR = 5u;
  t0 = CG_SYST_CVR;
  __asm volatile ("1: subs %0, %0, #1\\n\\tbne 1b" : "+r"(n) : : "cc");
  loop_ticks = cg_elapsed(t0);
  t0 = CG_SYST_CVR;
  (void){call};
  kernel_ticks = cg_elapsed(t0);
  printf("systick loop %lu kernel %lu\\n", (unsigned long)loop_ticks, (unsigned long)kernel_ticks);
  return 0;
}}
"""


def harness(mod) -> str:
    from cgen.codegen.c import C_TYPES
    from targets.semihost import arg_file
    params = mod.func.params
    decls = [f"  {C_TYPES[p.dtype]} *p{k} = cg_load(\"{arg_file(k)}\", {p.nbytes}u, 0);"
             for k, p in enumerate(params)]
    saves = [f"  cg_save(\"{arg_file(k)}\", p{k}, {p.nbytes}u);"
             for k, p in enumerate(params) if p.name in mod.func.outputs]
    call = f"{mod.func.name}({', '.join(f'p{k}' for k in range(len(params)))})"
    return _MAIN.format(proto=mod.prototype, decls="\n".join(decls), saves="\n".join(saves),
                        call=call, loop=LOOP)


def count_instructions(mod, arrays, timeout: float = 600.0) -> tuple:
    """(instructions of one call, written outputs) of a cortex-m module under QEMU icount."""
    from cgen.build import bare_metal_link
    from targets.semihost import arg_file, board_for
    from targets.toolchain import compile_c
    tgt = mod.target
    board = board_for(tgt)
    link, startup = bare_metal_link(tgt)
    exe = compile_c(mod.c_source, tgt, "executable", extra_flags=mod.extra_flags + link,
                    name=mod.name + "_icount", extra_sources=(harness(mod), startup))
    with tempfile.TemporaryDirectory(prefix="cgen-micount-") as d:
        for k, a in enumerate(arrays):
            Path(d, arg_file(k)).write_bytes(np.ascontiguousarray(a).tobytes())
        cmd = ["qemu-system-arm", *QEMU_ICOUNT, "-M", board.machine, "-nographic", "-monitor", "none",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(exe)]
        try:
            proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"no answer within {timeout:g} s under {cmd[0]}") from None
        out = proc.stdout + proc.stderr
        m = re.search(r"systick loop (\d+) kernel (\d+)", out)
        if proc.returncode != 0 or m is None:
            raise RuntimeError(f"{cmd[0]} status {proc.returncode}: {out.strip()[-300:]}"
                               + (" (status 3: the kernel could not allocate its temporaries in "
                                  "the board's RAM)" if proc.returncode == 3 else ""))
        outputs = {}
        for k, (p, a) in enumerate(zip(mod.func.params, arrays)):
            if p.name in mod.func.outputs:
                data = Path(d, arg_file(k)).read_bytes()
                outputs[p.name] = np.frombuffer(data, a.dtype).reshape(a.shape).copy()
    loop_ticks, kernel_ticks = int(m.group(1)), int(m.group(2))
    if loop_ticks <= 0:
        raise RuntimeError("SysTick did not advance (no -icount virtual clock?)")
    return kernel_ticks * (2 * LOOP) / loop_ticks, outputs


def model_instructions(cm, feeds, timeout: float = 900.0) -> float:
    """Instructions of one NAME_run of a compiled Cortex-M model under QEMU icount: the
    model's own harness with the "systick" timer (cgen.graph.profile_icount)."""
    from cgen.graph.profile_icount import run_instructions
    return run_instructions(cm, feeds, timeout)


def m_class_row(case, target: str, row) -> dict:
    """A bench row: bound instructions / cgen instructions for an int8 layer."""
    from cgen.autotune.measure import build_candidate, check_outputs
    from bench.arm import cgen_task
    from targets import resolve
    name, per = BOUNDS.get(target, (None, None))
    try:
        tgt = resolve(target)
    except (ValueError, KeyError) as e:
        return row(case, target, name, None, None, unit="instructions", note=f"target missing: {e}")
    bound = case.macs / per
    try:
        task = cgen_task(case, tgt)
        tmpl, wl = task.template, task.workload
        mod, err = build_candidate(tmpl, wl, tgt, tmpl.default(wl, tgt))
        if err is not None:
            raise RuntimeError(f"build failed: {err.error.msg if err.error else err}")
        inputs = tmpl.inputs(wl, np.random.default_rng(0))
        insns, outs = count_instructions(mod, [a.copy() for a in inputs])
        bad = check_outputs(outs, tmpl.reference(wl, inputs))
        if bad:
            raise RuntimeError(f"output wrong: {bad}")
    except Exception as e:     # a failing layer is a row with its reason
        return row(case, target, name, bound, None, unit="instructions", note=f"cgen: {e}"[:400])
    return row(case, target, name, bound, round(insns), unit="instructions", cgen_template=tmpl.name,
               goal=0.85, note="peer is the bound: CMSIS-NN is in no registry")
