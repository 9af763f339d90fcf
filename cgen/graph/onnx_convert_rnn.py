"""Converters of the recurrent ONNX ops (issue 12): LSTM, GRU and RNN, forward, reverse
and bidirectional, layout 0 or 1, with or without bias, initial states and (LSTM)
peepholes, clip and GRU's linear_before_reset.

The input projection of every time step is one matmul before the recurrence (X as
(T*B, I) times W^T, both biases added once).  The recurrence of each direction is one
`loop` node (cgen.graph.loop_op) whose body is one time step: a (B, H) x (H, G*H) matmul
of the state plus that step's slice of the projection, then the gates as elementwise ops
that fuse into the matmul's epilogue.  Its kernels are built once and NAME_run runs them
in a loop over time (cgen.graph.loop_lower), so the kernel count does not grow with T.
The states (h, and c for LSTM) are carried by the loop, from the initial states or zeros.
Weights computable at import are the body's constants (dense kernels, packed at compile
time); weights given at run time are loop-invariant inputs.  `sequence_lens` must be
constant and equal to the sequence length for every batch entry (cgen runs every step).
Activations are those of the ACTIVATIONS table, without alpha/beta."""
from __future__ import annotations

import numpy as np

from .graph_ir import Graph, ModelError, Node, Value
from .loop_op import LoopSpec
from .onnx_import import _inp, _refuse
from .shapes import output_types

# ONNX activation name -> canonical op
ACTIVATIONS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu"}

# op -> (gates, default activations per direction, output names after Y and Y_h)
CELLS = {"LSTM": (4, ("Sigmoid", "Tanh", "Tanh")), "GRU": (3, ("Sigmoid", "Tanh")),
         "RNN": (1, ("Tanh",))}


