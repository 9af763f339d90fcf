"""docs/ONNX_SUPPORT.md is what the ONNX backend node tests give today (regenerate with
`python -m cgen.graph.support_doc --jobs 2 > docs/ONNX_SUPPORT.md`).

Compiling every case takes minutes from a cold compile cache, so the whole page is
compared in a slow test; the quick test checks the page's structure and the part the
frontend decides: which cases are skipped, and that every case the reference
interpreter passes is counted as compiled (pass or fail, never skipped)."""
from __future__ import annotations

from pathlib import Path
import re

import pytest

from cgen.graph.onnx_frontend import CONVERTERS
from cgen.graph.onnx_node_tests import (NodeTestResult, backend_node_cases, node_test_results,
                                        node_test_summary)
from cgen.graph.support_doc import compiled_results, onnx_version, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "ONNX_SUPPORT.md"
ROW = re.compile(r"^\| (\w+) \| (\d+) \| (\d+) \| (\d+) \| (.*) \|$")


def _page() -> str:
    text = DOC.read_text()
    if f"onnx {onnx_version()}," not in text:
        pytest.skip(f"the page was made with another onnx than {onnx_version()}: regenerate it")
    return text


def _table(text: str) -> dict:
    """op -> (pass, skip, fail) from the page's table."""
    rows = [ROW.match(line) for line in text.splitlines()]
    return {m.group(1): tuple(int(m.group(k)) for k in (2, 3, 4)) for m in rows if m}


def _totals(text: str) -> tuple:
    m = re.search(r"All cases: (\d+) pass, (\d+) skipped, (\d+) fail\.", text)
    assert m, "no totals line"
    return tuple(int(x) for x in m.groups())


def test_page_structure_and_frontend_part():
    text = _page()
    table = _table(text)
    summary = node_test_summary(node_test_results())          # frontend + reference
    assert set(table) == {op for op, r in summary.items() if r["supported"]}
    assert set(table) <= set(CONVERTERS)
    for op, (npass, nskip, nfail) in table.items():
        ref = summary[op]
        assert nskip == ref["skip"], f"{op}: the compiled path skips other cases"
        assert npass + nfail == ref["pass"], f"{op}: a case the reference passes is missing"
        assert nfail == 0, f"{op}: {nfail} cases fail compiled"
    npass, nskip, nfail = _totals(text)
    assert npass + nskip + nfail == len(backend_node_cases())
    assert nskip == sum(r["skip"] for r in summary.values())
    assert f"Ops with a converter: {len(table)}." in text
    kinds = [int(x) for x in re.findall(r"^- (\d+) use ", text, re.M)]
    assert len(kinds) == 3 and sum(kinds) == nskip


def test_render_lists_counts_reasons_and_failures():
    rs = [NodeTestResult("test_relu", "Relu", ("Relu",), "pass"),
          NodeTestResult("test_relu_f16", "Relu", ("Relu",), "skip",
                         "node 'r' (Relu): input 'x' has dtype float16; cgen supports float32",
                         "unsupported_dtype"),
          NodeTestResult("test_abs", "Abs", ("Abs",), "fail", "output 'y': max abs diff 1"),
          NodeTestResult("test_foo", "Foo", ("Foo",), "skip", "unsupported op Foo",
                         "unsupported_op")]
    text = render(node_test_summary(rs), rs)
    assert _table(text) == {"Relu": (1, 1, 0), "Abs": (0, 0, 1)}
    assert "| Relu | 1 | 1 | 0 | dtypes float16 |" in text
    assert _totals(text) == (1, 2, 1)
    assert "- 1 use an op without a converter" in text and "- 1 use a dtype" in text
    assert "Ops without a converter (1): Foo." in text
    assert "- test_abs: output 'y': max abs diff 1" in text


@pytest.mark.slow
def test_page_is_current():
    """Every case compiled for the host and run: the page as it should be, no failure."""
    text = _page()
    results = compiled_results(jobs=1)
    assert not [(r.name, r.reason) for r in results if r.status == "fail"]
    assert text == render(node_test_summary(results), results), \
        "docs/ONNX_SUPPORT.md is stale: python -m cgen.graph.support_doc > docs/ONNX_SUPPORT.md"
