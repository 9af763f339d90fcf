"""XNNPACK's micro-kernels driven like XNNPACK's operators drive them, in cgen's bare-metal
AArch64 harness, counted by QEMU icount.

The driver (a few lines of C per layer kind, written here) calls the kernel once per block
of MR rows (GEMM) or once per output row (depthwise), on weights packed here in the
layout the kernel reads:

  GEMM (f32, kr=1; int8, kr=1 or kr=4/8 "cN"): per block of NR output channels, NR biases
      (int32 for int8), then for each group of kr inputs the NR x kr block, channel-major,
      zero-padded to full blocks.
  depthwise 3x3 (f32 up4x9): per block of 4 channels, 4 biases then the 9 taps' 4 weights.
      The indirection buffer (9 pointers per output pixel) holds byte offsets into the
      input; the kernel adds `input_offset` (the input's address) to every pointer that is
      not its `zero` argument, so offsets made here become real addresses at run time,
      and padding taps point at a row of zeros stored after the input.

Before a count is used the kernel's output is checked against numpy.  The packing and
the drivers are this bench's own; XNNPACK's code is only the copied kernels.
"""
from __future__ import annotations

import numpy as np

from .. import arm_peers

# kind -> candidate kernels (symbol, MR, NR, KR); the one with the fewest instructions is the peer
PEER_KERNELS = {
    ("gemm", "float32"): (
        ("xnn_f32_gemm_minmax_ukernel_6x8__aarch64_neonfma_ld64", 6, 8, 1),
        ("xnn_f32_gemm_minmax_ukernel_4x8__aarch64_neonfma_ld128", 4, 8, 1),
        ("xnn_f32_gemm_minmax_ukernel_4x12__aarch64_neonfma_cortex_a53", 4, 12, 1),
        ("xnn_f32_gemm_minmax_ukernel_5x8__aarch64_neonfma_cortex_a75", 5, 8, 1),
        ("xnn_f32_gemm_minmax_ukernel_1x8__aarch64_neonfma_ld64", 1, 8, 1),
        ("xnn_f32_gemm_minmax_ukernel_1x12__aarch64_neonfma_cortex_a53", 1, 12, 1),
    ),
    ("gemm", "int8"): (
        ("xnn_qs8_gemm_minmax_fp32_ukernel_4x16__aarch64_neon_mlal_lane_ld64", 4, 16, 1),
        ("xnn_qs8_gemm_minmax_fp32_ukernel_2x8c8__aarch64_neon_mlal", 2, 8, 8),
        ("xnn_qs8_gemm_minmax_fp32_ukernel_1x8c8__aarch64_neon_mlal", 1, 8, 8),
    ),
    ("gemm", "int8-dotprod"): (
        ("xnn_qs8_gemm_minmax_fp32_ukernel_4x16c4__aarch64_neondot_ld64", 4, 16, 4),
        ("xnn_qs8_gemm_minmax_fp32_ukernel_1x16c4__aarch64_neondot_ld64", 1, 16, 4),
    ),
    ("dw", "float32"): (
        ("xnn_f32_dwconv_minmax_ukernel_up4x9__aarch64_neonfma", 1, 4, 1),
    ),
}

_GEMM_C = """#include <stddef.h>
#include <stdint.h>
void {uk}(size_t mr, size_t nc, size_t kc, const {t} *a, size_t a_stride, const void *w,
          {t} *c, size_t cm_stride, size_t cn_stride, const void *params);
{proto}
{{
  {params}
  size_t m;
  for (m = 0; m < {M}u; m += {MR}u)
    {uk}({M}u - m < {MR}u ? {M}u - m : {MR}u, {N}u, {K}u * sizeof({t}), a + m * {K}u,
         {K}u * sizeof({t}), w, c + m * {N}u, {N}u * sizeof({t}), {NR}u * sizeof({t}), &params);
  return 0;
}}
"""

_DW_C = """#include <stddef.h>
#include <stdint.h>
void {uk}(size_t channels, size_t output_width, const float **input, const float *weights,
          float *output, size_t input_stride, size_t output_increment, size_t input_offset,
          const float *zero, const void *params);
{proto}
{{
  static const float params[2] = {{{lo}f, {hi}f}};
  size_t oy;
  for (oy = 0; oy < {OH}u; ++oy)
    {uk}({C}u, {OW}u, (const float **)(ind + oy * {OW}u * 9u), w, y + oy * {OW}u * {C}u,
         9u * sizeof(void *), 0u, (size_t)x, params, params);
  return 0;
}}
"""

