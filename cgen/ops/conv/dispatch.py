"""The conv2d family rule: which template a conv2d workload goes to, with the
blocks it needs; and the list of the conv templates."""
from __future__ import annotations

from targets import resolve
from .gemm import Conv2dGemmTemplate, gemm_default_mr
from .nchwc import Conv2dNCHWcTemplate, nchwc_default_blocks
from .winograd import Conv2dWinogradTemplate, winograd_default_blocks
from .workload import conv2d_workload, out_size


def winograd_wins(wl: dict) -> bool:
    """The default family rule for 3x3 stride-1 convolutions: Winograd F(4x4, 3x3) when
    there are enough tiles for its GEMM (at least 16, i.e. about 14x14 outputs) and
    channels to amortise its transforms; direct NCHWc otherwise (512x7x7: the
    transformed weights, 4x the direct ones, would stream from memory for 4 tiles)."""
    oh, ow = out_size(wl)
    return ((wl["KH"], wl["KW"]) == (3, 3) and wl["stride"] == [1, 1]
            and wl["dilation"] == [1, 1] and wl["C"] // wl["groups"] >= 16
            and wl["F"] // wl["groups"] >= 16 and (-(-oh // 4)) * (-(-ow // 4)) >= 16)


def conv2d_template_for(workload: dict, target="host") -> tuple:
    """(template, workload for it): the family for a conv2d workload.

    `workload` is any conv2d workload dict (op "conv2d" or a template's name) with
    at least N C H W F KH KW; stride/pad/dilation/groups/layout/weights/ic_bn/oc_bn
    default as in conv2d_workload.  1x1 kernels on NCHW go to conv2d_1x1 (GEMM),
    3x3 stride-1 convolutions where `winograd_wins` to conv2d_winograd, everything
    else to conv2d_nchwc.  Blocks (and the Winograd tile) left open are filled with
    the family's defaults for the target when the layout or the pre-packed weights
    need them.
    """
    wl = dict(workload)
    tgt = resolve(target)
    keys = ("N", "C", "H", "W", "F", "KH", "KW")
    shape = [wl[k] for k in keys]
    opts = {k: wl[k] for k in ("stride", "pad", "dilation", "groups", "layout", "weights",
                               "ic_bn", "oc_bn") if k in wl and wl[k] is not None}
    if wl.get("tile") is not None:
        opts["tile"] = wl["tile"]
    base = conv2d_workload("conv2d", *shape, **{k: v for k, v in opts.items()
                                                 if k not in ("ic_bn", "oc_bn", "tile")})
    prepacked = base["weights"] == "packed"
    if base["layout"] == "NCHW" and (base["KH"], base["KW"]) == (1, 1):
        tmpl = Conv2dGemmTemplate("conv2d_1x1", only_1x1=True)
        opts.pop("ic_bn", None)
        opts.pop("tile", None)
        if prepacked:
            opts.setdefault("oc_bn", gemm_default_mr(base, tgt))
        return tmpl, tmpl.workload(*shape, **opts)
    if winograd_wins(base):
        tmpl = Conv2dWinogradTemplate()
        m, ib, ob = winograd_default_blocks(base, tgt)
        if base["layout"] == "NCHWc":
            opts.setdefault("ic_bn", ib)
        if base["layout"] == "NCHWc" or prepacked:
            opts.setdefault("oc_bn", ob)
        if prepacked:
            opts.setdefault("tile", m)
        return tmpl, tmpl.workload(*shape[:5], **opts)
    tmpl = Conv2dNCHWcTemplate()
    opts.pop("tile", None)
    if base["layout"] == "NCHWc" or prepacked:
        ib, ob = nchwc_default_blocks(base, tgt)
        opts.setdefault("ic_bn", ib)
        opts.setdefault("oc_bn", ob)
    return tmpl, tmpl.workload(*shape, **opts)


def conv_templates() -> list:
    """The float32 conv2d templates (for cgen.ops.registry)."""
    return [Conv2dNCHWcTemplate(), Conv2dGemmTemplate("conv2d_1x1", only_1x1=True),
            Conv2dGemmTemplate("conv2d_im2col"), Conv2dWinogradTemplate()]
