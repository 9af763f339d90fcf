"""One ISA description: no intrinsic name, vector type or ISA header appears in cgen/ or
targets/ outside the ISA table (cgen/codegen/isa.py) and the micro-kernel generators
that read it (cgen/tensorize/microkernel.py, cgen/tensorize/int8_microkernel.py).
Adding an ISA is then adding a row there, never editing an operator or the graph."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"cgen/codegen/isa.py", "cgen/tensorize/microkernel.py",
           "cgen/tensorize/int8_microkernel.py"}
# x86 intrinsics and types, NEON intrinsics and types, their headers and feature macros
PATTERN = re.compile(
    r"_mm\d*_\w+|_MM_\w+|__m(64|128|256|512)[id]?\b|__mmask\d+"
    r"|\bv(ld|st)\d+q?_\w+|\bv[a-z]+\d*q?_(lane_|laneq_|n_|high_|low_)?[usfp]\d+"
    r"|\b(u?int|float|poly)\d+x\d+(x\d+)?_t\b"
    r"|immintrin\.h|arm_neon\.h|arm_mve\.h|__AVX\w*__|__ARM_(NEON|FEATURE_\w+)")


def _offenders() -> dict:
    out = {}
    for top in ("cgen", "targets"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED:
                continue
            hits = sorted({m.group(0) for m in PATTERN.finditer(path.read_text())})
            if hits:
                out[rel] = hits
    return out


def test_pattern_catches_intrinsics():
    """The pattern is not vacuous: it finds what the ISA table spells."""
    table = (ROOT / "cgen/codegen/isa.py").read_text()
    for name in ("_mm512_fmadd_ps", "__m256", "__mmask16", "vld1q_f32", "vst1q_f32",
                 "vfmaq_laneq_f32", "vmlaq_lane_f32", "vdupq_n_f32", "float32x4_t",
                 "immintrin.h", "arm_neon.h"):
        assert name in table and PATTERN.search(name), name
    for name in ("int8x16_t", "vmovl_s8", "_MM_HINT_T0", "__AVX512F__", "__ARM_NEON"):
        assert PATTERN.search(name), name
    assert not PATTERN.search("int8_t vector_bits lanes_f32 vmax move_vectors")


def test_no_intrinsic_outside_the_isa_description():
    assert _offenders() == {}
