"""The int8 micro-kernels, generated from the int8 operations of an ISA row
(cgen.codegen.isa: Int8Ops, Int8Tile, Int8Dot) with the emitter of
cgen.tensorize.microkernel (a C AST printed by the project's one printer).

* u8 x s8 register tile: C[i, j] += sum_k int32(A[i, k]) * int32(B[j, k]) on an
  MR x NR tile, A (uint8) and B (int8) contiguous along k, any K: MR*NR dot
  products sharing their loads, reduced across lanes once per call.  The
  products are exact on every row (VNNI vpdpbusd; int16 widening and pmaddwd /
  vmlal, with no int16 sum that could saturate; NEON sdot on A - 128).
* s8 dot product: C += sum_k int32(A[k]) * int32(B[k]), A and B contiguous.

A row lists its ways best first (an extension, then the base ISA): each kernel is
emitted once per distinct way, behind `#if defined(GUARD)` / `#elif` / `#else`, so
the target's compiler flags choose (the host's -mavx512vnni, the Cortex-A76's
dotprod).  Nothing here branches on an ISA: the row's expression trees are
turned into calls, casts and constants.
"""
from __future__ import annotations

import re

from pycparser import c_ast

from .. import te
from ..codegen.isa import kernel_isa
from .intrin import KernelSource, TensorIntrin, TensorizeError, from_compute
from .microkernel import X, assign, block, call, cast, decl, function, lit, node
from targets import resolve

TILE_PARAMS = (("int64_t", "K", "value"), ("uint8_t", "A", "in"), ("int64_t", "a_si", "value"),
               ("int8_t", "B", "in"), ("int64_t", "b_sj", "value"), ("int32_t", "C", "out"),
               ("int64_t", "c_si", "value"), ("int64_t", "c_sj", "value"))
# the s8 x s8 tile: A already in int8 (the packing shifted it)
TILE_S8_PARAMS = tuple(("int8_t", "A", "in") if p[1] == "A" else p for p in TILE_PARAMS)
# kernel -> (the kernel's name in errors, A's dtype, C name prefix, parameters)
_TILES = {"tile": ("u8 x s8 tile kernel", "uint8", "cg_qtile_u8s8", TILE_PARAMS),
          "tile_s8": ("s8 x s8 tile kernel", "int8", "cg_qtile_s8s8", TILE_S8_PARAMS)}
DOT_PARAMS = (("int64_t", "K", "value"), ("int8_t", "A", "in"), ("int8_t", "B", "in"),
              ("int32_t", "C", "out"))


# ----------------------------------------------------------------------------- expressions
def _bin(op: str, a, b) -> X:
    return X(c_ast.BinaryOp(op, node(a), node(b)))


def _cast(ctype: str, x) -> X:
    """A cast to "T", "T *" or "const T *"."""
    const = ctype.startswith("const ")
    base = ctype[len("const "):] if const else ctype
    ptr = base.endswith("*")
    return cast(base.rstrip(" *"), x, const=const, ptr=ptr)


_OPERATORS = ("+", "*", "|", ">>", "<<")


def expr(tree, env: dict) -> X:
    """An ISA row's expression tree as C: ("f", args...) a call, ("cast", type, x) a cast,
    (operator, x, y) a binary operation, ("deref", p) *p, "$name" an operand from env, an
    int a constant, "0x.." a hex constant."""
    if isinstance(tree, tuple):
        if tree[0] == "cast":
            return _cast(tree[1], expr(tree[2], env))
        if tree[0] in _OPERATORS:
            return _bin(tree[0], expr(tree[1], env), expr(tree[2], env))
        if tree[0] == "deref":
            return X(c_ast.UnaryOp("*", node(expr(tree[1], env))))
        return call(tree[0], *[expr(t, env) for t in tree[1:]])
    if isinstance(tree, int):
        return X(tree)
    if tree.startswith("$"):
        return X(node(env[tree[1:]]))
    if tree.startswith("0x"):
        return lit(tree)
    return X(tree)


def _load(ctype: str, name: str, tree, env: dict) -> list:
    """The declaration of a loaded operand; ("unaligned", p): p's bytes copied into it."""
    if isinstance(tree, tuple) and tree[0] == "unaligned":
        return [decl(ctype, name), call("memcpy", X(c_ast.UnaryOp("&", node(name))),
                                        expr(tree[1], env), X(c_ast.UnaryOp("sizeof", node(name))))]
    return [decl(ctype, name, expr(tree, env))]


