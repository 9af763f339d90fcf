"""Dense-prediction networks: a YOLO-style detector with an FPN neck and a small U-Net, and
the sequence models: a transformer encoder block as exporters write it and a GRU keyword
model."""
from __future__ import annotations

import numpy as np

from .cnn import _cbn
from .net import Net


# ---------------------------------------------------------------- YOLO-style detector
def yolo_fpn(width=1.0, size=256, classes=20, anchors=3, seed=0):
    """A CSP-free YOLOv3-tiny-like backbone (conv-BN-leaky, stride-2 convs) to strides 8, 16
    and 32, an FPN neck (1x1 laterals, nearest 2x Resize, Concat) and one 1x1 head per scale:
    three outputs of anchors x (5 + classes) channels."""
    net = Net(seed)
    x = net.input("image", (1, 3, size, size))
    c = lambda n: max(8, int(n * width))  # noqa: E731
    x = _cbn(net, x, c(16), 3, 1, act="leaky")
    feats = []
    for i, ch in enumerate((32, 64, 128, 256, 512)):
        x = _cbn(net, x, c(ch), 3, 2, act="leaky")
        x = _cbn(net, x, c(ch), 3, 1, act="leaky")
        if i >= 2:
            feats.append(x)                     # strides 8, 16, 32
    p5 = _cbn(net, feats[2], c(128), 1, act="leaky")
    up = net.resize2x(_cbn(net, p5, c(64), 1, act="leaky"))
    p4 = _cbn(net, net.concat([up, feats[1]]), c(128), 3, act="leaky")
    up = net.resize2x(_cbn(net, p4, c(64), 1, act="leaky"))
    p3 = _cbn(net, net.concat([up, feats[0]]), c(64), 3, act="leaky")
    head = anchors * (5 + classes)
    return net.model([net.conv(p, head, 1) for p in (p3, p4, p5)])


# ---------------------------------------------------------------- U-Net (Ronneberger 2015), small
def unet(width=1.0, size=128, classes=2, seed=0, depth=3):
    """Encoder of conv3x3-BN-ReLU pairs and max pools, a bottleneck, a decoder that goes up
    by ConvTranspose 2x2 stride 2 (and by nearest Resize at the last level), concatenates
    the skip and runs a conv pair; a 1x1 conv to the classes."""
    net = Net(seed)
    x = net.input("image", (1, 3, size, size))
    c = lambda n: max(8, int(n * width))  # noqa: E731
    skips = []
    for i in range(depth):
        x = _cbn(net, _cbn(net, x, c(16 << i), 3), c(16 << i), 3)
        skips.append(x)
        x = net.maxpool(x, 2, 2)
    x = _cbn(net, _cbn(net, x, c(16 << depth), 3), c(16 << depth), 3)
    for i in reversed(range(depth)):
        if i == 0:
            x = _cbn(net, net.resize2x(x), c(16), 1)
        else:
            x = net.conv_transpose(x, c(16 << i), 2, 2)
        x = net.concat([x, skips[i]])
        x = _cbn(net, _cbn(net, x, c(16 << i), 3), c(16 << i), 3)
    return net.model([net.conv(x, classes, 1)])


# ---------------------------------------------------------------- transformer encoder block
def _layer_norm(net, x, d):
    """The ReduceMean / Sub / Pow / Sqrt / Div pattern PyTorch's exporter writes below opset 17."""
    mean = net.node("ReduceMean", [x], net.shapes[x][:-1] + (1,), axes=[-1], keepdims=1)
    xc = net.binary("Sub", x, mean)
    var = net.node("ReduceMean", [net.binary("Pow", xc, net.const(np.float32(2.0)))],
                   net.shapes[x][:-1] + (1,), axes=[-1], keepdims=1)
    std = net.unary("Sqrt", net.add(var, net.const(np.float32(1e-5))))
    y = net.binary("Div", xc, std)
    gamma = net.const((1 + 0.1 * net.rng.standard_normal(d)).astype(np.float32), "ln")
    return net.add(net.mul(y, gamma), net.const((0.1 * net.rng.standard_normal(d)).astype(np.float32), "ln"))


def _gelu(net, x):
    """Erf GELU as exported: x * 0.5 * (1 + erf(x / sqrt 2))."""
    e = net.unary("Erf", net.binary("Div", x, net.const(np.float32(np.sqrt(2.0)))))
    return net.mul(net.mul(x, net.add(e, net.const(np.float32(1.0)))), net.const(np.float32(0.5)))


def _linear(net, x, dout):
    din = net.shapes[x][-1]
    y = net.matmul(x, net.weight(din, dout, fan_in=din))
    return net.add(y, net.const((0.1 * net.rng.standard_normal(dout)).astype(np.float32), "b"))


def transformer_encoder(width=1.0, size=64, classes=0, seed=0, d=128, heads=4, ffn=512):
    """One BERT-style (post-norm) encoder layer over `size` tokens of width d: multi-head
    self-attention with batched MatMul + Softmax, Erf-GELU feed-forward, LayerNorm as its
    exported op pattern."""
    d, ffn = int(d * width), int(ffn * width)
    net = Net(seed)
    x = net.input("tokens", (1, size, d))
    dh = d // heads

    def split_heads(t):
        return net.transpose(net.reshape(t, (1, size, heads, dh)), (0, 2, 1, 3))
    q, k, v = (split_heads(_linear(net, x, d)) for _ in range(3))
    scores = net.mul(net.matmul(q, net.transpose(k, (0, 1, 3, 2))), net.const(np.float32(1 / np.sqrt(dh))))
    att = net.node("Softmax", [scores], net.shapes[scores], axis=-1)
    ctx = net.reshape(net.transpose(net.matmul(att, v), (0, 2, 1, 3)), (1, size, d))
    x = _layer_norm(net, net.add(x, _linear(net, ctx, d)), d)
    y = _linear(net, _gelu(net, _linear(net, x, ffn)), d)
    return net.model([_layer_norm(net, net.add(x, y), d)])


# ---------------------------------------------------------------- GRU keyword model
def gru_kws(width=1.0, size=49, classes=12, seed=0, features=10, hidden=64):
    """Keyword spotting with a GRU over 49 MFCC frames of 10 features (Hello Edge's GRU):
    the last hidden state into a fully connected layer."""
    hidden = int(hidden * width)
    net = Net(seed, opset=14)
    x = net.input("mfcc", (size, 1, features))
    r = net.rng
    wx = net.const((r.standard_normal((1, 3 * hidden, features)) / np.sqrt(features)).astype(np.float32), "w")
    wh = net.const((r.standard_normal((1, 3 * hidden, hidden)) / np.sqrt(hidden)).astype(np.float32), "w")
    b = net.const((0.1 * r.standard_normal((1, 6 * hidden))).astype(np.float32), "b")
    name = net._name("gru")
    y, yh = name + "_y", name + "_h"
    from onnx import helper
    net.nodes.append(helper.make_node("GRU", [x, wx, wh, b], [y, yh], name=name, hidden_size=hidden))
    net.shapes[y], net.shapes[yh] = (size, 1, 1, hidden), (1, 1, hidden)
    return net.model([net.gemm(net.reshape(yh, (1, hidden)), classes)])
