"""The model unit as emitted: a profiling build made by the emitter (not patched text), and
helpers / plain-C micro-kernels guarded by the same #if as their only callers."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("onnx")

from cgen.graph.emit import PROFILE_PRELUDE, emit_model  # noqa: E402
from cgen.graph.model import compile_model  # noqa: E402
from tests.zoo import ZOO  # noqa: E402


def test_profiling_build_times_every_kernel_call():
    model, feeds = ZOO["lenet"]()
    cm = compile_model(model, "host", name="lenet")
    live = [k.name for k in cm.kernels if not k.is_alias]
    prof = emit_model(cm.graph, cm.kernels, cm.target, cm.name, cm.source.label,
                      cm.source.stack_limit, profile=True)
    # the same unit, each call of NAME_run timed where it runs; the plain build is unchanged
    assert "cg_prof_now" not in cm.c_source
    timed = re.findall(r"double t0 = cg_prof_now\(\);\s*rc \|= (\w+)\([^;]*;\s*"
                       r"cg_prof_report\(\"(\w+)\", cg_prof_now\(\) - t0\);", prof.source)
    assert [k for k, _ in timed] == live and all(k == r for k, r in timed)
    assert prof.source == PROFILE_PRELUDE + prof.source[len(PROFILE_PRELUDE):]
    kernels_part = prof.source[len(PROFILE_PRELUDE):].rsplit("int lenet_run(", 1)[0]
    assert kernels_part == cm.c_source.rsplit("int lenet_run(", 1)[0]
    rows = cm.profile(feeds, number=3)
    assert [name for name, _ in rows] == live and all(t > 0 for _, t in rows)


@pytest.mark.parametrize("target", ["x86-avx512", "armv7"])
def test_helpers_are_guarded_like_their_callers(target):
    """A static function of the unit is unguarded only when both the vector and the
    portable build call it (otherwise clang's -Wunused-function fails the other build)."""
    cm = compile_model(ZOO["mlp"]()[0], target, name="mlp")
    src = cm.c_source
    macro = cm.source.fast_macro
    assert macro
    for build in (True, False):
        # the text one build of the file sees: drop the other side of every #if on macro
        keep, stack, out = True, [], []
        for ln in src.split("\n"):
            t = ln.strip()
            if t.startswith("#if"):
                on = {f"#if defined({macro})": build, f"#if !defined({macro})": not build}
                stack.append((keep, t in on))
                keep = keep and on.get(t, True)
            elif t.startswith("#else") and stack:
                parent, on_macro = stack[-1]
                keep = parent and (not keep if on_macro else True)
            elif t.startswith("#endif") and stack:
                keep = stack.pop()[0]
            elif keep:
                out.append(ln)
        text = "\n".join(out)
        for name in set(re.findall(r"^static inline [\w *]+?\b(cg_\w+)\(", text, re.M)):
            assert len(re.findall(rf"\b{name}\(", text)) > 1, (build, name)


def _conv1x1_add(C: int, HW: int, F: int):
    import numpy as np
    from onnx import TensorProto, helper as h, numpy_helper
    rng = np.random.default_rng(3)
    W = numpy_helper.from_array((rng.standard_normal((F, C, 1, 1)) * 0.1).astype(np.float32), "W")
    nodes = [h.make_node("Conv", ["X", "W"], ["Y0"]), h.make_node("Add", ["Y0", "R"], ["Y"])]
    io = [h.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, HW, HW])
          for n, c in (("X", C), ("R", F))]
    g = h.make_graph(nodes, "g", io, [h.make_tensor_value_info("Y", TensorProto.FLOAT,
                                                               [1, F, HW, HW])], [W])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    feeds = {"X": rng.standard_normal((1, C, HW, HW)).astype(np.float32),
             "R": rng.standard_normal((1, F, HW, HW)).astype(np.float32)}
    return m, feeds, W