F32_PARAMS = "static const float params[2] = {%sf, %sf};"
# the fp32 (Armv8 fcvtns) requantisation parameters: scale, output zero point, min, max
I8_PARAMS = ("static const struct { float scale; int16_t zero_point; int8_t lo; int8_t hi; } "
             "params = {%r, %d, -128, 127};")
F32_CLAMP = (-3.0e38, 3.0e38)


class NoPeerKernel(arm_peers.PeerError):
    """This XNNPACK build has no kernel for the layer (e.g. int8 depthwise on AArch64)."""


def pack_gemm(w: np.ndarray, bias: np.ndarray, nr: int, kr: int) -> np.ndarray:
    """XNNPACK's GEMM weight layout (see the module doc) as bytes."""
    n, k = w.shape
    kp = -(-k // kr) * kr
    out = []
    for n0 in range(0, n, nr):
        b = np.zeros(nr, bias.dtype)
        b[:min(nr, n - n0)] = bias[n0:n0 + nr]
        blk = np.zeros((nr, kp), w.dtype)
        blk[:min(nr, n - n0), :k] = w[n0:n0 + nr]
        out += [b.view(np.uint8), blk.reshape(nr, kp // kr, kr).transpose(1, 0, 2).reshape(-1).view(np.uint8)]
    return np.concatenate(out)


def pack_dw(w: np.ndarray, bias: np.ndarray, cr: int) -> np.ndarray:
    """w (C, 9) taps in row-major (ky, kx) order."""
    c = w.shape[0]
    out = []
    for c0 in range(0, c, cr):
        b = np.zeros(cr, np.float32)
        b[:min(cr, c - c0)] = bias[c0:c0 + cr]
        blk = np.zeros((cr, 9), np.float32)
        blk[:min(cr, c - c0)] = w[c0:c0 + cr]
        out += [b, blk.T.reshape(-1)]
    return np.concatenate(out)


def _module(name: str, params, outputs, source: str, proto: str, target):
    from cgen.build import Module
    from cgen.lower.ir import Buffer, PrimFunc
    bufs = tuple(Buffer(n, dt, tuple(shape)) for n, dt, shape in params)
    return Module(PrimFunc(name, bufs, tuple(outputs), None), source, proto, target)


def _run(mod, arrays, asm, out_name: str):
    from cgen.build_baremetal import icount_benchmark
    res = icount_benchmark(mod, *arrays, repeat=1, number=1, timeout=300, extra_flags=(str(asm),))
    if res.error is not None:
        raise arm_peers.PeerError(f"{res.error.kind}: {res.error.msg[:300]}")
    return res.times[0], res.outputs[out_name]


def _gemm_layer(case):
    d = case.dims
    return {"gemm": (d.get("M"), d.get("N"), d.get("K")), "fc": (1, d.get("N"), d.get("K")),
            "pw": (d.get("H", 0) * d.get("W", 0), d.get("F"), d.get("C"))}[case.kind]


def gemm_count(case, target, lib, kernel) -> float:
    uk, mr, nr, kr = kernel
    M, N, K = _gemm_layer(case)
    rng = np.random.default_rng(0)
    if case.dtype == "float32":
        t, dt = "float", "float32"
        a = rng.uniform(-1, 1, (M, K)).astype(np.float32)
        w = rng.uniform(-1, 1, (N, K)).astype(np.float32)
        bias = rng.uniform(-1, 1, N).astype(np.float32)
        ref = a @ w.T + bias
        params = F32_PARAMS % F32_CLAMP
    else:
        t, dt = "int8_t", "int8"
        a = rng.integers(-128, 128, (M, K)).astype(np.int8)
        w = rng.integers(-127, 128, (N, K)).astype(np.int8)
        izp, ozp, scale = 3, -5, np.float32(1.0 / (K * 64))
        acc = a.astype(np.int32) @ w.T.astype(np.int32) - izp * w.astype(np.int32).sum(1)
        bias = (rng.integers(-1000, 1000, N) - izp * w.astype(np.int32).sum(1)).astype(np.int32)
        acc = (a.astype(np.int32) @ w.T.astype(np.int32)) + bias
        ref = np.clip(np.rint(acc.astype(np.float32) * scale) + ozp, -128, 127).astype(np.int8)
        params = I8_PARAMS % (float(scale), ozp)
    packed = pack_gemm(w, bias, nr, kr)
    proto = f"int xnn_peer(const {t} *a, const uint8_t *w, {t} *c);"
    src = _GEMM_C.format(uk=uk, t=t, proto=proto[:-1], params=params, M=M, N=N, K=K, MR=mr, NR=nr)
    # the kernels read whole 8-byte groups of A past K (XNNPACK's "out of bounds reads")
    a_pad = np.zeros((M * K + 64,), a.dtype)
    a_pad[:M * K] = a.reshape(-1)
    mod = _module("xnn_peer", [("a", dt, a_pad.shape), ("w", "uint8", packed.shape), ("c", dt, (M, N))],
                  ["c"], src, proto, target)
    ticks, out = _run(mod, [a_pad, packed, np.zeros((M, N), a.dtype)], arm_peers.ukernel_asm(lib, [uk]), "c")
    _check(uk, out, ref, case.dtype)
    return ticks


def dw_count(case, target, lib, kernel) -> float:
    uk, _, cr, _ = kernel
    C, H, W = case.dims["C"], case.dims["H"], case.dims["W"]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (H, W, C)).astype(np.float32)
    w = rng.uniform(-1, 1, (C, 9)).astype(np.float32)
    bias = rng.uniform(-1, 1, C).astype(np.float32)
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    ref = bias + sum(xp[ky:ky + H, kx:kx + W] * w[:, 3 * ky + kx] for ky in range(3) for kx in range(3))
    ind = np.empty((H, W, 9), np.int64)
    zero_at = H * W * C * 4
    for ky in range(3):
        for kx in range(3):
            iy = np.arange(H)[:, None] + ky - 1
            ix = np.arange(W)[None, :] + kx - 1
            inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
            ind[:, :, 3 * ky + kx] = np.where(inside, (iy * W + ix) * C * 4, zero_at)
    x_ext = np.concatenate([x.reshape(-1), np.zeros(C + 16, np.float32)])
    packed = pack_dw(w, bias, cr)
    proto = "int xnn_peer(const float *x, const int64_t *ind, const float *w, float *y);"
    src = _DW_C.format(uk=uk, proto=proto[:-1], lo=F32_CLAMP[0], hi=F32_CLAMP[1], OH=H, OW=W, C=C)
    mod = _module("xnn_peer", [("x", "float32", x_ext.shape), ("ind", "int64", ind.shape),
                               ("w", "float32", packed.shape), ("y", "float32", (H, W, C))],
                  ["y"], src, proto, target)
    ticks, out = _run(mod, [x_ext, ind, packed, np.zeros((H, W, C), np.float32)],
                      arm_peers.ukernel_asm(lib, [uk]), "y")
    _check(uk, out, ref, "float32")
    return ticks


def _check(uk, out, ref, dtype):
    if dtype == "float32":
        ok = np.allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(ref))))
    else:
        ok = int(np.max(np.abs(out.astype(np.int32) - ref.astype(np.int32)))) <= 1
    if not ok:
        raise arm_peers.PeerError(f"{uk}: output differs from numpy (packing or driver wrong)")


