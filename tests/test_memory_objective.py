"""The RAM objective on cortex-m4: workspace against the per-op lower bound and TFLM's
greedy plan, the C still right (generic-c on the host, and cortex-m4 under QEMU), in-place
elementwise kernels, the order of independent branches, and TFLM's rule itself."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper as h  # noqa: E402

from cgen.graph.drive import legalize  # noqa: E402
from cgen.graph.memory import Interval  # noqa: E402
from cgen.graph.model import compile_model  # noqa: E402
from cgen.graph.pipeline import prepare  # noqa: E402
from cgen.graph.plan_tflm import op_lower_bound, tflm_plan  # noqa: E402
from cgen.graph.kernels import kernel_target  # noqa: E402
from tests import test_graph_frontend as fe  # noqa: E402
from tests.zoo import ZOO  # noqa: E402


def dilated_grouped_cnn(opset: int = 13):
    """A dilated grouped convolution between two plain ones (NCHW 1x8x20x20): conv 3x3 ->
    ReLU -> conv 3x3, dilation 2, 4 groups -> ReLU -> conv 1x1."""
    r = fe.rng(12)
    inits = {"w1": fe.w(r, 16, 8, 3, 3), "b1": fe.w(r, 16, scale=0.1),
             "w2": fe.w(r, 16, 4, 3, 3), "b2": fe.w(r, 16, scale=0.1),
             "w3": fe.w(r, 8, 16, 1, 1)}
    N = h.make_node
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             N("Relu", ["c1"], ["a1"], name="relu1"),
             N("Conv", ["a1", "w2", "b2"], ["c2"], pads=[2, 2, 2, 2], dilations=[2, 2], group=4,
               name="dgconv"),
             N("Relu", ["c2"], ["a2"], name="relu2"),
             N("Conv", ["a2", "w3"], ["y"], name="conv3")]
    model = fe.make_model(nodes, {"x": (1, 8, 20, 20)}, ["y"], inits, opset)
    return model, {"x": r.standard_normal((1, 8, 20, 20)).astype(np.float32)}


def two_branches(opset: int = 13):
    """Two wide branches off one input, each pooled to a vector, then joined: run branch
    by branch, only one wide activation is live at a time."""
    r = fe.rng(13)
    inits = {"wa": fe.w(r, 32, 1, 3, 3), "wb": fe.w(r, 32, 1, 3, 3)}
    N = h.make_node
    nodes = [N("Conv", ["x", "wa"], ["ca"], pads=[1, 1, 1, 1], name="conv_a"),
             N("Conv", ["x", "wb"], ["cb"], pads=[1, 1, 1, 1], name="conv_b"),
             N("GlobalAveragePool", ["ca"], ["ga"], name="gap_a"),
             N("GlobalAveragePool", ["cb"], ["gb"], name="gap_b"),
             N("Add", ["ga", "gb"], ["y"], name="join")]
    model = fe.make_model(nodes, {"x": (1, 1, 16, 16)}, ["y"], inits, opset)
    return model, {"x": r.standard_normal((1, 1, 16, 16)).astype(np.float32)}


# the zoo's models and the issue's dilated grouped convolution
MODELS = {**ZOO, "dilated_grouped_cnn": dilated_grouped_cnn}
# the four the issue found over the bound (latency kernels): checked in the quick tier
ISSUE_MODELS = ("dilated_grouped_cnn", "kws_cnn", "prime_cnn", "resnet_basic_block")
# qdq_cnn meets the bound only with the patches the RAM objective plans (cgen.graph.patch):
# per layer, qconv2d's scratch (shifted input Xq, weights and sums converted at run time,
# columns: 2752 bytes beside 1728 of activations) puts it at 1.56x
TARGET = "cortex-m4"


def yardsticks(model) -> tuple:
    """(per-op lower bound, TFLM-style plan bytes) of a model for cortex-m4."""
    fg = legalize(prepare(model), kernel_target(TARGET), "ram")
    return op_lower_bound(fg.graph), tflm_plan(fg).total


def check_ram(name: str):
    model, _ = MODELS[name]()
    cm = compile_model(model, TARGET, name=name, objective="ram")
    bound, tflm = yardsticks(model)
    ws = cm.workspace_bytes
    assert ws <= tflm, f"{name}: workspace {ws} above the TFLM-style plan {tflm}"
    assert ws <= 1.1 * bound, f"{name}: workspace {ws} over 1.1x the per-op bound {bound}"
    return cm


@pytest.mark.parametrize("name", ISSUE_MODELS)
def test_ram_objective_within_bound_issue_models(name):
    """cortex-m4: the four models with scratch over the bound under latency kernels."""
    latency = compile_model(MODELS[name]()[0], TARGET, name=name, objective="latency")
    cm = check_ram(name)
    assert cm.workspace_bytes < latency.workspace_bytes


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(MODELS) - set(ISSUE_MODELS)))
def test_ram_objective_within_bound_zoo(name):
    check_ram(name)


@pytest.mark.parametrize("name", ["dilated_grouped_cnn",
                                  pytest.param("qdq_cnn", marks=pytest.mark.slow),
                                  pytest.param("encoder_block", marks=pytest.mark.slow)])
def test_ram_objective_runs_right_generic_c(name):
    """generic-c on the host: the direct grouped / dilated convolution, the split int8
    epilogue and the in-place elementwise kernels against onnxruntime."""
    model, feeds = MODELS[name]()
    cm = compile_model(model, "generic-c", name=name, objective="ram")
    got = cm.run(feeds)
    want = fe.ort_run(model, feeds)
    tol = 0.05 if name == "qdq_cnn" else 1e-4       # one int8 step of the logits
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=tol, atol=tol)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kws_cnn", "dilated_grouped_cnn"])
def test_ram_objective_runs_right_cortex_m4(name):
    model, feeds = MODELS[name]()
    cm = compile_model(model, TARGET, name=name, objective="ram")
    got = cm.run(feeds)
    for k, v in fe.ort_run(model, feeds).items():
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-4)


def test_in_place_elementwise_generic_c():
    """encoder_block on generic-c: under ram an elementwise kernel writes over an input
    that dies there (its output owns no buffer of its own); under latency none does."""
    model, _ = ZOO["encoder_block"]()

    def shared(cm):
        own = {iv.name for iv in cm.source.intervals}
        return [r.output for r in cm.report.rows
                if r.storage == "workspace" and f"v:{r.output}" not in own]
    assert shared(compile_model(model, "generic-c", objective="ram"))
    assert not shared(compile_model(model, "generic-c", objective="latency"))


def test_branch_order_lowers_peak_generic_c():
    """Two wide branches: the RAM objective runs each branch to its pooled vector before
    the other, so one 32x16x16 activation is live at a time, not two."""
    model, feeds = two_branches()
    wide = 32 * 16 * 16 * 4
    ram = compile_model(model, "generic-c", objective="ram")
    lat = compile_model(model, "generic-c", objective="latency")
    assert lat.workspace_bytes >= 2 * wide
    assert ram.workspace_bytes < 2 * wide
    got = ram.run(feeds)
    for k, v in fe.ort_run(model, feeds).items():
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5)


def test_default_objective_by_target():
    from cgen.graph.objective import resolve_objective
    from targets import resolve
    assert resolve_objective(None, resolve("cortex-m4")) == "balanced"
    assert resolve_objective(None, resolve("x86-avx2")) == "latency"
    assert resolve_objective(None, resolve("x86-avx2"), budget_ram=1 << 16) == "balanced"


def test_tflm_rule_by_hand():
    """TFLM's greedy rule on a hand-made case: largest first at 0, then each at the first
    gap among the live buffers; a chain a -> b -> c reuses a's bytes for c."""
    from cgen.graph.plan_tflm import _fits_at
    a, b, c = Interval("a", 100, 0, 1), Interval("b", 50, 1, 2), Interval("c", 90, 2, 3)
    placed = [(a, 0)]
    assert _fits_at(b, placed, 16) == 112        # a (rounded to 112) is live with b
    placed.append((b, 112))
    assert _fits_at(c, placed, 16) == 0          # a is dead at step 2: c takes its place
    model, _ = ZOO["lenet"]()
    fg = legalize(prepare(model), kernel_target(TARGET), "ram")
    pl = tflm_plan(fg)
    from cgen.graph.plan_tflm import tensor_lifetimes
    ivs = tensor_lifetimes(fg)
    pl.check(ivs)
    assert pl.total >= max(iv.size for iv in ivs)