def _row_plus(base: str, r: int, stride: str) -> X:
    """base + r * stride + k (the start of row r at step k)."""
    return X(base) + _bin("*", r, stride) + "k"


def _scalar_tail(MR: int, NR: int) -> c_ast.For:
    def at(base, r, stride):
        return cast("int32_t", X(base)[_bin("+", _bin("*", r, stride), "k")])
    body = [assign(f"s{r}_{j}", _bin("*", at("A", r, "a_si"), at("B", j, "b_sj")), "+=")
            for r in range(MR) for j in range(NR)]
    return c_ast.For(assign("k", "kv"), node(X("k") < "K"), c_ast.UnaryOp("++", node(X("k"))), block(body))


# ----------------------------------------------------------------------------- u8 x s8 tile
def _tile_body(t, MR: int, NR: int) -> list:
    acc = [(r, j) for r in range(MR) for j in range(NR)]
    masked = t.tail == "mask"
    out = [decl("int64_t", "k")] if masked else [
        decl("int64_t", "k", 0),
        # the scalar tail starts at kv, not where the vector loop stopped: from the loop's
        # exit test alone gcc cannot see k <= K, and on a 32-bit target it follows an
        # infeasible path where the tail wraps the address space
        # (-Werror=aggressive-loop-optimizations); from kv it sees at most step - 1 more
        decl("int64_t", "kv", _bin("-", "K", _bin("%", "K", t.step)), const=True)]
    out += [decl(t.acc_type, f"c{r}_{j}", expr(t.zero, {})) for r, j in acc]
    if t.u8_bias:
        out += [decl(t.acc_type, f"z{j}", expr(t.zero, {})) for j in range(NR)]
    if not masked:
        out += [decl("int32_t", f"s{r}_{j}") for r, j in acc]
    if t.temp_type:
        out.append(decl(t.temp_type, "h"))
    loop = []
    if masked:
        mt = t.mask_type
        full = c_ast.UnaryOp("~", node(cast(mt, 0)))
        part = _bin("-", _bin("<<", cast(mt, 1), _bin("-", "K", "k")), 1)
        loop.append(decl(mt, "m", X(c_ast.TernaryOp(node(_bin(">=", _bin("-", "K", "k"), t.step)),
                                                      full, node(part)))))
    env = {"m": "m"}
    for r in range(MR):
        loop += _load(t.a_type, f"a{r}", t.load_a, {**env, "p": _row_plus("A", r, "a_si")})
    for j in range(NR):
        loop += _load(t.b_type, f"b{j}", t.load_b, {**env, "p": _row_plus("B", j, "b_sj")})
    for r, j in acc:
        loop += [assign(f"c{r}_{j}", expr(u, {"c": f"c{r}_{j}", "a": f"a{r}", "b": f"b{j}"}))
                 for u in t.update]
    if t.u8_bias:
        loop.append(decl(t.a_type, "ones", expr(t.ones, {})))
        for j in range(NR):
            loop += [assign(f"z{j}", expr(u, {"c": f"z{j}", "a": "ones", "b": f"b{j}"}))
                     for u in t.update]
    if masked:
        out.append(c_ast.For(assign("k", 0), node(X("k") < "K"), assign("k", t.step, "+="), block(loop)))
        return out + _masked_epilogue(t, MR, NR)
    out.append(c_ast.For(None, node(X("k") < "kv"), assign("k", t.step, "+="), block(loop)))
    for r, j in acc:
        out += _reduce(t, f"c{r}_{j}", f"s{r}_{j}")
        if t.u8_bias:
            out += _reduce(t, f"z{j}", f"s{r}_{j}", scale=t.u8_bias)
    out.append(_scalar_tail(MR, NR))
    out += [assign(X("C")[_bin("+", _bin("*", r, "c_si"), _bin("*", j, "c_sj"))], f"s{r}_{j}", "+=")
            for r, j in acc]
    return out


