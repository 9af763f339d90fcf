"""Loop IR -> C99 through pycparser's C AST; its generator owns precedence.

Integer floor division and modulo keep Python semantics through helpers
(C truncates); narrow integer results are cast back to their type so C's
promotion to int never leaks into stored values.
"""
from __future__ import annotations

import math
import re

import numpy as np
from pycparser import c_ast, c_generator

from ..te import BITWISE
from ..te.expr import (Binary, Call, Cast, Compare, Const, Expr, Logic, Not, Reinterpret,
                       Select, Var, INDEX, is_float)
from ..lower.ir import (Address, Allocate, Broadcast, Buffer, CallKernel, Evaluate, For,
                        IfThenElse, Let, Load, PrimFunc, Seq, Store, Stmt, VLoad, VStore,
                        split_dtype)
from ..lower.written import written_before_read
from ..te.visit import walk

C_TYPES = {"float32": "float", "int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t",
           "int32": "int32_t", "int64": "int64_t", "bool": "_Bool"}
SUFFIX = {"float32": "f32", "int8": "i8", "uint8": "u8", "int16": "i16", "int32": "i32",
          "int64": "i64"}
NARROW = ("int8", "uint8", "int16")
MATH = {"exp": "expf", "log": "logf", "sqrt": "sqrtf", "tanh": "tanhf", "erf": "erff",
        "floor": "floorf", "rint": "rintf", "sin": "sinf", "cos": "cosf",
        "fmod": "fmodf", **{f: f + "f" for f in ("tan", "asin", "acos", "atan", "sinh", "cosh",
                                                  "asinh", "acosh", "atanh")}}
C_KEYWORDS = set("""auto break case char const continue default do double else enum extern float
for goto if inline int long register restrict return short signed sizeof static struct switch
typedef union unsigned void volatile while _Bool _Complex _Imaginary main
expf logf sqrtf tanhf erff floorf rintf sinf cosf fmodf tanf asinf acosf atanf sinhf coshf asinhf acoshf
atanhf fabsf malloc free cg_status NAN INFINITY INT64_C INT8_MIN INT16_MIN
INT32_MIN INT64_MIN cg_ws""".split())
# Bytes a kernel's local buffer may take on the stack before it goes to the heap (a
# standalone kernel) or to the workspace (a model).  One table, two uses: a standalone
# kernel has no workspace, so a generous limit saves mallocs; in a model every byte off
# the stack is counted in the memory report and the workspace, which is what an MCU
# budget must see, so only small tiles stay on the stack there.
STACK_LIMIT = {"kernel": 16 * 1024, "model": 1024}
WS_ALIGN = 64

# the operators of an ISA row's expression trees (VectorISA.mask_first)
ROW_OPERATORS = ("+", "-", "<<")
# te calls the vectorize pass keeps as vector calls -> the ISA row's field naming them
VECTOR_CALLS = {"shl": "int_shl"}

# Helper bodies are fixed C (no generated expressions inside), one per helper name.
HELPERS = {
    "floordiv": "static inline {T} cg_floordiv_{S}({T} a, {T} b) {{ {T} q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }}",
    "floormod": "static inline {T} cg_floormod_{S}({T} a, {T} b) {{ {T} r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }}",
    "min": "static inline {T} cg_min_{S}({T} a, {T} b) {{ return a < b ? a : b; }}",
    "max": "static inline {T} cg_max_{S}({T} a, {T} b) {{ return a > b ? a : b; }}",
    "abs": "static inline {T} cg_abs_{S}({T} a) {{ return a < 0 ? ({T})(0 - a) : a; }}",
    "sigmoid": "static inline float cg_sigmoid_f32(float x) { return 1.0f / (1.0f + expf(-x)); }",
    # te.bitwise: through unsigned arithmetic, so no shift or overflow is undefined
    **{op: "static inline {T} cg_%s_{S}({T} a, {T} b) {{ return ({T})(a %s b); }}" % (op, c)
       for op, c in (("bitand", "&"), ("bitor", "|"), ("bitxor", "^"))},
    "bitnot": "static inline {T} cg_bitnot_{S}({T} a) {{ return ({T})~a; }}",
    # te.reinterpret: a bit cast through a union (C99 defines reading the other member)
    "as_int32": "static inline int32_t cg_as_int32(float a) { union { float f; int32_t i; } u; u.f = a; return u.i; }",
    "as_float32": "static inline float cg_as_float32(int32_t a) { union { float f; int32_t i; } u; u.i = a; return u.f; }",
    "shl": "static inline {T} cg_shl_{S}({T} a, {T} b) {{ return (b < 0 || b >= (int)(8 * sizeof({T}))) ? ({T})0 : ({T})((unsigned long long)a << b); }}",
    "shr": "static inline {T} cg_shr_{S}({T} a, {T} b) {{ return (b < 0 || b >= (int)(8 * sizeof({T}))) ? ({T})(a < 0 ? -1 : 0) : ({T})(a >> b); }}",
}
# Unsigned values: C's / and % already floor, and `a < 0` would trip -Wtype-limits.
UNSIGNED_HELPERS = {
    "floordiv": "static inline {T} cg_floordiv_{S}({T} a, {T} b) {{ return ({T})(a / b); }}",
    "floormod": "static inline {T} cg_floormod_{S}({T} a, {T} b) {{ return ({T})(a % b); }}",
    "abs": "static inline {T} cg_abs_{S}({T} a) {{ return a; }}",
    "shl": "static inline {T} cg_shl_{S}({T} a, {T} b) {{ return b >= 8 ? ({T})0 : ({T})(a << b); }}",
    "shr": "static inline {T} cg_shr_{S}({T} a, {T} b) {{ return b >= 8 ? ({T})0 : ({T})(a >> b); }}",
}


