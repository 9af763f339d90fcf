"""Einsum (issue 12) lowered onto existing canonical ops: transposes, reshapes,
reduce_sum, mul (diagonals) and matmul.

Each operand first loses its repeated labels (a diagonal: times an identity mask, then
summed) and the labels no other operand nor the output has (summed).  Operands are then
contracted left to right, two at a time, as one batched matmul: labels both keep are the
batch, labels only one has are its rows or columns, the shared labels that go nowhere
else are summed by the matmul (none: an outer product, K = 1).  A final transpose puts
the output in the equation's order.  Ellipsis dimensions broadcast as numpy does."""
from __future__ import annotations

import numpy as np

from .onnx_import import _refuse


def _parse(imp, equation: str, ranks: list) -> tuple:
    """([labels of each operand], output labels); an ellipsis becomes labels '.0', '.1'..."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        _refuse(imp, f"equation {equation!r} has {len(terms)} operands, the node "
                f"{len(ranks)}", "shape")
    ell = max([rank - len(t.replace("...", "")) for t, rank in zip(terms, ranks) if "..." in t],
              default=0)
    ops = []
    for term, rank in zip(terms, ranks):
        letters = term.replace("...", "")
        if letters and not letters.isalpha():
            _refuse(imp, f"equation {equation!r}: labels must be letters", "shape")
        k = rank - len(letters)
        if ("..." in term and k < 0) or ("..." not in term and k != 0):
            _refuse(imp, f"equation {equation!r}: term {term!r} for an operand of rank "
                    f"{rank}", "shape")
        head, _, tail = term.partition("...")
        # ellipsis dims right-aligned: an operand with fewer takes the last ones (numpy)
        ops.append(list(head) + [f".{i}" for i in range(ell - k, ell)] * ("..." in term)
                   + list(tail))
    dots = [f".{i}" for i in range(ell)]
    if arrow:
        head, _, tail = out.partition("...")
        outs = list(head) + (dots if "..." in out else []) + list(tail)
    else:
        seen = [lab for o in ops for lab in o if not lab.startswith(".")]
        outs = dots + sorted(lab for lab in set(seen) if seen.count(lab) == 1)
    return ops, outs


class _Operand:
    def __init__(self, name: str, labels: list):
        self.name, self.labels = name, labels


def _diagonals(imp, op: _Operand, tag: str) -> _Operand:
    """Repeated labels of one operand: the diagonal kept (mask, then sum one axis)."""
    while True:
        dup = next((lab for lab in op.labels if op.labels.count(lab) > 1), None)
        if dup is None:
            return op
        p = op.labels.index(dup)
        q = op.labels.index(dup, p + 1)
        v = imp.v(op.name)
        n = v.shape[p]
        mask = np.eye(n, dtype=v.dtype).reshape(
            [n if d in (p, q) else 1 for d in range(len(v.shape))])
        m = imp.add_const(mask, f"{tag}__eye")
        x = imp.emit("mul", [op.name, m], tag=f"{tag}_diag")[0]
        y = imp.emit("reduce_sum", [x], {"axes": (q,), "keepdims": 0}, tag=f"{tag}_diagsum")[0]
        op = _Operand(y, op.labels[:q] + op.labels[q + 1:])


def _sum_out(imp, op: _Operand, keep: set, tag: str) -> _Operand:
    axes = tuple(d for d, lab in enumerate(op.labels) if lab not in keep)
    if not axes:
        return op
    y = imp.emit("reduce_sum", [op.name], {"axes": axes, "keepdims": 0}, tag=f"{tag}_sum")[0]
    return _Operand(y, [lab for lab in op.labels if lab in keep])


def _arrange(imp, op: _Operand, order: list, sizes: dict, tag: str) -> str:
    """op transposed to `order` and broadcast to the full sizes of its labels."""
    perm = tuple(op.labels.index(lab) for lab in order)
    x = op.name
    if perm != tuple(range(len(perm))):
        x = imp.emit("transpose", [x], {"perm": perm}, tag=f"{tag}_t")[0]
    full = tuple(sizes[lab] for lab in order)
    if imp.v(x).shape != full:
        x = imp.emit("expand", [x], {"shape": full}, tag=f"{tag}_bcast")[0]
    return x


def _contract(imp, a: _Operand, b: _Operand, keep: set, sizes: dict, tag: str) -> _Operand:
    batch = [lab for lab in a.labels if lab in b.labels and lab in keep]
    summed = [lab for lab in a.labels if lab in b.labels and lab not in keep]
    rows = [lab for lab in a.labels if lab not in b.labels]
    cols = [lab for lab in b.labels if lab not in a.labels]

    def size(labels):
        return int(np.prod([sizes[lab] for lab in labels], dtype=np.int64))
    A = _arrange(imp, a, batch + rows + summed, sizes, f"{tag}_a")
    B = _arrange(imp, b, batch + summed + cols, sizes, f"{tag}_b")
    bs, M, K, N = size(batch), size(rows), size(summed), size(cols)
    A = imp.reshape(A, (bs, M, K), tag=f"{tag}_a3")
    B = imp.reshape(B, (bs, K, N), tag=f"{tag}_b3")
    y = imp.emit("matmul", [A, B], tag=f"{tag}_mm")[0]
    labels = batch + rows + cols
    y = imp.reshape(y, tuple(sizes[lab] for lab in labels), tag=f"{tag}_r")
    return _Operand(y, labels)


def convert_einsum(imp, n, a):
    names = list(n.input)
    ranks = [len(imp.v(x).shape) for x in names]
    ops, outs = _parse(imp, str(a.get("equation", "")), ranks)
    sizes: dict = {}
    for x, labels in zip(names, ops):
        for lab, d in zip(labels, imp.v(x).shape):
            if sizes.get(lab, 1) not in (1, d) and d != 1:
                _refuse(imp, f"label {lab!r} has sizes {sizes[lab]} and {d}", "shape")
            sizes[lab] = max(sizes.get(lab, 1), d)
    missing = [lab for lab in outs if lab not in sizes]
    if missing or len(set(outs)) != len(outs):
        _refuse(imp, f"output labels {''.join(outs)!r} are not a set of input labels", "shape")
    tag = "einsum"
    operands = [_diagonals(imp, _Operand(imp.resolve(x), list(lab)), f"{tag}{k}")
                for k, (x, lab) in enumerate(zip(names, ops))]
    for k in range(len(operands)):
        others = {lab for j, o in enumerate(operands) if j != k for lab in o.labels}
        operands[k] = _sum_out(imp, operands[k], others | set(outs), f"{tag}{k}")
    acc = operands[0]
    for k, nxt in enumerate(operands[1:], 1):
        later = {lab for o in operands[k + 1:] for lab in o.labels} | set(outs)
        acc = _contract(imp, acc, nxt, later, sizes, f"{tag}{k}")
        acc = _sum_out(imp, acc, later, f"{tag}{k}c")
    perm = tuple(acc.labels.index(lab) for lab in outs)
    if perm != tuple(range(len(perm))):
        imp.emit("transpose", [acc.name], {"perm": perm}, outputs=[n.output[0]])
    else:
        imp.alias[n.output[0]] = imp.resolve(acc.name)

EINSUM_CONVERTERS = {"Einsum": convert_einsum}
