"""Model emitter: group kernels + a static memory plan -> NAME.h, NAME.c, manifest, CMake.

    src = emit_model(graph, kernels, target, "lenet")
    src.header, src.source, src.manifest (dict), src.cmake, src.report (MemoryReport)
    src.write(out_dir) -> [paths]

Storage: graph inputs and outputs are the caller's buffers (a kernel producing
a graph output writes straight into it), weights are `static const` arrays,
and every other value lives at a fixed offset of one caller-provided
workspace of `NAME_WORKSPACE_BYTES`.  Offsets come from cgen.graph.memory:
each buffer is an interval from the step of the kernel writing it to the
last step reading it; each kernel's scratch (its large local buffers) is an
interval of its own step.  Alias groups (reshape) write nothing: their output
is their input's buffer, whose lifetime covers every reader of either.  A concat
whose parts are contiguous ranges of its output is written in place where the plan
does not grow (memory.concat_views, choose_views): each part's producer writes its
range of the concat's buffer, and the concat is not called; a split likewise is read
in place (memory.split_views): each part is its range of the split's input.

The C file holds no mutable globals, calls no allocator and includes only
<stdint.h>, <math.h> and, behind the ISA's predefined macro, the intrinsics
header: kernels with intrinsics are emitted twice (cgen.codegen.c.emit_unit),
so the file also compiles with nothing but -std=c99.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import re
from pathlib import Path

import numpy as np
from pycparser import c_ast

from ..codegen.c import C_KEYWORDS, C_TYPES, STACK_LIMIT as C_STACK_LIMIT, emit_unit
from ..codegen.isa import isa_for
from .entry import Call, Param, buffer, entry_point, no_scratch, workspace_at
from .graph_ir import Graph, ModelError
from .kernels import kernel_target
from .loop_lower import LoopCall, LoopKernel, layout as loop_layout, statement as loop_statement
from .memory import (ALIGN, choose_views, concat_views, greedy_by_size, lifetimes, peak_live,
                     plan, split_views, storage)

STACK_LIMIT = C_STACK_LIMIT["model"]   # see codegen.c.STACK_LIMIT
WORKSPACE_ALIGN = 16        # alignment the caller's workspace must have


# ====================================================================== names
def c_identifier(name: str, taken: set, prefix: str = "") -> str:
    """A C identifier from `name` (sanitised, unique in `taken`, updated)."""
    base = prefix + (re.sub(r"[^A-Za-z0-9_]", "_", name) or "v")
    if base[0].isdigit():
        base = "v" + base
    if base.startswith("cg_") or base.startswith("__"):
        base = "u" + base
    out, k = base, 1
    while out in taken or out in C_KEYWORDS:
        out = f"{base}_{k}"
        k += 1
    taken.add(out)
    return out


def check_model_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or "") or name in C_KEYWORDS:
        raise ModelError(f"model name {name!r} must be a C identifier", "bad_input")
    return name


# ====================================================================== report
@dataclass(frozen=True)
class LayerRow:
    index: int
    kernel: str
    ops: str
    template: str
    output: str
    shape: tuple
    dtype: str
    bytes: int
    storage: str            # "workspace", "output", "alias", "input", "in place" (a
                            # concat or split made in place, not called)
    offset: int | None
    scratch_bytes: int
    scratch_offset: int | None
    weight_bytes: int
    flops: int
    config: dict | None
    note: str
    fallback: str = ""      # why a template did not build this kernel ("" when none)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class MemoryReport:
    workspace_bytes: int        # what NAME_WORKSPACE_BYTES says, and the C addresses
    weight_bytes: int
    activation_bytes: int       # peak bytes of live intermediates (lower bound of a plan)
    greedy_by_size_bytes: int
    algorithm: str
    io_bytes: int               # the caller's input and output buffers
    rows: tuple

    @property
    def fallbacks(self) -> tuple:
        """The rows whose kernel is the plain loop nest because no template built it."""
        return tuple(r for r in self.rows if r.fallback)

    def totals(self) -> str:
        fb = len(self.fallbacks)
        return (f"workspace {self.workspace_bytes} bytes (RAM), weights {self.weight_bytes} "
                f"bytes (flash), inputs+outputs {self.io_bytes} bytes"
                + (f"; {fb} kernel{'s' * (fb != 1)} fell back to plain loops (see the report)"
                   if fb else ""))

    def table(self) -> str:
        head = (f"{'#':>3}  {'kernel':<20} {'ops':<28} {'template':<18} {'output':<26} "
                f"{'bytes':>9} {'offset':>9} {'scratch':>8} {'weights':>9}")
        lines = [head]
        for r in self.rows:
            out = f"{r.output}{list(r.shape)}"
            off = "-" if r.offset is None else str(r.offset)
            if r.storage not in ("workspace",):
                off = r.storage
            lines.append(f"{r.index:>3}  {r.kernel[:20]:<20} {r.ops[:28]:<28} "
                         f"{r.template[:18]:<18} {out[:26]:<26} {r.bytes:>9} {off:>9} "
                         f"{r.scratch_bytes:>8} {r.weight_bytes:>9}"
                         + (f"  fallback: {r.fallback}" if r.fallback else ""))
        lines.append(f"plan: {self.algorithm}, {self.workspace_bytes} bytes (greedy by size "
                     f"{self.greedy_by_size_bytes}, peak live activations {self.activation_bytes}"
                     f"); fallbacks: {len(self.fallbacks)} of {len(self.rows)} kernels")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"workspace_bytes": self.workspace_bytes, "weight_bytes": self.weight_bytes,
                "activation_bytes": self.activation_bytes,
                "greedy_by_size_bytes": self.greedy_by_size_bytes, "algorithm": self.algorithm,
                "io_bytes": self.io_bytes, "fallbacks": len(self.fallbacks),
                "layers": [r.to_json() for r in self.rows]}


# ====================================================================== emitted model
@dataclass
class ModelSource:
    name: str
    target: str
    header: str
    source: str
    manifest: dict
    cmake: str
    report: MemoryReport
    inputs: tuple               # (graph name, C name, dtype, shape)
    outputs: tuple
    fast_flags: tuple = ()      # flags that enable the ISA path for the target
    fast_macro: str = ""
    intervals: tuple = field(default=(), repr=False)
    label: str = ""                 # what the model was compiled from (the file's comment)
    stack_limit: int = STACK_LIMIT  # as emitted: a profiling build re-emits with the same
    plan_options: dict = field(default_factory=dict)   # in_place / align, the same again
    views: tuple = ()               # the concat / split kernels made in place (not called)

    @property
    def workspace_bytes(self) -> int:
        return self.report.workspace_bytes

    def files(self) -> dict:
        return {f"{self.name}.h": self.header, f"{self.name}.c": self.source,
                "manifest.json": json.dumps(self.manifest, indent=2) + "\n",
                f"{self.name}.cmake": self.cmake}

    def write(self, out_dir) -> list:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for fname, text in self.files().items():
            p = d / fname
            p.write_text(text)
            paths.append(p)
        return paths


# ====================================================================== literals
def _array_literal(a: np.ndarray) -> str:
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.dtype == np.float32:
        if np.all(np.isfinite(flat)):
            return _rows("%.8ef", flat.astype(np.float64).tolist())
        items = [("%.8ef" % float(v)) if np.isfinite(v) else
                 ("NAN" if np.isnan(v) else ("INFINITY" if v > 0 else "-INFINITY"))
                 for v in flat]
    elif flat.dtype == np.int64:
        items = []
        for v in flat.tolist():
            if v == -2**63:
                items.append("(-9223372036854775807LL - 1)")
            else:
                items.append(f"{v}LL" if abs(v) >= 2**31 else str(v))
    else:
        items = [str(int(v)) for v in flat.tolist()]
    return _rows("%s", items)


def _rows(fmt: str, values: list, per_row: int = 8) -> str:
    """The values as C initializer rows, `per_row` a row, each formatted by `fmt`.  One
    %-format over the whole array: formatting item by item took 20 s of the 80 s that
    compiling YOLO-FPN's 8.5 M weights took."""
    full = len(values) // per_row * per_row
    row = "  " + ", ".join([fmt] * per_row) + ","
    text = "\n".join([row] * (full // per_row)) % tuple(values[:full])
    rest = values[full:]
    if rest:
        last = ("  " + ", ".join([fmt] * len(rest)) + ",") % tuple(rest)
        text = f"{text}\n{last}" if text else last
    return text


def _fast_path(target):
    """(macro, flags) that enable the target's vector path, or ("", ())."""
    isa = isa_for(target)
    if isa is None:
        return "", ()
    return isa.guard_macro, tuple(target.cflags)


# ====================================================================== planning
def _unrestricted(k, r):
    """The kernel, its in-place input and output parameters declared without `restrict`
    (memory.storage gave them one buffer)."""
    from dataclasses import replace
    if not k.outputs or r(k.outputs[0]) == k.outputs[0]:
        return k
    n = len(k.inputs)
    out = k.outputs[0]
    pair = tuple(p.name for a, p in zip(k.inputs, k.func.params) if a.kind == "value"
                 and r(a.name) == r(out) and r.offset(a.name) == r.offset(out))
    if not pair:            # parts of one concat: distinct ranges of its buffer
        return k
    pair += (k.func.params[n].name,)
    return replace(k, func=replace(k.func, aliased=pair), portable=None if k.portable is None
                   else replace(k.portable, aliased=pair))


# a profiling build (emit_model(profile=True)) times each kernel call with a POSIX clock and
# reports "KERNEL SECONDS" on stderr (another prelude: cgen.codegen.harness.PROFILE_EXTERN);
# stderr is made fully buffered first, so a report between two kernels is a copy into
# memory, not a write(2) that would disturb the next kernel's caches
PROFILE_PRELUDE = ("#define _POSIX_C_SOURCE 200809L\n#include <stdio.h>\n#include <time.h>\n"
                   "static double cg_prof_now(void) { struct timespec ts; "
                   "clock_gettime(CLOCK_MONOTONIC, &ts); return (double)ts.tv_sec + 1e-9 * "
                   "(double)ts.tv_nsec; }\n"
                   "static void cg_prof_report(const char *kernel, double s) { "
                   "static char buf[1 << 20]; static int once; "
                   "if (!once) { setvbuf(stderr, buf, _IOFBF, sizeof buf); once = 1; } "
                   "fprintf(stderr, \"%s %.9e\\n\", kernel, s); }\n")


def emit_model(graph: Graph, kernels: list, target, name: str, model_label: str = "",
               stack_limit: int = STACK_LIMIT, profile: bool = False, in_place: bool = False,
               align: int = ALIGN, profile_prelude: str = PROFILE_PRELUDE,
               concat_in_place: bool = True) -> ModelSource:
    """Plan memory and emit the model's C, header, manifest and CMake snippet.

    profile: a profiling build: NAME_run times each kernel call and prints "KERNEL
    SECONDS" to stderr per call (host: POSIX clock; the caller runs NAME_run many times);
    profile_prelude: the C defining cg_prof_now and cg_prof_report for another clock.
    in_place: elementwise kernels write over an input dying there (memory.storage);
    align: the workspace offsets' alignment; concat_in_place: concats whose parts can be
    written into their buffer are, and splits whose parts can be read as ranges of their
    input are (memory.concat_views, split_views), where the plan does not grow."""
    check_model_name(name)
    tgt = kernel_target(target)
    isa = isa_for(tgt)
    values = graph.values()
    values.update({v.name: v for k in kernels for n in k.group.nodes for v in n.outputs})
    # ---------------------------------------------------------------- names
    taken = {"workspace", "ws", "rc", "i", "t", name + "_run"}
    in_names = [c_identifier(v.name, taken) for v in graph.inputs]
    out_names = [c_identifier(v.name, taken) for v in graph.outputs]
    r0, _, _, copies, _ = storage(graph, kernels, values, in_place)   # before any view
    input_index = {v.name: i for i, v in enumerate(graph.inputs)}
    # ---------------------------------------------------------------- constants
    consts = {}
    for k in kernels:
        for a in k.inputs:
            if a.kind == "const" and a.name not in consts:
                arr = k.consts.get(a.name)
                if arr is None:
                    arr = graph.constants[a.name]
                consts[a.name] = np.ascontiguousarray(arr)
    for j, src in copies:
        if src in graph.constants and src not in consts:
            consts[src] = np.ascontiguousarray(graph.constants[src])
    const_names = {c: c_identifier(c, taken, "w_") for c in consts}
    # ---------------------------------------------------------------- kernels
    preamble = []
    in_protos = [f"const {C_TYPES[v.dtype]} *{c}" for v, c in zip(graph.inputs, in_names)]
    out_protos = [f"{C_TYPES[v.dtype]} *{c}" for v, c in zip(graph.outputs, out_names)]
    proto = f"int {name}_run({', '.join(in_protos + out_protos + ['void *workspace'])})"
    preamble.append(f"{proto};")
    preamble.append("")
    weight_bytes = 0
    for c, arr in consts.items():
        weight_bytes += arr.nbytes
        ctype = C_TYPES[str(arr.dtype)]
        preamble.append(f"static const {ctype} {const_names[c]}[{max(arr.size, 1)}] = {{")
        preamble.append(_array_literal(arr) if arr.size else "  0,")
        preamble.append("};")

    def unit(r, skip):
        """The C of the kernels not in `skip` (parameters sharing a buffer under `r`
        without restrict) and, per function, its scratch bytes."""
        live = [_unrestricted(k, r) for k in kernels if not k.is_alias and k.name not in skip]
        # a loop's body kernels: their functions, once each
        funcs = [f for k in live for f in (k.functions() if isinstance(k, LoopKernel) else [k])]
        parts = [(k.func, k.portable, isa, False, stack_limit) for k in funcs]
        src, sizes = emit_unit(parts, preamble, guard_fallbacks=True) if parts else (
            "#include <stdint.h>\n#include <math.h>\n" + "\n".join(preamble) + "\n", [])
        return src, {k.name: s for k, s in zip(funcs, sizes)}, live

    def aliasing(r):
        return [None if u is k else u.func.aliased for k in kernels if not k.is_alias
                for u in [_unrestricted(k, r)]]
    # concats written in place: a candidate's function is emitted only if it is copied after all
    cands = concat_views(graph, kernels, values) if concat_in_place else {}
    if concat_in_place:
        cands.update(split_views(graph, kernels, values, cands))
    body, scratch_of, live = unit(r0, set(cands))
    if cands:
        scratch_of.update(unit(r0, {k.name for k in kernels if k.name not in cands})[1])
    loops = {k.name: loop_layout(k, scratch_of, align) for k in kernels
             if isinstance(k, LoopKernel)}
    scratch_of.update({n: lay.total for n, lay in loops.items()})
    views = choose_views(graph, kernels, values, cands, scratch_of, in_place, align)
    store = storage(graph, kernels, values, in_place, views)
    r, produced, out_bind, copies, reads = store
    if set(views) != set(cands) or aliasing(r) != aliasing(r0):
        body, _, live = unit(r, set(views))
    # ---------------------------------------------------------------- memory plan
    intervals = lifetimes(kernels, values, store, scratch_of)
    pl = plan(intervals, align)
    gbs = greedy_by_size(intervals, align).total if intervals else 0
    pl.check(intervals)
    total = pl.total
    peak = peak_live([iv for iv in intervals if iv.name.startswith("v:")], len(kernels))

    # ---------------------------------------------------------------- the entry point
    def pointer(value: str, dtype: str):
        v = r(value)
        if v in input_index:
            inputs_read.add(v)
            return c_ast.ID(in_names[input_index[v]])
        if v in out_bind:
            return c_ast.ID(out_names[out_bind[v]])
        if v in consts:
            return c_ast.ID(const_names[v])
        used.append(1)
        return buffer(dtype, pl.offsets[f"v:{v}"] + r.offset(value))
    uses_ws = False
    used = []
    inputs_read = set()
    calls = []
    for k in live:
        if k.name in loops:
            uses_ws = True
            calls.append(LoopCall(k.name, loop_statement(
                k, loops[k.name], lambda a, dt: c_ast.ID(const_names[a.name]) if a.kind == "const"
                else pointer(a.name, dt), const_names.get, pl.offsets[f"s:{k.name}"], scratch_of)))
            continue
        args = []
        for a, p in zip(k.inputs, k.func.params):
            if a.kind == "const":
                args.append(c_ast.ID(const_names[a.name]))
            else:
                args.append(pointer(a.name, p.dtype))
        for v, p in zip(k.outputs, k.func.params[len(k.inputs):]):
            args.append(pointer(v, p.dtype))
        if scratch_of[k.name]:
            args.append(workspace_at(pl.offsets[f"s:{k.name}"]))
            uses_ws = True
        else:
            args.append(no_scratch())     # no scratch: the kernel ignores the pointer
        calls.append(Call(k.func.name, tuple(args)))
    out_copies = [(out_names[j], pointer(src, graph.outputs[j].dtype), graph.outputs[j].size)
                  for j, src in copies]
    # an input whose values nothing reads (only its shape mattered, folded at import)
    # stays a parameter of the entry point: keep -Wunused-parameter quiet
    unused = [c for v, c in zip(graph.inputs, in_names) if v.name not in inputs_read]
    if not uses_ws and not used:
        unused.append("ws")
    params = ([Param(c, C_TYPES[v.dtype], True) for v, c in zip(graph.inputs, in_names)]
              + [Param(c, C_TYPES[v.dtype]) for v, c in zip(graph.outputs, out_names)]
              + [Param("workspace", "void")])
    entry = entry_point(f"{name}_run", params, calls, out_copies, unused, profile)
    fast_macro, fast_flags = _fast_path(tgt)
    label = re.sub(r"[^\w.+\- ]", "_", model_label or name)
    head_comment = [
        f"/* {name}.c -- generated by cgen from {label} for target {tgt.name}.",
        f"   Entry point, buffer sizes and shapes: {name}.h.  C99, no allocation, no mutable",
        "   globals; only <stdint.h> and <math.h> (link with -lm).",
    ]
    if fast_macro:
        head_comment.append(f"   Vector path behind {fast_macro}: compile with "
                            f"{' '.join(fast_flags)} (otherwise the portable C path is used). */")
    else:
        head_comment[-1] += " */"
    source = "\n".join(head_comment) + "\n" + body + "\n" + entry
    if profile:
        source = profile_prelude + source

    # ---------------------------------------------------------------- report
    rows = []
    const_used = {}
    for step, k in enumerate(kernels):
        wb = sum(consts[a.name].nbytes for a in k.inputs
                 if a.kind == "const" and a.name not in const_used)
        for a in k.inputs:
            if a.kind == "const":
                const_used.setdefault(a.name, step)
        v = k.outputs[0]
        val = values[v]
        if k.is_alias:
            where, off = "alias", None
        elif v in out_bind:
            where, off = "output", None
        else:
            where, off = ("in place" if k.name in views else "workspace",
                          pl.offsets[f"v:{r(v)}"] + r.offset(v))
        sb = 0 if k.is_alias else scratch_of.get(k.name, 0)
        rows.append(LayerRow(step, k.name, k.describe(), k.template, v, tuple(val.shape),
                             val.dtype, val.nbytes, where, off, sb,
                             pl.offsets.get(f"s:{k.name}") if sb else None, wb, k.flops,
                             k.config, k.note, k.fallback))
    io_bytes = sum(v.nbytes for v in graph.inputs) + sum(v.nbytes for v in graph.outputs)
    report = MemoryReport(total, weight_bytes, peak, gbs, pl.algorithm, io_bytes, tuple(rows))

    # ---------------------------------------------------------------- header
    ins = tuple((v.name, c, v.dtype, tuple(v.shape)) for v, c in zip(graph.inputs, in_names))
    outs = tuple((v.name, c, v.dtype, tuple(v.shape)) for v, c in zip(graph.outputs, out_names))
    header = _header(name, tgt, label, proto, ins, outs, total, weight_bytes, fast_macro,
                     fast_flags)
    cmake = _cmake(name, fast_flags)
    manifest = {
        "name": name, "generator": "cgen", "model": label, "target": tgt.name,
        "target_description": tgt.description, "c_standard": "c99",
        "files": {"header": f"{name}.h", "source": f"{name}.c", "cmake": f"{name}.cmake"},
        "entry_point": proto,
        "fast_path": {"macro": fast_macro, "flags": list(fast_flags)},
        "inputs": [{"name": n, "c_name": c, "dtype": d, "shape": list(s),
                    "bytes": int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize}
                   for n, c, d, s in ins],
        "outputs": [{"name": n, "c_name": c, "dtype": d, "shape": list(s),
                     "bytes": int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize}
                    for n, c, d, s in outs],
        "workspace_bytes": total, "workspace_align": WORKSPACE_ALIGN,
        "weight_bytes": weight_bytes, "memory": report.to_json(),
    }
    return ModelSource(name, tgt.name, header, source, manifest, cmake, report, ins, outs,
                       fast_flags, fast_macro, tuple(intervals), model_label, stack_limit,
                       {"in_place": in_place, "align": align}, tuple(views))


def _header(name, tgt, label, proto, ins, outs, ws, wb, macro, flags) -> str:
    guard = f"CGEN_{name.upper()}_H_"
    L = [f"/* {name}.h -- generated by cgen from {label} for target {tgt.name}. */",
         f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
         "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
         f"/* The caller's workspace: {ws} bytes, aligned to at least {WORKSPACE_ALIGN} bytes",
         "   (malloc'd or static memory); its contents need not persist between calls. */",
         f"#define {name}_WORKSPACE_BYTES {ws}u",
         f"#define {name}_WORKSPACE_ALIGN {WORKSPACE_ALIGN}u",
         f"/* Bytes of weights: static const arrays in {name}.c (flash on a microcontroller). */",
         f"#define {name}_WEIGHT_BYTES {wb}u", "",
         f'#define {name}_TARGET "{tgt.name}"',
         f"/* Vector path: {name}.c uses {macro or 'no intrinsics'}"
         + (f"; compile it with {' '.join(flags)} to enable it (without those flags the "
            "portable C path is compiled)." if macro else "; plain C99.") + " */",
         f'#define {name}_FAST_PATH_MACRO "{macro}"',
         f'#define {name}_FAST_PATH_FLAGS "{" ".join(flags)}"', "",
         f"#define {name}_NUM_INPUTS {len(ins)}", f"#define {name}_NUM_OUTPUTS {len(outs)}", ""]
    for kind, rows in (("INPUT", ins), ("OUTPUT", outs)):
        for n, c, d, s in rows:
            size = int(np.prod(s, dtype=np.int64))
            shape = ", ".join(str(x) for x in s) if s else "1"
            L += [f"/* {kind.lower()} {n!r}: {d} [{', '.join(str(x) for x in s)}] */",
                  f'#define {name}_{kind}_{c}_NAME "{n}"',
                  f'#define {name}_{kind}_{c}_DTYPE "{d}"',
                  f"#define {name}_{kind}_{c}_RANK {len(s)}",
                  f"#define {name}_{kind}_{c}_SHAPE {{{shape}}}",
                  f"#define {name}_{kind}_{c}_SIZE {size}u",
                  f"#define {name}_{kind}_{c}_BYTES {size * np.dtype(d).itemsize}u"]
        L.append("")
    L += ["/* Runs the model once: one pointer per input and output (contiguous row-major",
          "   arrays that do not overlap) and the workspace.  Returns 0. */",
          f"{proto};", "", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
    return "\n".join(L)


def _cmake(name: str, flags) -> str:
    L = [f"# {name}.cmake -- generated by cgen.  In your CMakeLists.txt:",
         f"#   include(path/to/{name}.cmake)",
         f"#   target_link_libraries(your_app PRIVATE {name})",
         f"add_library({name} STATIC ${{CMAKE_CURRENT_LIST_DIR}}/{name}.c)",
         f"target_include_directories({name} PUBLIC ${{CMAKE_CURRENT_LIST_DIR}})",
         f"set_target_properties({name} PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON "
         "C_EXTENSIONS OFF)"]
    if flags:
        L += [f'option({name.upper()}_FAST_PATH "compile {name}.c with the vector flags of the '
              'target it was generated for" ON)',
              f"if({name.upper()}_FAST_PATH)",
              f"  target_compile_options({name} PRIVATE {' '.join(flags)})", "endif()"]
    L += [f"find_library({name.upper()}_LIBM m)", f"if({name.upper()}_LIBM)",
          f"  target_link_libraries({name} PUBLIC ${{{name.upper()}_LIBM}})", "endif()", ""]
    return "\n".join(L)


__all__ = ["emit_model", "ModelSource", "MemoryReport", "LayerRow", "c_identifier",
           "check_model_name", "STACK_LIMIT", "ALIGN"]
