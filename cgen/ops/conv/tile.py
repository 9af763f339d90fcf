"""The MR x NR register-tile GEMM intrinsic of the conv templates (rows of A with any
strides, B optionally prefetched, row and column tails without scalar code)."""
from __future__ import annotations

from ... import te
from ...codegen.isa import isa_for
from ...tensorize import from_compute, KernelSource, TensorizeError
from targets import resolve


def tile_kernel_shape_ok(target, MR: int, NR: int) -> bool:
    """Whether an MR x NR register tile kernel exists and fits the register file."""
    regs, lanes = target.vector_registers, target.lanes("float32")
    if not regs or NR % lanes:
        return False
    nv = NR // lanes
    return 1 <= MR and 1 <= nv <= 4 and MR * nv + nv + 1 <= regs


def _tile_body(isa, MR: int, nv: int, prefetch: int, masked: bool) -> list:
    """Statements of an MR x (nv vectors) tile update; with `masked`, the last vector's
    loads and stores use the mask `m` (C99 intrinsics from the ISA table)."""
    W, vt = isa.lanes, isa.vtype

    def fma(acc, a, b):
        args = {"acc": acc, "a": a, "b": b}
        return f"{isa.fma}({', '.join(args[x] for x in isa.fma_order)})"

    def load(ptr, v):
        return f"{isa.mask_load}(m, {ptr})" if masked and v == nv - 1 else f"{isa.load}({ptr})"

    def store(ptr, v, x):
        return (f"{isa.mask_store}({ptr}, m, {x});" if masked and v == nv - 1
                else f"{isa.store}({ptr}, {x});")
    L = ["  int64_t k;"]
    for r in range(MR):
        L.append(f"  const float *a{r} = A + {r} * a_si;")
    for r in range(MR):
        for v in range(nv):
            L.append(f"  {vt} c{r}_{v} = {load(f'C + {r} * c_si + {v * W}', v)};")
    L.append("  for (k = 0; k < K; ++k) {")
    if prefetch:
        L.append(f"    __builtin_prefetch(B + {prefetch} * b_sk);")
    for v in range(nv):
        L.append(f"    {vt} b{v} = {load(f'B + {v * W}', v)};")
    for r in range(MR):
        L.append(f"    {vt} a{r}v = {isa.set1}(a{r}[0]);")
        for v in range(nv):
            L.append(f"    c{r}_{v} = {fma(f'c{r}_{v}', f'a{r}v', f'b{v}')};")
    for r in range(MR):
        L.append(f"    a{r} += a_sk;")
    L.append("    B += b_sk;")
    L.append("  }")
    for r in range(MR):
        for v in range(nv):
            L.append("  " + store(f"C + {r} * c_si + {v * W}", v, f"c{r}_{v}"))
    return L


_TILE_ARGS = ("const float *restrict A, int64_t a_si, int64_t a_sk, const float *restrict B, "
              "int64_t b_sk, float *restrict C, int64_t c_si")


def _tile_kernel_source(name: str, isa, MR: int, NR: int, prefetch: int = 0,
                        masked: bool = False, rows: bool = False) -> str:
    """C[i][j] += sum_k A[i*a_si + k*a_sk] * B[k*b_sk + j] on an MR x NR tile held in
    registers; rows of A are broadcast from memory (any strides).  With `prefetch`,
    the row of B that many steps of k ahead is prefetched (weights streaming in).

    A `rows` kernel takes the number of rows M <= MR first and a `masked` one the
    number of columns N <= NR: each runs the variant with just enough rows and vectors
    (the last vector masked), nothing when M or N <= 0; so tails need no scalar code."""
    nv, W = NR // isa.lanes, isa.lanes
    if not masked and not rows:
        return "\n".join([f"static inline void {name}(int64_t K, {_TILE_ARGS}) {{"]
                         + _tile_body(isa, MR, nv, prefetch, False) + ["}"])
    out = []
    row_counts = range(1, MR + 1) if rows else (MR,)
    vec_counts = range(1, nv + 1) if masked else (nv,)
    mparam = f", {isa.mask_type} m" if masked else ""
    for r in row_counts:
        for v in vec_counts:
            out.append(f"static inline void {name}_r{r}v{v}(int64_t K, {_TILE_ARGS}{mparam}) {{")
            out += _tile_body(isa, r, v, prefetch, masked) + ["}"]
    head = ("int64_t M, " if rows else "") + ("int64_t N, " if masked else "")
    out.append(f"static inline void {name}({head}int64_t K, {_TILE_ARGS}) {{")

    def calls(v, mask, ind):
        args = "K, A, a_si, a_sk, B, b_sk, C, c_si" + (f", {mask}" if masked else "")
        if not rows:
            return [f"{ind}{name}_r{MR}v{v}({args});"]
        L = [f"{ind}switch (M) {{"]
        for r in row_counts:
            L.append(f"{ind}case {r}: {name}_r{r}v{v}({args}); break;")
        L.append(f"{ind}default: break;")
        L.append(f"{ind}}}")
        return L
    if not masked:
        out += calls(nv, None, "  ")
    else:
        for v in range(nv, 0, -1):
            rest = f"N - {(v - 1) * W}"
            mask = f"({isa.mask_type}) (({rest}) >= {W} ? 0xFFFFu : ((1u << (unsigned) ({rest})) - 1u))"
            out.append(f"  {'if' if v == nv else 'else if'} (N > {(v - 1) * W}) {{")
            out += calls(v, mask, "    ")
            out.append("  }")
    out.append("}")
    return "\n".join(out)


def tile_intrin(target, MR: int, NR: int, prefetch: int = 0, masked: bool = False,
                rows: bool = False):
    """The MR x NR register-tile GEMM intrinsic, A with arbitrary strides (conv rows);
    `prefetch` > 0 prefetches B that many steps of k ahead.  `masked` (ISAs with
    masks) takes any number of columns up to NR, `rows` any number of rows up to MR,
    so tails need no scalar code."""
    tgt = resolve(target)
    if not tile_kernel_shape_ok(tgt, MR, NR):
        raise TensorizeError(f"no {MR}x{NR} register tile kernel for target {tgt.name}")
    isa = isa_for(tgt)
    if masked and not (isa.masked and isa.lanes == 16):
        raise TensorizeError(f"no masked tile kernel on {isa.name}")
    name = (f"cg_tile_{MR}x{NR}{'m' if masked else ''}{'r' if rows else ''}"
            f"{f'_pf{prefetch}' if prefetch else ''}_{isa.name.replace('-', '_')}")
    A = te.placeholder((MR, 1), "float32", name="A")
    B = te.placeholder((1, NR), "float32", name="B")
    k = te.reduce_axis((0, 1), name="k")
    C = te.compute((MR, NR), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")
    fixed = {}
    if not rows:
        fixed["i"] = MR
    if not masked:
        fixed["j"] = NR
    return from_compute(name, C, fixed, {("b", "j"), ("c", "j")}, KernelSource(
        name, _tile_kernel_source(name, isa, MR, NR, prefetch, masked, rows)))


def masked_tiles_ok(target) -> bool:
    isa = isa_for(target)
    return isa is not None and isa.masked and isa.lanes == 16

