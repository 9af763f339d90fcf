"""Image classifiers and a keyword-spotting CNN, layer by layer as their papers define them
(width multiplier and input size are arguments, so CI can run the same architecture small).
"""
from __future__ import annotations

from .net import Net


def divisible(v: float, d: int = 8) -> int:
    """Channel counts rounded as the MobileNet reference code does (never below 90%)."""
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


def _classifier(net, x, classes):
    return net.gemm(net.flatten(net.gap(x)), classes)


def _cbn(net, x, cout, k=1, stride=1, groups=1, act="relu"):
    return net.act(net.bn(net.conv(x, cout, k, stride, groups, bias=False)), act)


# ---------------------------------------------------------------- MobileNetV2 (Sandler 2018)
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(width=1.0, size=224, classes=1000, seed=0):
    net = Net(seed)
    x = net.input("input", (1, 3, size, size))
    cin = divisible(32 * width)
    x = _cbn(net, x, cin, 3, 2, act="relu6")
    for t, c, n, s in V2_SETTINGS:
        cout = divisible(c * width)
        for i in range(n):
            y = x
            if t != 1:
                y = _cbn(net, y, cin * t, act="relu6")
            y = _cbn(net, y, cin * t, 3, s if i == 0 else 1, groups=cin * t, act="relu6")
            y = _cbn(net, y, cout, act="none")
            x = net.add(x, y) if i > 0 or (s == 1 and cin == cout) else y
            cin = cout
    x = _cbn(net, x, divisible(1280 * max(1.0, width)), act="relu6")
    return net.model([_classifier(net, x, classes)])


