"""Converters of the recurrent ONNX ops (issue 12): LSTM, GRU and RNN, forward, reverse
and bidirectional, layout 0 or 1, with or without bias, initial states and (LSTM)
peepholes.

The input projection of every time step is one matmul (X as (T*B, I) times W^T, both
biases added once); the recurrence is one step per time point: a (B, H) x (H, G*H)
matmul, then the gates as elementwise ops that fuse into the matmul's epilogue.  With no
initial state the first step has no recurrent matmul.  `sequence_lens` must be constant
and equal to the sequence length for every batch entry (cgen runs every step).
Activations are those of the ACTIVATIONS table, without alpha/beta."""
from __future__ import annotations

import numpy as np

from .onnx_import import _inp, _refuse

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

    def act(self, k: int, which: int, x: str, tag: str) -> str:
        if self.clip is not None:
            c = float(self.clip)
            x = self.emit("clip", [x], {"min": -c, "max": c}, tag=f"{tag}_clip")
        return self.emit(self.acts[k][which], [x], tag=tag)

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

    # ------------------------------------------------------------------ projection
    def projection(self, k: int) -> list:
        """X W^T + Wb + Rb for direction k: one (B, G*H) value per time step."""
        imp, n, G, H = self.imp, self.n, self.gates, self.H
        W = self.take(n.input[1], 0, k, f"W{k}")
        WT = self.emit("transpose", [W], {"perm": (1, 0)}, tag=f"WT{k}")
        x2 = imp.reshape(self.X, (self.T * self.B, self.I), tag="x2d")
        xw = self.emit("matmul", [x2, WT], tag=f"xw{k}")
        bias = _inp(n, 3)
        if bias is not None:
            b = self.take(bias, 0, k, f"B{k}")
            wb, rb = self.split(b, 0, 2, f"B{k}_split")
            if self.op == "GRU" and int(self.a.get("linear_before_reset", 0)):
                # Rb of the candidate gate stays inside r * (...): add only z and r parts
                parts = self.split(rb, 0, G, f"Rb{k}_split")
                zero = imp.add_const(np.zeros(H, np.float32), f"{n.output[0] or 'rnn'}__zero")
                rb = self.emit("concat", parts[:2] + [zero], {"axis": 0}, tag=f"Rb{k}_zr")
            xw = self.emit("add", [xw, self.emit("add", [wb, rb], tag=f"b{k}")], tag=f"xwb{k}")
        xw = imp.reshape(xw, (self.T, self.B, G * H), tag=f"xw{k}_t")
        steps = self.split(xw, 0, self.T, f"xw{k}_steps")
        return [imp.reshape(s, (self.B, G * H), tag=f"xw{k}_{t}") for t, s in enumerate(steps)]

    def recurrent(self, k: int) -> str:
        R = self.take(self.n.input[2], 0, k, f"R{k}")
        return self.emit("transpose", [R], {"perm": (1, 0)}, tag=f"RT{k}")

    # ------------------------------------------------------------------ outputs
    def finish(self, hs: list, last_h: list, last_c: list | None):
        """Y (T, D, B, H), Y_h and Y_c (D, B, H); layout 1 puts the batch first."""
        imp, n, T, B, H, D = self.imp, self.n, self.T, self.B, self.H, len(self.dirs)
        outs = [n.output[i] if i < len(n.output) and n.output[i] else None for i in range(3)]
        if outs[0] is not None:
            per_dir = []
            for k in range(D):
                steps = [imp.reshape(h, (1, 1, B, H), tag=f"y{k}_{t}") for t, h in enumerate(hs[k])]
                per_dir.append(steps[0] if T == 1 else self.emit("concat", steps, {"axis": 0},
                                                                 tag=f"y{k}"))
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


def _order(rnn: _Rnn, k: int) -> list:
    return list(range(rnn.T)) if rnn.dirs[k] == "forward" else list(range(rnn.T - 1, -1, -1))