def typename(dtype: str) -> c_ast.Typename:
    return c_ast.Typename(None, [], None, c_ast.TypeDecl(None, [], None,
                                                         c_ast.IdentifierType([C_TYPES[dtype]])))


def float_literal(v: float) -> c_ast.Node:
    if math.isnan(v):
        return c_ast.ID("NAN")
    if math.isinf(v):
        return c_ast.ID("INFINITY") if v > 0 else c_ast.UnaryOp("-", c_ast.ID("INFINITY"))
    s = repr(float(np.float32(v)))
    neg = s.startswith("-")
    s = s.lstrip("-")
    if "e" not in s and "." not in s:
        s += ".0"
    if "e" in s and "." not in s.split("e")[0]:
        m, e = s.split("e")
        s = f"{m}.0e{e}"
    lit = c_ast.Constant("float", s + "f")
    return c_ast.UnaryOp("-", lit) if neg else lit


def int_literal(v: int, dtype: str) -> c_ast.Node:
    if dtype != "bool" and v == np.iinfo(dtype).min and v < 0:
        return c_ast.ID(f"INT{np.iinfo(dtype).bits}_MIN")
    lit = c_ast.Constant("int", str(abs(v)) if abs(v) < 2**31 else f"INT64_C({abs(v)})")
    if abs(v) >= 2**31:
        lit = c_ast.FuncCall(c_ast.ID("INT64_C"), c_ast.ExprList([c_ast.Constant("int", str(abs(v)))]))
    return c_ast.UnaryOp("-", lit) if v < 0 else lit


class _Names:
    """Deterministic C identifiers: first come, first served."""

    def __init__(self, reserved=()):
        self.used = set(C_KEYWORDS) | set(reserved)
        self.of: dict = {}

    def get(self, obj, hint: str) -> str:
        if obj in self.of:
            return self.of[obj]
        base = re.sub(r"[^A-Za-z0-9_]", "_", hint) or "v"
        if base[0].isdigit():
            base = "v" + base
        if base.startswith("cg_"):
            base = "u" + base
        name, k = base, 1
        while name in self.used:
            name = f"{base}_{k}"
            k += 1
        self.used.add(name)
        self.of[obj] = name
        return name


def uses_isa(func: PrimFunc) -> bool:
    """Whether the function has vector code or micro-kernels: it is then emitted as the
    ISA's version beside a portable one."""
    found = []
    walk(func.body, lambda x: found.append(1) if isinstance(x, (VLoad, VStore, Broadcast,
                                                                CallKernel)) else None)
    return bool(func.kernels or found)


