"""The peers of `python -m bench arm`: XNNPACK's AArch64 micro-kernels as Debian ships them.

Only package registries are reachable, and Debian's registry serves the arm64 binary
package `libxnnpack0` (the source tarball of that version is not served).  So the peer is
the machine code Debian built: its shared library exports every micro-kernel, and the
ones used here are XNNPACK's hand-written assembly kernels (leaf functions with no data
of their own).  `fetch_xnnpack()` downloads the .deb into a cache directory outside the
repository ($XDG_CACHE_HOME/cgen-peers, else ~/.cache/cgen-peers), checked against a
pinned SHA-256; `ukernel_asm()` copies the named functions' instruction words out of the
library into an assembly file that links into the same bare-metal image and harness as
cgen's kernels (bench/arm.py), so both sides are counted by the same QEMU icount run.

A function is copied only if it is position independent on its own: every branch stays
inside it and it has no PC-relative data access (adr/adrp/literal loads); otherwise
ukernel_asm raises PeerError.  Tests never download: `cached_xnnpack()` answers only from
the cache.
"""
from __future__ import annotations

import hashlib
import io
import lzma
import os
import struct
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "libxnnpack0"
VERSION = "0.0~git20220216.ae108ef-2"
ARCH = "arm64"
DEB = f"{PACKAGE}_{VERSION}_{ARCH}.deb"
URL = f"http://deb.debian.org/debian/pool/main/x/xnnpack/{DEB}"
SHA256 = "18775e6618ef6464f36c051af45e22d32ffb26eca1afe95d4a6f35ef7d778652"
LIBRARY = "usr/lib/aarch64-linux-gnu/libXNNPACK.so.0"
PEER_NAME = f"xnnpack-debian-{VERSION}"


class PeerError(RuntimeError):
    """The peer cannot be had (not cached, download failed, a kernel not copyable)."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cgen-peers"


def _library_path() -> Path:
    return cache_root() / "xnnpack" / VERSION / "libXNNPACK.so.0"


def cached_xnnpack() -> Path | None:
    """The cached library, or None (never downloads)."""
    p = _library_path()
    return p if p.is_file() else None


def fetch_xnnpack(download: bool = True, timeout: float = 120.0) -> Path:
    """The library from the cache, downloaded from Debian's pool first if allowed."""
    lib = cached_xnnpack()
    if lib is not None:
        return lib
    if not download:
        raise PeerError(f"{DEB} not in {cache_root()} (`python -m bench arm` downloads it)")
    try:
        with urllib.request.urlopen(URL, timeout=timeout) as r:
            data = r.read()
    except OSError as e:
        raise PeerError(f"cannot download {DEB} from Debian: {e}") from None
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise PeerError(f"{DEB}: SHA-256 differs from the pinned one")
    so = _member(_ar_member(data, "data.tar"), "./" + LIBRARY)
    out = _library_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(so)
    os.replace(tmp, out)
    return out


def _ar_member(deb: bytes, prefix: str) -> bytes:
    """The (decompressed) member of a .deb (an `ar` archive) whose name starts with prefix."""
    if not deb.startswith(b"!<arch>\n"):
        raise PeerError(f"{DEB} is not an ar archive")
    pos = 8
    while pos + 60 <= len(deb):
        name = deb[pos:pos + 16].decode().strip().rstrip("/")
        size = int(deb[pos + 48:pos + 58].decode().strip())
        body = deb[pos + 60:pos + 60 + size]
        if name.startswith(prefix):
            return lzma.decompress(body) if name.endswith(".xz") else body
        pos += 60 + size + (size & 1)
    raise PeerError(f"{DEB} has no {prefix}* member")


def _member(tar_bytes: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        try:
            return tf.extractfile(tf.getmember(name)).read()
        except KeyError:
            raise PeerError(f"{DEB} has no {name}") from None


# ------------------------------------------------------------------ ELF64 symbols
def _symbols(elf: bytes) -> dict:
    """{name: (file offset, size)} of the defined functions in .dynsym."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise PeerError("the peer library is not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3a)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + k * shentsize) for k in range(shnum)]
    dynsym = next(s for s in sections if s[1] == 11)          # SHT_DYNSYM
    strtab = sections[dynsym[6]]
    out = {}
    for off in range(dynsym[4], dynsym[4] + dynsym[5], 24):
        st_name, st_info, _, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", elf, off)
        if st_info & 0xf != 2 or st_shndx == 0:                # STT_FUNC, defined
            continue
        sec = sections[st_shndx]
        s = elf[strtab[4] + st_name:elf.index(b"\0", strtab[4] + st_name)].decode()
        out[s] = (st_value - sec[3] + sec[4], st_size)
    return out


# (mask, value, what) of instructions that read PC-relative data
_PC_DATA = ((0x1f000000, 0x10000000, "adr/adrp"), (0x3b000000, 0x18000000, "literal load"))


def _branch_target(word: int, pc: int):
    """Byte offset a direct branch goes to (relative to the function), or None."""
    def sext(v, bits):
        return v - (1 << bits) if v >> (bits - 1) else v
    if word & 0x7c000000 == 0x14000000:                        # b, bl
        return pc + 4 * sext(word & 0x3ffffff, 26)
    if word & 0xff000010 == 0x54000000 or word & 0x7e000000 == 0x34000000:   # b.cond, cbz/cbnz
        return pc + 4 * sext((word >> 5) & 0x7ffff, 19)
    if word & 0x7e000000 == 0x36000000:                        # tbz/tbnz
        return pc + 4 * sext((word >> 5) & 0x3fff, 14)
    return None


def _checked_words(name: str, code: bytes) -> list:
    words = list(struct.unpack(f"<{len(code) // 4}I", code))
    for k, w in enumerate(words):
        for mask, value, what in _PC_DATA:
            if w & mask == value:
                raise PeerError(f"{name}: {what} at +{4 * k:#x}; not copyable on its own")
        t = _branch_target(w, 4 * k)
        if t is not None and not 0 <= t < len(code):
            raise PeerError(f"{name}: branch at +{4 * k:#x} leaves the function")
    return words


def ukernel_asm(lib: Path, names) -> Path:
    """An assembly file (in the cache) defining the named functions with the library's
    instruction words; its name carries a hash of its text, so compile caches key on it."""
    elf = Path(lib).read_bytes()
    syms = _symbols(elf)
    lines = ["/* XNNPACK micro-kernels copied from Debian's " + DEB + " for counting. */",
             "  .text"]
    for name in sorted(set(names)):
        if name not in syms:
            raise PeerError(f"{name} is not in {DEB}")
        off, size = syms[name]
        words = _checked_words(name, elf[off:off + size])
        lines += [f"  .global {name}", f"  .type {name}, %function", "  .balign 64", f"{name}:"]
        lines += ["  .inst " + ", ".join(f"0x{w:08x}" for w in words[k:k + 8])
                  for k in range(0, len(words), 8)]
        lines.append(f"  .size {name}, . - {name}")
    text = "\n".join(lines) + "\n"
    path = cache_root() / "xnnpack" / "asm" / f"ukernels-{hashlib.sha256(text.encode()).hexdigest()[:16]}.S"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def exported(lib: Path) -> set:
    """Names of the functions the library exports (to pick the kernels a build has)."""
    return set(_symbols(Path(lib).read_bytes()))
