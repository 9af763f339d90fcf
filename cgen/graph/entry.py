"""The model's entry point, NAME_run, as a C AST printed by the one printer.

NAME_run(inputs..., outputs..., void *workspace) calls each kernel in order with its
arguments -- graph inputs and outputs, weights, or regions of the workspace -- ORs their
status into `rc`, copies the graph outputs that are other values, and returns `rc`.  A
profiling build also times each call and reports it (`profile`): a caller that runs
NAME_run many times gets every kernel's time in the model's own sequence, with the caches
as the kernels before it left them."""
from __future__ import annotations

from dataclasses import dataclass

from pycparser import c_ast

from ..codegen.c import C_TYPES, print_c


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str          # "float", "int8_t", ... or "void"
    const: bool = False


@dataclass(frozen=True)
class Call:
    kernel: str
    args: tuple         # c_ast expressions


def _type(ctype: str, name=None, quals=()) -> c_ast.TypeDecl:
    return c_ast.TypeDecl(name, list(quals), None, c_ast.IdentifierType([ctype]))


def _int(v: int) -> c_ast.Constant:
    return c_ast.Constant("int", str(v))


def pointer_cast(ctype: str, e: c_ast.Node) -> c_ast.Cast:
    return c_ast.Cast(c_ast.Typename(None, [], None, c_ast.PtrDecl([], _type(ctype))), e)


def workspace_at(offset: int) -> c_ast.Node:
    """`ws + offset` (the uint8_t view of the workspace)."""
    return c_ast.BinaryOp("+", c_ast.ID("ws"), _int(offset)) if offset else c_ast.ID("ws")


def buffer(dtype: str, offset: int) -> c_ast.Node:
    """A typed buffer at `offset` bytes into the workspace: (T *) ((void *) (ws + offset))."""
    return pointer_cast(C_TYPES[dtype], pointer_cast("void", workspace_at(offset)))


def no_scratch() -> c_ast.Node:
    """The scratch pointer of a kernel that needs none: (uint8_t *) 0."""
    return pointer_cast("uint8_t", _int(0))


def _decl(name: str, type_, init=None) -> c_ast.Decl:
    return c_ast.Decl(name, [], [], [], [], type_, init, None)


def _void(name: str) -> c_ast.Cast:
    return c_ast.Cast(c_ast.Typename(None, [], None, _type("void")), c_ast.ID(name))


def _count_loop(var: str, n: int, body) -> c_ast.For:
    return c_ast.For(c_ast.Assignment("=", c_ast.ID(var), _int(0)),
                     c_ast.BinaryOp("<", c_ast.ID(var), _int(n)),
                     c_ast.UnaryOp("++", c_ast.ID(var)), body)


def _call(c: Call, profile: bool) -> c_ast.Node:
    status = getattr(c, "stmt", None) or c_ast.Assignment("|=", c_ast.ID("rc"), c_ast.FuncCall(
        c_ast.ID(c.kernel), c_ast.ExprList(list(c.args))))     # stmt: a loop (loop_lower)
    if not profile:
        return status
    now = c_ast.FuncCall(c_ast.ID("cg_prof_now"), None)
    # the profiling prelude reports (a host prints, a bare-metal harness has its own way)
    report = c_ast.FuncCall(c_ast.ID("cg_prof_report"), c_ast.ExprList(
        [c_ast.Constant("string", f'"{c.kernel}"'), c_ast.BinaryOp("-", now, c_ast.ID("t0"))]))
    return c_ast.Compound([_decl("t0", _type("double", "t0"), now), status, report])


def entry_point(name: str, params: list, calls: list, copies: list, unused: list,
                profile: bool = False) -> str:
    """The C text of `int NAME(params...)`.

    copies: (output name, source expression, element count), after the calls;
    unused: parameters nothing reads (cast to void: -Wunused-parameter)."""
    decls = [_decl(p.name, c_ast.PtrDecl([], _type(p.ctype, p.name, ["const"] if p.const else [])))
             for p in params]
    for d, p in zip(decls, params):
        d.quals = ["const"] if p.const else []
    body = [_decl("ws", c_ast.PtrDecl([], _type("uint8_t", "ws")),
                  pointer_cast("uint8_t", c_ast.ID("workspace"))),
            _decl("rc", _type("int", "rc"), _int(0))]
    body += [_void(u) for u in unused]
    body += [_call(c, profile) for c in calls]
    for out, src, n in copies:
        copy = c_ast.Assignment("=", c_ast.ArrayRef(c_ast.ID(out), c_ast.ID("i")),
                                c_ast.ArrayRef(src, c_ast.ID("i")))
        body.append(c_ast.Compound([_decl("i", _type("int64_t", "i")),
                                    _count_loop("i", n, copy)]))
    body.append(c_ast.Return(c_ast.ID("rc")))
    fdecl = c_ast.FuncDecl(c_ast.ParamList(decls), _type("int", name))
    return print_c(c_ast.FuncDef(_decl(name, fdecl), None, c_ast.Compound(body)))
