"""`cgen profile`: per-kernel time of the compiled model, beside onnxruntime's profile."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from cgen.cli import main  # noqa: E402
from cgen.graph.model import compile_model, random_feeds  # noqa: E402
from cgen.graph.profile import onnx_node_outputs, ort_node_seconds, profile_rows  # noqa: E402
from targets import resolve  # noqa: E402
from tests.zoo import ZOO  # noqa: E402


def _softmax_tanh_model():
    """Two ops onnxruntime leaves unfused and keeps the names of."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 256])
    g = helper.make_graph([helper.make_node("Tanh", ["x"], ["t"], name="tanh0"),
                           helper.make_node("Softmax", ["t"], ["y"], name="sm0", axis=1)],
                          "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.isa("avx2")
def test_rows_cover_every_kernel_and_shares_sum_to_one():
    model, feeds = ZOO["lenet"]()
    cm = compile_model(model, "x86-avx2", name="lenet")
    rows = profile_rows(cm, feeds, number=3)
    assert [r.kernel for r in rows] == [k.name for k in cm.kernels if not k.is_alias]
    assert abs(sum(r.share for r in rows) - 1) < 1e-6
    assert all(r.seconds > 0 for r in rows)
    assert any(r.flops > 0 and r.gflops > 0 for r in rows)


@pytest.mark.isa("avx2")
def test_onnxruntime_nodes_go_beside_the_kernel_holding_them(tmp_path):
    model = _softmax_tanh_model()
    cm = compile_model(model, "x86-avx2", name="st")
    feeds = random_feeds(cm.graph)
    peer, isa = ort_node_seconds(model, feeds, cm.target, runs=3)
    assert {"tanh0", "sm0"} <= peer.keys()
    rows = profile_rows(cm, feeds, number=3, peer=peer)
    matched = sum(r.peer_seconds for r in rows if r.peer_seconds is not None)
    # each onnxruntime node is counted once, whatever the fusion
    assert matched == pytest.approx(peer["tanh0"] + peer["sm0"])


@pytest.mark.isa("avx2")
def test_cli_json_and_table(tmp_path, capsys):
    path = tmp_path / "st.onnx"
    onnx.save(_softmax_tanh_model(), path)
    assert main(["profile", str(path), "--target", "x86-avx2", "--json", "--number", "3"]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert rows and all(r["suite"] == "profile" and r["target"] == "x86-avx2" for r in rows)
    assert {"kernel", "ops", "template", "config", "us", "gflops", "share", "peer_us"} <= rows[0].keys()
    assert main(["profile", str(path), "--target", "x86-avx2", "--no-peer", "--number", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("kernel") and "total" in out.splitlines()[-1]


def test_a_target_this_machine_cannot_run_is_one_line(tmp_path, capsys):
    """A target without a runner (ARM targets are counted in instructions instead:
    tests/test_profile_icount.py)."""
    path = tmp_path / "st.onnx"
    onnx.save(_softmax_tanh_model(), path)
    toml = tmp_path / "offboard.toml"
    toml.write_text('base = "generic-c"\nrunner = "none"\n')
    assert main(["profile", str(path), "--target", str(toml), "--no-peer"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "offboard" in err[0] and "Traceback" not in err[0]


def test_a_conv_rewritten_to_nchwc_by_onnxruntime_keeps_its_name():
    """onnxruntime's NCHWc pass renames a Conv+Relu it fused "relu0_nchwc": its time still
    goes beside the cgen kernel holding relu0 (was: no peer figure for any such conv)."""
    import numpy as np
    from onnx import numpy_helper
    w = numpy_helper.from_array(np.full((32, 16, 3, 3), 0.01, np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv0", pads=[1] * 4),
                           helper.make_node("Relu", ["c"], ["y"], name="relu0")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 32])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    feeds = {"x": np.ones((1, 16, 32, 32), np.float32)}
    names = set(ort_node_seconds(m, feeds, resolve("x86-avx2"), runs=2)[0])
    assert names & {"conv0", "relu0"} and not any(n.endswith("_nchwc") for n in names)


@pytest.mark.isa("avx2")
def test_a_conv_with_its_batchnorm_folded_still_gets_onnxruntimes_time():
    """onnxruntime names a Conv fused with the next BatchNormalization after the
    BatchNormalization, which cgen folded into the conv's weights: the node's output is
    the kernel's, so its time goes beside that kernel (was: every MobileNetV2 projection
    conv had no peer figure)."""
    import numpy as np
    from onnx import numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((32, 16, 1, 1)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(v.astype(np.float32), n) for n, v in
              (("s", rng.uniform(0.5, 1.5, 32)), ("b", rng.standard_normal(32)),
               ("m", rng.standard_normal(32)), ("v", rng.uniform(0.5, 1.5, 32)))]
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv0"),
                           helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"],
                                            ["y"], name="bn0")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 28, 28])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    cm = compile_model(m, "x86-avx2", name="cbn")
    feeds = random_feeds(cm.graph)
    peer, _ = ort_node_seconds(m, feeds, cm.target, runs=3)
    assert peer and not peer.keys() & {n for k in cm.kernels for n in
                                       (x.name for x in k.group.nodes)}
    outputs = onnx_node_outputs(m)
    ours = [t for n, t in peer.items() if n in outputs]     # not its NCHWc reorders
    assert ours
    rows = profile_rows(cm, feeds, number=3, peer=peer, peer_outputs=outputs)
    assert [r.peer_seconds for r in rows] == [pytest.approx(sum(ours))]


@pytest.mark.isa("avx2")
def test_the_profile_peer_runs_at_the_targets_isa(tmp_path, capsys):
    """`cgen profile --target x86-avx2` times onnxruntime in the bench's peer process, so on
    an AVX-512 machine its nodes run AVX2 kernels as `cgen bench` times them (was: an
    in-process, native AVX-512 onnxruntime beside AVX2 code)."""
    from cgen.graph.ort_peer import OrtPeer
    path = tmp_path / "st.onnx"
    onnx.save(_softmax_tanh_model(), path)
    model = _softmax_tanh_model()
    feeds = random_feeds(compile_model(model, "x86-avx2", name="st").graph)
    with OrtPeer(model, feeds, resolve("x86-avx2")) as peer:
        want = peer.isa
    assert main(["profile", str(path), "--target", "x86-avx2", "--json", "--number", "3"]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert {r["peer_isa"] for r in rows} == {want}
    assert any(r["peer_us"] for r in rows)
    assert main(["profile", str(path), "--target", "x86-avx2", "--number", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"onnxruntime: 1 thread, {want}"
