"""A standalone executable around a kernel.

`exe [--time REPEAT NUMBER] FILE...`: reads each parameter from a raw file,
calls the kernel once (the warm-up, whose results are written back to the
files of the written parameters), then with --time prints one line per repeat:
the mean seconds of NUMBER calls.  The same harness serves sanitizer runs on
the host, timing in a child process, and emulated runs of cross builds.  A
bare-metal image gets its file names fixed in the C instead (`files`: argv
over semihosting is too short for many), and the semihosting clock.
"""
from __future__ import annotations

from pycparser import c_ast, c_generator

from ..lower.ir import PrimFunc
from .c import C_TYPES

_IO = """#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static void *cg_read(const char *path, size_t n) {
  FILE *f = fopen(path, "rb");
  void *p = malloc(n ? n : 1);
  if (!f || !p || fread(p, 1, n, f) != n) { fprintf(stderr, "cannot read %s\\n", path); exit(2); }
  fclose(f);
  return p;
}

static void cg_write(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n) { fprintf(stderr, "cannot write %s\\n", path); exit(2); }
  fclose(f);
}
"""

_POSIX_CLOCK = """
static double cg_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
"""

# newlib on bare metal has no clock_gettime, and its clock() (semihosting SYS_CLOCK)
# counts centiseconds, too coarse to calibrate a kernel's repeat; SYS_ELAPSED (0x30)
# counts ticks of SYS_TICKFREQ (0x31) per second (QEMU: nanoseconds of the host's
# clock).  `bkpt 0xab` is the M profile's semihosting call; a host that refuses
# SYS_ELAPSED (-1 in r0) leaves clock().
_SEMIHOSTING_CLOCK = """
static unsigned long cg_semihost(unsigned long op, void *arg) {
  register unsigned long r0 __asm__("r0") = op;
  register void *r1 __asm__("r1") = arg;
  __asm__ volatile ("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

static double cg_now(void) {
  static double hz = 0.0;
  unsigned long t[2] = {0ul, 0ul};
  if (hz == 0.0) hz = (double)cg_semihost(0x31ul, 0);
  if (hz <= 0.0 || hz >= 4294967295.0 || cg_semihost(0x30ul, t) != 0ul)
    return (double)clock() / (double)CLOCKS_PER_SEC;
  return ((double)t[1] * 4294967296.0 + (double)t[0]) / hz;
}
"""

# Instructions on an M-profile core under `qemu-system-arm -icount shift=0`: virtual time
# advances one nanosecond per instruction and SysTick (24 bits, processor clock) runs on
# it, so instructions per tick are measured once by a loop of known length (2 x 200000
# instructions) and cg_now() returns instructions so far; calls must lie less than 2^24
# ticks apart (about 6.7e8 instructions on a 25 MHz board).
_SYSTICK_CLOCK = """
#define CG_SYST_CSR (*(volatile unsigned long *)0xE000E010ul)
#define CG_SYST_RVR (*(volatile unsigned long *)0xE000E014ul)
#define CG_SYST_CVR (*(volatile unsigned long *)0xE000E018ul)
static double cg_per_tick = 0.0, cg_count = 0.0;
static unsigned long cg_last = 0ul;

static double cg_now(void) {
  unsigned long now;
  if (cg_per_tick == 0.0) {
    unsigned long n = 200000ul, t0;
    CG_SYST_RVR = 0xFFFFFFul; CG_SYST_CVR = 0ul; CG_SYST_CSR = 5ul;
    t0 = CG_SYST_CVR;
    __asm__ volatile ("1: subs %0, %0, #1\\n\\tbne 1b" : "+r"(n) : : "cc");
    cg_per_tick = 400000.0 / (double)((t0 - CG_SYST_CVR) & 0xFFFFFFul);
    cg_last = CG_SYST_CVR;
  }
  now = CG_SYST_CVR;
  cg_count += (double)((cg_last - now) & 0xFFFFFFul) * cg_per_tick;
  cg_last = now;
  return cg_count;
}
"""

