"""The whole flash of a compiled model (code + weights + constants, measured from the built
object with the target's binutils) in the report, the manifest and --budget-flash; over a
budget (flash or RAM) one line on stderr naming the three largest contributors and the
excess, exit status 1, and no file written.  Targets: cortex-m4 (arm-none-eabi-size),
aarch64 (aarch64-linux-gnu-size), x86-avx2 (size)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from cgen.cli import main  # noqa: E402
from cgen.graph.fit import write_outputs  # noqa: E402
from cgen.graph.model import compile_model  # noqa: E402
from targets.target import resolve  # noqa: E402
from tests.test_models import kws_cnn  # noqa: E402


def _need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' '.join(missing)} not installed")


def _independent_object(c_file, target_name: str, tmp_path):
    """NAME.c compiled here with the target's compiler and its own flags only (not through
    the toolchain driver cgen measured with), -> the object's path."""
    tgt = resolve(target_name)
    obj = tmp_path / f"indep-{target_name}.o"
    # cgen builds with gcc's loop if-conversion off (a GCC 12 miscompile): so does this one
    gcc = "Free Software Foundation" in subprocess.run([tgt.cc, "--version"],
                                                       capture_output=True, text=True).stdout
    extra = ["-fno-tree-loop-if-convert"] if gcc else []
    subprocess.run([tgt.cc, *tgt.flags(), *extra, "-c", str(c_file), "-o", str(obj)], check=True)
    return obj


def _size(tool, obj):
    """(.text bytes from `size -A`, Berkeley text + data)."""
    secs = {}
    for ln in subprocess.run([tool, "-A", str(obj)], capture_output=True, text=True,
                             check=True).stdout.splitlines():
        p = ln.split()
        if len(p) == 3 and p[1].isdigit():
            secs[p[0]] = int(p[1])
    berk = subprocess.run([tool, str(obj)], capture_output=True, text=True,
                          check=True).stdout.splitlines()[1].split()
    return secs[".text"], int(berk[0]) + int(berk[1])


def _close(a, b, rel=0.01):
    return abs(a - b) <= rel * max(a, b)


@pytest.fixture(scope="module")
def kws(tmp_path_factory):
    d = tmp_path_factory.mktemp("flash")
    model, _ = kws_cnn()
    path = d / "kws.onnx"
    onnx.save(model, str(path))
    return path, model


@pytest.fixture(scope="module")
def kws_m4(kws):
    """The keyword-spotting CNN compiled for cortex-m4 through the API, flash measured."""
    _need("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm")
    cm = compile_model(kws[1], "cortex-m4")
    return cm, cm.flash()


def _listing(d):
    return sorted(p.name for p in d.iterdir())


def test_cortex_m4_report_and_manifest_carry_the_whole_flash(kws, tmp_path, capsys):
    _need("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm")
    path, _ = kws
    out = tmp_path / "gen"
    assert main(["compile", str(path), "--target", "cortex-m4", "-o", str(out), "--report"]) == 0
    text = capsys.readouterr().out
    man = json.loads((out / "manifest.json").read_text())
    fl = man["flash"]
    # the old keys stay, the new ones are added
    assert {"workspace_bytes", "weight_bytes", "memory"} <= set(man)
    assert man["flash_bytes"] == fl["flash_bytes"] and man["code_bytes"] == fl["code_bytes"]
    assert fl["other_bytes"] == 0 and fl["tool"] == "arm-none-eabi-size"
    assert fl["flash_bytes"] == fl["code_bytes"] + fl["weight_bytes"] + fl["const_bytes"]
    assert fl["code_bytes"] > 1000 and fl["weight_bytes"] > 0
    # weights: the arrays left in the object, never more than the declared ones
    assert 0.9 * man["weight_bytes"] <= fl["weight_bytes"] <= man["weight_bytes"]
    # the report prints the same numbers, and the code of every kernel
    assert (f"flash {fl['flash_bytes']} bytes: code {fl['code_bytes']} + weights "
            f"{fl['weight_bytes']} + constants {fl['const_bytes']}") in text
    kernels = [r["kernel"] for r in man["memory"]["layers"] if r["template"] != "alias"]
    per = {k["kernel"]: k["bytes"] for k in fl["kernel_code"]}
    assert sorted(per) == sorted(kernels) and per[kernels[0]] > 0
    # 0 only for a kernel of the same code as an earlier one (gcc -fipa-icf shares the body)
    rows = {r["kernel"]: r for r in man["memory"]["layers"]}
    def same(a, b):
        return all(rows[a][f] == rows[b][f] for f in ("ops", "template", "shape", "config"))
    for i, k in enumerate(kernels):
        assert per[k] > 0 or any(same(k, e) and per[e] > 0 for e in kernels[:i]), k
    for k in kernels:
        assert re.search(rf"^{k}\s+{per[k]}\s", text, re.M), k
    # out-of-line sizes add up to about the inlined object's code
    split = sum(per.values()) + fl["entry_code"] + fl["helper_code"]
    assert _close(split, fl["code_bytes"], 0.25), (split, fl["code_bytes"])
    # against arm-none-eabi-size of the object built from the written NAME.c
    text_b, flash_b = _size("arm-none-eabi-size",
                            _independent_object(out / "kws.c", "cortex-m4", tmp_path))
    assert _close(fl["code_bytes"], text_b), (fl["code_bytes"], text_b)
    assert _close(fl["flash_bytes"], flash_b), (fl["flash_bytes"], flash_b)


def _refused(capsys, argv, out_dir):
    before = _listing(out_dir.parent), _listing(out_dir)
    rc = main(argv)
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 1, err
    assert (_listing(out_dir.parent), _listing(out_dir)) == before     # nothing written
    return lines[0]