@pytest.mark.parametrize("target", ["x86-avx2", "x86-avx512"])
def test_a_fused_residual_keeps_the_register_tile(target):
    """The epilogue block of a GEMM conv covering all its output channels (32 of 32) keeps
    the channels inside the block: the GEMM under it runs its register tile on pixel
    blocks that are whole tiles.  Before, such a block became one block per channel, the
    tile fell to plain loops, and MobileNetV2's residual 1x1 convs ran 5-8x slower."""
    import numpy as np
    from onnx import numpy_helper
    model, feeds, W = _conv1x1_add(192, 28, 32)
    cm = compile_model(model, target, name="res")
    k = next(k for k in cm.kernels if not k.is_alias)
    body = cm.c_source.split(f"static int {k.name}(", 1)[1].split("\n}\n", 1)[0]
    assert re.search(r"cg_tile_\d+x\d+", body), "the GEMM fell back to plain loops"
    want = np.einsum("fc,nchw->nfhw", numpy_helper.to_array(W)[:, :, 0, 0], feeds["X"]) + feeds["R"]
    np.testing.assert_allclose(cm.run(feeds)["Y"], want, rtol=1e-4, atol=1e-4)


def test_an_unfolded_stem_is_built_once_per_pixel_block():
    """A 3x3 stride-2 stem (3 -> 32 channels, clip epilogue) on x86-avx2: the epilogue's
    blocks hold every output channel, so the im2col block is built once per pixel block,
    not once per block of rows (8 times before)."""
    import numpy as np
    from tests.util import conv_clip_model
    model = conv_clip_model(3, 32, 64, 3, 32, opset=17, strides=[2, 2], pads=[1, 1, 1, 1])
    cm = compile_model(model, "x86-avx2", name="stem")
    k = next(k for k in cm.kernels if not k.is_alias)
    assert k.template == "conv2d_im2col"
    body = cm.c_source.split(f"static int {k.name}(", 1)[1].split("\n}\n", 1)[0]
    # the loops above the unfolded block's fill are pixel blocks only: no row-block loop
    above = body.split("col[", 1)[0]
    assert not re.search(r"for \(int64_t i2\w* = 0; i2\w* < [2-9]", above)
    # the fill's interior is a plain copy; only its borders test the padding: on x86-avx2
    # the fill of the stride-2 planes Q, whose unfolded rows are then vector copies
    assert re.search(r"Q\[[^;?]*\] = X\[[^;?]*\];", body)
    assert re.search(r"_mm256_storeu_ps\(&col\[[^;?]*_mm256_loadu_ps\(&Q\[", body)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref = onnx_reference(model, {"X": x})
    np.testing.assert_allclose(cm.run({"X": x})["Y"], ref, rtol=1e-4, atol=1e-4)


def onnx_reference(model, feeds):
    import onnxruntime as ort
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


@pytest.mark.parametrize("target", ["x86-avx2", "x86-avx512", "aarch64"])
def test_channels_without_a_good_divisor_keep_a_wide_tile(target):
    """58 output channels (ShuffleNetV2) have no divisor between 3 and 12: the GEMM tile
    takes at least 4 rows and the last, shorter block runs outside it (was 2-row tiles)."""
    import numpy as np
    from onnx import numpy_helper
    model, feeds, W = _conv1x1_add(58, 12, 58)
    cm = compile_model(model, target, name="c58")
    k = next(k for k in cm.kernels if not k.is_alias)
    body = cm.c_source.split(f"static int {k.name}(", 1)[1].split("\n}\n", 1)[0]
    rows = {int(r) for r in re.findall(r"cg_tile_(\d+)x\d+", body)}
    assert rows and min(rows) >= 4, rows
    if target.startswith("x86"):
        want = np.einsum("fc,nchw->nfhw", numpy_helper.to_array(W)[:, :, 0, 0], feeds["X"])
        np.testing.assert_allclose(cm.run(feeds)["Y"], want + feeds["R"], rtol=1e-4, atol=1e-4)
