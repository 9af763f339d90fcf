"""GEMM template: the packed micro-kernel schedule with its blocking knobs."""
from __future__ import annotations

import numpy as np

from ..autotune.space import ConfigSpace, Knob
from ..tensorize import gemm_shape
from .gemm import GemmConfig, packed_gemm
from targets import resolve


class GemmTemplate:
    name = "gemm"

    def workload(self, M: int, N: int, K: int, dtype: str = "float32") -> dict:
        return {"op": "gemm", "M": int(M), "N": int(N), "K": int(K), "dtype": dtype}

    def space(self, wl: dict, target) -> ConfigSpace:
        tgt = resolve(target)
        MR, NR = gemm_shape(tgt)
        M, N, K = wl["M"], wl["N"], wl["K"]
        mc = sorted({min(m * MR, -(-M // MR) * MR) for m in (1, 2, 4, 8, 16, 24, 32)})
        nc = sorted({min(n * NR, -(-N // NR) * NR) for n in (1, 2, 4, 8, 16, 32)})
        kc = sorted({min(k, K) for k in (64, 128, 256, 384, 512)})
        knobs = [Knob("MC", tuple(mc)), Knob("NC", tuple(nc)), Knob("KC", tuple(kc)),
                 Knob("order", ("ji", "ij"))]
        if tgt.threads and not tgt.bare_metal:
            knobs.append(Knob("parallel", (False, True)))
        return ConfigSpace(tuple(knobs))

    def build(self, wl: dict, target, config):
        c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        cfg = GemmConfig(MC=c["MC"], NC=c["NC"], KC=c["KC"], order=c["order"],
                         parallel=bool(c.get("parallel", False)))
        return packed_gemm(wl["M"], wl["N"], wl["K"], target, cfg)

    def default(self, wl: dict, target):
        sp = self.space(wl, target)
        tgt = resolve(target)
        MR, NR = gemm_shape(tgt)
        want = {"MC": 24 * MR if tgt.arch == "x86_64" else 8 * MR, "NC": 16 * NR,
                "KC": 256, "order": "ji", "parallel": False}
        values = {}
        for k in sp.knobs:
            v = want.get(k.name, k.choices[0])
            if v not in k.choices:
                # the nearest choice: shapes smaller than the default block
                nums = [x for x in k.choices if isinstance(x, (int, float)) and not isinstance(x, bool)]
                v = min(nums, key=lambda x: abs(x - v)) if nums else k.choices[0]
            values[k.name] = v
        return sp.get(sp.index_of(values))

    def inputs(self, wl: dict, rng) -> list:
        M, N, K = wl["M"], wl["N"], wl["K"]
        return [rng.random((M, K), dtype=np.float32), rng.random((K, N), dtype=np.float32),
                np.zeros((M, N), np.float32)]

    def reference(self, wl: dict, inputs) -> dict:
        return {"C": inputs[0] @ inputs[1]}

    def flops(self, wl: dict) -> int:
        return 2 * wl["M"] * wl["N"] * wl["K"]
