"""`cgen tune` (workloads and models), `--tuning-log` on compile / run, and the trial
split of a model's tasks: log records in the schema, a kill -9 mid-run then the same
command again, one-line refusals, tuned configs reaching the compiled model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cgen.autotune.model_tasks import allocate_trials
from cgen.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {"version", "workload", "target", "toolchain", "config", "costs", "cost_unit", "error",
          "timestamp"}
FAST = ["--no-progress", "--repeat", "2", "--min-repeat-ms", "2"]


def _records(path) -> list:
    """The well-formed JSON lines of a log (a torn line is skipped, as read_log does)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _one_line_error(capsys, argv, rc: int, match: str) -> str:
    got = main(argv)
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert got == rc, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]
    return lines[0]


# ====================================================================== workloads
def test_tune_writes_records_in_the_log_schema_and_resumes(tmp_path, capsys):
    log = tmp_path / "gemm.jsonl"
    argv = ["tune", "--workload", "gemm:64,64,64", "--target", "host", "--trials", "16",
            "--batch", "8", "--log", str(log), *FAST]
    assert main(argv) == 0
    out = capsys.readouterr().out
    recs = _records(log)
    assert len(recs) == 16 == len(log.read_text().splitlines())
    for r in recs:
        assert set(r) == SCHEMA, sorted(r)
        assert r["version"] == 1
        assert r["workload"] == {"op": "gemm", "M": 64, "N": 64, "K": 64, "dtype": "float32"}
        assert r["target"].startswith("host-") and r["target"] != "host"
        assert {"cc", "version", "flags"} <= set(r["toolchain"]) and r["toolchain"]["flags"]
        assert set(r["config"]) == {"index", "knobs"} and r["config"]["knobs"]
        assert r["cost_unit"] == "s"
        assert r["error"] is None or set(r["error"]) >= {"kind", "msg"}
        assert r["error"] is not None or (len(r["costs"]) == 2 and all(c > 0 for c in r["costs"]))
        assert isinstance(r["timestamp"], float) and r["timestamp"] > 1e9
    assert len({r["config"]["index"] for r in recs}) == 16
    best = min((r for r in recs if r["error"] is None), key=lambda r: np.mean(r["costs"]))
    assert "16 trials (16 new" in out and f"config #{best['config']['index']} " in out
    assert f"log: {log}" in out
    # the same command again: every trial is already in the log, nothing is measured
    assert main(argv) == 0
    assert "16 trials (0 new" in capsys.readouterr().out
    assert len(log.read_text().splitlines()) == 16