# Instructions on an A-profile 32-bit core under `qemu-system-arm -icount shift=0`: the PMU
# cycle counter (PMCCNTR, enabled here at PL1) runs on the virtual clock at 1 GHz, one count
# per instruction; its 32 bits wrap, so cg_now() sums differences (calls must lie less than
# 2^32 instructions apart).
_PMU_A32_CLOCK = r"""
static double cg_pmu_count = 0.0;
static unsigned long cg_pmu_last = 0ul;
static int cg_pmu_on = 0;

static unsigned long cg_pmccntr(void) {
  unsigned long v;
  __asm__ volatile ("isb\n\tmrc p15, 0, %0, c9, c13, 0" : "=r"(v) : : "memory");
  return v;
}

static double cg_now(void) {
  unsigned long now;
  if (!cg_pmu_on) {
    __asm__ volatile ("mcr p15, 0, %0, c9, c12, 0\n\tmcr p15, 0, %1, c9, c12, 1\n\tisb"
                      : : "r"(5ul), "r"(0x80000000ul) : "memory");
    cg_pmu_on = 1;
    cg_pmu_last = cg_pmccntr();
  }
  now = cg_pmccntr();
  cg_pmu_count += (double)((now - cg_pmu_last) & 0xFFFFFFFFul);
  cg_pmu_last = now;
  return cg_pmu_count;
}
"""

# timer name -> (feature macro, C of cg_now)
_TIMERS = {
    "posix": ("#define _POSIX_C_SOURCE 200809L\n", _POSIX_CLOCK),
    "semihosting": ("", _SEMIHOSTING_CLOCK),
    "systick": ("", _SYSTICK_CLOCK),
    "pmu-a32": ("", _PMU_A32_CLOCK),
}

# Start-up of an A-profile 32-bit image on newlib's rdimon (qemu-system-arm -M virt): its
# crt0 calls this hook before any C runs, and the hard-float code traps until CPACR grants
# cp10/cp11 and FPEXC.EN is set (QEMU leaves both off for a bare-metal -kernel).  In
# assembly, so the compiler puts no VFP instruction before it.
A32_FPU_STARTUP = r"""/* Generated by cgen: enables VFP/NEON before newlib's crt0 runs C. */
__asm__(".section .text._rdimon_hw_init_hook, \"ax\"\n"
        ".global _rdimon_hw_init_hook\n"
        ".type _rdimon_hw_init_hook, %function\n"
        ".arm\n"
        "_rdimon_hw_init_hook:\n"
        "  mrc p15, 0, r0, c1, c0, 2\n"
        "  orr r0, r0, #0xf00000\n"
        "  mcr p15, 0, r0, c1, c0, 2\n"
        "  isb\n"
        "  mov r0, #0x40000000\n"
        "  vmsr fpexc, r0\n"
        "  bx lr\n"
        ".text\n");
"""


def prelude(clock: str = "posix") -> str:
    """Includes, file helpers and the timer of a hosted harness; clock "posix" (a
    monotonic clock_gettime), "semihosting" (Arm M-profile semihosting's elapsed
    time, for newlib with rdimon on bare metal), "systick" (instructions, under QEMU
    -icount on an M-profile board) or "pmu-a32" (instructions, under QEMU -icount on an
    A-profile 32-bit core)."""
    try:
        feature, timer = _TIMERS[clock]
    except KeyError:
        raise ValueError(f"unknown harness timer {clock!r}; known: {', '.join(_TIMERS)}") from None
    return feature + _IO + timer


