"""The README's demo script runs, prints its C and checks itself against numpy."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_examples_matmul_prints_c_and_ok():
    proc = subprocess.run([sys.executable, "examples/matmul.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "int matmul(" in proc.stdout          # the generated C is printed
    last = proc.stdout.strip().splitlines()[-1]
    assert "max abs error" in last and last.endswith("OK"), last
