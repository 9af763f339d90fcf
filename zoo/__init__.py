"""A zoo of published architectures written as ONNX with seeded random weights.

    from zoo import ZOO
    entry = ZOO["mobilenet_v2"]
    model = entry.build()            # the published size (MobileNetV2-1.0 at 224)
    model = entry.build(scale="ci")  # the same architecture, narrower and smaller input
    feeds = entry.feeds(model)

`python -m zoo OUT_DIR [--scale full|ci] [NAME ...]` writes NAME.onnx files.

Each entry's `ci` scale keeps every layer and connection of the architecture (depth, kernel
sizes, strides, groups, activations, skips) and shrinks only the width multiplier and the
input size, so a compile and a run under QEMU fit in a CI job; `full` is the size the paper
publishes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import cnn, dense_pred


@dataclass(frozen=True)
class ZooEntry:
    name: str
    builder: object
    full: dict
    ci: dict = field(default_factory=dict)
    note: str = ""

    def build(self, scale: str = "full", seed: int = 0):
        if scale not in ("full", "ci"):
            raise ValueError(f"scale {scale!r}: full or ci")
        return self.builder(**{**self.full, **(self.ci if scale == "ci" else {})}, seed=seed)

    @staticmethod
    def feeds(model, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])
                .astype(np.float32) for i in model.graph.input}


_ENTRIES = (
    ZooEntry("mobilenet_v2", cnn.mobilenet_v2, dict(width=1.0, size=224), dict(width=0.35, size=96, classes=100),
             "MobileNetV2-1.0 at 224"),
    ZooEntry("mobilenet_v3_small", cnn.mobilenet_v3_small, dict(width=1.0, size=224),
             dict(width=0.5, size=96, classes=100), "MobileNetV3-Small, h-swish and squeeze-excite"),
    ZooEntry("resnet18", cnn.resnet18, dict(width=1.0, size=224), dict(width=0.25, size=64, classes=100),
             "ResNet-18; at full size 11.7M parameters, about 220 MB of C: too large to compile in CI"),
    ZooEntry("squeezenet11", cnn.squeezenet11, dict(width=1.0, size=224),
             dict(width=0.25, size=96, classes=100)),
    ZooEntry("shufflenet_v2", cnn.shufflenet_v2, dict(width=1.0, size=224), dict(width=0.5, size=96, classes=100),
             "ShuffleNetV2 1.0x, channel shuffle as Reshape/Transpose"),
    ZooEntry("efficientnet_lite0", cnn.efficientnet_lite0, dict(width=1.0, size=224),
             dict(width=0.35, size=96, classes=100)),
    ZooEntry("ds_cnn", cnn.ds_cnn, dict(width=1.0), {}, "DS-CNN-S keyword spotting, 49x10 MFCC"),
    ZooEntry("yolo_fpn", dense_pred.yolo_fpn, dict(width=1.0, size=256), dict(width=0.25, size=96),
             "YOLO-style detector, FPN neck with Resize + Concat"),
    ZooEntry("unet", dense_pred.unet, dict(width=1.0, size=128), dict(width=0.5, size=64),
             "small U-Net, ConvTranspose and Resize"),
    ZooEntry("transformer_encoder", dense_pred.transformer_encoder, dict(size=64),
             dict(size=16, width=0.5), "BERT-style encoder layer, exported LayerNorm pattern, Erf-GELU"),
    ZooEntry("gru_kws", dense_pred.gru_kws, {}, {}, "GRU keyword model"),
)

ZOO = {e.name: e for e in _ENTRIES}
