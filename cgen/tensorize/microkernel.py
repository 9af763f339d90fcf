"""Every float32 GEMM micro-kernel, generated from one ISA row (cgen.codegen.isa).

A kernel computes C[i][j] += sum_k A[i, k] * B[k, j] on an MR x NR register tile,
B and C contiguous along j.  Its C is a pycparser AST printed by the project's one
printer (`cgen.codegen.c.print_c`); the ISA row supplies every type and operation,
so nothing here branches on an ISA, and the SCALAR row (operations as plain C)
gives the register-tiled kernel of targets without SIMD: MR x NR accumulators in
local scalars, fully unrolled.

Two loop shapes:

* `tile_kernel` ("c" accumulation): the accumulators start from C and are stored
  back after one k loop; no register beyond the tile, B and one A value.  A is read
  as rows broadcast one value at a time (any row stride, a_si) or, packed (rows
  contiguous), as vectors multiplied by lane (NEON's fmla by element: no scalar
  loads).  Options: B prefetched `prefetch` k steps ahead; the last vector of each
  row under a lane mask (column tails on ISAs with masks); a narrow variant (a
  column or row tail with fewer accumulators than FMA_LATENCY_SETS) splits k among
  zeroed extra accumulator sets, summed before the store.  The shipped GEMM
  kernels and the conv tiles.  `tile_dispatch` wraps variants of it so one call
  takes any row count <= MR and (with masks) any column count <= NR.
* `blis_kernel` ("zero" accumulation): the accumulators start at zero and C is
  added once at the end, its rows prefetched C_PREFETCH_STEPS k steps before the
  end (early enough to arrive, late enough not to be evicted by the streaming
  panels); k unrolled `unroll` times, with that many independent accumulator sets
  when one set is too few to hide the FMA latency; B prefetched `prefetch` steps
  ahead in the bulk loop only, so no address past B's end is formed.  The GEMM
  template's kernels (knobs MR, unroll, prefetch).
"""
from __future__ import annotations

from pycparser import c_ast

from ..codegen.c import print_c

C_PREFETCH_STEPS = 16
CACHE_LINE = 64           # bytes per prefetched line
FMA_LATENCY_SETS = 8      # fewer accumulators than this cannot hide the FMA latency


# Per-core GEMM tiles: on the core a target's flags name (-mcpu=...), the shipped tile of
# an ISA row is replaced by the shape llvm-mca predicts nearer that core's FMA pipe
# (cgen.autotune.mca; tests/test_mca.py).  Cortex-A53 (Raspberry Pi 3, Zero 2): in-order,
# and LLVM's model writes results back in order, so the loop branch and every load
# issued behind a 10-cycle FMA wait for it: a loop pays ~9 cycles plus one per q load
# on top of its FMAs, whatever the order.  4 x 24 (24 FMAs to 7 loads, 31 registers)
# is predicted at 0.62 of the pipe against 0.52 for 8 x 8 (the A72 keeps ~0.99 with both).
CORE_GEMM_TILES = {("neon-aarch64", "cortex-a53"): (4, 24, "lanes")}


def tile_mask_type(isa) -> str | None:
    """The C type of a tile kernel's lane mask on this row (its mask registers, or AVX2's
    int32-lane vector masks), or None: no masked tiles."""
    return isa.mask_type


def _costly_masks(isa) -> bool:
    """Masks that are no mask registers (AVX2's vmaskmovps loads take an ALU operation
    beside the FMAs): whole tiles then keep an unmasked variant."""
    return isa.mask_type is not None and isa.tail != "mask"


def target_core(target) -> str:
    """The core a target's flags name (the last -mcpu=, extensions dropped), or ""."""
    named = [f.split("=", 1)[1].split("+")[0] for f in target.cflags if f.startswith("-mcpu=")]
    return named[-1] if named else ""


def gemm_tile(isa, target) -> tuple:
    """(MR, NR, how A is read) of the GEMM tile the target ships: its core's, else the row's."""
    return CORE_GEMM_TILES.get((isa.name, target_core(target)), isa.gemm_tile)


