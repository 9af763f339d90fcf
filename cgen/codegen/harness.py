"""A standalone executable around a kernel.

`exe [--time REPEAT NUMBER] FILE...`: reads each parameter from a raw file,
calls the kernel once (the warm-up, whose results are written back to the
files of the written parameters), then with --time prints one line per repeat:
the mean seconds of NUMBER calls.  The same harness serves sanitizer runs on
the host, timing in a child process, and emulated runs of cross builds.
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

# newlib on bare metal has no clock_gettime: clock() (semihosting SYS_CLOCK) instead
_C_CLOCK = """
static double cg_now(void) {
  return (double)clock() / (double)CLOCKS_PER_SEC;
}
"""


def prelude(clock: str = "posix") -> str:
    """Includes, file helpers and the timer of a hosted harness; clock "posix" (a
    monotonic clock_gettime) or "clock" (C's clock(), for newlib)."""
    if clock == "posix":
        return "#define _POSIX_C_SOURCE 200809L\n" + _IO + _POSIX_CLOCK
    return _IO + _C_CLOCK


def harness_source(func: PrimFunc, prototype: str) -> str:
    gen = c_generator.CGenerator()
    n = len(func.params)
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
        f"  if (argc - a0 != {n}) {{ fprintf(stderr, \"expected {n} files\\n\"); return 2; }}",
    ]
    for k, b in enumerate(func.params):
        body.append(f"  void *p{k} = cg_read(argv[a0 + {k}], {b.nbytes}u);")
    body.append(f"  int rc = {call};")
    body.append("  if (rc != 0) { fprintf(stderr, \"kernel returned %d\\n\", rc); return 3; }")
    for k, b in enumerate(func.params):
        if b.name in func.outputs:
            body.append(f"  cg_write(argv[a0 + {k}], p{k}, {b.nbytes}u);")
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
    return (prelude() + "\n" + prototype + "\n\nint main(int argc, char **argv) {\n"
            + "\n".join(body) + "\n}\n")