def test_kill_minus_9_then_the_same_command_finishes_without_loss_or_repeat(tmp_path):
    log = tmp_path / "kill.jsonl"
    # slow enough repeats (>= 3 x 40 ms a record) that the log is watched filling up
    cmd = [sys.executable, "-m", "cgen.cli", "tune", "--workload", "gemm:40,48,56", "--trials",
           "24", "--batch", "8", "--log", str(log), "--seed", "3", "--repeat", "3",
           "--min-repeat-ms", "40"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        n = 0
        while time.monotonic() < deadline and proc.poll() is None:
            n = len(_records(log)) if log.exists() else 0
            if n >= 5:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the tuner ended before the kill: {proc.communicate()}"
        assert n >= 5, "no 5 records within 300 s"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    text = log.read_text()
    lines = text.split("\n")
    if text.endswith("\n"):     # the kill fell between records: tear the last one in half
        last = lines[-2]
        text = "\n".join(lines[:-2]) + "\n" + last[: len(last) // 2]
        log.write_text(text)
    kept = [ln for ln in text.split("\n")[:-1]]     # complete lines before the kill
    assert 4 <= len(kept) < 24 and all(json.loads(ln) for ln in kept)

    done = subprocess.run(cmd + ["--no-progress"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"24 trials ({24 - len(kept)} new" in done.stdout
    final = log.read_text().split("\n")
    assert final[:len(kept)] == kept                   # every earlier record, untouched
    recs = _records(log)
    assert len(recs) == 24
    assert all(r["workload"]["op"] == "gemm" and r["workload"]["M"] == 40 for r in recs)
    idx = [r["config"]["index"] for r in recs]
    assert len(set(idx)) == 24                         # no config measured twice


@pytest.mark.parametrize("extra, match", [
    (["--workload", "gemm:64,64"], "gemm:M,N,K"),
    (["--workload", "gemm:6x4"], "expected integers"),
    (["--workload", "winograd3d:1,2"], "unknown form"),
    (["--workload", "conv2d_nchwc:{bad json"], "bad JSON"),
    (["--workload", "gemm:64,64,64", "--target", "nosuch-board"], "unknown target 'nosuch-board'"),
    ([], "nothing to tune"),
    (["no-such-model.onnx"], "no such model file"),
    (["--workload", "gemm:64,64,64", "--trials", "0"], "--trials must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, match):
    line = _one_line_error(capsys, ["tune", *extra, "--log", str(tmp_path / "l.jsonl"), *FAST],
                           2, match)
    assert line.startswith("cgen tune: error: ")
    assert not (tmp_path / "l.jsonl").exists()


def test_unreadable_log_is_one_line_and_exit_2(tmp_path, capsys):
    _one_line_error(capsys, ["tune", "--workload", "gemm:64,64,64", "--log", str(tmp_path),
                             *FAST], 2, "not a regular file")
    if os.geteuid() != 0:       # root reads anything
        log = tmp_path / "locked.jsonl"
        log.write_text("")
        log.chmod(0)
        try:
            _one_line_error(capsys, ["tune", "--workload", "gemm:64,64,64", "--log", str(log),
                                     *FAST], 2, "Permission denied")
        finally:
            log.chmod(0o600)


def test_bad_input_in_a_fresh_process_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "cgen.cli", "tune", "--workload", "dense:1,2",
                        "--log", str(tmp_path / "l.jsonl")], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "dense:M,N,K" in p.stderr


def test_several_workloads_and_plot(tmp_path, capsys):
    log, png = tmp_path / "dense.jsonl", tmp_path / "best.png"
    assert main(["tune", "--workload", "dense:1,64,64", "--workload", "dense:1,32,64",
                 "--trials", "8", "--batch", "4", "--log", str(log), "--plot", str(png),
                 *FAST]) == 0
    out = capsys.readouterr().out
    assert out.count("8 trials (8 new") == 2 and f"plot: {png}" in out
    recs = _records(log)
    assert sorted({r["workload"]["N"] for r in recs}) == [32, 64] and len(recs) == 16
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    # one workload: the tuner's own plot
    png1 = tmp_path / "one.png"
    assert main(["tune", "--workload", "dense:1,64,64", "--trials", "8", "--log", str(log),
                 "--plot", str(png1), *FAST]) == 0
    assert png1.read_bytes()[:4] == b"\x89PNG"


# ====================================================================== the trial split
def test_allocate_trials():
    # proportional to the shares once each task has its floor; the total is kept
    assert allocate_trials(40, [1.0, 3.0], [1000, 1000]) == [10, 30]
    assert allocate_trials(41, [0.2, 0.5, 0.3], [1000] * 3) == [8, 21, 12]
    # a small space is capped and what it cannot take goes to the others
    assert allocate_trials(40, [10.0, 1.0], [6, 1000]) == [6, 34]
    # floors: a few trials each even for a negligible task, fewer when the budget is short
    assert allocate_trials(20, [1.0, 1e-9], [100, 100]) == [16, 4]
    assert allocate_trials(3, [1.0, 1.0, 1.0, 1.0], [100] * 4) == [1, 1, 1, 1]
    assert allocate_trials(9, [0.0, 0.0], [100, 100]) == [5, 4]
    assert allocate_trials(10, [5.0], [1]) == [1]
    assert allocate_trials(5, [], []) == []


# ====================================================================== models
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """Conv + Relu, a flatten, Gemm: two template kernels (an im2col conv, a dense)."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import helper as h
    from tests.test_graph_frontend import make_model, rng, w
    r = rng(3)
    inits = {"cw": w(r, 8, 3, 3, 3), "cb": w(r, 8, scale=0.1), "fw": w(r, 10, 8 * 8 * 8),
             "fb": w(r, 10, scale=0.1), "shape": np.array([1, -1], np.int64)}
    nodes = [h.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             h.make_node("Relu", ["c"], ["a"], name="relu"),
             h.make_node("Reshape", ["a", "shape"], ["f"], name="flatten"),
             h.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")]
    model = make_model(nodes, {"x": (1, 3, 8, 8)}, ["y"], inits)
    d = tmp_path_factory.mktemp("tune-model")
    path = d / "tiny.onnx"
    onnx.save(model, str(path))
    feeds = {"x": r.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    np.savez(d / "in.npz", **feeds)
    return path, model, feeds


def test_tune_model_then_compile_and_run_with_the_log(tiny_model, tmp_path, capsys):
    from cgen.autotune.log import apply_best, canonical
    from cgen.autotune.model_tasks import default_index, extract_tasks
    from cgen.graph.kernels import kernel_target
    from cgen.graph.model import compile_model
    from tests.test_graph_frontend import ort_run
    path, model, feeds = tiny_model
    mtasks = extract_tasks(str(path), "host")
    assert len(mtasks) == 2 and "dense" in {mt.task.template.name for mt in mtasks}
    for target, conv in (("x86-avx512", "conv2d_im2col"), ("x86-avx2", "conv2d_im2col")):
        names = sorted(mt.task.template.name for mt in extract_tasks(str(path), target))
        assert names == [conv, "dense"], target
    log = tmp_path / "tiny.jsonl"
    assert main(["tune", str(path), "--target", "host", "--trials", "12", "--batch", "4",
                 "--log", str(log), *FAST]) == 0
    out = capsys.readouterr().out
    assert "default GFLOP/s" in out and "best GFLOP/s" in out
    every = _records(log)
    recs = [r for r in every if "selection" not in r]       # the trials
    sels = [r for r in every if "selection" in r]   # a verdict per task (+ in-model fallbacks)
    assert len(recs) == 12 and len(sels) >= 2
    assert "in-model check" in out
    for mt in mtasks:       # each task: its default measured, at least the floor of 4 trials
        mine = [r for r in recs if canonical(r["workload"]) == mt.task.key]
        assert len(mine) >= 4, mt.task.describe()
        assert default_index(mt.task) in {r["config"]["index"] for r in mine}
        assert len({r["config"]["index"] for r in mine}) == len(mine)
        assert mt.task.describe()[:30] in out

    # compile with the log: the tuned kernels take the knobs of each task's verdict
    gen = tmp_path / "gen"
    assert main(["compile", str(path), "--target", "host", "--tuning-log", str(log),
                 "-o", str(gen)]) == 0
    assert "2 of 2 template kernels tuned" in capsys.readouterr().out
    assert (gen / "tiny.c").is_file()
    tuned = apply_best(log, kernel_target("host"))
    assert len(tuned) == 2
    best = {canonical(r["workload"]): r for r in sels}
    cm = compile_model(str(path), "host", tuned=tuned)
    ks = [k for k in cm.kernels if k.workload is not None]
    assert len(ks) == 2
    for k in ks:
        assert k.config == best[canonical(k.workload)]["config"]["knobs"], k.name
    assert (gen / "tiny.c").read_text() == cm.c_source

    # run with the log matches onnxruntime
    outs = tmp_path / "out.npz"
    assert main(["run", str(path), "--target", "host", "--inputs", str(path.parent / "in.npz"),
                 "--outputs", str(outs), "--tuning-log", str(log)]) == 0
    got = np.load(outs)["y"]
    want = ort_run(model, feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))

    # the same command again: every task has its trials, no trial is measured; the
    # default and the top candidates are compared again (one more verdict per task)
    assert main(["tune", str(path), "--target", "host", "--trials", "12", "--log", str(log),
                 "--no-model-check", *FAST]) == 0
    capsys.readouterr()
    every = _records(log)
    assert len([r for r in every if "selection" not in r]) == 12
    assert len([r for r in every if "selection" in r]) >= len(sels) + 2


def test_stale_tuning_log_records_are_passed_over(tiny_model, tmp_path, capsys):
    """A best record whose knobs are no point of the template's space for the model's
    kernel target (a config of an older space, or a threaded one) is never applied."""
    from cgen.autotune.log import LogWriter, Record
    from cgen.autotune.model_tasks import extract_tasks
    path, _, _ = tiny_model
    mt = next(m for m in extract_tasks(str(path), "host") if m.task.template.name == "dense")
    log = tmp_path / "stale.jsonl"
    good = mt.task.space().get(0).to_dict()
    with LogWriter(log) as wr:
        wr.write(Record(workload=mt.task.workload, target=mt.task.target_name, toolchain={},
                        config={"index": 0, "knobs": {"NC": 12345, "unroll": 4}},
                        costs=(1e-6,)))
        wr.write(Record(workload=mt.task.workload, target=mt.task.target_name, toolchain={},
                        config={"index": 0, "knobs": {**good, "parallel": True}}, costs=(1e-6,)))
    assert main(["compile", str(path), "--target", "host", "--tuning-log", str(log),
                 "-o", str(tmp_path / "gen")]) == 0
    assert "0 of" in capsys.readouterr().out
    with LogWriter(log) as wr:
        wr.write(Record(workload=mt.task.workload, target=mt.task.target_name, toolchain={},
                        config={"index": 0, "knobs": good}, costs=(1e-3,)))
    assert main(["compile", str(path), "--target", "host", "--tuning-log", str(log),
                 "-o", str(tmp_path / "gen2")]) == 0
    assert "1 of" in capsys.readouterr().out
    _one_line_error(capsys, ["compile", str(path), "--target", "host", "--tuning-log",
                             str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "g")], 1,
                    "no such tuning log")


@pytest.mark.qemu
def test_tune_in_icount_ticks_on_aarch64(tmp_path, capsys):
    log = tmp_path / "ic.jsonl"
    assert main(["tune", "--workload", "gemm:32,32,32", "--target", "aarch64", "--cost", "icount",
                 "--trials", "4", "--batch", "4", "--log", str(log), "--no-progress"]) == 0
    assert "FLOPs per tick" in capsys.readouterr().out
    recs = _records(log)
    assert len(recs) == 4 and {r["cost_unit"] for r in recs} == {"icount_ticks"}
    _one_line_error(capsys, ["tune", "--workload", "gemm:32,32,32", "--target", "host", "--cost",
                             "icount", "--trials", "4", "--log", str(tmp_path / "x.jsonl")], 2,
                    "--cost icount")