# ----------------------------------------------------------------------------- C AST builders
class X:
    """A C expression under construction: operators build pycparser nodes."""
    __slots__ = ("n",)

    def __init__(self, n):
        self.n = node(n)

    def _bin(self, op, other, swap=False):
        a, b = self.n, node(other)
        return X(c_ast.BinaryOp(op, b, a) if swap else c_ast.BinaryOp(op, a, b))

    def __add__(self, o):
        return self._bin("+", o)

    def __radd__(self, o):
        return self._bin("+", o, True)

    def __sub__(self, o):
        return self._bin("-", o)

    def __mul__(self, o):
        return self._bin("*", o)

    def __rmul__(self, o):
        return self._bin("*", o, True)

    def __lshift__(self, o):
        return self._bin("<<", o)

    def __le__(self, o):
        return self._bin("<=", o)

    def __lt__(self, o):
        return self._bin("<", o)

    def __ge__(self, o):
        return self._bin(">=", o)

    def __gt__(self, o):
        return self._bin(">", o)

    def __getitem__(self, i):
        return X(c_ast.ArrayRef(self.n, node(i)))


def node(x) -> c_ast.Node:
    if isinstance(x, X):
        return x.n
    if isinstance(x, bool):
        raise TypeError("microkernel: no boolean literals")
    if isinstance(x, int):
        return c_ast.Constant("int", str(x))
    if isinstance(x, str):
        return c_ast.ID(x)
    return x


def lit(text: str) -> X:
    return X(c_ast.Constant("int", text))


def call(fname: str, *args) -> X:
    return X(c_ast.FuncCall(c_ast.ID(fname), c_ast.ExprList([node(a) for a in args]) if args else None))


def _type(ctype: str, name=None, const=False, ptr=False):
    td = c_ast.TypeDecl(name, ["const"] if const else [], None, c_ast.IdentifierType(ctype.split()))
    return c_ast.PtrDecl([], td) if ptr else td


def cast(ctype: str, x, const=False, ptr=False) -> X:
    return X(c_ast.Cast(c_ast.Typename(None, [], None, _type(ctype, None, const, ptr)), node(x)))


def decl(ctype: str, name: str, init=None, const=False, ptr=False) -> c_ast.Decl:
    return c_ast.Decl(name, [], [], [], [], _type(ctype, name, const, ptr),
                      None if init is None else node(init), None)


def assign(lhs, rhs, op: str = "=") -> c_ast.Assignment:
    return c_ast.Assignment(op, node(lhs), node(rhs))


def block(stmts) -> c_ast.Compound:
    return c_ast.Compound([node(s) for s in stmts])


def total(terms):
    """terms[0] + terms[1] + ..., left to right."""
    out = X(node(terms[0]))
    for t in terms[1:]:
        out = out + t
    return out


# GCC and clang inline a register tile into its caller, whose own live values then push
# the tile's accumulators out of a register file the tile fills: a 6x16 AVX2 tile (15 of
# 16 ymm) inlined into MobileNetV2's 160 -> 960 1x1 conv kept two accumulators on the
# stack, a store-to-load chain in every k step (440 us; 218 us out of line, x86-avx2 on
# an AMD EPYC).  A call per tile costs a few cycles against K steps of FMAs.
NOINLINE = "#if defined(__GNUC__)\n__attribute__((noinline))\n#endif\n"


def function(name: str, params, body, noinline: bool = False) -> str:
    """`static inline void name(params) { body }` printed; params are (ctype, name, kind),
    kind "value", "in" (const float *restrict) or "out" (float *restrict).  `noinline`:
    `static void`, kept out of line where the compiler has the attribute (a register
    tile, see NOINLINE; gcc refuses the attribute on an inline function)."""
    decls = []
    for ctype, pname, kind in params:
        if kind == "value":
            ty = _type(ctype, pname)
        else:
            ty = c_ast.PtrDecl(["restrict"], _type(ctype, pname, const=kind == "in"))
        decls.append(c_ast.Decl(pname, [], [], [], [], ty, None, None))
    fdecl = c_ast.FuncDecl(c_ast.ParamList(decls), _type("void", name))
    # storage carries both words: the printer puts function specifiers first, and
    # "inline static" trips gcc's -Wold-style-declaration (-Wextra)
    d = c_ast.Decl(name, [], [], ["static"] if noinline else ["static", "inline"], [], fdecl, None,
                   None)
    return (NOINLINE if noinline else "") + print_c(c_ast.FuncDef(d, None, block(body))).rstrip("\n")