# ---------------------------------------------------------------- the Pareto front in the log
def _rec(cfg: dict, cost: float, ram, flash, wl=None, target="cortex-m4"):
    from cgen.autotune.log import Record
    return Record(workload=wl or {"op": "x"}, target=target, toolchain={},
                  config={"index": 0, "knobs": cfg}, costs=(cost,), ram_bytes=ram,
                  flash_bytes=flash)


def test_pareto_front_and_old_logs():
    """A record dominated in time, RAM and flash leaves the front; old lines (no
    footprint) still parse and are written back without the new fields."""
    import json
    from cgen.autotune.log import Record, pareto_front
    a, b = _rec({"k": 1}, 1.0, 4096, 900), _rec({"k": 2}, 2.0, 0, 800)
    c = _rec({"k": 3}, 3.0, 4096, 900)          # slower than a, same footprint: dominated
    (front,) = pareto_front([a, b, c]).values()
    assert [r.config["knobs"]["k"] for r in front] == [1, 2]
    old = json.loads(a.to_json())
    del old["ram_bytes"], old["flash_bytes"]
    r = Record.from_dict(old)
    assert r.ram_bytes is None and "ram_bytes" not in json.loads(r.to_json())
    assert pareto_front([r]) == {}
    assert json.loads(b.to_json())["ram_bytes"] == 0


