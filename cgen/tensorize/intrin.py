"""Tensor intrinsics: a micro-kernel declared by its compute definition.

The definition (a te compute with one sum reduction of a product of two
loads) fixes each loop's role by which operands it indexes; a loop nest is
replaced by the kernel only when its store has the same shape, its loops play
the same roles, fixed extents agree and unit strides are unit.  The kernel's C
body is given per vector ISA.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..te.expr import Binary, Cast, Compare, Const, Logic, Reduce, TensorLoad, Var, INDEX
from ..te.visit import free_vars
from ..lower.ir import Address, CallKernel, For, IfThenElse, Load, Store, seq
from ..lower.simplify import linear, simplify_expr

OPERANDS = ("a", "b", "c")


class TensorizeError(ValueError):
    pass


@dataclass(frozen=True)
class KernelSource:
    name: str
    source: str


@dataclass(frozen=True)
class TensorIntrin:
    name: str
    roles: tuple                 # loop roles, e.g. ("i", "j", "k")
    operands: dict               # "a"/"b"/"c" -> frozenset of roles that index it
    dtypes: dict                 # "a"/"b"/"c" -> dtype of the loaded/stored elements
    casts: dict                  # "a"/"b" -> dtype they are cast to before the multiply, or None
    fixed: dict                  # role -> extent the kernel requires
    unit: frozenset              # (operand, role) pairs whose stride must be 1
    body: KernelSource           # the C definition for one ISA
    # the same kernel with C = the sum (accumulators from zero, C not read), same
    # parameters: called where the reduction's zero init covers exactly the tile
    zero_body: KernelSource | None = None

    # the kernel's C parameters, in order
    def params(self) -> list:
        out = [("extent", r) for r in self.roles if r not in self.fixed]
        for op in OPERANDS:
            out.append(("ptr", op))
            for r in self.roles:
                if r in self.operands[op] and (op, r) not in self.unit:
                    out.append(("stride", op, r))
        return out


def from_compute(name: str, out_tensor, fixed: dict, unit, body: KernelSource,
                 zero_body: KernelSource | None = None) -> TensorIntrin:
    """Derive an intrinsic from a te definition such as
    C[i, j] = sum_k A[i, k] * B[k, j]  (optionally with casts of A and B)."""
    op = out_tensor.op
    red = op.body
    if not (isinstance(red, Reduce) and red.combiner == "sum" and red.condition is None):
        raise TensorizeError(f"intrinsic {name}: definition must be a plain sum reduction")
    src = red.source
    if not (isinstance(src, Binary) and src.op == "*"):
        raise TensorizeError(f"intrinsic {name}: definition must sum a product of two loads")
    role_of = {iv.var: iv.name for iv in tuple(op.axis) + tuple(red.axes)}
    operands, dtypes, casts = {}, {}, {}
    for tag, x in (("a", src.a), ("b", src.b)):
        cast = None
        if isinstance(x, Cast):
            cast, x = x.dtype, x.value
        if not isinstance(x, TensorLoad):
            raise TensorizeError(f"intrinsic {name}: operand {tag} must be a tensor load")
        used = set()
        for idx in x.indices:
            used |= {role_of[v] for v in free_vars(idx) if v in role_of}
        operands[tag] = frozenset(used)
        dtypes[tag] = x.dtype
        casts[tag] = cast
    operands["c"] = frozenset(iv.name for iv in op.axis)
    dtypes["c"] = op.dtype
    roles = tuple(iv.name for iv in tuple(op.axis) + tuple(red.axes))
    return TensorIntrin(name, roles, operands, dtypes, casts, dict(fixed), frozenset(unit), body,
                        zero_body)


# ---------------------------------------------------------------------------
# matching a loop nest


def _perfect_nest(loop: For):
    loops = [loop]
    body = loop.body
    while isinstance(body, For):
        loops.append(body)
        body = body.body
    if not isinstance(body, Store):
        raise TensorizeError("the loop nest under the tensorized axis is not a perfect nest ending in one store")
    return loops, body


def _operand(x, intr: TensorIntrin, tag: str):
    want_cast = intr.casts[tag]
    if want_cast is not None:
        if not (isinstance(x, Cast) and x.dtype == want_cast):
            return None
        x = x.value
    if not (isinstance(x, Load) and x.dtype == intr.dtypes[tag]):
        return None
    return x


def tensorize_loop(loop: For, intr: TensorIntrin, init=None):
    """The kernel call replacing `loop`, guarded by a runtime check of the fixed
    extents when they are not constant; the original nest stays as the fallback.
    `init` (zero_init_covers it): the zero init before the loop, folded into a call of
    the zero-start kernel; the fallback then runs it first.  None: the tile is never full
    (keep the scalar nest)."""
    loops, store = _perfect_nest(loop)
    val = store.value
    if not (isinstance(val, Binary) and val.op == "+" and isinstance(val.a, Load)
            and val.a.buffer is store.buffer and val.a.index == store.index
            and isinstance(val.b, Binary) and val.b.op == "*"):
        raise TensorizeError(f"{intr.name}: the store is not an accumulation acc = acc + x * y")
    ld = {}
    for first, second in ((val.b.a, val.b.b), (val.b.b, val.b.a)):
        a, b = _operand(first, intr, "a"), _operand(second, intr, "b")
        if a is not None and b is not None:
            ld = {"a": a, "b": b}
            break
    if not ld:
        raise TensorizeError(f"{intr.name}: operand dtypes or casts differ from the intrinsic's definition")
    if store.buffer.dtype != intr.dtypes["c"]:
        raise TensorizeError(f"{intr.name}: accumulator is {store.buffer.dtype}, intrinsic wants {intr.dtypes['c']}")
    index = {"a": ld["a"].index, "b": ld["b"].index, "c": store.index}
    coefs = {}
    for tag, idx in index.items():
        terms, _ = linear(simplify_expr(idx))
        for lp in loops:
            if any(lp.var in free_vars(t) for t in terms if t is not lp.var):
                raise TensorizeError(f"{intr.name}: {tag} is not indexed linearly by loop {lp.var.name}")
        coefs[tag] = {lp.var: terms.get(lp.var, 0) for lp in loops}
    # each loop's role is the set of operands it indexes
    sig_role = {}
    for r in intr.roles:
        sig = frozenset(t for t in OPERANDS if r in intr.operands[t])
        sig_role[sig] = r
    role_loop = {}
    for lp in loops:
        sig = frozenset(t for t in OPERANDS if coefs[t][lp.var] != 0)
        r = sig_role.get(sig)
        if r is None or r in role_loop:
            raise TensorizeError(f"{intr.name}: loop {lp.var.name} indexes {sorted(sig)}, "
                                 f"which plays no role of the intrinsic {intr.roles}")
        role_loop[r] = lp
    missing = [r for r in intr.roles if r not in role_loop]
    if missing:
        # a role loop of extent 1 was simplified away: the tile is never full when that
        # role's extent is fixed (keep the scalar nest); otherwise it runs with extent 1
        if any(r in intr.fixed and intr.fixed[r] != 1 for r in missing):
            return None
        for r in missing:
            v = Var(f"cg_unit_{r}")
            role_loop[r] = For(v, Const(0, INDEX), Const(1, INDEX), "serial", store)
            for tag in OPERANDS:
                coefs[tag][v] = 0
    for tag, r in intr.unit:
        if r not in missing and coefs[tag][role_loop[r].var] != 1:
            raise TensorizeError(f"{intr.name}: operand {tag} must be contiguous along {r} "
                                 f"(stride {coefs[tag][role_loop[r].var]})")
    zero = {lp.var: Const(0, INDEX) for lp in loops}
    from ..te.visit import substitute
    args = []
    for p in intr.params():
        if p[0] == "extent":
            args.append(role_loop[p[1]].extent)
        elif p[0] == "ptr":
            node = ld[p[1]] if p[1] != "c" else store
            args.append(Address(node.buffer, simplify_expr(substitute(index[p[1]], zero))))
        else:
            args.append(Const(coefs[p[1]][role_loop[p[2]].var], INDEX))
    call = CallKernel(intr.body.name, tuple(args)) if init is None else \
        CallKernel(intr.zero_body.name, tuple(args), init)
    checks = []
    for r, n in intr.fixed.items():
        e = role_loop[r].extent
        if isinstance(e, Const):
            if e.value != n:
                return None  # never full: keep the scalar nest
            continue
        checks.append(Compare("==", e, Const(n, INDEX)))
    if any(not (isinstance(lp.min, Const) and lp.min.value == 0) for lp in loops):
        raise TensorizeError(f"{intr.name}: loops must start at 0")
    fallback = seq(init, _serial(loop))
    if not checks:
        return call
    cond = checks[0]
    for c in checks[1:]:
        cond = Logic("&&", cond, c)
    return IfThenElse(cond, call, fallback)


def zero_init_covers(init, loop: For, intr: TensorIntrin) -> bool:
    """Whether `init`, a nest storing zero, writes exactly the elements of C that the
    tensorized nest `loop` accumulates into (same loops, same store), so the intrinsic's
    zero-start kernel may replace both."""
    if intr.zero_body is None or not isinstance(init, For):
        return False
    try:
        loops, store = _perfect_nest(loop)
    except TensorizeError:
        return False
    iloops, ist = [], init
    while isinstance(ist, For):
        iloops.append(ist)
        ist = ist.body
    if not (isinstance(ist, Store) and ist.buffer is store.buffer and ist.index == store.index
            and isinstance(ist.value, Const) and ist.value.value == 0):
        return False
    used = free_vars(store.index)

    def span(lps):
        return {lp.var: (lp.min, lp.extent) for lp in lps}
    return span(iloops) == span(lp for lp in loops if lp.var in used)


def _serial(loop: For):
    body = loop.body
    if isinstance(body, For):
        body = _serial(body)
    kind = "serial" if loop.kind == "tensorized" else loop.kind
    return For(loop.var, loop.min, loop.extent, kind, body, loop.pragmas)