# XNNPACK picks its kernels by the CPU it runs on: Armv8.2 cores with dotprod get SDOT kernels
DOTPROD_CPUS = ("cortex-a55", "cortex-a75", "cortex-a76", "cortex-a77", "cortex-a78", "neoverse-n1")


def _has_dotprod(target) -> bool:
    flags = " ".join(getattr(target, "cflags", ()) or ())
    return "dotprod" in flags or any(f"-mcpu={c}" in flags for c in DOTPROD_CPUS)


def peer_count(case, target, lib) -> tuple:
    """(ticks per call, kernel symbol) of the XNNPACK kernel with the fewest ticks."""
    kind = "dw" if case.kind == "dw" else "gemm"
    dtype = case.dtype
    if dtype == "int8" and _has_dotprod(target):
        dtype = "int8-dotprod"
    kernels = PEER_KERNELS.get((kind, dtype))
    if not kernels:
        raise NoPeerKernel(f"no {dtype} {kind} assembly kernel exported by {arm_peers.DEB}")
    have = arm_peers.exported(lib)
    M = _gemm_layer(case)[0] if kind == "gemm" else None
    # XNNPACK uses its 1-row kernels only for 1-row layers, the big tiles otherwise
    kernels = [k for k in kernels if k[0] in have and (M is None or (k[1] == 1) == (M == 1))]
    if not kernels:
        raise arm_peers.PeerError(f"none of the {dtype} {kind} kernels is in {arm_peers.DEB}")
    count = dw_count if kind == "dw" else gemm_count
    best, errors = None, []
    for k in kernels:
        try:
            ticks = count(case, target, lib, k)
        except arm_peers.PeerError as e:
            errors.append(str(e))
            continue
        if best is None or ticks < best[0]:
            best = (ticks, k[0])
    if best is None:
        raise arm_peers.PeerError("; ".join(errors))
    return best