# ----------------------------------------------------------------------------- ISA operations
class Ops:
    """The operations of one ISA row as AST builders; None in the row is plain C."""

    def __init__(self, isa):
        self.isa = isa

    def load(self, base, *terms, mask=None):
        isa = self.isa
        if isa.load is None:
            return X(node(base))[total(terms)]
        if mask is not None:
            parts = {"mask": mask, "ptr": total((base,) + terms)}
            return call(isa.mask_load, *[parts[a] for a in isa.mask_load_args])
        return call(isa.load, total((base,) + terms))

    def store(self, value, base, *terms, mask=None):
        isa = self.isa
        if isa.store is None:
            return assign(X(node(base))[total(terms)], value)
        if mask is not None:
            parts = {"ptr": total((base,) + terms), "mask": mask, "v": value}
            return call(isa.mask_store, *[parts[a] for a in isa.mask_store_args])
        return call(isa.store, total((base,) + terms), value)

    def set1(self, x):
        return X(node(x)) if self.isa.set1 is None else call(self.isa.set1, x)

    def zero(self):
        if self.isa.setzero is not None:
            return call(self.isa.setzero)
        return self.set1(lit("0.0f"))   # NEON has no setzero: a broadcast zero

    def add(self, a, b):
        op = self.isa.binary["+"]
        return X(node(a)) + b if op is None else call(op, a, b)

    def fma(self, acc, a, b):
        if self.isa.fma is None:
            return X(node(acc)) + X(node(a)) * b
        parts = {"acc": acc, "a": a, "b": b}
        return call(self.isa.fma, *[parts[k] for k in self.isa.fma_order])

    # A's value in the "rows" tiles: broadcast, or kept scalar where the ISA multiplies a
    # vector by a general register (MVE's vfma by scalar: no q register, no vdup)
    @property
    def a_type(self) -> str:
        return "float" if self.isa.fma_scalar else self.isa.vtype

    def a_value(self, x):
        return X(node(x)) if self.isa.fma_scalar else self.set1(x)

    def fma_a(self, acc, a, b):
        """acc + a * b, a from a_value."""
        if self.isa.fma_scalar:
            return call(self.isa.fma_scalar, acc, b, a)
        return self.fma(acc, a, b)

    def prefetch(self, ptr):
        if self.isa.prefetch_hint is None:
            return call(self.isa.prefetch, ptr)
        return call(self.isa.prefetch, cast("char", ptr, const=True, ptr=True), self.isa.prefetch_hint)

    def mask(self, count):
        """The lane mask of min(count, lanes) leading lanes (count > 0)."""
        isa = self.isa
        if _costly_masks(isa):      # the row's tree (VectorISA.mask_first) of n lanes
            return self._row_expr(isa.mask_first, count)
        full = lit(f"0x{(1 << isa.lanes) - 1:X}u")
        part = X(c_ast.BinaryOp("-", node(lit("1u") << cast("unsigned", count)), node(lit("1u"))))
        return cast(isa.mask_type, X(c_ast.TernaryOp(node(count >= isa.lanes), node(full), node(part))))


    def _row_expr(self, tree, n):
        if isinstance(tree, tuple):
            if tree[0] == "cast":
                return cast(tree[1], self._row_expr(tree[2], n))
            if tree[0] in ("-", "<<"):
                return X(c_ast.BinaryOp(tree[0], node(self._row_expr(tree[1], n)),
                                        node(self._row_expr(tree[2], n))))
            return call(tree[0], *[self._row_expr(t, n) for t in tree[1:]])
        if tree == "$n":
            return n
        return lit(str(tree))


def _params(rows_a: bool, rows_c: bool, a_stride: bool, extents=("K",), mask_type=None,
            a_k_stride: bool = True):
    out = [("int64_t", e, "value") for e in extents] + [("float", "A", "in")]
    if a_stride and rows_a:
        out.append(("int64_t", "a_si", "value"))
    if a_k_stride:
        out.append(("int64_t", "a_sk", "value"))
    out += [("float", "B", "in"), ("int64_t", "b_sk", "value"), ("float", "C", "out")]
    if rows_c:
        out.append(("int64_t", "c_si", "value"))
    if mask_type is not None:
        out.append((mask_type, "m", "value"))
    return out


