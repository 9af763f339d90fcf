"""A small ONNX graph builder that tracks shapes, for writing published architectures as
they are defined (layer by layer) with seeded random weights.

Weights are scaled by fan-in and batch norms have statistics near one, so activations stay
of order one through deep networks and a float comparison with onnxruntime stays tight.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class Net:
    def __init__(self, seed: int = 0, opset: int = 13):
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.nodes, self.inits, self.shapes = [], {}, {}
        self.inputs = {}
        self._n = 0

    # ------------------------------------------------------------------ plumbing
    def _name(self, kind: str) -> str:
        self._n += 1
        return f"{kind}{self._n}"

    def const(self, array, kind: str = "c") -> str:
        name = self._name(kind)
        self.inits[name] = np.asarray(array)
        return name

    def input(self, name: str, shape) -> str:
        self.inputs[name] = tuple(shape)
        self.shapes[name] = tuple(shape)
        return name

    def node(self, op: str, ins, shape, kind: str | None = None, **attrs) -> str:
        name = self._name(kind or op.lower())
        self.nodes.append(helper.make_node(op, list(ins), [name], name=name, **attrs))
        self.shapes[name] = tuple(shape)
        return name

    def model(self, outputs) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes, "zoo",
            [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in self.inputs.items()],
            [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(self.shapes[k])) for k in outputs],
            initializer=[numpy_helper.from_array(a, k) for k, a in self.inits.items()])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=8)
        onnx.checker.check_model(m)
        return m

    def weight(self, *shape, fan_in: int | None = None, gain: float = 1.0) -> str:
        fan = fan_in or int(np.prod(shape[1:])) or 1
        return self.const((self.rng.standard_normal(shape) * gain / np.sqrt(fan)).astype(np.float32), "w")

    # ------------------------------------------------------------------ layers
    def conv(self, x, cout, k=1, stride=1, groups=1, dilation=1, pad=None, bias=True, gain=1.4):
        n, c, hh, ww = self.shapes[x]
        kh, kw = _pair(k)
        sh, sw = _pair(stride)
        dh, dw = _pair(dilation)
        ph, pw = ((kh - 1) * dh // 2, (kw - 1) * dw // 2) if pad is None else _pair(pad)
        oh = (hh + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (ww + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        ins = [x, self.weight(cout, c // groups, kh, kw, gain=gain)]
        if bias:
            ins.append(self.const((0.1 * self.rng.standard_normal(cout)).astype(np.float32), "b"))
        return self.node("Conv", ins, (n, cout, oh, ow), kernel_shape=[kh, kw], strides=[sh, sw],
                         pads=[ph, pw, ph, pw], dilations=[dh, dw], group=groups)

    def conv_transpose(self, x, cout, k=2, stride=2):
        n, c, hh, ww = self.shapes[x]
        ins = [x, self.weight(c, cout, k, k, fan_in=c * k * k // (stride * stride)),
               self.const(np.zeros(cout, np.float32), "b")]
        return self.node("ConvTranspose", ins, (n, cout, (hh - 1) * stride + k, (ww - 1) * stride + k),
                         kernel_shape=[k, k], strides=[stride, stride])

    def bn(self, x):
        c = self.shapes[x][1]
        r = self.rng
        ins = [x] + [self.const(a.astype(np.float32), "bn") for a in
                     (r.uniform(0.7, 1.3, c), 0.1 * r.standard_normal(c),
                      0.1 * r.standard_normal(c), r.uniform(0.7, 1.3, c))]
        return self.node("BatchNormalization", ins, self.shapes[x], epsilon=1e-3)

    def act(self, x, kind: str):
        return ACTS[kind](self, x)

    def unary(self, op, x, **attrs):
        return self.node(op, [x], self.shapes[x], **attrs)

    def binary(self, op, a, b):
        sa, sb = self.shapes[a], self.shapes.get(b, np.shape(self.inits.get(b)))
        return self.node(op, [a, b], tuple(np.broadcast_shapes(sa, sb)))

    def add(self, a, b):
        return self.binary("Add", a, b)

    def mul(self, a, b):
        return self.binary("Mul", a, b)

    def clip(self, x, lo, hi):
        return self.node("Clip", [x, self.const(np.float32(lo)), self.const(np.float32(hi))], self.shapes[x])

    def concat(self, xs, axis=1):
        shape = list(self.shapes[xs[0]])
        shape[axis] = sum(self.shapes[x][axis] for x in xs)
        return self.node("Concat", xs, shape, axis=axis)

    def maxpool(self, x, k, stride, pad=0, ceil=False):
        n, c, hh, ww = self.shapes[x]
        rnd = (lambda v: -(-v // stride)) if ceil else (lambda v: v // stride)
        oh, ow = rnd(hh + 2 * pad - k) + 1, rnd(ww + 2 * pad - k) + 1
        return self.node("MaxPool", [x], (n, c, oh, ow), kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad] * 4, ceil_mode=int(ceil))

    def gap(self, x):
        n, c = self.shapes[x][:2]
        return self.node("GlobalAveragePool", [x], (n, c, 1, 1))

    def flatten(self, x):
        s = self.shapes[x]
        return self.node("Flatten", [x], (s[0], int(np.prod(s[1:]))), axis=1)

    def reshape(self, x, shape):
        return self.node("Reshape", [x, self.const(np.array(shape, np.int64), "shape")], shape)

    def transpose(self, x, perm):
        s = self.shapes[x]
        return self.node("Transpose", [x], tuple(s[p] for p in perm), perm=list(perm))

    def gemm(self, x, out):
        n, k = self.shapes[x]
        return self.node("Gemm", [x, self.weight(out, k), self.const(np.zeros(out, np.float32), "b")],
                         (n, out), transB=1)

    def matmul(self, a, b):
        sa, sb = self.shapes[a], self.shapes.get(b, np.shape(self.inits.get(b)))
        batch = np.broadcast_shapes(sa[:-2], sb[:-2])
        return self.node("MatMul", [a, b], tuple(batch) + (sa[-2], sb[-1]))

    def resize2x(self, x):
        n, c, hh, ww = self.shapes[x]
        scales = self.const(np.array([1, 1, 2, 2], np.float32), "scales")
        return self.node("Resize", [x, "", scales], (n, c, 2 * hh, 2 * ww), mode="nearest")

    def split(self, x, axis, parts):
        shape = list(self.shapes[x])
        shape[axis] //= parts
        names = [self._name("split") for _ in range(parts)]
        self.nodes.append(helper.make_node("Split", [x], names, name=names[0] + "_op", axis=axis))
        for nm in names:
            self.shapes[nm] = tuple(shape)
        return names


ACTS = {
    "relu": lambda net, x: net.unary("Relu", x),
    "relu6": lambda net, x: net.clip(x, 0.0, 6.0),
    "hswish": lambda net, x: net.unary("HardSwish", x) if net.opset >= 14 else
    net.mul(x, net.unary("HardSigmoid", x, alpha=1 / 6, beta=0.5)),
    "hsigmoid": lambda net, x: net.unary("HardSigmoid", x, alpha=1 / 6, beta=0.5),
    "sigmoid": lambda net, x: net.unary("Sigmoid", x),
    "silu": lambda net, x: net.mul(x, net.unary("Sigmoid", x)),
    "leaky": lambda net, x: net.unary("LeakyRelu", x, alpha=0.1),
    "none": lambda net, x: x,
}
