"""float32 conv2d templates, one module per job:

    workload.py  workload dicts, output size, flops, the numpy reference, knob helpers
    packing.py   weight packings and NCHW <-> NCHW[x]c (te computes and numpy twins)
    tile.py      the MR x NR register-tile micro-kernel intrinsic
    nchwc.py     blocked NCHW[x]c direct (conv2d_nchwc)
    gemm.py      1x1 as GEMM and im2col + GEMM (conv2d_1x1, conv2d_im2col)
    winograd.py  Winograd F(m x m, 3 x 3) (conv2d_winograd)
    direct.py    direct conv on plain NCHW / NHWC (conv2d_nchw, conv2d_nhwc)
    dispatch.py  the family rule (conv2d_template_for) and the template list

Workloads (`conv2d_workload`) are plain dicts:

    op        the template's name (conv2d_nchwc, conv2d_1x1, conv2d_im2col, conv2d_winograd)
    N C H W   input batch, channels, height, width
    F KH KW   output channels and kernel size
    stride [sh, sw], pad [top, left, bottom, right], dilation [dh, dw], groups
    layout    "NCHW" (converted to the blocked layout and back inside the kernel) or
              "NCHWc" (X is [N][C/ic_bn][H][W][ic_bn], the output [N][F/oc_bn][OH][OW][oc_bn])
    weights   "OIHW" (packed by a stage inside the kernel) or "packed" (pre-packed,
              below; the blocks that fix the packed layout must then be given)
    ic_bn, oc_bn   channel blocks, or None: then a knob of the template's space
    k_bn      (conv2d_1x1, conv2d_im2col, packed weights only) the weights' depth block;
              only present when set, and then the kc knob's one value
    tile      (conv2d_winograd only) the Winograd output tile m, or None: a knob

Pre-packed weights are what a model provides: its weights are constants, so the
packing (te computes over the OIHW weights: `pack_weights_nchwc`,
`pack_weights_gemm`; numpy twins `*_np` for tests and benches) is folded at compile
time.  A workload with weights="packed" times the convolution alone, as
onnxruntime's NCHWc kernels get their filters packed once at session creation.
The packed layouts:

    nchwc     Wp[F/oc_bn][(C/G)/ic_bn][KH*KW*ic_bn][oc_bn], row (kh*KW + kw)*ic_bn + ic:
              the memory of [OC/oc_bn][IC/ic_bn][KH][KW][ic_bn][oc_bn]
    gemm      Ap[G][ceil((F/G)/oc_bn)][(C/G)*KH*KW][oc_bn], zero rows past F/G; with a
              depth block k_bn (gemm.weight_depth_block: the route sets it where the
              GEMM blocks the depth) Ap[G][KK/k_bn][ceil((F/G)/oc_bn)][k_bn][oc_bn], so a
              depth block of all panels is one stream
    winograd  U[(m+2)^2][F/oc_bn][C/G][oc_bn]  (winograd.py)

Every family's inner loop nest is a register tile acc[i][j] += a[i][k] * b[k][j]
(columns j contiguous), tensorized with `tile_intrin`: an MR x NR outer-product
kernel for the target's vector ISA (AVX-512, AVX2, NEON), rows broadcast from A
with any strides, B optionally prefetched; its variants take the row count (row
tails) and, with lane masks (AVX-512's mask registers; AVX2's vmaskmovps, whose whole
tiles keep an unmasked variant), the column count (column tails), so no tail falls
back to scalar code.

* conv2d_nchwc: X is padded into NCHW[ic_bn]c (Xp, rows of W*ic_bn floats) and the
  output accumulated in NCHW[oc_bn]c: rows of the tile are ow_tile output pixels
  (A stride sw*ic_bn), columns the oc_bn channels, depth r = kw*ic_bn + ic (dw = 1)
  for each (input block, kh).  With im2col (small images), each output pixel's
  KH*KW*ic_bn window is first copied out (Xr), so tile rows run across output rows
  and the depth is the whole window.  NCHW output: each block of oh_tile rows is
  unpacked right after it is computed.
* conv2d_1x1, conv2d_im2col: Y[g][f][p] = Ap[g][f][k] @ col[g][k][p] with
  p = oy*OW + ox: the unfolded image is computed block by block (KC x NC) at the
  GEMM's depth loop, its loops split so no division is left; Y is written as
  (N, G, F/G, OH*OW), the memory of NCHW.  A 1x1 kernel at stride 1 without padding
  has the input itself as B (knob col="direct", the default there): no unfolded copy.
"""
from .workload import conv2d_workload, conv2d_reference, conv_flops, out_size, block_choices
from ..common import to_nchwc_np, from_nchwc_np
from .packing import (pack_weights_nchwc, pack_weights_nchwc_np, unpack_weights_nchwc_np,
                      pack_weights_gemm, pack_weights_gemm_np, unpack_weights_gemm_np)
from .tile import tile_intrin, tile_kernel_shape_ok, masked_tiles_ok
from .nchwc import Conv2dNCHWcTemplate, nchwc_default_blocks, oc_block_pref
from .gemm import Conv2dGemmTemplate, gemm_default_mr
from .winograd import Conv2dWinogradTemplate, winograd_default_blocks, winograd_weights_np
from .direct import Conv2dNCHWTemplate, Conv2dNHWCTemplate, direct_conv_templates
from .dispatch import conv2d_template_for, conv_templates, winograd_wins
