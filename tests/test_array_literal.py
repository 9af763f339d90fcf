"""Weights and constants as C initializer text (graph/emit._array_literal): every value
read back exactly, eight to a row, for every dtype a model's constants take."""
from __future__ import annotations

import numpy as np
import pytest

from cgen.graph.emit import _array_literal


def _read_back(text: str, dtype) -> np.ndarray:
    names = {"NAN": "nan", "INFINITY": "inf", "-INFINITY": "-inf",
             "(-9223372036854775807LL - 1)": str(-2**63)}
    items = [t.strip() for t in text.replace("\n", " ").split(",") if t.strip()]
    items = [names.get(t, t.rstrip("fL")) for t in items]
    return np.array([float(t) if np.dtype(dtype).kind == "f" else int(t) for t in items],
                    dtype=dtype)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 16, 1003])
def test_float_literals_read_back_exactly_in_rows_of_eight(n):
    a = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 1e3
    text = _array_literal(a.reshape(-1, 1) if n else a)
    back = _read_back(text, np.float32)
    assert back.tobytes() == a.tobytes()
    rows = text.split("\n") if n else []
    assert [r.count("f,") for r in rows] == [8] * (n // 8) + ([n % 8] if n % 8 else [])
    assert all(r.startswith("  ") and r.endswith(",") for r in rows)


def test_non_finite_floats_are_c_names():
    a = np.array([np.nan, 1.5, -np.inf, np.inf, 0.0], np.float32)
    text = _array_literal(a)
    assert text == "  NAN, 1.50000000e+00f, -INFINITY, INFINITY, 0.00000000e+00f,"
    back = _read_back(text, np.float32)
    np.testing.assert_array_equal(back, a)


def test_integer_literals():
    big = np.array([-2**63, 5, 2**40, -7, 2**31 - 1], np.int64)
    assert _array_literal(big) == \
        "  (-9223372036854775807LL - 1), 5, 1099511627776LL, -7, 2147483647,"
    small = np.arange(-4, 13, dtype=np.int8)
    np.testing.assert_array_equal(_read_back(_array_literal(small), np.int8), small)