def _reduce(t, acc: str, dest: str, scale: int = 0) -> list:
    """dest = the sum of acc's lanes (dest += scale * that sum, with a scale)."""
    out = [assign("h", expr(s, {"c": acc, "h": "h"})) for s in t.reduce[:-1]]
    total = expr(t.reduce[-1], {"c": acc, "h": "h"})
    return out + [assign(dest, _bin("*", scale, total), "+=") if scale else assign(dest, total)]


def _masked_epilogue(t, MR: int, NR: int) -> list:
    """Per column j: the MR accumulators reduced together, added to C."""
    if MR == 1:
        return [cast("void", "c_si")] + [
            assign(X("C")[_bin("*", j, "c_sj")], _reduce_expr(t, f"c0_{j}"), "+=") for j in range(NR)]
    steps = dict(t.group_reduce)[MR]
    out = []
    for j in range(NR):
        env = {f"c{r}": f"c{r}_{j}" for r in range(MR)}
        stmts = []
        for name, ctype, e in steps:
            stmts.append(decl(ctype, name, expr(e, env)))
            env[name] = name
        stmts.append(decl("int32_t", "c", X("C") + _bin("*", j, "c_sj"), ptr=True))
        lanes = [assign(X("c")[_bin("*", r, "c_si") if r > 1 else ("c_si" if r else 0)],
                        expr(t.lanes[r], env), "+=") for r in range(MR)]
        if MR == len(t.lanes) and t.add_store:
            stmts.append(c_ast.If(node(_bin("==", "c_si", 1)),
                                  block([expr(t.add_store, {**env, "p": "c"})]), block(lanes)))
        else:
            stmts += lanes
        out.append(block(stmts))
    return out


def _reduce_expr(t, acc: str) -> X:
    if len(t.reduce) != 1:
        raise TensorizeError("int8 tile: a masked tile's one-row reduction must be one expression")
    return expr(t.reduce[0], {"c": acc})


def _emit(ways, make) -> str:
    """The kernel once per distinct way, behind #if / #elif / #else on the ways' guards."""
    parts = []
    for i, w in enumerate(ways):
        later = [make(v) for v in ways[i + 1:]]
        src = make(w)
        if src is None or (later and src == later[0]):
            continue
        parts.append((w.guard_macro, "\n".join([f"#include <{h}>" for h in w.headers] + [src])))
    if len(parts) == 1:
        return parts[0][1]
    lines = []
    for i, (guard, src) in enumerate(parts):
        if guard:
            lines.append(f"#{'if' if i == 0 else 'elif'} defined({guard})")
        else:
            lines.append("#else")
        lines.append(src)
    return "\n".join(lines + ["#endif"])


def _ways(target, what: str):
    """The target's row and its ways that have the kernel `what` ("tile", "tile_s8", "dot")."""
    isa = kernel_isa(target)
    ways = () if isa is None else tuple(w for w in isa.int8 if getattr(w, what) is not None)
    if not ways:
        kind = _TILES[what][0] if what in _TILES else "int8 dot micro-kernel"
        raise TensorizeError(f"no {kind} for target {target.name} (isa {target.isa})")
    if ways[-1].guard_macro:
        raise TensorizeError(f"int8: the last way of {isa.name} must need no guard")
    return isa, ways


def _c_name(name: str) -> str:
    """An identifier from a target's isa and arch (armv7e-m's hyphen, a TOML target's arch)."""
    return re.sub(r"\W", "_", name)


def tile_source(name: str, ways, MR: int, NR: int, what: str = "tile") -> str:
    for w in ways:
        if NR != w.tile_nr or MR not in w.tile_mrs:
            raise TensorizeError(f"int8 tile: {w.name} has no {MR}x{NR} tile")
    params = _TILES[what][3]
    return _emit(ways, lambda w: function(name, params, _tile_body(getattr(w, what), MR, NR)))


def tile_mrs(target) -> tuple:
    """The MR (pixels / rows) of the target's u8 x s8 tile kernels; () when it has none."""
    target = resolve(target)
    try:
        return _ways(target, "tile")[1][-1].tile_mrs
    except TensorizeError:
        return ()


def tile_shape(target, mr: int | None = None):
    """(MR, NR) of the target's tile kernel with the largest offered MR <= mr (default: the
    largest), or None when the target has none."""
    target = resolve(target)
    try:
        w = _ways(target, "tile")[1][-1]
    except TensorizeError:
        return None
    mrs = [m for m in w.tile_mrs if mr is None or m <= mr] or [min(w.tile_mrs)]
    return max(mrs), w.tile_nr