def _matmul_plus(rnn: _Rnn, xw: str, h, RT: str, tag: str) -> str:
    """xw + h RT (just xw while the state is still zero)."""
    if h is None:
        return xw
    return rnn.emit("add", [xw, rnn.emit("matmul", [h, RT], tag=f"{tag}_hr")], tag=tag)


def _sigmoid_tanh(rnn: _Rnn, pre: str, tag: str) -> str:
    """The LSTM gates (i, o, f: sigmoid; c: tanh) activated in one elementwise pass before
    they are split, tanh(x) = 2 sigmoid(2x) - 1: each gate is then a stored value, so no
    kernel nests one vectorised transcendental inside another."""
    if rnn.clip is not None:
        c = float(rnn.clip)
        pre = rnn.emit("clip", [pre], {"min": -c, "max": c}, tag=f"{tag}_clip")
    H = rnn.H
    scale, shift = (rnn.imp.add_const(np.repeat(np.array(v, np.float32), (3 * H, H)),
                                      f"{rnn.n.output[0] or 'lstm'}__{what}")
                    for what, v in (("scale", (1, 2)), ("shift", (0, -1))))
    y = rnn.emit("sigmoid", [rnn.emit("mul", [pre, scale], tag=f"{tag}_s")], tag=f"{tag}_sig")
    return rnn.emit("add", [rnn.emit("mul", [y, scale], tag=f"{tag}_m"), shift], tag=tag)


def convert_lstm(imp, n, a):
    rnn = _Rnn(imp, n, a)
    hs, last_h, last_c = [], [], []
    for k in range(len(rnn.dirs)):
        xw, RT = rnn.projection(k), rnn.recurrent(k)
        h, c = rnn.state(5, k, f"h0_{k}"), rnn.state(6, k, f"c0_{k}")
        peep = None
        if _inp(n, 7) is not None:
            peep = rnn.split(rnn.take(n.input[7], 0, k, f"P{k}"), 0, 3, f"P{k}_split")
        out = [None] * rnn.T
        for t in _order(rnn, k):
            tag = f"d{k}t{t}"
            pre = _matmul_plus(rnn, xw[t], h, RT, f"{tag}_g")
            if peep is None and rnn.acts[k][:2] == ["sigmoid", "tanh"]:
                i, o, f, g = rnn.split(_sigmoid_tanh(rnn, pre, f"{tag}_act"), 1, 4, f"{tag}_gates")
            else:
                i, o, f, g = rnn.split(pre, 1, 4, f"{tag}_gates")
                if peep is not None and c is not None:
                    i = rnn.emit("add", [i, rnn.emit("mul", [peep[0], c], tag=f"{tag}_pi")],
                                 tag=f"{tag}_i")
                    f = rnn.emit("add", [f, rnn.emit("mul", [peep[2], c], tag=f"{tag}_pf")],
                                 tag=f"{tag}_f")
                i, f = rnn.act(k, 0, i, f"{tag}_ia"), rnn.act(k, 0, f, f"{tag}_fa")
                g = rnn.act(k, 1, g, f"{tag}_ca")
                if peep is None:
                    o = rnn.act(k, 0, o, f"{tag}_oa")
            ig = rnn.emit("mul", [i, g], tag=f"{tag}_ig")
            c = ig if c is None else rnn.emit("add", [rnn.emit("mul", [f, c], tag=f"{tag}_fc"), ig],
                                              tag=f"{tag}_c")
            if peep is not None:
                o = rnn.emit("add", [o, rnn.emit("mul", [peep[1], c], tag=f"{tag}_po")], tag=f"{tag}_o")
                o = rnn.act(k, 0, o, f"{tag}_oa")
            h = rnn.emit("mul", [o, rnn.act(k, 2, c, f"{tag}_hc")], tag=f"{tag}_h")
            out[t] = h
        hs.append(out)
        last_h.append(h)
        last_c.append(c)
    rnn.finish(hs, last_h, last_c)