def test_compile_picks_from_the_front_cortex_m4():
    """kws_cnn on cortex-m4: a front of two configs of its depthwise kernels (fast with a
    padded plane, slower reading the padding in place); the latency kernels take the fast
    one, the RAM kernels the one with less RAM."""
    from cgen.autotune.log import apply_pareto
    from cgen.graph.drive import lower_graph
    from cgen.graph.objective import legalize_objective
    model, _ = MODELS["kws_cnn"]()
    tgt = kernel_target(TARGET)
    fg = legalize(prepare(model), tgt, legalize_objective("ram"))
    ks = [k for k in lower_graph(fg, tgt, None, "latency") if k.template == "depthwise_conv2d"]
    wl = ks[0].workload
    fast = {**ks[0].config, "pad_at": "plane"}
    small = {**ks[0].config, "pad_at": "inline"}
    tuned = apply_pareto([_rec(fast, 1e-3, 3000, 700, wl, tgt.name),
                          _rec(small, 2e-3, 100, 650, wl, tgt.name)], tgt)
    for objective, want in (("latency", "plane"), ("ram", "inline")):
        got = [k.config["pad_at"] for k in lower_graph(fg, tgt, tuned, objective)
               if k.workload == wl]
        assert got and set(got) == {want}, (objective, got)
    # the compiled model: both configs' planes fit the stack (no workspace scratch), so
    # the RAM objective keeps the faster one
    cm = compile_model(model, TARGET, name="kws", objective="ram", tuned=tuned)
    assert {k.config["pad_at"] for k in cm.kernels if k.workload == wl} == {"plane"}


def test_footprint_of_a_config_cortex_m4():
    """RAM (its local buffers) and code bytes of one depthwise config for cortex-m4: the
    padded-plane config holds a buffer the inline one does not."""
    import shutil
    from cgen.autotune.footprint import footprint
    from cgen.ops.registry import templates
    from targets import resolve
    tgt = kernel_target(TARGET)
    if shutil.which(f"{resolve(TARGET).triple}-size") is None:
        pytest.skip("no arm-none-eabi-size")
    tm = templates()["depthwise_conv2d"]
    wl = tm.workload(1, 8, 20, 20, 3, 3, pad=[1, 1, 1, 1])
    from cgen.ops.common import config_dict
    base = config_dict(tm.default(wl, tgt))
    plane = footprint(tm, wl, tgt, tm.space(wl, tgt).nearest({**base, "pad_at": "plane"}))
    inline = footprint(tm, wl, tgt, tm.space(wl, tgt).nearest({**base, "pad_at": "inline"}))
    assert plane[0] > inline[0] >= 0 and plane[1] > 0 and inline[1] > 0


@pytest.mark.slow
def test_balanced_under_a_budget_x86_avx2():
    """x86-avx2 with a RAM budget (balanced by default): under a budget between the RAM
    and the latency workspaces, the workspace stays within it and some kernel keeps its
    fast template; under no pressure, every kernel is the latency objective's."""
    model, _ = MODELS["kws_cnn"]()
    lat = compile_model(model, "x86-avx2", objective="latency")
    ram = compile_model(model, "x86-avx2", objective="ram")
    assert ram.workspace_bytes < lat.workspace_bytes
    # room for the scratch of one 1x1 convolution's GEMM, not for the im2col one too
    one = min(r.scratch_bytes for r in lat.report.rows if r.template == "conv2d_1x1")
    budget = ram.workspace_bytes + one + 1024
    assert budget < lat.workspace_bytes
    mid = compile_model(model, "x86-avx2", budget_ram=budget)
    assert mid.workspace_bytes <= budget
    # kernels by the value they write (a balanced build has no separate pad kernels)
    fast = {k.outputs[0]: k.template for k in lat.kernels}
    assert any(fast[k.outputs[0]] == k.template and k.template.startswith("conv2d_")
               and k.template != "conv2d_nchw" for k in mid.kernels)
    roomy = compile_model(model, "x86-avx2", budget_ram=10 * lat.workspace_bytes)
    assert all(fast[k.outputs[0]] == k.template for k in roomy.kernels)


