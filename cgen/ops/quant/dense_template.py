"""QLinearMatMul-style template: quantized dense with bias."""
from __future__ import annotations

import numpy as np

from ... import te
from ..common import parallel_knobs
from ..space import ConfigSpace, Knob, split_choices
from ...tensorize.int8_microkernel import tile_mrs, tile_shape
from targets import resolve
from .compute import qdense
from .dispatch import TILE_INTRINS, default_algo, target_algos, check_common, config_dict, tensorize
from .reference import np_qdense_acc, qvalues, random_bias, requant_inputs, requantize_reference, zero_points


class QDenseTemplate:
    """Quantized dense / QLinearMatMul with bias: A (M, K) x B -> Y (M, N), B given as (K, N)
    or, with b_layout "NK", transposed (N, K); scales per tensor or per column.

    Knobs: algo (as for qconv2d), tile_m / tile_n (accumulator tile), micro_m / micro_n
    (packed, packed_dot: register block inside the tile; packed_tile: the kernel's MR x NR),
    unroll (the register block's loops; direct: the tile's row loop), parallel (OpenMP over
    column tiles)."""
    name = "qdense"

    def workload(self, M: int, N: int, K: int, a_dtype="uint8", b_dtype="int8", y_dtype=None,
                 rounding="onnx", per_channel=False, b_layout="KN") -> dict:
        y_dtype = y_dtype or a_dtype
        check_common(self.name, rounding, {"a_dtype": a_dtype, "b_dtype": b_dtype, "y_dtype": y_dtype})
        for v, nm in ((M, "M"), (N, "N"), (K, "K")):
            if int(v) < 1:
                raise ValueError(f"{self.name}: {nm} must be positive, got {v}")
        if b_layout not in ("KN", "NK"):
            raise ValueError(f"{self.name}: b_layout must be 'KN' or 'NK', got {b_layout!r}")
        return {"op": self.name, "M": int(M), "N": int(N), "K": int(K), "a_dtype": a_dtype,
                "b_dtype": b_dtype, "y_dtype": y_dtype, "rounding": rounding,
                "per_channel": bool(per_channel), "b_layout": b_layout}

    def space(self, wl: dict, target) -> ConfigSpace:
        tgt = resolve(target)
        knobs = [Knob("algo", target_algos(tgt)),
                 Knob("tile_m", split_choices(wl["M"], 16)),
                 Knob("tile_n", split_choices(wl["N"], 64)),
                 Knob("micro_m", (1, 2, 4)),
                 Knob("micro_n", (1, 2, 4)),
                 Knob("unroll", (False, True))]
        return ConfigSpace(tuple(knobs + parallel_knobs(tgt)))

    def build(self, wl: dict, target, config):
        tgt = resolve(target)
        c = config_dict(config)
        algo = c["algo"]
        # one tile of rows: the column sums ride in the tile kernel as an extra row of A
        ones_row = algo in TILE_INTRINS and c["tile_m"] >= wl["M"]
        op = qdense(wl, algo, ones_row)
        s = te.create_schedule(op.out)
        Y = op.out
        m, n = s[Y].op.axis
        mo, mi = s[Y].split(m, c["tile_m"])
        no, ni = s[Y].split(n, c["tile_n"])
        s[Y].reorder(no, mo, mi, ni)
        if c.get("parallel"):
            s[Y].parallel(no)
        acc = op.stages["acc" if algo == "direct" else "dot"]
        s[acc].compute_at(s[Y], mo)
        am, an = s[acc].op.axis
        (k,) = s[acc].op.reduce_axis
        if algo == "direct":
            s[acc].reorder(k, am, an)
            if c["unroll"]:
                s[acc].unroll(am)
            return s, op.args
        mr, nr = tile_shape(tgt, c["micro_m"]) if algo in TILE_INTRINS else (c["micro_m"], c["micro_n"])
        amo, ami = s[acc].split(am, mr)
        ano, ani = s[acc].split(an, nr)
        if algo in TILE_INTRINS:
            ko, k = s[acc].split(k, nparts=1)       # the tile's zeroing outside its nest
            s[acc].reorder(amo, ano, ko, ami, ani, k)
        else:
            s[acc].reorder(amo, ano, ami, ani, k)
        if algo in TILE_INTRINS:
            # every loop of the kernel's nest must survive (see QConv2dTemplate._register_block)
            if min(c["tile_n"], wl["N"]) >= nr and wl["K"] > 1:
                tensorize(s, acc, ami, algo, tgt, mr)
        else:
            tensorize(s, acc, k, algo, tgt)
            if c["unroll"]:
                s[acc].unroll(ani)
                s[acc].unroll(ami)
        return s, op.args

    def default(self, wl: dict, target):
        tgt = resolve(target)
        sp = self.space(wl, tgt)
        algo = default_algo(tgt, wl["K"])
        tm = min(wl["M"], 16)
        rows = tm + 1 if algo in TILE_INTRINS and tm >= wl["M"] else tm   # + the ones row
        mm = max([m for m in (tile_mrs(tgt) or (1, 2, 4)) if rows % m == 0] or [1])
        return sp.nearest({"algo": algo, "tile_m": tm, "tile_n": 32, "micro_m": mm, "micro_n": 4,
                          "unroll": True, "parallel": False}, larger_on_tie=True)

    def quick_configs(self, wl: dict, target) -> list:
        """A short list for a quick sweep: the default, then variations of its tiles."""
        sp = self.space(wl, target)
        d = self.default(wl, target)
        out = [d]
        for change in ({"tile_n": 64}, {"tile_n": 16}, {"tile_m": 4}, {"algo": "packed_dot"},
                       {"algo": "packed", "micro_m": 2, "micro_n": 4}):
            c = sp.nearest({**d.to_dict(), **change}, larger_on_tie=True)
            if c.index not in {o.index for o in out}:
                out.append(c)
        return out

    def inputs(self, wl: dict, rng) -> list:
        M, N, K = wl["M"], wl["N"], wl["K"]
        P = N if wl["per_channel"] else 1
        a = qvalues(rng, wl["a_dtype"], (M, K))
        b = qvalues(rng, wl["b_dtype"], (K, N))
        bias = random_bias(rng, N, K)
        az, bz = zero_points(rng, P, wl["a_dtype"], wl["b_dtype"])
        rq = requant_inputs(rng, wl["rounding"], np_qdense_acc(a, b, bias, int(az[0]), bz), P,
                             wl["y_dtype"])
        bm = np.ascontiguousarray(b.T) if wl.get("b_layout", "KN") == "NK" else b
        return [a, bm, bias, az, bz, *rq, np.zeros((M, N), wl["y_dtype"])]

    def reference(self, wl: dict, inputs) -> dict:
        a, bm, bias, az, bz = inputs[:5]
        b = bm.T if wl.get("b_layout", "KN") == "NK" else bm
        acc = np_qdense_acc(a, b, bias, int(az[0]), bz)
        return {"Y": requantize_reference(wl["rounding"], acc, inputs[3:-1], wl["y_dtype"], 1)}

    def flops(self, wl: dict) -> int:
        return 2 * wl["M"] * wl["N"] * wl["K"]
