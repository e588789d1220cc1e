"""Composite references: the fused Functions of nn.functional written with core operations only.

Slow and memory-hungry, but obviously right given the core ops (which are gradchecked); tests
compare values and gradients of each fused Function with its composite here.
"""
import math

import numpy as np


def linear(x, w, b=None):
    y = x @ w.T
    return y + b if b is not None else y


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) * (x - mu)).mean(axis=-1, keepdims=True)
    return (x - mu) / (var + eps).sqrt() * w + b


def cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    c = logits.shape[-1]
    logp = logits.reshape(-1, c).log_softmax(-1)
    t = np.asarray(targets).reshape(-1)
    keep = t != ignore_index
    picked = logp[np.arange(t.size), np.where(keep, t, 0)]
    per_row = -(1 - label_smoothing) * picked - (label_smoothing / c) * logp.sum(axis=-1)
    per_row = per_row * keep.astype(logits.dtype)  # ignored rows count for nothing
    if reduction == "none":
        return per_row.reshape(np.asarray(targets).shape)
    total = per_row.sum()
    return total if reduction == "sum" else total * (1.0 / max(int(keep.sum()), 1))


def alibi(n_heads, tq, tk):
    """ALiBi's biases (n_heads, tq, tk), written out: head h (from 1) subtracts
    2^(-8 h / n_heads) for every position between query and key."""
    slopes = np.array([2.0 ** (-8.0 * h / n_heads) for h in range(1, n_heads + 1)])
    distance = np.array([[abs(i - j) for j in range(tk)] for i in range(tq)])
    return -slopes[:, None, None] * distance


def attention(q, k, v, causal=False, mask=None, bias=None):
    s = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        s = s + bias
    tq, tk = q.shape[-2], k.shape[-2]
    allowed = np.ones((tq, tk), dtype=bool)
    if causal:
        allowed &= ~np.triu(np.ones((tq, tk), dtype=bool), 1)
    if mask is not None:
        allowed = allowed & np.asarray(mask)
    return s.masked_fill(~allowed, -1e9).softmax(-1) @ v


def multi_head_attention(qkv, n_heads, causal=False, key_padding_mask=None, with_alibi=False):
    b, t, c3 = qkv.shape
    c = c3 // 3
    d = c // n_heads
    q, k, v = (qkv[:, :, i * c:(i + 1) * c].reshape(b, t, n_heads, d).transpose(0, 2, 1, 3)
               for i in range(3))
    mask = None if key_padding_mask is None else np.asarray(key_padding_mask)[:, None, None, :]
    bias = alibi(n_heads, t, t).astype(qkv.dtype) if with_alibi else None
    y = attention(q, k, v, causal, mask, bias)
    return y.transpose(0, 2, 1, 3).reshape(b, t, c)


def embedding(ids, w):
    return w[np.asarray(ids)]
