"""The model zoo (zoo/): every published architecture at its CI scale (every layer, narrower
and a smaller input) compiled for x86-avx2 (run natively), aarch64 and armv7 (QEMU user
mode) and cortex-m4 (bare metal on QEMU's mps2-an386), each matching onnxruntime with no
kernel falling back to plain loops.  At the published size, a model over the board's
memory is refused by `cgen compile` before anything is written: one budget line on
stderr, exit status 1.

Slow: 44 compiles and runs, about four minutes of CPU on two cores."""
from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from cgen.cli import main  # noqa: E402
from cgen.graph.model import compile_model  # noqa: E402
from targets.semihost import MPS2_AN386  # noqa: E402
from tests.test_graph_frontend import ort_run  # noqa: E402
from tests.test_models import assert_matches_ort, need_target  # noqa: E402
from zoo import ZOO  # noqa: E402

TARGETS = (pytest.param("x86-avx2", marks=pytest.mark.isa("x86-avx2")), "aarch64", "armv7",
           "cortex-m4")
# the cortex-m4 board: code and constants in its 4 MiB at 0, data in its 4 MiB of SRAM
ROM_BYTES, RAM_BYTES = MPS2_AN386.rom[1], MPS2_AN386.ram[1]

_COMPILED: dict = {}


def compiled(name: str, target: str):
    """(CompiledModel, model, feeds) at the CI scale, cached per session."""
    key = (name, target)
    if key not in _COMPILED:
        entry = ZOO[name]
        model = entry.build("ci")
        _COMPILED[key] = (compile_model(model, target, name=name), model, entry.feeds(model))
    return _COMPILED[key]


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_matches_onnxruntime(name, target):
    need_target(target)
    cm, model, feeds = compiled(name, target)
    assert not cm.report.fallbacks, cm.report.totals()
    if target == "cortex-m4":    # every CI-scale model fits the board (the run proves it)
        assert cm.report.weight_bytes < ROM_BYTES and cm.workspace_bytes < RAM_BYTES
    assert_matches_ort(cm.run(feeds, timeout=900), ort_run(model, feeds))


@pytest.mark.slow
def test_published_size_over_the_board_is_refused_in_one_line(tmp_path, capsys):
    """SqueezeNet 1.1 at 224 (1.2M parameters, the zoo's smallest published size over
    4 MiB of weights) for cortex-m4 with the board's memory as budgets."""
    need_target("cortex-m4")
    path = tmp_path / "squeezenet11.onnx"
    onnx.save(ZOO["squeezenet11"].build("full"), path)
    out = tmp_path / "out"
    status = main(["compile", str(path), "--target", "cortex-m4", "-o", str(out),
                   "--budget-ram", str(RAM_BYTES), "--budget-flash", str(ROM_BYTES)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith("cgen compile: error: flash needs ")
    assert f"over the flash budget of {ROM_BYTES} bytes" in err[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