class CEmitter:
    def __init__(self, func: PrimFunc, isa=None, kernels=(), openmp=False, workspace=False,
                 stack_limit: int = STACK_LIMIT["kernel"], static: bool = False):
        self.workspace = workspace      # heap-sized buffers live in a caller's workspace
        self.stack_limit = stack_limit  # bytes a local buffer may take on the stack
        self.static = static            # a file-local function (one of a model's kernels)
        self.scratch_bytes = 0          # workspace bytes this function needs
        self.func = func
        self.openmp = openmp  # the target has threads: parallel loops get OpenMP
        self.isa = isa
        self.kernels = tuple(kernels)  # micro-kernel C definitions (tensorize)
        self.names = _Names(k.name for k in self.kernels)
        self.helpers: dict = {}  # key -> text, in first-use order
        self.uses_malloc = False
        self.uses_isa = bool(self.kernels)
        self._scalar_minmax = None     # the row's, once a float min / max asks (minmax_tree)

    # ------------------------------------------------------------ helpers
    def helper(self, kind: str, dtype: str) -> str:
        if kind in ("sigmoid", "as_int32", "as_float32"):
            key, name = kind, "cg_sigmoid_f32" if kind == "sigmoid" else f"cg_{kind}"
            text = HELPERS[kind]
        else:
            key = f"{kind}_{dtype}"
            name = f"cg_{kind}_{SUFFIX[dtype]}"
            table = UNSIGNED_HELPERS if dtype == "uint8" and kind in UNSIGNED_HELPERS else HELPERS
            text = table[kind].format(T=C_TYPES[dtype], S=SUFFIX[dtype])
        self.helpers.setdefault(key, text)
        return name

    def minmax_tree(self, op: str):
        """The ISA row's scalar float32 `op` tree, only where the function is the ISA's
        version anyway: a kernel without vector code has no portable twin to fall back
        on.  Looked up on the first float min / max, so other kernels are not walked."""
        if self._scalar_minmax is None:
            row = self.isa.scalar_minmax if self.isa is not None else {}
            self._scalar_minmax = row if row and uses_isa(self.func) else {}
        return self._scalar_minmax.get(op)

    def call(self, fname: str, *args) -> c_ast.FuncCall:
        return c_ast.FuncCall(c_ast.ID(fname), c_ast.ExprList(list(args)))

    # ------------------------------------------------------------ expressions
    def expr(self, e: Expr) -> c_ast.Node:
        if isinstance(e, Const):
            if e.dtype == "bool":
                return c_ast.Constant("int", "1" if e.value else "0")
            if is_float(e.dtype):
                return float_literal(e.value)
            return int_literal(e.value, e.dtype)
        if isinstance(e, Var):
            return c_ast.ID(self.names.get(e, e.name))
        if isinstance(e, Load):
            return c_ast.ArrayRef(c_ast.ID(self.names.get(e.buffer, e.buffer.name)), self.expr(e.index))
        if isinstance(e, (VLoad, Broadcast, Address)) or (
                isinstance(e, (Binary, Reinterpret, Call, Select)) and split_dtype(e.dtype)[1] > 1):
            return self.vector_expr(e)
        if isinstance(e, Reinterpret):
            return self.call(self.helper(f"as_{e.dtype}", e.dtype), self.expr(e.value))
        if isinstance(e, Binary):
            a, b = self.expr(e.a), self.expr(e.b)
            if e.op in ("//", "%"):
                return self.call(self.helper("floordiv" if e.op == "//" else "floormod", e.dtype), a, b)
            if e.op in ("min", "max"):
                tree = self.minmax_tree(e.op) if e.dtype == "float32" else None
                if tree is not None:
                    self.uses_isa = True
                    return self.row_expr(tree, {"a": a, "b": b})
                return self.call(self.helper(e.op, e.dtype), a, b)
            out = c_ast.BinaryOp(e.op, a, b)
            if e.dtype in NARROW:
                out = c_ast.Cast(typename(e.dtype), out)
            return out
        if isinstance(e, Compare):
            return c_ast.BinaryOp(e.op, self.expr(e.a), self.expr(e.b))
        if isinstance(e, Logic):
            return c_ast.BinaryOp(e.op, self.expr(e.a), self.expr(e.b))
        if isinstance(e, Not):
            return c_ast.UnaryOp("!", self.expr(e.a))
        if isinstance(e, Select):
            out = c_ast.TernaryOp(self.expr(e.cond), self.expr(e.t), self.expr(e.f))
            if e.dtype == "int64" and isinstance(e.t, Const) and isinstance(e.f, Const):
                # two small literals make a C int: keep int64 arithmetic on it from overflowing
                out = c_ast.Cast(typename("int64"), out)
            return out
        if isinstance(e, Cast):
            return c_ast.Cast(typename(e.dtype), self.expr(e.value))
        if isinstance(e, Call):
            args = [self.expr(a) for a in e.args]
            if e.name == "abs":
                if is_float(e.dtype):
                    return self.call("fabsf", *args)
                return self.call(self.helper("abs", e.dtype), *args)
            if e.name in ("sigmoid",) + BITWISE:
                return self.call(self.helper(e.name, e.dtype), *args)
            return self.call(MATH[e.name], *args)
        raise TypeError(f"codegen: unsupported expression {type(e).__name__}")

    def address(self, buf, index) -> c_ast.Node:
        return c_ast.UnaryOp("&", c_ast.ArrayRef(c_ast.ID(self.names.get(buf, buf.name)), self.expr(index)))

    def mask(self, count) -> c_ast.Node:
        """The lane mask of the first `count` lanes, from the row's tree (isa.mask_first)."""
        return self.row_expr(self.isa.mask_first, {"n": self.expr(count)})

    def row_expr(self, tree, env: dict) -> c_ast.Node:
        if isinstance(tree, tuple):
            if tree[0] == "cast":
                return c_ast.Cast(c_ast.Typename(None, [], None, c_ast.TypeDecl(
                    None, [], None, c_ast.IdentifierType([tree[1]]))), self.row_expr(tree[2], env))
            if tree[0] in ROW_OPERATORS:
                return c_ast.BinaryOp(tree[0], self.row_expr(tree[1], env), self.row_expr(tree[2], env))
            return self.call(tree[0], *[self.row_expr(t, env) for t in tree[1:]])
        if isinstance(tree, str) and tree.startswith("$"):
            return env[tree[1:]]
        return c_ast.Constant("int", str(tree))

    def vector_expr(self, e) -> c_ast.Node:
        isa = self.isa
        self.uses_isa = True
        if isinstance(e, Address):
            return self.address(e.buffer, e.index)
        if isinstance(e, VLoad):
            if e.stride == 2:
                return self.row_expr(isa.load_even, {"p": self.address(e.buffer, e.index)})
            if e.count is not None:
                parts = {"mask": self.mask(e.count), "ptr": self.address(e.buffer, e.index)}
                return self.call(isa.mask_load, *[parts[k] for k in isa.mask_load_args])
            return self.call(isa.load, self.address(e.buffer, e.index))
        if isinstance(e, Broadcast):
            return self.call(isa.set1, self.expr(e.value))
        if isinstance(e, Reinterpret):
            cast = isa.as_int if split_dtype(e.dtype)[0] == "int32" else isa.as_float
            return self.call(cast, self.expr(e.value))
        if isinstance(e, Select):
            if not (isinstance(e.cond, Compare) and split_dtype(e.cond.a.dtype)[1] > 1):
                # one condition for all lanes: ?: between the two vectors
                return c_ast.TernaryOp(self.expr(e.cond), self.expr(e.t), self.expr(e.f))
            # per lane: a float32 compare of vectors and the row's blend
            parts = {"a": e.cond.a, "b": e.cond.b, "t": e.t, "f": e.f}
            return self.row_expr(isa.select[e.cond.op], {k: self.expr(x) for k, x in parts.items()})
        if isinstance(e, Call):     # the vector calls the vectorizer makes (exp's 2^n)
            return self.call(getattr(isa, VECTOR_CALLS[e.name]), *[self.expr(a) for a in e.args])
        # a + b*c -> one fused multiply-add
        if e.op == "+":
            for acc, prod in ((e.a, e.b), (e.b, e.a)):
                if isinstance(prod, Binary) and prod.op == "*":
                    parts = {"acc": acc, "a": prod.a, "b": prod.b}
                    return self.call(isa.fma, *[self.expr(parts[k]) for k in isa.fma_order])
        return self.call(isa.binary[e.op], self.expr(e.a), self.expr(e.b))

    # ------------------------------------------------------------ statements
    def stmts(self, s: Stmt) -> list:
        if isinstance(s, Seq):
            out = []
            for x in s.stmts:
                out.extend(self.stmts(x))
            return out
        if isinstance(s, For):
            v = self.names.get(s.var, s.var.name)
            init = c_ast.DeclList([self.decl(v, INDEX, self.expr(s.min))])
            if isinstance(s.min, Const) and s.min.value == 0:
                hi = self.expr(s.extent)
            else:
                hi = self.expr(Binary("+", s.min, s.extent, INDEX))
            cond = c_ast.BinaryOp("<", c_ast.ID(v), hi)
            nxt = c_ast.UnaryOp("++", c_ast.ID(v))
            loop = c_ast.For(init, cond, nxt, c_ast.Compound(self.stmts(s.body)))
            omp = [c_ast.Pragma("omp parallel for")] if s.kind == "parallel" and self.openmp else []
            return [c_ast.Pragma(p) for p in s.pragmas] + omp + [loop]
        if isinstance(s, Store):
            lhs = c_ast.ArrayRef(c_ast.ID(self.names.get(s.buffer, s.buffer.name)), self.expr(s.index))
            return [c_ast.Assignment("=", lhs, self.expr(s.value))]
        if isinstance(s, IfThenElse):
            then = c_ast.Compound(self.stmts(s.then))
            els = None if s.else_ is None else c_ast.Compound(self.stmts(s.else_))
            return [c_ast.If(self.expr(s.cond), then, els)]
        if isinstance(s, Let):
            v = self.names.get(s.var, s.var.name)
            return [c_ast.Compound([self.decl(v, s.var.dtype, self.expr(s.value))] + self.stmts(s.body))]
        if isinstance(s, Evaluate):
            return [self.expr(s.value)]
        if isinstance(s, VStore):
            self.uses_isa = True
            ptr = self.address(s.buffer, s.index)
            if isinstance(s.count, Const) and self.isa.part_store:
                return [self.part_store(ptr, s.count.value, self.expr(s.value))]
            if s.count is not None:
                parts = {"ptr": ptr, "mask": self.mask(s.count), "v": self.expr(s.value)}
                return [self.call(self.isa.mask_store, *[parts[k] for k in self.isa.mask_store_args])]
            return [self.call(self.isa.store, ptr, self.expr(s.value))]
        if isinstance(s, CallKernel):
            return [self.call(s.name, *[self.expr(a) for a in s.args])]
        if isinstance(s, Allocate):
            return [c_ast.Compound(self.allocate(s.buffer, s.body))]
        raise TypeError(f"codegen: unsupported statement {type(s).__name__}")

    def part_store(self, ptr, n: int, value) -> c_ast.Compound:
        """The first n lanes of value stored at ptr by the row's part_store steps: the
        value and what each step leaves in block-local constants."""
        def const(name, ctype, init):
            return c_ast.Decl(name, ["const"], [], [], [], c_ast.TypeDecl(
                name, ["const"], None, c_ast.IdentifierType([ctype])), init, None)
        out = [const("cg_part0", self.isa.vtype, value)]
        cur, off = c_ast.ID("cg_part0"), 0
        for i, (lanes, left_type, store, high, low) in enumerate(self.isa.part_store):
            taken = bool(n & lanes)
            if taken:
                p = ptr if off == 0 else c_ast.BinaryOp("+", ptr, c_ast.Constant("int", str(off)))
                out.append(self.row_expr(store, {"p": p, "v": cur}))
                off += lanes
            if not n & (lanes - 1):
                break
            left = high if taken else low
            if left != "$v":
                name = f"cg_part{i + 1}"
                out.append(const(name, left_type, self.row_expr(left, {"v": cur})))
                cur = c_ast.ID(name)
        return c_ast.Compound(out)

    def decl(self, name: str, dtype: str, init=None, quals=()) -> c_ast.Decl:
        return c_ast.Decl(name, list(quals), [], [], [],
                          c_ast.TypeDecl(name, list(quals), None, c_ast.IdentifierType([C_TYPES[dtype]])),
                          init, None)

    def allocate(self, buf: Buffer, body: Stmt) -> list:
        name = self.names.get(buf, buf.name)
        ctype = c_ast.IdentifierType([C_TYPES[buf.dtype]])
        if buf.nbytes <= self.stack_limit:
            arr = c_ast.ArrayDecl(c_ast.TypeDecl(name, [], None, ctype),
                                  c_ast.Constant("int", str(buf.size)), [])
            # zero-initialised unless its first writer provably covers it: gcc cannot always
            # prove a guarded producer nest writes every element its consumer reads
            # (-Wmaybe-uninitialized is an error under -Werror), and a fill that is dead
            # costs a memset per call
            zero = (None if written_before_read(buf, body)
                    else c_ast.InitList([c_ast.Constant("int", "0")]))
            return [c_ast.Decl(name, [], [], [], [], arr, zero, None)] + self.stmts(body)
        if self.workspace:
            # a fixed offset of the caller's workspace (64-byte aligned): no malloc
            off = self.scratch_bytes
            self.scratch_bytes = off + -(-buf.nbytes // WS_ALIGN) * WS_ALIGN
            # restrict: the buffers are disjoint regions of the workspace; without it the C
            # compiler must assume a store to one may change another (5-10% on convolutions)
            ptr = c_ast.PtrDecl(["restrict"], c_ast.TypeDecl(name, [], None, ctype))
            addr = c_ast.BinaryOp("+", c_ast.ID("cg_ws"), c_ast.Constant("int", str(off)))
            init = c_ast.Cast(c_ast.Typename(None, [], None, c_ast.PtrDecl(
                [], c_ast.TypeDecl(None, [], None, ctype))), c_ast.Cast(
                c_ast.Typename(None, [], None, c_ast.PtrDecl([], c_ast.TypeDecl(
                    None, [], None, c_ast.IdentifierType(["void"])))), addr))
            return [c_ast.Decl(name, [], [], [], [], ptr, init, None)] + self.stmts(body)
        self.uses_malloc = True
        ptr = c_ast.PtrDecl([], c_ast.TypeDecl(name, [], None, ctype))
        size = c_ast.BinaryOp("*", c_ast.Constant("int", str(buf.size)),
                              c_ast.UnaryOp("sizeof", typename(buf.dtype)))
        init = c_ast.Cast(c_ast.Typename(None, [], None, c_ast.PtrDecl([], c_ast.TypeDecl(None, [], None, ctype))),
                          self.call("malloc", size))
        # no early return: it would branch out of an OpenMP region; report through the status
        ok = c_ast.Compound(self.stmts(body) + [self.call("free", c_ast.ID(name))])
        fail = c_ast.Compound([c_ast.Assignment("=", c_ast.ID("cg_status"), c_ast.Constant("int", "-1"))])
        return [c_ast.Decl(name, [], [], [], [], ptr, init, None), c_ast.If(c_ast.ID(name), ok, fail)]

    # ------------------------------------------------------------ function
    def function(self) -> c_ast.FuncDef:
        f = self.func
        params = []
        for b in f.params:
            name = self.names.get(b, b.name)
            quals = [] if b.name in f.outputs else ["const"]
            noalias = [] if b.name in f.aliased else ["restrict"]
            ptr = c_ast.PtrDecl(noalias, c_ast.TypeDecl(name, quals, None,
                                                             c_ast.IdentifierType([C_TYPES[b.dtype]])))
            params.append(c_ast.Decl(name, quals, [], [], [], ptr, None, None))
        fname = self.names.get(("func", f.name), f.name)
        body = self.stmts(f.body)
        if self.workspace:
            ws = c_ast.PtrDecl(["restrict"], c_ast.TypeDecl("cg_ws", [], None, c_ast.IdentifierType(["uint8_t"])))
            params.append(c_ast.Decl("cg_ws", [], [], [], [], ws, None, None))
            if not self.scratch_bytes:
                body = [c_ast.Cast(c_ast.Typename(None, [], None, c_ast.TypeDecl(
                    None, [], None, c_ast.IdentifierType(["void"]))), c_ast.ID("cg_ws"))] + body
        fdecl = c_ast.FuncDecl(c_ast.ParamList(params),
                               c_ast.TypeDecl(fname, [], None, c_ast.IdentifierType(["int"])))
        storage = ["static"] if self.static else []
        decl = c_ast.Decl(fname, [], [], storage, [], fdecl, None, None)
        if self.uses_malloc:
            body = [self.decl("cg_status", "int32", c_ast.Constant("int", "0"))] + body
            body.append(c_ast.Return(c_ast.ID("cg_status")))
        else:
            body.append(c_ast.Return(c_ast.Constant("int", "0")))
        return c_ast.FuncDef(decl, None, c_ast.Compound(body))

    def signature(self) -> str:
        """The C prototype, for cffi's cdef and for harnesses."""
        fd = self.function_ast.decl
        return c_generator.CGenerator().visit(fd) + ";"

    def source(self) -> str:
        self.function_ast = self.function()
        gen = c_generator.CGenerator()
        body = gen.visit(self.function_ast)
        lines = ["/* Generated by cgen. */", "#include <stdint.h>", "#include <math.h>"]
        if self.uses_malloc:
            lines.append("#include <stdlib.h>")
        if self.uses_isa and self.isa is not None:
            lines.append(f"#include <{self.isa.header}>")
        lines.append("")
        lines.extend(self.helpers.values())
        if self.helpers:
            lines.append("")
        for k in self.kernels:
            lines.append(k.source)
            lines.append("")
        return "\n".join(lines) + "\n" + body


def print_c(node: c_ast.Node) -> str:
    """The one printer, for C ASTs built outside CEmitter (cgen.tensorize.microkernel)."""
    return c_generator.CGenerator().visit(node)


def emit_unit(parts, preamble=(), guard_fallbacks=True) -> str:
    """One C file holding several kernels of a model.

    parts: (func, portable_func, isa, openmp, stack_limit) per kernel, portable_func the
    same kernel lowered without an ISA (None when func has no intrinsics); kernels are
    static and take the
    model's workspace as a last argument.  A kernel with vector intrinsics is emitted
    twice, its ISA's version behind the ISA's predefined macro and the portable one
    after #else, so the file compiles with no flags beyond -std=c99.  A helper or plain-C
    micro-kernel that only one of the two versions calls is behind the same #if as its
    callers, so neither build of the file has an unused static function (clang's
    -Wunused-function).  Returns the source and, per kernel, its workspace scratch bytes.
    """
    helpers, kernels, headers, bodies, scratch = {}, {}, {}, [], []
    callers = {}                # helper / plain kernel name -> {(macro, True|False) | None}
    gen = c_generator.CGenerator()

    def called(names, by):
        for n in names:
            callers.setdefault(n, set()).add(by)
    for func, plain, isa, openmp, stack_limit in parts:
        fast = CEmitter(func, isa, func.kernels, openmp, workspace=True, stack_limit=stack_limit,
                        static=True)
        fast_src = gen.visit(fast.function())
        need = fast.scratch_bytes
        helpers.update(fast.helpers)
        if fast.uses_isa and isa is not None:
            headers[isa.header] = isa.guard_macro
            for k in fast.kernels:
                kernels.setdefault(k.name, (isa.guard_macro, k.source))
            if guard_fallbacks:
                if plain is None:
                    raise ValueError(f"kernel {func.name} uses {isa.name} intrinsics but has no "
                                     "portable version to fall back on")
                slow = CEmitter(plain, None, plain.kernels, openmp, workspace=True,
                                stack_limit=stack_limit, static=True)
                slow_src = gen.visit(slow.function())
                for k in slow.kernels:  # plain-C register tiles
                    kernels.setdefault(k.name, (None, k.source))
                helpers.update(slow.helpers)
                called(fast.helpers, (isa.guard_macro, True))
                called(list(slow.helpers) + [k.name for k in slow.kernels],
                       (isa.guard_macro, False))
                need = max(need, slow.scratch_bytes)
                bodies.append("\n".join([f"#if defined({isa.guard_macro})", fast_src, "#else",
                                          slow_src, "#endif", ""]))
            else:
                bodies.append(fast_src)
                called(fast.helpers, None)
        else:
            # plain-C micro-kernels (targets without SIMD) compile everywhere: no guard
            for k in fast.kernels:
                kernels.setdefault(k.name, (None, k.source))
            called(list(fast.helpers) + [k.name for k in fast.kernels], None)
            bodies.append(fast_src)
        scratch.append(need)

    def guarded(name: str, src: str) -> str:
        """`src` behind the #if of its only callers' version, if they are all in one."""
        by = callers.get(name, {None})
        if len(by) != 1 or None in by:
            return src
        (macro, fast), = by
        return "\n".join([f"#if {'' if fast else '!'}defined({macro})", src, "#endif"])
    lines = ["#include <stdint.h>", "#include <math.h>"]
    for header, macro in headers.items():
        lines += [f"#if defined({macro})", f"#include <{header}>", "#endif"]
    lines += list(preamble) + [""] + [guarded(n, h) for n, h in helpers.items()] + [""]
    for name, (macro, src) in kernels.items():
        lines += [f"#if defined({macro})", src, "#endif", ""] if macro else [guarded(name, src), ""]
    return "\n".join(lines) + "\n" + "\n".join(bodies), scratch


def emit_c(func: PrimFunc, isa=None, kernels=(), openmp=False) -> tuple[str, str]:
    """(C source, prototype of the kernel)."""
    em = CEmitter(func, isa, kernels, openmp)
    src = em.source()
    return src, em.signature()
