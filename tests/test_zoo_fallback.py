"""No silent fallback: a kernel that a template should build and does not is marked in
the report, counted in the totals, refused by `strict`; and the zoo (every model the tests
build, plus a transformer encoder block) has no such kernel on any built-in target."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx import helper as h  # noqa: E402

from cgen.cli import main  # noqa: E402
from cgen.graph import ModelError  # noqa: E402
from cgen.graph.model import compile_model  # noqa: E402
from tests.test_graph_frontend import make_model, rng, w  # noqa: E402
from tests.zoo import TARGETS, ZOO  # noqa: E402


def conv_with_runtime_weights():
    """A Conv whose weights are a graph input: no conv template packs them at compile
    time, so the conv is the plain loop nest -- a fallback, whatever the target."""
    r = rng(9)
    nodes = [h.make_node("Conv", ["x", "wt"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             h.make_node("Relu", ["c"], ["y"], name="relu")]
    model = make_model(nodes, {"x": (1, 4, 8, 8), "wt": (8, 4, 3, 3)}, ["y"])
    return model, {"x": r.standard_normal((1, 4, 8, 8)).astype(np.float32),
                   "wt": w(r, 8, 4, 3, 3)}


@pytest.mark.parametrize("target", ["x86-avx2", "generic-c"])
def test_a_fallback_is_marked_counted_and_refused_when_strict(target):
    model, _ = conv_with_runtime_weights()
    cm = compile_model(model, target, name="rt_conv")
    rows = cm.report.fallbacks
    assert [r.ops for r in rows] == ["conv2d -> relu"]
    assert rows[0].template == "te" and "weights computed at run time" in rows[0].fallback
    assert "1 kernel fell back to plain loops" in cm.report.totals()
    assert "fallback: no template: weights computed at run time" in cm.report.table()
    assert cm.manifest["memory"]["fallbacks"] == 1
    with pytest.raises(ModelError, match="fell back to plain loops .* k0_conv2d: no template"):
        compile_model(model, target, name="rt_conv", strict=True)


def test_template_kernels_are_not_fallbacks():
    model, _ = ZOO["resnet_basic_block"]()
    cm = compile_model(model, "x86-avx512", name="rb", strict=True)
    assert not cm.report.fallbacks and "fell back" not in cm.report.totals()
    assert any(k.template != "te" and not k.is_alias for k in cm.kernels)


def test_cli_strict_is_one_line_and_non_zero(tmp_path, capsys):
    import onnx
    model, _ = conv_with_runtime_weights()
    path = tmp_path / "rt_conv.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "--target", "generic-c", "-o", str(tmp_path / "a"),
                 "--report"]) == 0
    out = capsys.readouterr().out
    assert "1 kernel fell back to plain loops" in out and "fallback: no template" in out
    rc = main(["compile", str(path), "--target", "generic-c", "-o", str(tmp_path / "b"),
               "--strict"])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1, err
    assert "fell back to plain loops" in lines[0] and "Traceback" not in err


def _zoo_fallbacks(target: str) -> list:
    rows = []
    for name, build in ZOO.items():
        cm = compile_model(build()[0], target, name=name)
        rows += [(name, r) for r in cm.report.fallbacks]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_zoo_has_no_fallback(target):
    rows = _zoo_fallbacks(target)
    errors = sum(r.fallback.startswith("template error") for _, r in rows)
    print(f"\n{target}: {len(rows)} fallbacks ({errors} template errors, "
          f"{len(rows) - errors} without a template) in {len(ZOO)} models")
    for name, r in rows:
        print(f"  {name} {r.kernel} [{r.ops}]: {r.fallback}")
    assert not rows, f"{target}: {len(rows)} kernels fell back: " + "; ".join(
        f"{name}/{r.kernel}: {r.fallback}" for name, r in rows[:4])
