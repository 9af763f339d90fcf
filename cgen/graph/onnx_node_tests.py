"""The ONNX backend node tests (onnx.backend.test data) run through the importer and the
reference interpreter, or compiled for a target: the data behind support_doc.py and the
backend tests."""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import numpy as np

from .graph_ir import ModelError
from .onnx_frontend import CONVERTERS, load_onnx
from .onnx_import import _first_line, _onnx


# ====================================================================== ONNX node tests
# Operand positions that act as attributes: frozen as initializers when a node test feeds them.
SHAPE_OPERANDS: Mapping[str, tuple] = {
    "Reshape": (1,), "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "Pad": (1, 2, 3),
    "Split": (1,), "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "Clip": (1, 2), "Gather": (1,), "ConstantOfShape": (0,), "Dropout": (1, 2),
    "Resize": (1, 2, 3), "Upsample": (1,),
    "Range": (0, 1, 2), "Expand": (1,), "Tile": (1,), "Trilu": (1,), "CumSum": (1,),
    "CumProd": (1,), "OneHot": (1,), "TopK": (1,), "CenterCropPad": (1,),
    **{op: (0,) for op in ("HannWindow", "HammingWindow", "BlackmanWindow")},
    "ScatterND": (1,), "ScatterElements": (1,), "Scatter": (1,),     # cgen needs scatter indices constant
    "LSTM": (4,), "GRU": (4,), "RNN": (4,),          # sequence_lens: cgen runs every step
    **{op: (1,) for op in ("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum",
                           "ReduceLogSumExp", "ReduceProd")},
}


# Ops whose output depends only on the (static) shape of their input, not its values: the
# walk from a shape-like operand stops there, so that input stays a graph input.
SHAPE_ONLY = frozenset({"Shape", "Size"})


@dataclasses.dataclass(frozen=True)
class NodeTestResult:
    name: str
    op: str               # the ONNX op the case tests (from its name; see _primary_op)
    ops: tuple            # ONNX op types in the case's graph (an _expanded case has many)
    status: str           # "pass" | "skip" | "fail"
    reason: str = ""      # why skipped or failed (one line)
    kind: str = ""        # a skip's ModelError kind: unsupported_op, _dtype or _attr


def _primary_op(name: str, ops: tuple) -> str:
    """The op a node test is about: the longest ONNX op name its name starts with
    (test_reduce_sum_square_... -> ReduceSumSquare), else its only op."""
    key = name.removeprefix("test_").replace("_", "").lower()
    best = ""
    for op in _onnx_op_names():
        if key.startswith(op.lower()) and len(op) > len(best):
            best = op
    return best or (ops[0] if len(ops) == 1 else "+".join(ops))


@functools.lru_cache(maxsize=1)
def _onnx_op_names() -> tuple:
    return tuple(sorted({s.name for s in _onnx().defs.get_all_schemas()}))


def freeze_shape_operands(model, inputs: list):
    """Copy of the model where graph inputs feeding shape-like operands become initializers."""
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names = [v.name for v in g.input if v.name not in {t.name for t in g.initializer}]
    feed = dict(zip(names, inputs))
    producer = {o: node for node in g.node for o in node.output}
    freeze, seen = set(), set()
    todo = [node.input[pos] for node in g.node for pos in SHAPE_OPERANDS.get(node.op_type, ())
            if pos < len(node.input) and node.input[pos]]
    while todo:                       # everything a shape-like operand is computed from
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in feed:
            freeze.add(name)
        elif name in producer and producer[name].op_type not in SHAPE_ONLY:
            todo.extend(i for i in producer[name].input if i)
    for name in freeze:
        g.initializer.append(onnx.numpy_helper.from_array(np.asarray(feed[name]), name))
    keep = [v for v in g.input if v.name not in freeze]
    del g.input[:]
    g.input.extend(keep)
    return m, {k: v for k, v in feed.items() if k not in freeze}