def _contributors(line: str) -> list:
    """(name, bytes) of the contributors listed after the last ': '."""
    return [(m[0], int(m[1])) for m in re.findall(r"(?:^|, )([\w .]+?) (\d+)(?: \([^)]*\))?",
                                                  line.rsplit(": ", 1)[1])]


def test_cortex_m4_over_the_flash_budget_is_refused_with_nothing_written(kws, kws_m4, tmp_path,
                                                                        capsys):
    path, _ = kws
    cm, fl = kws_m4
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's file\n")
    budget = fl.total_bytes - 100
    line = _refused(capsys, ["compile", str(path), "--target", "cortex-m4", "-o", str(out),
                             "--budget-flash", str(budget)], out)
    assert line.startswith("cgen compile: error: flash needs")
    assert f"over the flash budget of {budget} bytes by 100;" in line
    assert f"code {fl.code_bytes} + weights {fl.weight_bytes}" in line
    top = _contributors(line)
    assert len(top) == 3, line
    assert [b for _, b in top] == sorted((b for _, b in top), reverse=True)
    # the first is the kernel with the most weights + code
    weights = {r.kernel: r.weight_bytes for r in cm.report.rows}
    best = max(fl.kernel_code, key=lambda kc: weights[kc[0]] + kc[1])
    assert top[0] == (best[0], weights[best[0]] + best[1])
    # at the figure itself it fits
    assert main(["compile", str(path), "--target", "cortex-m4", "-o", str(out),
                 "--budget-flash", str(fl.total_bytes)]) == 0
    assert _listing(out) == ["kws.c", "kws.cmake", "kws.h", "manifest.json", "mine.txt"]


def test_cortex_m4_over_the_ram_budget_is_refused_before_building(kws, kws_m4, tmp_path,
                                                                   capsys):
    path, _ = kws
    cm, _ = kws_m4
    ws = cm.workspace_bytes
    out = tmp_path / "out"
    out.mkdir()
    line = _refused(capsys, ["compile", str(path), "--target", "cortex-m4", "-o", str(out),
                             "--budget-ram", str(ws - 64)], out)
    assert line.startswith("cgen compile: error: the workspace needs")
    assert f"over the RAM budget of {ws - 64} bytes by 64;" in line
    top = _contributors(line)
    assert len(top) == 3, line
    assert all(re.fullmatch(r"k\d+_\w+", n) for n, _ in top), top
    assert [b for _, b in top] == sorted((b for _, b in top), reverse=True)
    # the first is the step of the peak of live bytes, which no plan can go below
    assert top[0][1] <= ws
    assert top[0][1] >= cm.report.activation_bytes


@pytest.mark.parametrize("target,tool", [
    ("aarch64", "aarch64-linux-gnu-size"),
    pytest.param("x86-avx2", "size", marks=pytest.mark.slow)])
def test_other_targets_report_code_bytes_with_their_size(kws, tmp_path, target, tool):
    tgt = resolve(target)
    _need(tgt.cc, tool)
    _, model = kws
    cm = compile_model(model, target)
    fl = cm.flash()
    assert fl.tool == tool and fl.target == target
    assert fl.code_bytes > 1000 and fl.other_bytes > 0        # .eh_frame of a hosted target
    out = tmp_path / target
    cm.write(out)
    text_b, flash_b = _size(tool, _independent_object(out / f"{cm.name}.c", target, tmp_path))
    assert _close(fl.code_bytes, text_b), (fl.code_bytes, text_b)
    assert _close(fl.total_bytes, flash_b), (fl.total_bytes, flash_b)


def test_write_outputs_is_all_or_nothing(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "b.h").mkdir()               # a file cannot replace this directory
    with pytest.raises(OSError):
        write_outputs({"a.c": "int a;\n", "b.h": "int b;\n"}, out)
    assert _listing(out) == ["b.h"] and _listing(tmp_path) == ["o"]
    assert [p.name for p in write_outputs({"a.c": "x\n"}, tmp_path / "n")] == ["a.c"]
    assert _listing(tmp_path) == ["n", "o"]


def test_missing_binutils_are_one_line_naming_the_package():
    from dataclasses import replace
    from cgen.graph import ModelError
    from cgen.graph.flash import binutil
    tgt = replace(resolve("cortex-m4"), name="rv", triple="riscv99-none-elf")
    with pytest.raises(ModelError) as e:
        binutil(tgt, "size")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("'riscv99-none-elf-size' not found")
    assert "target rv" in msg and msg.endswith("apt-get install binutils-riscv99-none-elf")


def test_cortex_m4_weights_over_the_flash_budget_are_refused_before_any_build(kws, kws_m4,
                                                                             tmp_path, capsys,
                                                                             monkeypatch):
    """A flash budget below the weights alone is refused from the report: no object is
    built to measure the code (measure_flash is never called)."""
    import cgen.graph.fit as fit
    path, _ = kws
    cm, _ = kws_m4
    weights = cm.report.weight_bytes

    def no_build(*a, **k):
        raise AssertionError("an object was built to measure the code")
    monkeypatch.setattr(fit, "measure_flash", no_build)
    out = tmp_path / "out"
    out.mkdir()
    line = _refused(capsys, ["compile", str(path), "--target", "cortex-m4", "-o", str(out),
                             "--budget-flash", str(weights - 100)], out)
    assert line.startswith("cgen compile: error: flash needs more than")
    assert "weights alone" in line and f"by {100} at least" in line
    assert len(_contributors(line)) >= 1
