"""Pre-trained cost models: a new task's first batch ranked before it has records.

    pre = load_pretrained(task)            # (model, feature names) or None
    Tuner(task, measurer, pretrained=pre)  # ranks with it until the task has its own records

The models in pretrained_models/ were trained by `python -m cgen.autotune.pretrain`
(its docstring says how) on records of other workloads of the same templates:
one XGBoost ranking model per (template, cost unit), on knob features
(cgen.autotune.features, kind "knob"), as two files per model:

    TEMPLATE.UNIT.ubj.gz    the booster (XGBoost's binary JSON, gzipped)
    TEMPLATE.UNIT.json      feature names, targets, architectures, workloads,
                            record counts and held-out accuracies

A model that did not beat random picks on held-out workloads is not shipped:
its .json says "shipped": false and has no booster, so nothing loads for it.

`names` are the model's feature columns: a task's features are aligned onto
them by name (cgen.autotune.tuner.align(X, task_names, names); knobs or
workload numbers the model never saw are dropped, missing ones are 0).

Which model fits a task (`choose`): the task's template, then the cost unit:
  - cost_unit "s": a seconds model trained on the task's architecture (the
    development machine's host timings fit host tasks of the same arch; a
    model whose targets include the task's resolved target is preferred);
  - cost_unit "icount_ticks": an instruction-count model, AArch64 tasks only;
  - cost_unit None: seconds first, then, for AArch64 tasks, icount ticks
    (no seconds model of an ARM board ships, so ARM tasks use the icount one).
None when nothing fits.  Nothing here holds state: files are read when a
function is called (the booster loader is cached on path, size and mtime).
"""
from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "pretrained_models"
BOOSTER_SUFFIX = ".ubj.gz"
UNITS = ("s", "icount_ticks")


def available(directory=None) -> list:
    """Metadata of every model in `directory` (default: the shipped ones), sorted by
    file name; each dict also has "path", its booster file (models without one are skipped)."""
    d = Path(directory) if directory is not None else MODEL_DIR
    out = []
    if not d.is_dir():
        return out
    for meta_path in sorted(d.glob("*.json")):
        booster = meta_path.with_name(meta_path.name[:-len(".json")] + BOOSTER_SUFFIX)
        if not booster.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if (not isinstance(meta, dict) or not meta.get("shipped", True)
                or not {"template", "cost_unit", "feature_names"} <= set(meta)):
            continue
        out.append(dict(meta, path=str(booster)))
    return out


def choose(task, cost_unit: str | None = None, directory=None) -> dict | None:
    """The metadata of the model for `task` (see the module docstring), or None."""
    if cost_unit is not None and cost_unit not in UNITS:
        raise ValueError(f"unknown cost unit {cost_unit!r}; one of {UNITS}")
    arch = task.target.arch
    name = task.template.name
    mine = [m for m in available(directory) if m["template"] == name]
    for unit in ([cost_unit] if cost_unit else list(UNITS)):
        if unit == "icount_ticks" and arch != "aarch64":
            continue
        fits = [m for m in mine if m["cost_unit"] == unit and arch in m.get("arch", ())]
        if fits:
            exact = [m for m in fits if task.target_name in m.get("targets", ())]
            return (exact or fits)[0]
    return None


def load_pretrained(task, cost_unit: str | None = None, directory=None):
    """(model, feature names) of the pre-trained model for `task`, or None.

    The model is a cgen.autotune.costmodel.XGBModel (rank objective); its
    `predict` takes features aligned onto `names`."""
    meta = choose(task, cost_unit, directory)
    if meta is None:
        return None
    return load_file(meta["path"]), tuple(meta["feature_names"])


def load_file(path):
    """An XGBModel around the booster of one model file (a fresh wrapper each call)."""
    from .costmodel import XGBModel
    p = Path(path)
    st = p.stat()
    model = XGBModel("rank")
    model.booster = _booster(str(p.resolve()), st.st_size, st.st_mtime_ns)
    return model


@lru_cache(maxsize=32)
def _booster(path: str, size: int, mtime_ns: int):
    # pure in its arguments: a changed file has a new size or mtime, hence a new entry
    import xgboost as xgb
    b = xgb.Booster()
    b.load_model(bytearray(gzip.decompress(Path(path).read_bytes())))
    return b
