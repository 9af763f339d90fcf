"""docs/ONNX_SUPPORT.md is exactly what the node tests give today (regenerate with
`python -m cgen.graph.support_doc > docs/ONNX_SUPPORT.md`)."""
from __future__ import annotations

from pathlib import Path

from cgen.graph.onnx_frontend import node_test_results, node_test_summary
import pytest

from cgen.graph.support_doc import onnx_version, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "ONNX_SUPPORT.md"


def test_support_page_is_current():
    if f"onnx {onnx_version()}" not in DOC.read_text():
        pytest.skip(f"the page was made with another onnx than {onnx_version()}: regenerate it")
    summary = node_test_summary(node_test_results())
    assert sum(r["fail"] for r in summary.values()) == 0
    assert DOC.read_text() == render(summary), \
        "docs/ONNX_SUPPORT.md is stale: python -m cgen.graph.support_doc > docs/ONNX_SUPPORT.md"