# ----------------------------------------------------------------------------- "c" accumulation
def _latency_sets(isa, MR: int, nv: int) -> int:
    """Accumulator sets of a "c" tile: one, or (a narrow tail tile, "rows" reading) as many
    as hide the FMA latency within the register budget, k split among them (a 5 x 8 tail
    of a 1x1 conv at 7x7 ran its k loop at one FMA chain step per latency: 0.8 of a full
    5 x 16 tile's time for an eighth of its columns)."""
    acc = MR * nv
    if acc >= FMA_LATENCY_SETS or isa.lanes == 1:
        return 1
    room = (isa.vregs - nv - 2) // acc
    return max(1, min(-(-FMA_LATENCY_SETS // acc), room, 4))


def _tile_body(isa, MR: int, nv: int, prefetch: int, masked: bool, a_read: str,
               zero: bool = False) -> list:
    ops, W, vt = Ops(isa), isa.lanes, isa.vtype
    A, B, C, k = X("A"), X("B"), X("C"), X("k")
    sets = _latency_sets(isa, MR, nv) if a_read == "rows" else 1

    def mask(v):
        return "m" if masked and v == nv - 1 else None

    def acc(q, r, v):
        return f"c{r}_{v}" if q == 0 else f"s{q}_{r}_{v}"
    out = [decl("int64_t", "k")]
    if a_read == "rows":
        out += [decl("float", f"a{r}", A + r * X("a_si"), const=True, ptr=True) for r in range(MR)]
    out += [decl(vt, f"c{r}_{v}", ops.zero() if zero else
                 ops.load(C, r * X("c_si"), v * W, mask=mask(v)))
            for r in range(MR) for v in range(nv)]
    out += [decl(vt, acc(q, r, v), ops.zero()) for q in range(1, sets) for r in range(MR)
            for v in range(nv)]

    def step(u):
        """k step u of the loop body, into accumulator set u."""
        bu = B + u * X("b_sk") if u else B
        body = [decl(vt, f"b{v}", ops.load(bu, v * W, mask=mask(v))) for v in range(nv)]
        for r in range(MR):
            if a_read == "rows":
                body.append(decl(ops.a_type, f"a{r}v", ops.a_value(X(f"a{r}")[u * X("a_sk") if u else 0])))
            for v in range(nv):
                if a_read == "rows":
                    upd = ops.fma_a(acc(u, r, v), f"a{r}v", f"b{v}")
                else:
                    q, lane = divmod(r, W)
                    src = f"a{q}" if isa.lane_width == W else \
                        f"a{q}{'lo' if lane < isa.lane_width else 'hi'}"
                    upd = call(isa.lane_fma, acc(u, r, v), f"b{v}", src, lane % isa.lane_width)
                body.append(assign(acc(u, r, v), upd))
        return body if u == 0 else [block(body)]

    def advance(width):
        step_a = X("a_sk") if width == 1 else width * X("a_sk")
        out = [assign(f"a{r}", step_a, "+=") for r in range(MR)] if a_read == "rows" \
            else [assign(A, "a_sk", "+=")]
        return out + [assign(B, "b_sk" if width == 1 else width * X("b_sk"), "+=")]

    loop = [ops.prefetch(B + prefetch * X("b_sk"))] if prefetch else []
    if a_read == "lanes":
        for q in range(MR // W):
            loop.append(decl(vt, f"a{q}", ops.load(A, q * W)))
            if isa.lane_width < W:
                loop += [decl(isa.half_type, f"a{q}lo", call(isa.half_low, f"a{q}")),
                         decl(isa.half_type, f"a{q}hi", call(isa.half_high, f"a{q}"))]
    if sets > 1:
        bulk = loop + [s for u in range(sets) for s in step(u)] + advance(sets)
        out.append(c_ast.For(assign(k, 0), node(k + sets <= "K"), assign(k, sets, "+="), block(bulk)))
        out.append(c_ast.For(None, node(k < "K"), c_ast.UnaryOp("++", node(k)),
                             block(step(0) + advance(1))))
    else:
        loop += step(0) + advance(1)
        out.append(c_ast.For(assign(k, 0), node(k < "K"), c_ast.UnaryOp("++", node(k)), block(loop)))
    for r in range(MR):
        for v in range(nv):
            total_ = X(node(acc(0, r, v)))
            for q in range(1, sets):
                total_ = ops.add(total_, acc(q, r, v))
            out.append(ops.store(total_, C, r * X("c_si"), v * W, mask=mask(v)))
    return out


def _check_tile(isa, MR: int, NR: int, a_read: str):
    if MR < 1 or NR < 1 or NR % isa.lanes:
        raise ValueError(f"microkernel: {MR}x{NR} is not a tile of whole {isa.name} vectors")
    if a_read == "lanes" and (isa.lane_fma is None or MR % isa.lanes):
        raise ValueError(f"microkernel: {isa.name} has no by-lane FMA for {MR} packed rows")
    if a_read not in ("rows", "lanes"):
        raise ValueError(f"microkernel: A is read as 'rows' or 'lanes', not {a_read!r}")


def tile_kernel(name: str, isa, MR: int, NR: int, prefetch: int = 0, a_read: str = "rows",
                zero: bool = False) -> str:
    """C[i][j] += sum_k A[i*a_si + k*a_sk] * B[k*b_sk + j] on an MR x NR tile held in
    registers.  a_read "rows": each row broadcast from memory (a_si any stride);
    "lanes": A packed (a_si = 1, no parameter), MR values loaded as vectors and
    multiplied by lane.  `prefetch` > 0: the row of B that many k steps ahead.
    `zero`: C = the sum instead, C not read (the accumulators start at zero)."""
    _check_tile(isa, MR, NR, a_read)
    params = _params(True, True, a_read == "rows")
    return function(name, params, _tile_body(isa, MR, NR // isa.lanes, prefetch, False, a_read,
                                             zero), noinline=True)


def tile_dispatch(name: str, isa, MR: int, NR: int, prefetch: int = 0, masked: bool = False,
                  rows: bool = False, zero: bool = False) -> str:
    """The tile kernel taking the number of rows M <= MR first (`rows`) and the number of
    columns N <= NR (`masked`, ISAs with masks): each call runs the variant with just
    enough rows and vectors (the last one masked), nothing when M or N <= 0, so tails
    need no scalar code.  Without either it is `tile_kernel`.  `zero`: as there."""
    if not masked and not rows:
        return tile_kernel(name, isa, MR, NR, prefetch, zero=zero)
    _check_tile(isa, MR, NR, "rows")
    mask_type = tile_mask_type(isa)
    if masked and mask_type is None:
        raise ValueError(f"microkernel: {isa.name} has no lane masks")
    W, nv = isa.lanes, NR // isa.lanes
    row_counts = range(1, MR + 1) if rows else (MR,)
    vec_counts = range(1, nv + 1) if masked else (nv,)
    whole = masked and _costly_masks(isa)     # whole tiles without masks
    out = []
    for r in row_counts:
        for v in vec_counts:
            params = _params(True, True, True, mask_type=mask_type if masked else None)
            out.append(function(f"{name}_r{r}v{v}", params,
                                _tile_body(isa, r, v, prefetch, masked, "rows", zero),
                                noinline=True))
        if whole:
            out.append(function(f"{name}_r{r}", _params(True, True, True),
                                _tile_body(isa, r, nv, prefetch, False, "rows", zero),
                                noinline=True))

    def calls(v, mask):
        args = ["K", "A", "a_si", "a_sk", "B", "b_sk", "C", "c_si"] + ([] if mask is None else [mask])
        kname = f"{name}_r{{}}" if mask is None and whole else f"{name}_r{{}}v{v}"
        if not rows:
            return [call(kname.format(MR), *args)]
        cases = [c_ast.Case(node(r), [node(call(kname.format(r), *args)), c_ast.Break()])
                 for r in row_counts]
        return [c_ast.Switch(node("M"), c_ast.Compound(cases + [c_ast.Default([c_ast.Break()])]))]
    if not masked:
        body = calls(nv, None)
    else:
        chain = None
        for v in range(1, nv + 1):   # built inside out: the widest test comes first
            rest = X("N") - (v - 1) * W
            chain = c_ast.If(node(X("N") > (v - 1) * W), block(calls(v, Ops(isa).mask(rest))), chain)
        if whole:
            chain = c_ast.If(node(X("N") >= NR), block(calls(nv, None)), chain)
        body = [chain]
    extents = (("M",) if rows else ()) + (("N",) if masked else ()) + ("K",)
    out.append(function(name, _params(True, True, True, extents), body))
    return "\n".join(out)


# ----------------------------------------------------------------------------- "zero" accumulation
def blis_kernel(name: str, isa, MR: int, NR: int, unroll: int = 1, prefetch: int = 0,
                a_unit: bool = True, a_k_unit: bool = False) -> str:
    """C += A @ B on an MR x NR tile, accumulators from zero (see the module docstring).
    a_unit: A packed (rows contiguous), else rows a_si apart; a one-row kernel has no
    row strides at all (its definition has no i).  a_k_unit: A contiguous along k (A
    read in place, row-major): no a_sk parameter, so the compiler keeps one register
    per row offset instead of spilling them when the tile is tall."""
    _check_tile(isa, MR, NR, "rows")
    if unroll < 1 or prefetch < 0:
        raise ValueError(f"microkernel: unroll must be >= 1 and prefetch >= 0, got {unroll}, {prefetch}")
    ops, W, vt = Ops(isa), isa.lanes, isa.vtype
    nv = NR // W
    sets = unroll if MR * nv < FMA_LATENCY_SETS else 1
    A, B, C, k = X("A"), X("B"), X("C"), X("k")
    lines = range(0, NR * 4, CACHE_LINE)

    def crow(r):
        return r * X("c_si") if r else 0

    def arow(r):
        return (r if a_unit else r * X("a_si")) if r else 0

    def ak(u):
        return u if a_k_unit else u * X("a_sk")
    body = [decl("int64_t", "k", 0)]
    body += [decl(vt, f"c{q}_{r}_{v}", ops.zero()) for q in range(sets) for r in range(MR)
             for v in range(nv)]

    def step(u, q, pf):
        out = [decl(vt, f"b{u}_{v}", ops.load(B, u * X("b_sk"), v * W)) for v in range(nv)]
        if pf:
            out += [ops.prefetch(B + X(c_ast.BinaryOp("+", node(u), node(pf))) * X("b_sk") + line // 4)
                    for line in lines]
        for r in range(MR):
            acc = [decl(ops.a_type, "a", ops.a_value(A[ak(u) + arow(r)]))]
            acc += [assign(f"c{q}_{r}_{v}", ops.fma_a(f"c{q}_{r}_{v}", "a", f"b{u}_{v}"))
                    for v in range(nv)]
            out.append(block(acc))
        return out

    def loop(width, margin, dist):
        inner = [s for u in range(width) for s in step(u, u % sets, dist)]
        inner += [assign(A, ak(width), "+="), assign(B, width * X("b_sk"), "+=")]
        body.append(c_ast.For(None, node(k + (width + margin) <= "K"), assign(k, width, "+="), block(inner)))
    loop(unroll, max(prefetch, C_PREFETCH_STEPS), prefetch)
    body += [ops.prefetch(C + crow(r) + line // 4) for r in range(MR) for line in lines]
    if unroll > 1:
        loop(unroll, 0, 0)
    tail = step(0, 0, 0) + [assign(A, ak(1), "+="), assign(B, "b_sk", "+=")]
    body.append(c_ast.For(None, node(k < "K"), c_ast.UnaryOp("++", node(k)), block(tail)))
    for r in range(MR):
        for v in range(nv):
            acc = X(node(f"c0_{r}_{v}"))
            for q in range(1, sets):
                acc = ops.add(acc, f"c{q}_{r}_{v}")
            body.append(ops.store(ops.add(ops.load(C, crow(r), v * W), acc), C, crow(r), v * W))
    params = _params(MR > 1, MR > 1, not a_unit, a_k_stride=not a_k_unit)
    return function(name, params, body)


def blis_rows(name: str, isa, MR: int, NR: int, unroll: int = 1, prefetch: int = 0,
              a_unit: bool = True, a_k_unit: bool = False) -> str:
    """`blis_kernel` taking the number of rows M <= MR first: M = MR runs the full tile,
    fewer rows (the last tile of a matrix whose rows are no multiple of MR) a kernel of
    just those rows (unrolled alike, B not prefetched: it is rare), M <= 0 nothing; so a
    row tail needs no scalar code."""
    out, cases = [], []
    for r in range(1, MR + 1):
        vname = f"{name}_r{r}"
        out.append(blis_kernel(vname, isa, r, NR, unroll, prefetch if r == MR else 0,
                               a_unit, a_k_unit))
        args = [p[1] for p in _params(r > 1, r > 1, not a_unit, a_k_stride=not a_k_unit)]
        cases.append(c_ast.Case(node(r), [node(call(vname, *args)), c_ast.Break()]))
    body = [c_ast.Switch(node("M"), c_ast.Compound(cases[::-1] + [c_ast.Default([c_ast.Break()])]))]
    params = _params(True, True, not a_unit, ("M", "K"), a_k_stride=not a_k_unit)
    out.append(function(name, params, body))
    return "\n".join(out)

