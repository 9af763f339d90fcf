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
                      cm.source.stack_limit, profile=7)
    # the same unit, each call of NAME_run repeated and timed; the plain build is unchanged
    assert "cg_prof_now" not in cm.c_source
    timed = re.findall(r"for \(it = 0; it < 7; \+\+it\)\s*rc \|= (\w+)\(", prof.source)
    assert timed == live
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
