"""`cgen profile` on ARM targets: instructions per kernel under QEMU -icount
(cgen.graph.profile_icount), for aarch64 (bare metal on qemu-system-aarch64), armv7
(bare metal on qemu-system-arm -M virt) and cortex-m4 (its board on qemu-system-arm); a
target without a runner is refused."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("onnx")

import onnx  # noqa: E402

from cgen.cli import main  # noqa: E402
from cgen.codegen.harness import profile_hooks  # noqa: E402
from cgen.graph.model import compile_model, random_feeds  # noqa: E402
from tests.zoo import ZOO  # noqa: E402

# target -> (QEMU, cross compiler) it needs
_TOOLS = {"aarch64": ("qemu-system-aarch64", "aarch64-linux-gnu-gcc"),
          "armv7": ("qemu-system-arm", "arm-none-eabi-gcc"),
          "cortex-m4": ("qemu-system-arm", "arm-none-eabi-gcc")}


def _needs(target):
    missing = [t for t in _TOOLS[target] if shutil.which(t) is None]
    return pytest.param(target, marks=[pytest.mark.qemu, pytest.mark.skipif(
        bool(missing), reason=f"needs {' and '.join(missing)}")])


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """A small conv model (conv, pool, conv, pool, dense, dense, log-softmax)."""
    path = tmp_path_factory.mktemp("prof") / "lenet.onnx"
    onnx.save(ZOO["lenet"]()[0], path)
    return path


def _json_rows(capsys, path, target):
    assert main(["profile", str(path), "--target", target, "--json"]) == 0
    return [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("target", [_needs("aarch64"), _needs("armv7"), _needs("cortex-m4")])
def test_each_kernel_counted_in_instructions_the_same_every_run(lenet, target, capsys):
    rows = _json_rows(capsys, lenet, target)
    cm = compile_model(str(lenet), target, name="lenet")
    assert [r["kernel"] for r in rows] == [k.name for k in cm.kernels if not k.is_alias]
    # deterministic: a second run (the CLI's inputs, random_feeds) counts the same
    again = cm.profile_icount(random_feeds(cm.graph))
    assert [r.instructions for r in again.rows] == [r["instructions"] for r in rows]
    assert again.run_instructions == rows[0]["run_instructions"]
    assert all(r["unit"] == "instructions" and r["target"] == target for r in rows)
    # never seconds, never a peer figure from a machine it did not run on
    assert not {"us", "gflops", "peer_us"} & rows[0].keys()
    assert "onnxruntime" in rows[0]["peer"]
    assert all(r["instructions"] > 0 for r in rows)
    assert abs(sum(r["share"] for r in rows) - 1) < 1e-6
    # the kernels' sum against one whole run of the plain build: the profiling build's
    # calls are the model's own, so they add up to nearly all of it (gcc inlines the
    # kernels of the plain build into NAME_run, which moves a few percent either way)
    whole = rows[0]["run_instructions"]
    assert 0.75 < sum(r["instructions"] for r in rows) / whole < 1.33
    # the convolutions do most of the work: the biggest row is one
    assert "conv" in max(rows, key=lambda r: r["instructions"])["ops"]


@pytest.mark.parametrize("target", [_needs("cortex-m4")])
def test_table_names_the_unit_and_the_missing_peer(lenet, target, capsys):
    assert main(["profile", str(lenet), "--target", target]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"# {target}: instructions") and "onnxruntime does not run" in lines[0]
    assert "instructions" in lines[1] and "FLOP/insn" in lines[1] and " us " not in lines[1]
    assert lines[-1].startswith("total ") and "whole run" in lines[-1]


def _one_line_refusal(capsys, args, *words):
    assert main(args) == 1
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in cap.err and not cap.out
    assert all(w in err[0] for w in words), err[0]


def test_a_target_without_a_runner_is_refused_in_one_line(lenet, tmp_path, capsys):
    toml = tmp_path / "board.toml"
    toml.write_text('base = "generic-c"\nrunner = "none"\n')
    _one_line_refusal(capsys, ["profile", str(lenet), "--target", str(toml)],
                      "cannot profile target board", "no QEMU -icount image")


def test_profile_hooks_are_a_table():
    assert "cg_prof_report" in profile_hooks("libc") and "cg_cycles" in profile_hooks("aarch64-baremetal")
    with pytest.raises(ValueError, match="known: libc"):
        profile_hooks("nope")
