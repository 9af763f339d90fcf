"""cgen.lower.written: a local buffer's zero fill is dropped only when its first writer
provably stores every element (target-independent IR analysis; the printed C is checked
for generic-c)."""
from __future__ import annotations

from cgen.codegen.c import emit_c
from cgen.lower.ir import (Allocate, Buffer, For, IfThenElse, Load, PrimFunc, Seq, Store,
                           VStore, Broadcast)
from cgen.lower.written import written_before_read
from cgen.te.expr import Compare, Const, Var

I = "int64"


def c(v, dtype=I):
    return Const(v, dtype)


def nest(buf, extents, index, value=None, guard=None):
    """for i in range(e0): for j in range(e1): buf[index(i, j)] = value"""
    vs = [Var(f"v{n}", I) for n in range(len(extents))]
    body = Store(buf, index(*vs), value if value is not None else c(0.0, "float32"))
    if guard is not None:
        body = IfThenElse(guard(*vs), body)
    for v, e in reversed(list(zip(vs, extents))):
        body = For(v, c(0), c(e), "serial", body)
    return body


def test_a_row_major_nest_covers_its_buffer():
    t = Buffer("t", "float32", (4, 6), "local")
    assert written_before_read(t, nest(t, (4, 6), lambda i, j: i * c(6) + j))
    assert written_before_read(t, nest(t, (6, 4), lambda j, i: i * c(6) + j))  # transposed order


def test_a_short_guarded_or_self_reading_writer_keeps_the_fill():
    t = Buffer("t", "float32", (4, 6), "local")
    assert not written_before_read(t, nest(t, (4, 5), lambda i, j: i * c(6) + j))
    assert not written_before_read(t, nest(t, (4, 6), lambda i, j: i * c(6) + j,
                                          guard=lambda i, j: Compare("<", j, c(5), "bool")))
    acc = nest(t, (4, 6), lambda i, j: i * c(6) + j,
               value=Load(t, c(0), "float32"))
    assert not written_before_read(t, acc)
    # a reader first
    o = Buffer("o", "float32", (1,), "global")
    first = Store(o, c(0), Load(t, c(3), "float32"))
    assert not written_before_read(t, Seq((first, nest(t, (4, 6), lambda i, j: i * c(6) + j))))


def test_vector_stores_count_their_lanes():
    t = Buffer("t", "float32", (16,), "local")
    v = Var("v", I)
    full = For(v, c(0), c(4), "serial", VStore(t, v * c(4), Broadcast(c(0.0, "float32"), "float32x4")))
    part = For(v, c(0), c(4), "serial", VStore(t, v * c(3), Broadcast(c(0.0, "float32"), "float32x4")))
    assert written_before_read(t, full)
    assert not written_before_read(t, part)


def test_printer_drops_only_the_dead_fill():
    """generic-c: `= {0}` stays on a buffer whose writer leaves a hole, goes on a covered one."""
    o = Buffer("o", "float32", (4, 6), "global")

    def func(extent):
        t = Buffer("t", "float32", (4, 6), "local")
        copy = nest(o, (4, 6), lambda i, j: i * c(6) + j,
                    value=Load(t, c(0), "float32"))
        body = Seq((nest(t, (4, extent), lambda i, j: i * c(6) + j), copy))
        return PrimFunc("f", (o,), ("o",), Allocate(t, body))
    covered, _ = emit_c(func(6))
    holed, _ = emit_c(func(5))
    assert "float t[24];" in covered and "{0}" not in covered
    assert "float t[24] = {0};" in holed