def u8s8_tile_intrin(target, mr: int | None = None) -> TensorIntrin:
    """The TensorIntrin C[i, j] += sum_k int32(A[i, k]) * int32(B[j, k]), A uint8 and B int8
    contiguous along k, on an MR x NR tile (see tile_shape; TensorizeError if the target
    has no such kernel)."""
    return _tile_intrin(target, mr, "tile")


def s8s8_tile_intrin(target, mr: int | None = None) -> TensorIntrin:
    """As u8s8_tile_intrin with A int8 (the s8 x s8 tile of the ways that have one: all of
    the target's, else TensorizeError)."""
    return _tile_intrin(target, mr, "tile_s8")


def _tile_intrin(target, mr, what: str) -> TensorIntrin:
    target = resolve(target)
    isa, ways = _ways(target, what)
    if len(ways) != len(isa.int8):
        raise TensorizeError(f"no {_TILES[what][0]} in every int8 way of {isa.name}")
    MR, NR = tile_shape(target, mr)
    _, a_dtype, prefix, _ = _TILES[what]
    name = _c_name(f"{prefix}_{MR}x{NR}_{target.isa}_{target.arch}")
    A = te.placeholder((MR, 1), a_dtype, name="A")
    B = te.placeholder((NR, 1), "int8", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((MR, NR), lambda i, j: te.sum(A[i, k].astype("int32") * B[j, k].astype("int32"),
                                                 axis=k), name="C")
    return from_compute(name, C, {"i": MR, "j": NR}, {("a", "k"), ("b", "k")},
                        KernelSource(name, tile_source(name, ways, MR, NR, what)))


# ----------------------------------------------------------------------------- s8 dot
def _dot_body(d) -> list:
    out = [decl(d.acc_type, "acc", expr(d.zero, {})), decl("int64_t", "k", 0),
           decl("int64_t", "kv", _bin("-", "K", _bin("%", "K", d.step)), const=True),  # see _tile_body
           decl("int32_t", "s")]
    if d.temp_type:
        out.append(decl(d.temp_type, "h"))
    loop = _load(d.a_type, "a", d.load, {"p": X("A") + "k"}) + _load(d.a_type, "b", d.load,
                                                                     {"p": X("B") + "k"})
    loop += [assign("acc", expr(u, {"c": "acc", "a": "a", "b": "b"})) for u in d.update]
    out.append(c_ast.For(None, node(X("k") < "kv"), assign("k", d.step, "+="), block(loop)))
    out += _reduce(d, "acc", "s")
    tail = assign("s", _bin("*", cast("int32_t", X("A")["k"]), cast("int32_t", X("B")["k"])), "+=")
    out.append(c_ast.For(assign("k", "kv"), node(X("k") < "K"), c_ast.UnaryOp("++", node(X("k"))),
                         block([tail])))
    out.append(assign(c_ast.UnaryOp("*", node("C")), "s", "+="))
    return out


def dot_source(name: str, ways) -> str:
    return _emit(ways, lambda w: function(name, DOT_PARAMS, _dot_body(w.dot)))


def dot_i8_intrin(target) -> TensorIntrin:
    """C += sum_k int32(A[k]) * int32(B[k]) for contiguous int8 A and B."""
    target = resolve(target)
    isa, ways = _ways(target, "dot")
    name = _c_name(f"cg_dot_s8_{target.isa}_{target.arch}")
    A = te.placeholder((1, 1), "int8", name="A")
    B = te.placeholder((1, 1), "int8", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((1,), lambda i: te.sum(A[0, k].astype("int32") * B[0, k].astype("int32"), axis=k),
                   name="C")
    # the output axis has extent 1 in the definition: the kernel covers the k loop only
    intr = from_compute(name, C, {}, {("a", "k"), ("b", "k")}, KernelSource(name, dot_source(name, ways)))
    from dataclasses import replace
    return replace(intr, roles=tuple(r for r in intr.roles if r != "i"),
                   operands={t: frozenset(r for r in rs if r != "i") for t, rs in intr.operands.items()})