class _Rnn:
    """One ONNX recurrent node being converted (the shared bookkeeping)."""

    def __init__(self, imp, n, a):
        self.imp, self.n, self.a = imp, n, a
        self.op = n.op_type
        self.gates, acts = CELLS[self.op]
        direction = a.get("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            _refuse(imp, f"direction={direction!r}")
        self.dirs = ("forward", "reverse") if direction == "bidirectional" else (direction,)
        self.layout = int(a.get("layout", 0))
        if self.layout not in (0, 1):
            _refuse(imp, f"layout={self.layout}")
        for key in ("activation_alpha", "activation_beta"):
            if a.get(key):
                _refuse(imp, f"{key} is set; cgen takes activations without parameters")
        if int(a.get("input_forget", 0)):
            _refuse(imp, "input_forget=1")
        names = list(a.get("activations") or acts * len(self.dirs))
        if len(names) != len(acts) * len(self.dirs):
            _refuse(imp, f"activations {names}: expected {len(acts) * len(self.dirs)}")
        bad = [x for x in names if x not in ACTIVATIONS]
        if bad:
            _refuse(imp, f"activations={bad[0]!r}; cgen takes {', '.join(ACTIVATIONS)}")
        self.acts = [[ACTIVATIONS[x] for x in names[k * len(acts):(k + 1) * len(acts)]]
                     for k in range(len(self.dirs))]
        self.clip = a.get("clip")
        x = imp.v(n.input[0])
        if len(x.shape) != 3:
            _refuse(imp, f"input of shape {x.shape}; expected rank 3", "shape")
        if x.dtype != "float32":
            _refuse(imp, f"input is {x.dtype}; cgen computes {self.op} in float32",
                    "unsupported_dtype")
        X = n.input[0]
        if self.layout == 1:
            X = imp.emit("transpose", [X], {"perm": (1, 0, 2)}, tag="time_major")[0]
        self.T, self.B, self.I = imp.v(X).shape
        self.X = X
        self.H = int(a.get("hidden_size", imp.v(n.input[2]).shape[-1]))
        self._check_lengths()

    # ------------------------------------------------------------------ helpers
    def emit(self, op, ins, attrs=None, tag=None, out=None):
        return self.imp.emit(op, ins, attrs, outputs=None if out is None else [out], tag=tag)[0]

    def take(self, name: str, axis: int, index: int, tag: str) -> str:
        """name[..., index, ...] on `axis`, that axis dropped."""
        s = self.imp.v(name).shape
        starts = tuple(index if d == axis else 0 for d in range(len(s)))
        ends = tuple(index + 1 if d == axis else n for d, n in enumerate(s))
        y = self.emit("slice", [name], {"starts": starts, "ends": ends, "steps": (1,) * len(s)},
                      tag=tag)
        return self.imp.reshape(y, s[:axis] + s[axis + 1:], tag=f"{tag}_r")

    def split(self, name: str, axis: int, parts: int, tag: str, sizes=None) -> list:
        """Equal parts (or `sizes`) of name on axis.  One split node: its parts are
        materialised, which keeps each fused gate kernel's expression small."""
        s = self.imp.v(name).shape
        if parts == 1:
            return [self.imp.resolve(name)]
        sizes = tuple(sizes or (s[axis] // parts,) * parts)
        return self.imp.emit("split", [name], {"axis": axis, "sizes": sizes}, tag=tag)

    def state(self, i: int, k: int, tag: str):
        """Initial state input i for direction k as (B, H), or None when left out."""
        name = _inp(self.n, i)
        if name is None:
            return None
        return self.take(name, 1 if self.layout == 1 else 0, k, tag)

    def _check_lengths(self):
        name = _inp(self.n, 4)
        if name is None:
            return
        lens = self.imp.const(name, "sequence_lens").reshape(-1)
        if np.any(lens != self.T):
            _refuse(self.imp, f"sequence_lens {lens.tolist()} differ from the sequence length "
                    f"{self.T}; cgen runs every step of every sequence")

    # ------------------------------------------------------------------ outer graph
    def projection(self, k: int, sizes=None) -> list:
        """X W^T + Wb + Rb for direction k, as (T, B, size) per part of the gate columns
        (`sizes`, default all): the loop's sequence inputs, one matmul each."""
        imp, n, G, H = self.imp, self.n, self.gates, self.H
        sizes = tuple(sizes or (G * H,))
        W = self.take(n.input[1], 0, k, f"W{k}")
        WT = self.emit("transpose", [W], {"perm": (1, 0)}, tag=f"WT{k}")
        x2 = imp.reshape(self.X, (self.T * self.B, self.I), tag="x2d")
        bias = _inp(n, 3)
        if bias is not None:
            b = self.take(bias, 0, k, f"B{k}")
            wb, rb = self.split(b, 0, 2, f"B{k}_split")
            if self.op == "GRU" and int(self.a.get("linear_before_reset", 0)):
                # Rb of the candidate gate stays inside r * (...): add only z and r parts
                parts = self.split(rb, 0, G, f"Rb{k}_split")
                zero = imp.add_const(np.zeros(H, np.float32), f"{n.output[0] or 'rnn'}__zero")
                rb = self.emit("concat", parts[:2] + [zero], {"axis": 0}, tag=f"Rb{k}_zr")
            bias = self.emit("add", [wb, rb], tag=f"b{k}")
        out, lo = [], 0
        for j, size in enumerate(sizes):
            part, bj = WT, bias
            if len(sizes) > 1:
                part = self.emit("slice", [WT], {"starts": (0, lo), "ends": (self.I, lo + size),
                                                 "steps": (1, 1)}, tag=f"WT{k}_{j}")
                if bias is not None:
                    bj = self.emit("slice", [bias], {"starts": (lo,), "ends": (lo + size,),
                                                     "steps": (1,)}, tag=f"b{k}_{j}")
            xw = self.emit("matmul", [x2, part], tag=f"xw{k}_{j}")
            if bj is not None:
                xw = self.emit("add", [xw, bj], tag=f"xwb{k}_{j}")
            out.append(imp.reshape(xw, (self.T, self.B, size), tag=f"xw{k}_{j}_t"))
            lo += size
        return out

    def recurrent(self, k: int, lo: int = 0, hi: int | None = None) -> str:
        """Columns lo:hi of R[k]^T, (H, hi - lo), in the outer graph."""
        R = self.take(self.n.input[2], 0, k, f"R{k}")
        RT = self.emit("transpose", [R], {"perm": (1, 0)}, tag=f"RT{k}")
        if lo == 0 and hi is None:
            return RT
        return self.emit("slice", [RT], {"starts": (0, lo), "ends": (self.H, hi), "steps": (1, 1)},
                         tag=f"RT{k}_{lo}")

    def loop(self, step: "_Step", k: int, xws: list, states: list) -> list:
        """The loop node of direction k: `states` (body input, body output, outer init or
        None); the step's new h is stacked into Y when Y is asked for, and the last h (and
        c) are final outputs.  Returns the outer names of Y_k (or None) and the finals."""
        n = self.n
        want_y = bool(n.output and n.output[0])
        h_out = states[0][1]
        finals = [o for _, o, _ in states]
        spec = LoopSpec(step.graph(list(dict.fromkeys([h_out] + finals))), self.T,
                        self.dirs[k] == "reverse", tuple(step.xs),
                        tuple((i, o, init is not None) for i, o, init in states),
                        tuple(step.invariant), (h_out,) if want_y else (), tuple(finals))
        ins = list(xws) + [init for _, _, init in states if init is not None] + \
            [outer for outer in step.invariant.values()]
        first = n.output[0] if n.output else "rnn"
        names = [self.imp.fresh(f"{first}__y{k}")] if want_y else []
        names += [self.imp.fresh(f"{first}__last{k}_{j}") for j in range(len(finals))]
        # named as the ONNX node: a profile sets the loop beside that node's time
        got = self.imp.emit("loop", ins, spec.attrs(), outputs=names)
        return ([got[0]] if want_y else [None]) + got[1 if want_y else 0:]

    # ------------------------------------------------------------------ outputs
    def finish(self, ys: list, last_h: list, last_c: list | None):
        """Y (T, D, B, H), Y_h and Y_c (D, B, H); layout 1 puts the batch first."""
        imp, n, T, B, H, D = self.imp, self.n, self.T, self.B, self.H, len(self.dirs)
        outs = [n.output[i] if i < len(n.output) and n.output[i] else None for i in range(3)]
        if outs[0] is not None:
            per_dir = [imp.reshape(y, (T, 1, B, H), tag=f"y{k}") for k, y in enumerate(ys)]
            self._out(per_dir, 1, (T, D, B, H), (2, 0, 1, 3), outs[0])
        for name, last in ((outs[1], last_h), (outs[2], last_c)):
            if name is not None and last is not None:
                parts = [imp.reshape(h, (1, B, H), tag=f"last{k}") for k, h in enumerate(last)]
                self._out(parts, 0, (D, B, H), (1, 0, 2), name)

    def _out(self, parts: list, axis: int, shape: tuple, perm: tuple, name: str):
        imp = self.imp
        if self.layout == 1:
            y = parts[0] if len(parts) == 1 else self.emit("concat", parts, {"axis": axis})
            self.emit("transpose", [y], {"perm": perm}, out=name)
        elif len(parts) == 1:
            imp.reshape(parts[0], shape, out=name)
        else:
            self.emit("concat", parts, {"axis": axis}, out=name)


class _Step:
    """One time step of direction k, built as the loop's body graph: the step's slices
    `xs` of the projections (B, size), the states, the step's nodes and constants."""

    def __init__(self, rnn: _Rnn, k: int, xws: list):
        self.rnn, self.imp, self.k = rnn, rnn.imp, k
        self.first = rnn.n.output[0] if rnn.n.output and rnn.n.output[0] else rnn.op.lower()
        self.values: dict = {}
        self.inputs: list = []
        self.nodes: list = []
        self.consts: dict = {}
        self.invariant: dict = {}           # body input -> outer value
        self.xs = [self.input(f"x{j}", self.imp.v(x).shape[1:]) for j, x in enumerate(xws)]

    def input(self, tag: str, shape) -> str:
        v = Value(self.imp.fresh(f"{self.first}__d{self.k}_{tag}"), tuple(shape), "float32")
        self.inputs.append(v)
        self.values[v.name] = v
        return v.name

    def const(self, array, tag: str) -> str:
        name = self.imp.fresh(f"{self.first}__d{self.k}_{tag}")
        self.consts[name] = np.ascontiguousarray(array, np.float32)
        self.values[name] = Value(name, tuple(self.consts[name].shape), "float32")
        return name

    def fixed(self, outer: str, tag: str) -> str:
        """An outer value the step reads at every step: a constant when it is computable
        at import (the outer nodes that made it are then dead), else an invariant input."""
        try:
            arr = self.imp.const(outer, "weight")
        except ModelError as e:
            if e.kind != "not_constant":
                raise
            arr = None
        if arr is not None:
            return self.const(arr, tag)
        name = self.input(tag, self.imp.v(outer).shape)
        self.invariant[name] = outer
        return name

    def emit(self, op: str, ins, attrs=None, tag: str = "", n_out: int = 1):
        attrs = dict(attrs or {})
        vals = [self.values[i] for i in ins]
        types = output_types(op, attrs, [(v.shape, v.dtype) for v in vals])
        outs = [Value(self.imp.fresh(f"{self.first}__d{self.k}_{tag or op}"), s, dt)
                for s, dt in types]
        self.nodes.append(Node.make(op, vals, outs, attrs,
                                    name=self.imp.fresh(f"{self.rnn.n.name or op}/d{self.k}_{tag}")))
        for v in outs:
            self.values[v.name] = v
        return outs[0].name if n_out == 1 else [v.name for v in outs]

    def split(self, name: str, parts: int, tag: str, sizes=None) -> list:
        """Parts of name on axis 1; one split node (its parts are materialised, which keeps
        each fused gate kernel's expression small)."""
        if parts == 1:
            return [name]
        s = self.values[name].shape
        sizes = tuple(sizes or (s[1] // parts,) * parts)
        return self.emit("split", [name], {"axis": 1, "sizes": sizes}, tag, n_out=len(sizes))

    def act(self, which: int, x: str, tag: str) -> str:
        rnn = self.rnn
        if rnn.clip is not None:
            c = float(rnn.clip)
            x = self.emit("clip", [x], {"min": -c, "max": c}, f"{tag}_clip")
        return self.emit(rnn.acts[self.k][which], [x], tag=tag)

    def matmul_plus(self, x: str, h: str, RT: str, tag: str) -> str:
        """x + h RT."""
        return self.emit("add", [x, self.emit("matmul", [h, RT], tag=f"{tag}_hr")], tag=tag)

    def graph(self, outputs: list) -> Graph:
        return Graph(tuple(self.inputs), tuple(self.values[o] for o in outputs),
                     tuple(self.nodes), self.consts, f"{self.first}_d{self.k}").validate()


def _sigmoid_tanh(step: _Step, pre: str, tag: str) -> str:
    """The LSTM gates (i, o, f: sigmoid; c: tanh) activated in one elementwise pass before
    they are split, tanh(x) = 2 sigmoid(2x) - 1: each gate is then a stored value, so no
    kernel nests one vectorised transcendental inside another."""
    rnn = step.rnn
    if rnn.clip is not None:
        c = float(rnn.clip)
        pre = step.emit("clip", [pre], {"min": -c, "max": c}, f"{tag}_clip")
    H = rnn.H
    scale, shift = (step.const(np.repeat(np.array(v, np.float32), (3 * H, H)), what)
                    for what, v in (("scale", (1, 2)), ("shift", (0, -1))))
    y = step.emit("sigmoid", [step.emit("mul", [pre, scale], tag=f"{tag}_s")], tag=f"{tag}_sig")
    return step.emit("add", [step.emit("mul", [y, scale], tag=f"{tag}_m"), shift], tag=tag)


def convert_lstm(imp, n, a):
    rnn = _Rnn(imp, n, a)
    ys, last_h, last_c = [], [], []
    for k in range(len(rnn.dirs)):
        xws = rnn.projection(k)
        step = _Step(rnn, k, xws)
        RT = step.fixed(rnn.recurrent(k), "RT")
        H = rnn.H
        h, c = step.input("h", (rnn.B, H)), step.input("c", (rnn.B, H))
        peep = None
        if _inp(n, 7) is not None:
            P = rnn.take(n.input[7], 0, k, f"P{k}")
            peep = [step.fixed(rnn.emit("slice", [P], {"starts": (j * H,), "ends": ((j + 1) * H,),
                                                       "steps": (1,)}, tag=f"P{k}_{j}"), f"P{j}")
                    for j in range(3)]
        pre = step.matmul_plus(step.xs[0], h, RT, "g")
        if peep is None and rnn.acts[k][:2] == ["sigmoid", "tanh"]:
            i, o, f, g = step.split(_sigmoid_tanh(step, pre, "act"), 4, "gates")
        else:
            i, o, f, g = step.split(pre, 4, "gates")
            if peep is not None:
                i = step.emit("add", [i, step.emit("mul", [peep[0], c], tag="pi")], tag="i")
                f = step.emit("add", [f, step.emit("mul", [peep[2], c], tag="pf")], tag="f")
            i, f, g = step.act(0, i, "ia"), step.act(0, f, "fa"), step.act(1, g, "ca")
            if peep is None:
                o = step.act(0, o, "oa")
        c_new = step.emit("add", [step.emit("mul", [f, c], tag="fc"),
                                  step.emit("mul", [i, g], tag="ig")], tag="c_new")
        if peep is not None:
            o = step.act(0, step.emit("add", [o, step.emit("mul", [peep[1], c_new], tag="po")],
                                      tag="o"), "oa")
        h_new = step.emit("mul", [o, step.act(2, c_new, "hc")], tag="h_new")
        y, lh, lc = rnn.loop(step, k, xws, [(h, h_new, rnn.state(5, k, f"h0_{k}")),
                                           (c, c_new, rnn.state(6, k, f"c0_{k}"))])
        ys.append(y)
        last_h.append(lh)
        last_c.append(lc)
    rnn.finish(ys, last_h, last_c)


def convert_gru(imp, n, a):
    rnn = _Rnn(imp, n, a)
    H, lbr = rnn.H, int(a.get("linear_before_reset", 0))
    ys, last_h = [], []
    for k in range(len(rnn.dirs)):
        xws = rnn.projection(k, (2 * H, H))      # z and r, then the candidate's part
        step = _Step(rnn, k, xws)
        RTzr = step.fixed(rnn.recurrent(k, 0, 2 * H), "RTzr")
        RTh = step.fixed(rnn.recurrent(k, 2 * H, 3 * H), "RTh")
        rbh = None
        if lbr and _inp(n, 3) is not None:
            b = rnn.take(n.input[3], 0, k, f"B{k}h")
            rbh = step.fixed(rnn.emit("slice", [b], {"starts": (5 * H,), "ends": (6 * H,),
                                                     "steps": (1,)}, tag=f"Rbh{k}"), "Rbh")
        h = step.input("h", (rnn.B, H))
        zr, xh = step.xs
        # both gates activated before the split: stored, not recomputed in the
        # candidate's kernel (no transcendental nested in another)
        z, r = step.split(step.act(0, step.matmul_plus(zr, h, RTzr, "zr"), "zra"), 2, "zrs")
        if lbr:
            hr = step.emit("matmul", [h, RTh], tag="hr")
            if rbh is not None:
                hr = step.emit("add", [hr, rbh], tag="hrb")
            cand = step.emit("add", [xh, step.emit("mul", [r, hr], tag="rh")], tag="hx")
        else:
            rh = step.emit("mul", [r, h], tag="rh")
            cand = step.emit("add", [xh, step.emit("matmul", [rh, RTh], tag="rhr")], tag="hx")
        cand = step.act(1, cand, "ha")
        one = step.const(np.ones((), np.float32), "one")
        new = step.emit("mul", [step.emit("sub", [one, z], tag="1z"), cand], tag="zh")
        h_new = step.emit("add", [new, step.emit("mul", [z, h], tag="zhp")], tag="h_new")
        y, lh = rnn.loop(step, k, xws, [(h, h_new, rnn.state(5, k, f"h0_{k}"))])
        ys.append(y)
        last_h.append(lh)
    rnn.finish(ys, last_h, None)


def convert_rnn(imp, n, a):
    rnn = _Rnn(imp, n, a)
    ys, last_h = [], []
    for k in range(len(rnn.dirs)):
        xws = rnn.projection(k)
        step = _Step(rnn, k, xws)
        RT = step.fixed(rnn.recurrent(k), "RT")
        h = step.input("h", (rnn.B, rnn.H))
        h_new = step.act(0, step.matmul_plus(step.xs[0], h, RT, "g"), "h_new")
        y, lh = rnn.loop(step, k, xws, [(h, h_new, rnn.state(5, k, f"h0_{k}"))])
        ys.append(y)
        last_h.append(lh)
    rnn.finish(ys, last_h, None)


RNN_CONVERTERS = {"LSTM": convert_lstm, "GRU": convert_gru, "RNN": convert_rnn}
