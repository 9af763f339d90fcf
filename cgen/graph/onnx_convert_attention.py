"""Attention (opset 23+, issue 12) lowered onto batched matmuls and softmax.

Q, K, V are 4-D (batch, heads, sequence, head size) or 3-D (batch, sequence, heads *
head size, with q_num_heads / kv_num_heads).  past_key / past_value are concatenated in
front of K / V (the present outputs); fewer K/V heads than Q heads are repeated (grouped
query attention).  scores = (Q K^T) * scale, softcapped (softcap * tanh(s / softcap)),
plus the bias: attn_mask (additive float, or bool: kept / masked) and the causal mask
(a query at i sees keys j <= i + past length).  Masked scores get a large finite negative
bias, and a row whose keys are all masked gives zeros as the ONNX reference does.

Refused in one line: the qk_matmul_output output, nonpad_kv_seqlen, sliding windows, a
mask narrower than the keys."""
from __future__ import annotations

import numpy as np

from .onnx_import import _inp, _refuse

MASKED = -1e30           # finite: exp(MASKED - max) is 0 and a fully masked row stays a number


def _heads(imp, name: str, heads, tag: str) -> str:
    """3-D (B, S, heads * d) -> (B, heads, S, d); 4-D unchanged."""
    s = imp.v(name).shape
    if len(s) == 4:
        return imp.resolve(name)
    if not heads or s[2] % heads:
        _refuse(imp, f"3-D input {name!r} of shape {s} needs q_num_heads/kv_num_heads "
                "that divide its last dimension", "shape")
    x = imp.reshape(name, (s[0], s[1], heads, s[2] // heads), tag=f"{tag}_split")
    return imp.emit("transpose", [x], {"perm": (0, 2, 1, 3)}, tag=f"{tag}_heads")[0]


def _repeat_heads(imp, name: str, reps: int, tag: str) -> str:
    if reps == 1:
        return name
    b, h, L, d = imp.v(name).shape
    x = imp.reshape(name, (b, h, 1, L, d), tag=f"{tag}_g")
    x = imp.emit("expand", [x], {"shape": (b, h, reps, L, d)}, tag=f"{tag}_rep")[0]
    return imp.reshape(x, (b, h * reps, L, d), tag=f"{tag}_gqa")


def _bias(imp, n, a, S: int, L: int, past: int):
    """(additive bias broadcastable to (B, H, S, L) or None, True when masks can hide a
    whole row)."""
    mask = _inp(n, 3)
    bias = None
    if mask is not None:
        mv = imp.v(mask)
        if mv.shape[-1] != L:
            _refuse(imp, f"attn_mask has {mv.shape[-1]} key columns, the keys {L}; cgen "
                    "does not pad the mask")
        if mv.dtype == "bool":
            zero = imp.add_const(np.zeros((), np.float32), "attn_zero")
            neg = imp.add_const(np.full((), MASKED, np.float32), "attn_masked")
            bias = imp.emit("where", [mask, zero, neg], tag="mask_bias")[0]
        elif mv.dtype == "float32":
            bias = imp.resolve(mask)
        else:
            _refuse(imp, f"attn_mask is {mv.dtype}", "unsupported_dtype")
    if int(a.get("is_causal", 0)):
        allowed = np.arange(L)[None, :] <= np.arange(S)[:, None] + past
        causal = imp.add_const(np.where(allowed, 0.0, MASKED).astype(np.float32), "causal")
        bias = causal if bias is None else imp.emit("add", [bias, causal], tag="causal_bias")[0]
    return bias


def convert_attention(imp, n, a):
    if len(n.output) > 3 and n.output[3]:
        _refuse(imp, "the qk_matmul_output output is used")
    if _inp(n, 6) is not None:
        _refuse(imp, "nonpad_kv_seqlen is given; cgen takes full-length keys")
    for key in ("left_window_size", "right_window_size"):
        if int(a.get(key, -1)) != -1:
            _refuse(imp, f"{key}={a[key]}; cgen has no sliding-window attention")
    if (_inp(n, 4) is None) != (_inp(n, 5) is None):
        _refuse(imp, "past_key and past_value must come together", "shape")
    for i in range(3):
        if imp.v(n.input[i]).dtype != "float32":
            _refuse(imp, f"input {n.input[i]!r} is {imp.v(n.input[i]).dtype}",
                    "unsupported_dtype")
    rank = len(imp.v(n.input[0]).shape)
    Q = _heads(imp, n.input[0], a.get("q_num_heads"), "q")
    K = _heads(imp, n.input[1], a.get("kv_num_heads"), "k")
    V = _heads(imp, n.input[2], a.get("kv_num_heads"), "v")
    past = 0
    if _inp(n, 4) is not None:
        past = imp.v(n.input[4]).shape[2]
        K = imp.emit("concat", [n.input[4], K], {"axis": 2}, tag="present_k")[0]
        V = imp.emit("concat", [n.input[5], V], {"axis": 2}, tag="present_v")[0]
    for i, kv in ((1, K), (2, V)):
        if len(n.output) > i and n.output[i]:
            imp.alias[n.output[i]] = imp.resolve(kv)
    B, Hq, S, d = imp.v(Q).shape
    Hk, L = imp.v(K).shape[1], imp.v(K).shape[2]
    if Hq % Hk or imp.v(V).shape[1] != Hk:
        _refuse(imp, f"{Hq} query heads and {Hk} key/value heads", "shape")
    K, V = _repeat_heads(imp, K, Hq // Hk, "k"), _repeat_heads(imp, V, Hq // Hk, "v")
    scale = float(a["scale"]) if "scale" in a else 1.0 / np.sqrt(d)
    KT = imp.emit("transpose", [K], {"perm": (0, 1, 3, 2)}, tag="kt")[0]
    s = imp.emit("matmul", [Q, KT], tag="qk")[0]
    s = imp.emit("mul", [s, imp.add_const(np.asarray(scale, np.float32), "attn_scale")],
                 tag="scaled")[0]
    cap = float(a.get("softcap", 0.0))
    if cap > 0:
        c = imp.add_const(np.asarray(cap, np.float32), "softcap")
        t = imp.emit("tanh", [imp.emit("div", [s, c], tag="cap_in")[0]], tag="cap_tanh")[0]
        s = imp.emit("mul", [t, c], tag="capped")[0]
    bias = _bias(imp, n, a, S, L, past)
    if bias is not None:
        s = imp.emit("add", [s, bias], tag="biased")[0]
    p = imp.emit("softmax", [s], {"axis": 3}, tag="probs")[0]
    if bias is not None:             # rows with every key masked: zeros (ONNX reference)
        row = imp.emit("reduce_max", [bias], {"axes": (len(imp.v(bias).shape) - 1,),
                                              "keepdims": 1}, tag="row_max")[0]
        half = imp.add_const(np.asarray(MASKED / 2, np.float32), "attn_half")
        seen = imp.emit("cast", [imp.emit("greater", [row, half], tag="row_seen")[0]],
                        {"to": "float32"}, tag="row_keep")[0]
        p = imp.emit("mul", [p, seen], tag="probs_kept")[0]
    y = imp.emit("matmul", [p, V], tag="pv")[0]
    if rank == 3:
        y = imp.emit("transpose", [y], {"perm": (0, 2, 1, 3)}, tag="y_t")[0]
        imp.reshape(y, (B, S, Hq * imp.v(V).shape[3]), out=n.output[0], tag="y")
    else:
        imp.alias[n.output[0]] = imp.resolve(y)


ATTENTION_CONVERTERS = {"Attention": convert_attention}
