"""`cgen compile | run | bench` on ONNX files: outputs, files, and one-line refusals."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime")

from cgen.cli import main  # noqa: E402
from tests.test_graph_frontend import ort_run  # noqa: E402
from tests.test_models import kws_cnn, lenet, mlp  # noqa: E402


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model, feeds = lenet()
    path = d / "lenet.onnx"
    onnx.save(model, str(path))
    np.savez(d / "in.npz", **feeds)
    return path, model, feeds


def _one_line_error(capsys, argv, match: str):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert match in lines[0], lines[0]
    return lines[0]


def test_compile_writes_the_files_and_prints_the_totals(lenet_file, tmp_path, capsys):
    path, _, _ = lenet_file
    out = tmp_path / "gen"
    assert main(["compile", str(path), "--target", "aarch64", "-o", str(out), "--report"]) == 0
    text = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["lenet.c", "lenet.cmake", "lenet.h",
                                                     "manifest.json"]
    man = json.loads((out / "manifest.json").read_text())
    assert f"workspace {man['workspace_bytes']} bytes" in text
    assert f"weights {man['weight_bytes']} bytes" in text
    assert "conv2d -> relu" in text and "alias" in text      # the --report table
    hdr = (out / "lenet.h").read_text()
    assert "int lenet_run(const float *x, float *y, void *workspace);" in hdr


def test_compile_name_and_input_shape(tmp_path, capsys):
    from onnx import helper as h, TensorProto
    g = h.make_graph([h.make_node("Relu", ["in put"], ["out"])], "g",
                     [h.make_tensor_value_info("in put", TensorProto.FLOAT, ["batch", 3])],
                     [h.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])])
    path = tmp_path / "dyn.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(path))
    _one_line_error(capsys, ["compile", str(path), "--target", "host", "-o", str(tmp_path / "a")],
                    "batch")
    assert main(["compile", str(path), "--target", "host", "-o", str(tmp_path / "b"), "--name",
                 "net", "--input-shape", "in put=2,3"]) == 0
    hdr = (tmp_path / "b" / "net.h").read_text()
    assert "int net_run(const float *in_put, float *out, void *workspace);" in hdr
    assert '#define net_INPUT_in_put_NAME "in put"' in hdr


def test_compile_budgets(lenet_file, tmp_path, capsys):
    path, _, _ = lenet_file
    line = _one_line_error(capsys, ["compile", str(path), "--target", "host", "-o",
                                    str(tmp_path), "--budget-ram", "1024"], "RAM budget of 1024")
    assert line.startswith("cgen compile: error: the workspace needs")
    _one_line_error(capsys, ["compile", str(path), "--target", "host", "-o", str(tmp_path),
                             "--budget-flash", "100"], "flash budget of 100 bytes")
    assert main(["compile", str(path), "--target", "host", "-o", str(tmp_path / "ok"),
                 "--budget-ram", "100000000", "--budget-flash", "100000000"]) == 0


def test_refusals_are_one_line(lenet_file, tmp_path, capsys):
    path, _, _ = lenet_file
    _one_line_error(capsys, ["compile", str(tmp_path / "missing.onnx"), "--target", "host",
                             "-o", str(tmp_path)], "no such model file")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    _one_line_error(capsys, ["compile", str(bad), "--target", "host", "-o", str(tmp_path)],
                    "cgen compile: error:")
    _one_line_error(capsys, ["compile", str(path), "--target", "nosuch", "-o", str(tmp_path)],
                    "unknown target")
    _one_line_error(capsys, ["compile", str(path), "--target", "host", "-o", str(tmp_path),
                             "--name", "1x"], "C identifier")
    _one_line_error(capsys, ["compile", str(path), "--target", "host", "-o", str(tmp_path),
                             "--input-shape", "x"], "--input-shape")
    np.savez(tmp_path / "wrong.npz", z=np.zeros(3, np.float32))
    _one_line_error(capsys, ["run", str(path), "--target", "host", "--inputs",
                             str(tmp_path / "wrong.npz"), "--outputs", str(tmp_path / "o.npz")],
                    "unknown input name")
    np.savez(tmp_path / "shape.npz", x=np.zeros((1, 1, 24, 24), np.float32))
    _one_line_error(capsys, ["run", str(path), "--target", "host", "--inputs",
                             str(tmp_path / "shape.npz"), "--outputs", str(tmp_path / "o.npz")],
                    "expected float32 of shape (2, 1, 24, 24)")
    _one_line_error(capsys, ["run", str(path), "--target", "host", "--inputs",
                             str(tmp_path / "none.npz"), "--outputs", str(tmp_path / "o.npz")],
                    "cannot read")
    _one_line_error(capsys, ["bench", str(path), "--target", "aarch64"], "emulation")


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_run_writes_outputs_keyed_by_name(lenet_file, tmp_path, capsys, target):
    from targets.target import resolve
    if shutil.which(resolve(target).cc) is None:
        pytest.skip("no toolchain")
    if target == "aarch64" and shutil.which("qemu-aarch64") is None:
        pytest.skip("no qemu-aarch64")
    path, model, feeds = lenet_file
    out = tmp_path / "out.npz"
    assert main(["run", str(path), "--target", target, "--inputs", str(path.parent / "in.npz"),
                 "--outputs", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with np.load(out) as z:
        got = {k: z[k] for k in z.files}
    want = ort_run(model, feeds)
    assert set(got) == set(want)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-4,
                               atol=1e-4 * float(np.abs(want["y"]).max()))


def test_run_multiple_inputs_and_outputs(tmp_path, capsys):
    from onnx import helper as h
    from tests.test_graph_frontend import make_model
    nodes = [h.make_node("Add", ["a", "b"], ["s"]), h.make_node("Mul", ["a", "b"], ["p"]),
             h.make_node("Relu", ["s"], ["r"])]
    model = make_model(nodes, {"a": (3, 5), "b": (5,)}, ["r", "p"])
    path = tmp_path / "two.onnx"
    onnx.save(model, str(path))
    r = np.random.default_rng(0)
    feeds = {"a": r.standard_normal((3, 5)).astype(np.float32),
             "b": r.standard_normal(5).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **feeds)
    assert main(["run", str(path), "--target", "host", "--inputs", str(tmp_path / "in.npz"),
                 "--outputs", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as z:
        got = {k: z[k] for k in z.files}
    want = ort_run(model, feeds)
    assert list(got) == ["r", "p"]
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("build", [mlp, kws_cnn])
def test_bench_prints_a_ratio(build, tmp_path, capsys):
    model, feeds = build()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert main(["bench", str(path), "--target", "host", "--repeat", "3", "--rounds", "2",
                 "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["suite"] == "model" and rec["peer"] == "onnxruntime-1thread"
    assert rec["ratio"] > 0 and rec["max_rel_err"] < 1e-4


@pytest.mark.slow
def test_the_readme_demo(tmp_path):
    """examples/model.py: the small CNN to C for aarch64 (QEMU), checked against onnxruntime,
    its memory report and its host latency ratio."""
    import subprocess
    import sys
    from pathlib import Path
    target = "aarch64" if shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-gcc") \
        else "host"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "examples" / "model.py"), "--target", target,
                           "--onnx", str(tmp_path / "small_cnn.onnx"), "--keep",
                           str(tmp_path / "gen")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("OK")
    assert "workspace" in proc.stdout and "ratio" in proc.stdout
    assert (tmp_path / "gen" / "small_cnn.h").exists()


def test_a_linker_refusal_names_its_reason_in_the_one_line():
    """An image over a board's memory fails at link: the line says which region overflowed
    (it said only "C compilation failed for ...")."""
    from cgen.cli import _one_line
    from targets.toolchain import CompileError
    e = CompileError("/usr/bin/ld: m.elf section `.text' will not fit in region `ITCM'\n"
                     "/usr/bin/ld: region `ITCM' overflowed by 4096 bytes\n"
                     "collect2: error: ld returned 1 exit status", "m.c")
    line = _one_line(e)
    assert "\n" not in line and "overflowed by 4096 bytes" in line and line.startswith("C compilation")