@pytest.mark.slow
def test_cli_objective_generic_c(tmp_path):
    """`cgen compile --objective ram` (generic-c): the workspace of the RAM objective."""
    import onnx
    from cgen.cli import main
    model, _ = MODELS["kws_cnn"]()
    path = tmp_path / "kws.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "--target", "generic-c", "--objective", "ram",
                 "-o", str(tmp_path / "out")]) == 0
    header = (tmp_path / "out" / "kws.h").read_text()
    want = compile_model(model, "generic-c", objective="ram").workspace_bytes
    assert f"#define kws_WORKSPACE_BYTES {want}u" in header
    assert want <= 1.1 * 2 * 24 * 25 * 5 * 4       # its per-op bound


def test_model_tasks_for_the_ram_objective_cortex_m4():
    """`cgen tune MODEL --objective ram` (cortex-m4) tunes the RAM routes' kernels too (the
    direct convolutions), each group counted once per workload."""
    from cgen.autotune.model_tasks import extract_tasks
    model, _ = MODELS["kws_cnn"]()
    lat = {t.task.template.name: t.count for t in extract_tasks(model, TARGET)}
    ram = extract_tasks(model, TARGET, objective="ram")
    names = [t.task.template.name for t in ram]
    assert "conv2d_nchw" not in lat and "conv2d_nchw" in names
    assert all(len(set(t.kernels)) == len(t.kernels) == t.count for t in ram)
    assert {n: c for n, c in ((t.task.template.name, t.count) for t in ram)
            if n in lat} == lat


def test_manifest_names_the_objective_generic_c():
    model, _ = MODELS["mlp"]()
    assert compile_model(model, "generic-c").manifest["objective"] == "latency"
    assert compile_model(model, "generic-c", objective="ram").manifest["objective"] == "ram"


@pytest.mark.slow
def test_flash_budget_takes_the_fronts_least_code_configs_cortex_m4():
    """lenet on cortex-m4 with a front of two configs of its first dense kernel: the fast
    one with more code and a slower one with less (code measured by building each).  Under
    a flash budget only the smaller fits: compile takes it from the front and says so;
    without a front (the fastest configs alone) the same budget is refused in one line."""
    from cgen.autotune.log import apply_pareto
    from cgen.graph import ModelError
    from cgen.graph.drive import lower_graph
    from cgen.graph.objective import legalize_objective
    model, _ = MODELS["lenet"]()
    tgt = kernel_target(TARGET)
    fg = legalize(prepare(model), tgt, legalize_objective("latency"))
    k = next(k for k in lower_graph(fg, tgt, None, "latency") if k.template == "dense")
    wl = k.workload
    sizes = {}
    for knobs in ({"pack_a": True, "KC": 256}, {"pack_a": False, "KC": 64},
                  {"pack_a": True, "KC": 64}, {"pack_a": False, "KC": 256}):
        cfg = {**k.config, **knobs}
        one = {**apply_pareto([_rec(cfg, 1e-3, 0, 0, wl, tgt.name)], tgt)}
        cm = compile_model(model, TARGET, name="m", objective="latency", tuned=one)
        sizes[cm.flash().total_bytes] = cfg
    if len(sizes) < 2:
        pytest.skip("every config of the sample builds to the same flash")
    big, small = sizes[max(sizes)], sizes[min(sizes)]
    tuned = apply_pareto([_rec(big, 1e-3, 0, max(sizes), wl, tgt.name),
                          _rec(small, 2e-3, 0, min(sizes), wl, tgt.name)], tgt)
    cm = compile_model(model, TARGET, name="m", objective="latency", tuned=tuned,
                       budget_flash=min(sizes))
    assert [x.config for x in cm.kernels if x.workload == wl] == [small]
    assert cm.source.manifest["tuned_picks"].startswith("least code")
    with pytest.raises(ModelError, match="^flash needs"):
        compile_model(model, TARGET, name="m", objective="latency", tuned=dict(tuned),
                      budget_flash=min(sizes))
