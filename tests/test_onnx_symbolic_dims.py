"""Input dimensions stored as -1 (Paddle2ONNX) or with no value at all are symbolic: the
model compiles once --input-shape (or input_shapes=) gives them; a shape that contradicts
a fixed dimension is one line and a non-zero exit."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h

from cgen.cli import main
from cgen.graph import ModelError
from cgen.graph.model import compile_model
from cgen.graph.onnx_frontend import load_onnx


def _model():
    """y = relu(x) + b, x declared (-1, 3, <empty>, 4): -1, a fixed size, a dim with
    neither value nor name, and a fixed size."""
    x = h.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, None, 4])
    x.type.tensor_type.shape.dim[2].Clear()          # stored with no value and no name
    y = h.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3, -1, 4])
    b = onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "b")
    g = h.make_graph([h.make_node("Relu", ["x"], ["r"]), h.make_node("Add", ["r", "b"], ["y"])],
                     "g", [x], [y], [b])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)])


def test_the_model_declares_minus_one_and_an_empty_dim():
    d = _model().graph.input[0].type.tensor_type.shape.dim
    assert d[0].dim_value == -1 and not d[2].HasField("dim_value") and not d[2].dim_param


def test_api_fixes_the_symbolic_dims():
    g = load_onnx(_model(), {"x": (2, 3, 5, 4)})
    assert g.inputs[0].shape == (2, 3, 5, 4) and g.outputs[0].shape == (2, 3, 5, 4)
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
    got = compile_model(_model(), "host", input_shapes={"x": (2, 3, 5, 4)}).run({"x": x})["y"]
    np.testing.assert_allclose(got, np.maximum(x, 0) + np.arange(4, dtype=np.float32), rtol=1e-6)


def test_api_without_a_shape_names_the_dimension():
    with pytest.raises(ModelError, match=r"dimension 0 is symbolic.*--input-shape x=1,3,1,4"):
        load_onnx(_model())


def test_api_refuses_a_contradicting_shape():
    with pytest.raises(ModelError, match=r"does not fit the model's shape \(\?,3,\?,4\)"):
        load_onnx(_model(), {"x": (1, 4, 5, 4)})


def _one_line(capsys, argv, match):
    rc = main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc != 0 and len(err) == 1 and match in err[0], err
    return err[0]


def test_cli_compile_and_run(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), str(path))
    assert main(["compile", str(path), "--target", "host", "-o", str(tmp_path / "c"),
                 "--input-shape", "x=1,3,48,4"]) == 0
    assert (tmp_path / "c" / "m.c").exists()
    x = np.random.default_rng(1).standard_normal((1, 3, 48, 4)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", str(path), "--target", "host", "--input-shape", "x=1,3,48,4",
                 "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_allclose(z["y"], np.maximum(x, 0) + np.arange(4, dtype=np.float32),
                                   rtol=1e-6)
    capsys.readouterr()


def test_cli_refuses_a_contradicting_shape(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), str(path))
    line = _one_line(capsys, ["compile", str(path), "--target", "host", "-o", str(tmp_path / "c"),
                              "--input-shape", "x=1,4,48,4"], "does not fit the model's shape")
    assert "(?,3,?,4)" in line
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    _one_line(capsys, ["compile", str(path), "--target", "host", "-o", str(tmp_path / "d")],
              "is symbolic")
