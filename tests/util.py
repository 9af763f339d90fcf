"""Helpers shared by tests: strict compiles and the project's notion of 'matches'."""
from __future__ import annotations

import shutil

import numpy as np

import cgen
from targets import compile_c
from targets.target import Target

STRICT = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")


def external_kernel(src: str) -> str:
    """A micro-kernel's C with its functions external (neither static nor inline), so an
    object of that source alone keeps their code: a register tile is `static` and out of
    line (cgen.tensorize.microkernel.NOINLINE), a dispatch or GEMM kernel `static
    inline`."""
    from cgen.tensorize.microkernel import NOINLINE
    return src.replace(NOINLINE, "").replace("static inline void", "void").replace("static void", "void")


def conv_clip_model(C: int, F: int, H: int, K: int, out: int, opset: int = 13, **conv):
    """An ONNX model of one KxK Conv (C -> F channels on an HxH input, seeded weights, ONNX
    attributes `conv`) and a Clip to [0, 6] (ReLU6, MobileNet's epilogue): an out x out
    output."""
    import numpy as np
    from onnx import TensorProto, helper as h, numpy_helper
    rng = np.random.default_rng(0)
    W = numpy_helper.from_array((rng.standard_normal((F, C, K, K)) * 0.1).astype(np.float32), "W")
    lo, hi = (numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0), ("hi", 6)))
    g = h.make_graph([h.make_node("Conv", ["X", "W"], ["Y0"], **conv),
                      h.make_node("Clip", ["Y0", "lo", "hi"], ["Y"])], "g",
                     [h.make_tensor_value_info("X", TensorProto.FLOAT, [1, C, H, H])],
                     [h.make_tensor_value_info("Y", TensorProto.FLOAT, [1, F, out, out])], [W, lo, hi])
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def conv1x1_relu6_model(C: int, F: int, H: int, residual: bool = False, seed: int = 5):
    """An ONNX model of a 1x1 Conv (C -> F, seeded weights and bias) + Clip to [0, 6] on an
    HxH input x, + an input r when `residual`; and its numpy reference ref(x[, r])."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((F, C, 1, 1)) * 0.2).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["a" if residual else "y"])]
    if residual:
        nodes.append(helper.make_node("Add", ["a", "r"], ["y"]))
    shapes = [("x", [1, C, H, H])] + ([("r", [1, F, H, H])] if residual else []) + \
        [("y", [1, F, H, H])]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes]
    model = helper.make_model(helper.make_graph(nodes, "g", vi[:-1], vi[-1:], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8

    def ref(x, r=None):
        y = np.clip(np.einsum("fc,nchw->nfhw", w[:, :, 0, 0].astype(np.float64), x)
                    + b[None, :, None, None], 0, 6)
        return (y if r is None else y + r).astype(np.float32)
    return model, ref


def strict_compile(source: str, compilers=("gcc", "clang")) -> None:
    """Compile source to an object with each compiler under the strict flags."""
    for cc in compilers:
        if shutil.which(cc) is None:
            raise AssertionError(f"{cc} is not installed; run ci/setup.sh")
        compile_c(source, Target(f"strict-{cc}", cc, ()), "object", strict=True)


def build_checked(s, args, sanitize=False, **kw):
    """cgen.build, plus the same C compiled strictly by clang for the same target (not for
    bare metal: clang has no bare-metal C library here)."""
    mod = cgen.build(s, args, sanitize=sanitize, **kw)
    if not mod.target.bare_metal:
        compile_c(mod.c_source, mod.target.with_cc("clang"), "object", strict=True,
                  extra_flags=mod.extra_flags)
    return mod


def assert_matches(out: np.ndarray, ref: np.ndarray) -> None:
    """float32: allclose(rtol=1e-4, atol=1e-4*max|ref|); integers: exact."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    if np.issubdtype(out.dtype, np.floating):
        atol = 1e-4 * float(np.max(np.abs(ref))) if ref.size else 0.0
        ok = np.allclose(out, ref, rtol=1e-4, atol=atol)
        assert ok, f"max abs err {np.max(np.abs(out - ref))}, atol {atol}"
    else:
        np.testing.assert_array_equal(out, ref)


def default_matches_reference(template, wl: dict, target: str, name: str, seed: int) -> dict:
    """Builds the template's default for wl on target, runs it on seeded inputs with a
    NaN-filled output (every element must be written) and checks it against the
    template's reference; the default config as a dict."""
    cfg = template.default(wl, target)
    s, args = template.build(wl, target, template.space(wl, target).get(cfg.index))
    mod = cgen.build(s, args, target=target, name=name)
    ins = template.inputs(wl, np.random.default_rng(seed))
    ref = template.reference(wl, ins)["Y"]
    ins[-1][...] = np.nan
    mod(*ins)
    assert_matches(ins[-1], ref)
    return cfg.to_dict()


def extreme_operands(inputs, rng):
    """A third of the first two operands (an int8 kernel's activations and weights) set to
    the ends of their ranges: 255 x -128 and -128 x -128 are the largest products."""
    for a in inputs[:2]:
        info = np.iinfo(a.dtype)
        flat = a.reshape(-1)
        idx = rng.choice(flat.size, size=max(1, flat.size // 3), replace=False)
        flat[idx] = rng.choice([info.min, info.max], size=idx.size)
    return inputs


def skip_without_system_qemu(target) -> None:
    """Skip a test of a bare-metal target (cortex-m*, run under qemu-system-arm) where its
    cross compiler or QEMU is not installed."""
    import pytest
    from targets import resolve
    tgt = resolve(target)
    if not tgt.bare_metal:
        return
    for tool in (tgt.cc, "qemu-system-arm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