def harness_source(func: PrimFunc, prototype: str, files=None, clock: str = "posix") -> str:
    """main() around the kernel; files: a fixed file name per parameter (argv then
    carries only `--time REPEAT NUMBER`), else the names come from argv."""
    gen = c_generator.CGenerator()
    n = len(func.params)
    if files is not None and len(files) != n:
        raise ValueError(f"{func.name}: {len(files)} file names for {n} parameters")
    path = ((lambda k: f"argv[a0 + {k}]") if files is None
            else (lambda k: '"' + files[k] + '"'))
    n_args = n if files is None else 0
    args = []
    for k, b in enumerate(func.params):
        ptr = c_ast.Typename(None, [], None, c_ast.PtrDecl([], c_ast.TypeDecl(
            None, [], None, c_ast.IdentifierType([C_TYPES[b.dtype]]))))
        args.append(c_ast.Cast(ptr, c_ast.ID(f"p{k}")))
    call = gen.visit(c_ast.FuncCall(c_ast.ID(func.name), c_ast.ExprList(args)))
    body = [
        "  int a0 = 1, repeat = 0, number = 1, r, i;",
        "  if (argc > 1 && strcmp(argv[1], \"--time\") == 0) {",
        "    if (argc < 4) { fprintf(stderr, \"--time REPEAT NUMBER\\n\"); return 2; }",
        "    repeat = atoi(argv[2]); number = atoi(argv[3]); a0 = 4;",
        "  }",
        f"  if (argc - a0 != {n_args}) {{ fprintf(stderr, \"expected {n_args} files\\n\"); return 2; }}",
    ]
    for k, b in enumerate(func.params):
        body.append(f"  void *p{k} = cg_read({path(k)}, {b.nbytes}u);")
    body.append(f"  int rc = {call};")
    body.append("  if (rc != 0) { fprintf(stderr, \"kernel returned %d\\n\", rc); return 3; }")
    for k, b in enumerate(func.params):
        if b.name in func.outputs:
            body.append(f"  cg_write({path(k)}, p{k}, {b.nbytes}u);")
    body += [
        "  for (r = 0; r < repeat; ++r) {",
        "    double t0 = cg_now();",
        f"    for (i = 0; i < number; ++i) rc |= {call};",
        "    printf(\"%.9e\\n\", (cg_now() - t0) / number);",
        "  }",
    ]
    for k in range(n):
        body.append(f"  free(p{k});")
    body.append("  return rc == 0 ? 0 : 3;")
    return (prelude(clock) + "\n" + prototype + "\n\nint main(int argc, char **argv) {\n"
            + "\n".join(body) + "\n}\n")


# ------------------------------------------------------------------ profiling hooks
# A profiling build of a model (cgen.graph.emit.emit_model(profile=N, profile_prelude=
# PROFILE_EXTERN)) leaves its clock and its report to the harness it is linked with: a
# bare-metal image has no POSIX clock, and the AArch64 one no stdio either.  Each report
# is a line "profile KERNEL COUNT" (COUNT per call, in the harness clock's unit).
PROFILE_EXTERN = ("double cg_prof_now(void);\n"
                  "void cg_prof_report(const char *kernel, double per_call);\n")

# harness -> the C defining the hooks, appended to that harness's source:
#   "libc": a harness of prelude() (newlib: cg_now of the "systick" or "pmu-a32" timer);
#   "aarch64-baremetal": cgen.codegen.baremetal's (no libc; the PMU cycle counter counts
#   single instructions under -icount shift=0, cntvct_el0 one per 16 without a PMU).
PROFILE_HOOKS = {
    "libc": PROFILE_EXTERN + """
double cg_prof_now(void) { return cg_now(); }
void cg_prof_report(const char *kernel, double per_call) {
  printf("profile %s %.9e\\n", kernel, per_call);
}
""",
    "aarch64-baremetal": PROFILE_EXTERN + """
double cg_prof_now(void) { return cg_has_pmu ? (double)cg_cycles() : 16.0 * (double)cg_ticks(); }
void cg_prof_report(const char *kernel, double per_call) {
  cg_puts("profile ");
  cg_puts(kernel);
  cg_line_u64(" ", (uint64_t)(per_call + 0.5));
}
""",
}


def profile_hooks(harness: str) -> str:
    """The C of cg_prof_now / cg_prof_report for a harness kind (PROFILE_HOOKS)."""
    try:
        return PROFILE_HOOKS[harness]
    except KeyError:
        raise ValueError(f"no profiling hooks for harness {harness!r}; known: "
                         f"{', '.join(PROFILE_HOOKS)}") from None
