"""The flash a compiled model takes: code, weights and constants, read from its object.

    fr = measure_flash(cm.source, cm.kernels, cm.target)    # FlashReport
    fr.total_bytes == fr.code_bytes + fr.weight_bytes + fr.const_bytes + fr.other_bytes

NAME.c is compiled for the target (the toolchain's cached compile, the flags a
`cgen run` build uses) to an object, and the target's binutils read it:

- `size` (TRIPLE-size, plain `size` for x86 and generic-c) gives the total: its
  Berkeley text + data, everything the image keeps in flash; `size -A` gives
  the sections.  Code is the `.text*` sections.
- `nm -S` gives the weights: the sizes of the `w_*` arrays left in the object
  (gcc folds a small array whose values it can propagate, so this can be below
  the declared weight bytes).  Constants are the rest of `.rodata*` / `.data*`:
  the literals and tables of NAME_run and its kernels (vector constants, jump
  tables).  Other is what remains of the total: unwind tables and notes on
  hosted targets, nothing on cortex-m.

Per kernel: the kernels are `static` and called once, so gcc inlines them all
into NAME_run and the object has no symbol per kernel.  A second object is
built with inlining of functions not declared `inline` turned off (the
micro-kernel helpers, declared `static inline`, are still inlined), and
`nm -S --size-sort` gives each kernel's out-of-line size.  Those sizes add up
to that object's `.text`, not exactly to the built object's (the call
overhead and the inlining differ by a few percent); the total is always the
built object's.  Kernels of identical code share one body (gcc's -fipa-icf,
on at -O2 in both objects): it counts for the first, the others show 0.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import shutil
import subprocess

from .graph_ir import ModelError

# section name prefix -> what it holds (sections not listed are read from the total)
_SECTIONS = ((".text", "code"), (".rodata", "data"), (".srodata", "data"),
             (".data", "data"), (".sdata", "data"))
# nm symbol types of functions and of initialised data
_CODE_TYPES, _DATA_TYPES = set("tTwW"), set("rRdDgGsS")
# turning off the inlining of functions not declared inline, per compiler family
_OUT_OF_LINE = {"gcc": ("-fno-inline-functions-called-once", "-fno-inline-small-functions",
                        "-fno-inline-functions"),
                "clang": ("-fno-inline-functions",)}


@dataclass(frozen=True)
class FlashReport:
    target: str
    tool: str                   # the `size` that measured the total
    code_bytes: int             # .text* of the built object
    weight_bytes: int           # the w_* arrays in it
    const_bytes: int            # the rest of .rodata* and .data*
    other_bytes: int            # the rest of size's text + data (unwind tables, notes)
    kernel_code: tuple          # (kernel, bytes) out of line, in kernel order
    entry_code: int             # NAME_run out of line (the kernels not inlined into it)
    helper_code: int            # shared helpers gcc kept out of line
    bss_bytes: int = 0          # zero-initialised data (RAM; the emitted C has none)
    entry: str = "NAME_run"

    @property
    def total_bytes(self) -> int:
        return self.code_bytes + self.weight_bytes + self.const_bytes + self.other_bytes

    def line(self) -> str:
        other = f" + other {self.other_bytes}" if self.other_bytes else ""
        return (f"flash {self.total_bytes} bytes: code {self.code_bytes} + weights "
                f"{self.weight_bytes} + constants {self.const_bytes}{other} "
                f"({self.tool} of the object built for {self.target})")

    def table(self, weights: dict | None = None) -> str:
        """Code bytes per kernel (out of line) beside its weight bytes (kernel -> bytes)."""
        weights = weights or {}
        lines = [f"{'kernel':<24} {'code':>8} {'weights':>10}"]
        for k, b in self.kernel_code:
            lines.append(f"{k[:24]:<24} {b:>8} {weights.get(k, 0):>10}"
                         + ("  (code folded into an identical kernel's)" if not b else ""))
        lines.append(f"{self.entry[:24]:<24} {self.entry_code:>8} {'':>10}")
        if self.helper_code:
            lines.append(f"{'shared helpers':<24} {self.helper_code:>8} {'':>10}")
        split = sum(b for _, b in self.kernel_code) + self.entry_code + self.helper_code
        lines.append(f"code per kernel: nm -S of a build with the kernels out of line "
                     f"({split} bytes); the built object's .text: {self.code_bytes} bytes")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"flash_bytes": self.total_bytes, "code_bytes": self.code_bytes,
                "weight_bytes": self.weight_bytes, "const_bytes": self.const_bytes,
                "other_bytes": self.other_bytes, "bss_bytes": self.bss_bytes,
                "tool": self.tool, "target": self.target,
                "kernel_code": [{"kernel": k, "bytes": b} for k, b in self.kernel_code],
                "entry": self.entry, "entry_code": self.entry_code, "helper_code": self.helper_code,
                "kernel_code_method": "nm -S of a build with the kernels out of line"}


# ---------------------------------------------------------------- binutils
def binutil(target, tool: str) -> str:
    """The target's binutils program (`size`, `nm`): TRIPLE-tool, else the plain one."""
    name = f"{target.triple}-{tool}" if target.triple else tool
    path = shutil.which(name)
    if path is None:
        pkg = f"binutils-{target.triple}" if target.triple else "binutils"
        raise ModelError(f"'{name}' not found (needed to measure the code of target "
                         f"{target.name}); install it with: apt-get install {pkg}", "bad_input")
    return path


