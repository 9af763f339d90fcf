"""A standalone executable around a kernel: reads each argument from a raw
file, calls the kernel, writes the written arguments back.  The same harness
serves sanitizer runs on the host and emulated runs of cross builds."""
from __future__ import annotations

from pycparser import c_ast, c_generator

from ..lower.ir import PrimFunc
from .c import C_TYPES

_PRELUDE = """#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>

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


def harness_source(func: PrimFunc, prototype: str) -> str:
    """C of main(argc, argv): argv[1..n] are the files of the n parameters, in order."""
    gen = c_generator.CGenerator()
    n = len(func.params)
    body = []
    args = []
    for k, b in enumerate(func.params):
        ptr = c_ast.Typename(None, [], None, c_ast.PtrDecl([], c_ast.TypeDecl(
            None, [], None, c_ast.IdentifierType([C_TYPES[b.dtype]]))))
        args.append(c_ast.Cast(ptr, c_ast.ID(f"p{k}")))
    call = gen.visit(c_ast.FuncCall(c_ast.ID(func.name), c_ast.ExprList(args)))
    body.append(f"  if (argc != {n + 1}) {{ fprintf(stderr, \"usage: %s {n} files\\n\", argv[0]); return 2; }}")
    for k, b in enumerate(func.params):
        body.append(f"  void *p{k} = cg_read(argv[{k + 1}], {b.nbytes}u);")
    body.append(f"  int rc = {call};")
    for k, b in enumerate(func.params):
        if b.name in func.outputs:
            body.append(f"  cg_write(argv[{k + 1}], p{k}, {b.nbytes}u);")
    for k in range(n):
        body.append(f"  free(p{k});")
    body.append("  return rc == 0 ? 0 : 3;")
    return (_PRELUDE + "\n" + prototype + "\n\nint main(int argc, char **argv) {\n"
            + "\n".join(body) + "\n}\n")