def _compare(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str:
    want = np.asarray(want)
    if got.shape != want.shape:
        return f"shape {got.shape} != expected {want.shape}"
    if str(got.dtype) != str(want.dtype):
        return f"dtype {got.dtype} != expected {want.dtype}"
    if np.issubdtype(want.dtype, np.floating):
        ok = np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        ok = np.array_equal(got, want)
    if ok:
        return ""
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return f"max abs diff {np.nanmax(diff):.3g}"


SKIP_KINDS = ("unsupported_op", "unsupported_dtype", "unsupported_attr")


def run_node_test(case, rtol: float = 1e-3, atol: float = 1e-5, target=None,
                  name: str = "m") -> NodeTestResult:
    """One ONNX backend node case: with target None through load_onnx + the reference
    interpreter; with a target compiled and run on it by the code path of `cgen run`
    (cgen.graph.model.compile_model, then CompiledModel.run)."""
    ops = tuple(sorted({n.op_type for n in case.model.graph.node}))
    result = functools.partial(NodeTestResult, case.name, _primary_op(case.name, ops), ops)
    unsupported = [op for op in ops if op not in CONVERTERS]
    if unsupported:
        return result("skip", f"unsupported op {', '.join(unsupported)}", "unsupported_op")
    for inputs, outputs in case.data_sets:
        try:
            model, feeds = freeze_shape_operands(case.model, list(inputs))
            got, out_names = _run_case(model, feeds, target, name)
        except ModelError as e:
            if e.kind in SKIP_KINDS:
                return result("skip", str(e), e.kind)
            return result("fail", f"{e.kind}: {e}")
        except Exception as e:  # noqa: BLE001 - a crash is a failure to report
            return result("fail", f"{type(e).__name__}: {_first_line(e)}")
        for out_name, want in zip(out_names, outputs):
            msg = _compare(got[out_name], np.asarray(want), rtol, atol)
            if msg:
                return result("fail", f"output {out_name!r}: {msg}")
    return result("pass")


def _run_case(model, feeds: dict, target, name: str):
    """(outputs by name, graph output names) of one data set, interpreted or compiled."""
    if target is None:
        from . import reference
        graph = load_onnx(model)
        return reference.run(graph, {v.name: np.asarray(feeds[v.name]) for v in graph.inputs}), \
            [v.name for v in graph.outputs]
    from .model import compile_model
    cm = compile_model(model, target, name=name)
    return cm.run({v.name: np.asarray(feeds[v.name]) for v in cm.graph.inputs}), \
        [v.name for v in cm.graph.outputs]


@functools.lru_cache(maxsize=1)
def backend_node_cases() -> tuple:
    """Every ONNX backend node case that has a model, built in memory (once: onnx computes
    the expected outputs with its reference implementation, a few seconds)."""
    import warnings
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(c for c in collect_testcases(None) if c.model is not None)


def node_test_results(cases=None, target=None) -> list:
    """Every ONNX backend node case (built in memory) run through frontend + reference,
    or compiled for `target` (see run_node_test)."""
    if cases is None:
        cases = backend_node_cases()
    return [run_node_test(c, target=target) for c in cases if c.model is not None]


def node_test_summary(results) -> dict:
    """op -> {"pass": n, "skip": n, "fail": n, "supported": bool, "skipped": [(case, reason)],
    "failed": [(case, reason)]}, each case counted once, under the op it tests; sorted by op.
    "supported" says whether cgen imports the op at all."""
    out: dict = {}
    for r in results:
        row = out.setdefault(r.op, {"pass": 0, "skip": 0, "fail": 0, "supported": r.op in CONVERTERS,
                                    "skipped": [], "failed": []})
        row[r.status] += 1
        if r.status == "skip":
            row["skipped"].append((r.name, r.reason))
        elif r.status == "fail":
            row["failed"].append((r.name, r.reason))
    return dict(sorted(out.items()))