def convert_gru(imp, n, a):
    rnn = _Rnn(imp, n, a)
    H, lbr = rnn.H, int(a.get("linear_before_reset", 0))
    one = imp.add_const(np.ones((), np.float32), f"{n.output[0] or 'gru'}__one")
    hs, last_h = [], []
    for k in range(len(rnn.dirs)):
        xw, RT = rnn.projection(k), rnn.recurrent(k)
        RTzr = rnn.emit("slice", [RT], {"starts": (0, 0), "ends": (H, 2 * H), "steps": (1, 1)},
                        tag=f"RT{k}_zr")
        RTh = rnn.emit("slice", [RT], {"starts": (0, 2 * H), "ends": (H, 3 * H), "steps": (1, 1)},
                       tag=f"RT{k}_h")
        rbh = None
        if lbr and _inp(n, 3) is not None:
            rbh = rnn.take(n.input[3], 0, k, f"B{k}h")
            rbh = rnn.emit("slice", [rbh], {"starts": (5 * H,), "ends": (6 * H,), "steps": (1,)},
                           tag=f"Rbh{k}")
        h = rnn.state(5, k, f"h0_{k}")
        out = [None] * rnn.T
        for t in _order(rnn, k):
            tag = f"d{k}t{t}"
            zr, xh = rnn.split(xw[t], 1, 2, f"{tag}_x", sizes=(2 * H, H))
            # both gates activated before the split: stored, not recomputed in the
            # candidate's kernel (no transcendental nested in another)
            zr = rnn.act(k, 0, _matmul_plus(rnn, zr, h, RTzr, f"{tag}_zr"), f"{tag}_zra")
            z, r = rnn.split(zr, 1, 2, f"{tag}_zrs")
            if h is None:
                cand = xh if rbh is None or not lbr else rnn.emit("add", [xh, rnn.emit(
                    "mul", [r, rbh], tag=f"{tag}_rb")], tag=f"{tag}_hx")
            elif lbr:
                hr = rnn.emit("matmul", [h, RTh], tag=f"{tag}_hr")
                if rbh is not None:
                    hr = rnn.emit("add", [hr, rbh], tag=f"{tag}_hrb")
                cand = rnn.emit("add", [xh, rnn.emit("mul", [r, hr], tag=f"{tag}_rh")],
                                tag=f"{tag}_hx")
            else:
                rh = rnn.emit("mul", [r, h], tag=f"{tag}_rh")
                cand = rnn.emit("add", [xh, rnn.emit("matmul", [rh, RTh], tag=f"{tag}_rhr")],
                                tag=f"{tag}_hx")
            cand = rnn.act(k, 1, cand, f"{tag}_ha")
            keep = rnn.emit("sub", [one, z], tag=f"{tag}_1z")
            new = rnn.emit("mul", [keep, cand], tag=f"{tag}_zh")
            h = new if h is None else rnn.emit("add", [new, rnn.emit("mul", [z, h], tag=f"{tag}_zhp")],
                                               tag=f"{tag}_h")
            out[t] = h
        hs.append(out)
        last_h.append(h)
    rnn.finish(hs, last_h, None)


def convert_rnn(imp, n, a):
    rnn = _Rnn(imp, n, a)
    hs, last_h = [], []
    for k in range(len(rnn.dirs)):
        xw, RT = rnn.projection(k), rnn.recurrent(k)
        h = rnn.state(5, k, f"h0_{k}")
        out = [None] * rnn.T
        for t in _order(rnn, k):
            h = rnn.act(k, 0, _matmul_plus(rnn, xw[t], h, RT, f"d{k}t{t}_g"), f"d{k}t{t}_h")
            out[t] = h
        hs.append(out)
        last_h.append(h)
    rnn.finish(hs, last_h, None)


RNN_CONVERTERS = {"LSTM": convert_lstm, "GRU": convert_gru, "RNN": convert_rnn}