def _run(cmd) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(str(c) for c in cmd)}: {proc.stderr.strip()[:300]}")
    return proc.stdout


def berkeley(size: str, obj) -> tuple:
    """(text, data, bss) of `size` in its default (Berkeley) format."""
    rows = [ln.split() for ln in _run([size, "-B", obj]).splitlines()]
    text, data, bss = (int(x) for x in rows[1][:3])
    return text, data, bss


def sections(size: str, obj) -> dict:
    """Section name -> bytes, from `size -A`."""
    out = {}
    for ln in _run([size, "-A", obj]).splitlines():
        parts = ln.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            out[parts[0]] = out.get(parts[0], 0) + int(parts[1])
    return out


def symbols(nm: str, obj) -> list:
    """(name without gcc's .constprop/.isra suffixes, type letter, bytes, address) from
    `nm -S --size-sort`."""
    out = []
    for ln in _run([nm, "-S", "--size-sort", obj]).splitlines():
        parts = ln.split()
        if len(parts) == 4:
            out.append((parts[3].split(".")[0], parts[2], int(parts[1], 16), int(parts[0], 16)))
    return out


# ---------------------------------------------------------------- measuring
def _section_bytes(secs: dict, kind: str) -> int:
    return sum(b for s, b in secs.items()
               for p, k in _SECTIONS if k == kind and (s == p or s.startswith(p + ".")))


def _objects(source, target):
    """The built object and the one with the kernels out of line, compiled side by side."""
    from targets.toolchain import compiler_path, compile_c, is_gcc
    cc = compiler_path(target.cc, target.apt_package)
    split = _OUT_OF_LINE["gcc" if is_gcc(cc) else "clang"]
    with ThreadPoolExecutor(2) as pool:
        built = pool.submit(compile_c, source.source, target, "object", name=source.name)
        kept = pool.submit(compile_c, source.source, target, "object", split,
                           name=source.name + "_split")
        return built.result(), kept.result()


def measure_flash(source, kernels, target) -> FlashReport:
    """The FlashReport of an emitted model (ModelSource) for its target."""
    size, nm = binutil(target, "size"), binutil(target, "nm")
    obj, split = _objects(source, target)
    text, data, bss = berkeley(size, obj)
    secs = sections(size, obj)
    code = _section_bytes(secs, "code")
    weights = sum(b for n, t, b, _ in symbols(nm, obj)
                  if t in _DATA_TYPES and n.startswith("w_"))
    consts = _section_bytes(secs, "data") - weights
    names = [k.name for k in kernels if not k.is_alias]
    entry = f"{source.name}_run"
    per = dict.fromkeys(names, 0)
    entry_code = helpers = 0
    # gcc folds identical functions (-fipa-icf): kernels of the same code share one body
    # (an alias at its address, or no symbol at all); the body counts once, for the
    # first of them in kernel order
    seen = set()
    for n, t, b, addr in sorted(symbols(nm, split), key=lambda s: _owner(s[0], names, entry)):
        if t not in _CODE_TYPES or (addr, b) in seen:
            continue
        seen.add((addr, b))
        k = _owner(n, names, entry)
        if k < len(names):
            per[names[k]] += b
        elif n == entry:
            entry_code += b
        else:
            helpers += b
    return FlashReport(target.name, size.rsplit("/", 1)[-1], code, weights, consts,
                       text + data - code - weights - consts, tuple(per.items()), entry_code,
                       helpers, bss, entry)


def _owner(symbol: str, names: list, entry: str) -> int:
    """The index of the kernel a function symbol belongs to (its name, or its name + "_"
    for a helper of its own); len(names) for NAME_run and shared helpers."""
    if symbol == entry:
        return len(names)
    return next((i for i, n in enumerate(names) if symbol == n or symbol.startswith(n + "_")),
                len(names))
