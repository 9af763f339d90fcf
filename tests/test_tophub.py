"""The shipped best-known configs (cgen.ops.tophub): they load, every entry is a legal
config of its target's space, and template defaults come from them by the
nearest-workload rule."""
from __future__ import annotations

import json

import pytest

from cgen.ops import tophub
from cgen.ops.registry import templates
from cgen.autotune.tophub_regen import write_entry

GEMM = {"op": "gemm", "dtype": "float32"}


def gemm_wl(m, n, k):
    return {**GEMM, "M": m, "N": n, "K": k}


def test_the_shipped_tables_load_and_name_known_templates_and_targets():
    table = templates()
    entries = tophub.all_entries()
    assert entries, "no shipped best-known configs"
    for e in entries:
        assert e.template in table, e.template
        assert e.target in set(tophub.FAMILIES.values()), e.target
        assert e.cost_unit in ("s", "icount_ticks") and e.cost > 0 and e.measured
    # the ISAs the issue names have gemm rows
    for cls in ("x86-avx2", "x86-avx512"):
        assert tophub.entries("gemm", cls), cls


def test_every_shipped_entry_is_a_legal_config_of_its_targets_space():
    table = templates()
    for e in tophub.all_entries():
        space = table[e.template].space(e.workload_dict(), e.target)
        knobs = e.knobs_dict()
        assert set(knobs) == set(space.names()), (e.target, e.workload, knobs)
        space.index_of(knobs)    # raises when a value is not a choice


@pytest.mark.parametrize("target", ["x86-avx2", "x86-avx512"])
def test_gemm_defaults_come_from_the_table_by_the_nearest_rule(target):
    t = templates()["gemm"]
    for e in tophub.entries("gemm", target):
        wl = e.workload_dict()
        # the entry's own workload: exactly its knobs
        assert t.default(wl, target).to_dict() == e.knobs_dict()
        # a workload a little larger reads the same entry, projected onto its own space
        near = {**wl, "M": wl["M"] + 8, "N": wl["N"] + 8, "K": wl["K"] + 8}
        assert tophub.nearest_entry("gemm", target, near) == e
        sp = t.space(near, target)
        assert t.default(near, target) == sp.nearest(e.knobs_dict())


def test_avx2_and_avx512_defaults_differ_where_the_table_says_so():
    t = templates()["gemm"]
    differing = 0
    for e2 in tophub.entries("gemm", "x86-avx2"):
        wl = e2.workload_dict()
        e5 = tophub.nearest_entry("gemm", "x86-avx512", wl)
        if e5 is None or e5.workload_dict() != wl:
            continue
        d2, d5 = t.default(wl, "x86-avx2").to_dict(), t.default(wl, "x86-avx512").to_dict()
        assert d2 == e2.knobs_dict() and d5 == e5.knobs_dict()
        assert (d2 != d5) == (e2.knobs_dict() != e5.knobs_dict())
        differing += d2 != d5
    assert differing, "the two x86 tables agree on every gemm workload"


def test_host_reads_its_isa_family_and_boards_read_their_own_table_first():
    from targets import resolve
    host = resolve("host")
    fam = tophub.FAMILIES.get((host.arch, host.isa))
    assert tophub.target_classes("host") == ((fam,) if fam else ())
    assert tophub.target_classes("rpi4") == ("rpi4", "aarch64")
    assert tophub.target_classes("armv7") == ("armv7",)
    assert tophub.target_classes("x86-avx2") == ("x86-avx2",)


def _table(tmp_path, target="x86-avx2"):
    write_entry("gemm", target, gemm_wl(256, 256, 256), {"MR": 4}, 1e-3, "s", "test", tmp_path)
    write_entry("gemm", target, gemm_wl(1024, 1024, 1024), {"MR": 6}, 2e-2, "s", "test", tmp_path)
    return tmp_path


def test_nearest_rule_is_log_distance_within_one_workload_class(tmp_path):
    root = _table(tmp_path)
    knobs = lambda wl: tophub.best_known("gemm", "x86-avx2", wl, root)  # noqa: E731
    assert knobs(gemm_wl(256, 256, 256)) == {"MR": 4}
    assert knobs(gemm_wl(400, 400, 400)) == {"MR": 4}      # log distance: nearer 256
    assert knobs(gemm_wl(600, 600, 600)) == {"MR": 6}      # nearer 1024
    assert knobs(gemm_wl(64, 4096, 1024)) == {"MR": 6}
    assert knobs({**gemm_wl(256, 256, 256), "dtype": "int8"}) is None   # another class
    assert tophub.best_known("dense", "x86-avx2", gemm_wl(256, 256, 256), root) is None
    assert tophub.best_known("gemm", "x86-avx512", gemm_wl(256, 256, 256), root) is None


def test_write_entry_replaces_one_workload_and_keeps_the_others(tmp_path):
    root = _table(tmp_path)
    path = write_entry("gemm", "x86-avx2", gemm_wl(256, 256, 256), {"MR": 6}, 5e-4, "s", "again",
                       root)
    data = json.loads(path.read_text())
    assert data["version"] == tophub.VERSION and data["target"] == "x86-avx2"
    assert [e["knobs"]["MR"] for e in data["entries"]] == [6, 6]
    assert tophub.best_known("gemm", "x86-avx2", gemm_wl(256, 256, 256), root) == {"MR": 6}


def test_a_table_of_another_version_is_refused(tmp_path):
    path = tophub.table_path("gemm", "armv7", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 99, "template": "gemm", "target": "armv7",
                                "entries": []}))
    with pytest.raises(ValueError, match="version 99"):
        tophub.entries("gemm", "armv7", tmp_path)


def test_regen_confirm_ranks_configs_by_cpu_time_per_call():
    from targets.target import _cpu_flags
    if not {"avx2", "fma"} <= _cpu_flags():
        pytest.skip("this machine cannot run x86-avx2 code")
    from cgen.autotune.task import parse_workload
    from cgen.autotune.tophub_regen import confirm
    task = parse_workload("gemm:24,40,16", "x86-avx2")
    sp = task.space()
    configs = [sp.get(0), task.template.default(task.workload, task.target)]
    ranked = confirm(task, configs, rounds=2, min_s=0.01)
    assert {c.index for _, c in ranked} == {c.index for c in configs}
    assert all(cost > 0 for cost, _ in ranked) and ranked[0][0] <= ranked[-1][0]