# ---------------------------------------------------------------- MobileNetV3-Small (Howard 2019)
# kernel, expansion, out, squeeze-excite, activation, stride
V3_SMALL = ((3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
            (5, 96, 40, True, "hswish", 2), (5, 240, 40, True, "hswish", 1),
            (5, 240, 40, True, "hswish", 1), (5, 120, 48, True, "hswish", 1),
            (5, 144, 48, True, "hswish", 1), (5, 288, 96, True, "hswish", 2),
            (5, 576, 96, True, "hswish", 1), (5, 576, 96, True, "hswish", 1))


def _squeeze_excite(net, x, c):
    s = net.gap(x)
    s = net.act(net.conv(s, divisible(c / 4), 1), "relu")
    s = net.act(net.conv(s, c, 1), "hsigmoid")
    return net.mul(x, s)


def mobilenet_v3_small(width=1.0, size=224, classes=1000, seed=0):
    net = Net(seed, opset=14)
    x = net.input("input", (1, 3, size, size))
    cin = divisible(16 * width)
    x = _cbn(net, x, cin, 3, 2, act="hswish")
    for k, e, c, se, act, s in V3_SMALL:
        exp, cout = divisible(e * width), divisible(c * width)
        y = x if exp == cin else _cbn(net, x, exp, act=act)
        y = _cbn(net, y, exp, k, s, groups=exp, act=act)
        if se:
            y = _squeeze_excite(net, y, exp)
        y = _cbn(net, y, cout, act="none")
        x = net.add(x, y) if s == 1 and cin == cout else y
        cin = cout
    x = _cbn(net, x, divisible(576 * width), act="hswish")
    x = net.act(net.conv(net.gap(x), 1024, 1), "hswish")
    return net.model([net.gemm(net.flatten(x), classes)])


# ---------------------------------------------------------------- ResNet-18 (He 2016)
def resnet18(width=1.0, size=224, classes=1000, seed=0):
    net = Net(seed)
    x = net.input("input", (1, 3, size, size))
    cin = int(64 * width)
    x = net.maxpool(_cbn(net, x, cin, 7, 2), 3, 2, pad=1)
    for stage, c in enumerate((64, 128, 256, 512)):
        cout = int(c * width)
        for i in range(2):
            s = 2 if stage > 0 and i == 0 else 1
            y = _cbn(net, _cbn(net, x, cout, 3, s), cout, 3, act="none")
            short = x if s == 1 and cin == cout else _cbn(net, x, cout, 1, s, act="none")
            x = net.act(net.add(y, short), "relu")
            cin = cout
    return net.model([_classifier(net, x, classes)])


# ---------------------------------------------------------------- SqueezeNet 1.1 (Iandola 2016)
def _fire(net, x, squeeze, expand):
    s = net.act(net.conv(x, squeeze, 1), "relu")
    return net.concat([net.act(net.conv(s, expand, 1), "relu"), net.act(net.conv(s, expand, 3), "relu")])


def squeezenet11(width=1.0, size=224, classes=1000, seed=0):
    net = Net(seed)
    x = net.input("input", (1, 3, size, size))
    f = lambda n: max(8, int(n * width))  # noqa: E731
    x = net.act(net.conv(x, f(64), 3, 2, pad=0), "relu")
    x = net.maxpool(x, 3, 2, ceil=True)
    x = _fire(net, _fire(net, x, f(16), f(64)), f(16), f(64))
    x = net.maxpool(x, 3, 2, ceil=True)
    x = _fire(net, _fire(net, x, f(32), f(128)), f(32), f(128))
    x = net.maxpool(x, 3, 2, ceil=True)
    for sq, ex in ((48, 192), (48, 192), (64, 256), (64, 256)):
        x = _fire(net, x, f(sq), f(ex))
    x = net.act(net.conv(x, classes, 1), "relu")
    return net.model([net.flatten(net.gap(x))])


# ---------------------------------------------------------------- ShuffleNetV2 1.0x (Ma 2018)
def _shuffle(net, x):
    n, c, hh, ww = net.shapes[x]
    y = net.transpose(net.reshape(x, (n, 2, c // 2, hh, ww)), (0, 2, 1, 3, 4))
    return net.reshape(y, (n, c, hh, ww))


def _shuffle_unit(net, x, cout, stride):
    half = cout // 2
    if stride == 1:
        keep, y = net.split(x, 1, 2)
    else:
        keep = _cbn(net, _cbn(net, x, net.shapes[x][1], 3, 2, groups=net.shapes[x][1], act="none"), half)
        y = x
    y = _cbn(net, y, half)
    y = _cbn(net, y, half, 3, stride, groups=half, act="none")
    y = _cbn(net, y, half)
    return _shuffle(net, net.concat([keep, y]))


def shufflenet_v2(width=1.0, size=224, classes=1000, seed=0):
    net = Net(seed)
    x = net.input("input", (1, 3, size, size))
    x = net.maxpool(_cbn(net, x, 24, 3, 2), 3, 2, pad=1)
    for c, n in ((116, 4), (232, 8), (464, 4)):
        cout = 2 * int(c * width / 2)
        for i in range(n):
            x = _shuffle_unit(net, x, cout, 2 if i == 0 else 1)
    x = _cbn(net, x, 1024)
    return net.model([_classifier(net, x, classes)])


# ---------------------------------------------------------------- EfficientNet-Lite0 (Tan 2019)
# expansion, kernel, stride, out, repeats (Lite: no squeeze-excite, ReLU6)
LITE0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
         (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def efficientnet_lite0(width=1.0, size=224, classes=1000, seed=0):
    net = Net(seed)
    x = net.input("input", (1, 3, size, size))
    cin = divisible(32 * width)
    x = _cbn(net, x, cin, 3, 2, act="relu6")
    for e, k, s, c, n in LITE0:
        cout = divisible(c * width)
        for i in range(n):
            y = x if e == 1 else _cbn(net, x, cin * e, act="relu6")
            y = _cbn(net, y, cin * e, k, s if i == 0 else 1, groups=cin * e, act="relu6")
            y = _cbn(net, y, cout, act="none")
            x = net.add(x, y) if i > 0 else y
            cin = cout
    x = _cbn(net, x, 1280, act="relu6")
    return net.model([_classifier(net, x, classes)])


# ---------------------------------------------------------------- DS-CNN (Zhang 2017, "Hello Edge")
def ds_cnn(width=1.0, size=49, classes=12, seed=0, blocks=4):
    """Keyword spotting on 49 x 10 MFCC frames: conv 10x4 stride 2, then depthwise-separable
    blocks (the S model: 64 channels, 4 blocks), average pool, fully connected."""
    net = Net(seed)
    x = net.input("mfcc", (1, 1, size, 10))
    c = int(64 * width)
    x = _cbn(net, x, c, (10, 4), 2, act="relu")
    for _ in range(blocks):
        x = _cbn(net, _cbn(net, x, c, 3, groups=c), c)
    return net.model([_classifier(net, x, classes)])
