"""The op registry: one row per differentiable op, driving every generic check of it
(tests/engine/test_op_registry.py): forward against a float64 reference and gradcheck on
hypothesis inputs, a second backward of a retained graph, the CPU kernel against the xp
reference, the CPU kernel split into chunks and blocks against one chunk, and the CUDA path
against the CPU one; every Function of the engine must appear in some row's graph. A new op is
one Function plus one row here. Value checks that gradients cannot see (masks, indexing,
pooling) live beside the package's module in tests/<layer>/.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.engine import ops, rng
from minigrad_lm.engine.recompute import checkpoint
from minigrad_lm.nn import functional as F
from minigrad_lm.nn import tiled_attention
from minigrad_lm.testing import (
    arrays,
    broadcastable_pairs,
    positive_arrays,
    separated_arrays,
    shapes,
)
from tests import reference as composite


@dataclass(frozen=True)
class Op:
    name: str
    fn: Callable  # Tensors -> Tensor
    ref: Callable | None  # float64 NumPy arrays -> array (None: gradcheck only)
    inputs: st.SearchStrategy  # tuples of float64 arrays, every one an input of fn
    sample: Callable | None = None  # rng -> float32 inputs for the kernel and CUDA checks
    chunked: bool = False  # the CPU path splits its work into chunks or blocks (on samples)
    cpu_kernel: str | None = None  # the kernels/cpu.py function the CPU path must call
    cuda_kernels: tuple[str, ...] = ()  # the kernels/cuda.py launches the CUDA path must count


SOFTMAX_KERNELS = ("masked_softmax", "softmax_bwd")
LAYER_NORM_KERNELS = ("layer_norm_fwd", "layer_norm_bwd")


def of_tensors(fn):
    """A NumPy reference from a composite of core ops (tests/reference.py)."""
    return lambda *arrays_: fn(*(mg.tensor(a) for a in arrays_)).numpy()


def one(strategy):
    return strategy.map(lambda a: (a,))


def pair(low=-2.0, high=2.0, positive_b=False, separated=False):
    def build(s):
        a_shape, b_shape = s
        if separated:
            return st.tuples(separated_arrays(a_shape), separated_arrays(b_shape, offset=0.25))
        b = positive_arrays(b_shape) if positive_b else arrays(b_shape, low=low, high=high)
        return st.tuples(arrays(a_shape, low=low, high=high), b)
    return broadcastable_pairs().flatmap(build)


def sized(*shapes_, low=-2.0, high=2.0, distinct=False):
    """Arrays of the given shapes, a shape being a tuple of ints or of strategies of ints."""
    def draw_shape(s):
        return st.tuples(*(d if isinstance(d, st.SearchStrategy) else st.just(d) for d in s))
    return st.tuples(*(arrays(draw_shape(s), low=low, high=high, distinct=distinct)
                       for s in shapes_))


def normal(*shapes_, scale=1.0):
    """rng -> float32 standard-normal arrays of these shapes (the split and CUDA checks)."""
    return lambda rng: tuple((rng.standard_normal(s) * scale).astype(np.float32) for s in shapes_)


def _erf(x):
    return np.vectorize(math.erf)(x)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _targets(n: int, c: int) -> np.ndarray:
    """Class ids for n rows of c classes, the first row ignored when there are several."""
    t = (np.arange(n) * 7 + 3) % c
    if n > 1:
        t[0] = -100
    return t


def cross_entropy_row(name, smoothing, reduction, low=-3.0, high=3.0):
    def fn(z):
        return F.cross_entropy(z, _targets(*z.shape), label_smoothing=smoothing,
                               reduction=reduction)

    def ref(z):
        return composite.cross_entropy(mg.tensor(z), _targets(*z.shape),
                                       label_smoothing=smoothing, reduction=reduction).numpy()
    return Op(name, fn, ref, sized((st.integers(1, 5), st.integers(2, 5)), low=low, high=high),
              normal((64, 300), scale=5),
              cuda_kernels=() if reduction == "none" else ("ce_fwd", "ce_bwd"))


def _binary_targets(shape: tuple[int, ...]) -> np.ndarray:
    """0/1 targets of ``shape``: every third element is 1, so both classes appear."""
    return (np.arange(math.prod(shape)).reshape(shape) % 3 == 0).astype(np.float64)


def _padding(b: int, t: int) -> np.ndarray:
    """(B, T) key padding: row i keeps its first t - i % t keys."""
    return np.arange(t)[None, :] < (t - np.arange(b) % t)[:, None]


def mha_row(name, heads, causal, padded, tiled=None, alibi=False):
    def pad(z):
        return _padding(*z.shape[:2]) if padded else None

    def fn(z):
        return F.multi_head_attention(z, heads, causal, pad(z), tiled=tiled, alibi=alibi)

    def ref(z):
        return composite.multi_head_attention(mg.tensor(z), heads, causal, pad(z),
                                              alibi).numpy()
    dims = (st.integers(1, 2), st.integers(1, 4), st.sampled_from([3 * heads, 6 * heads]))
    plain = not (padded or tiled)
    return Op(name, fn, ref, sized(dims), normal((5, 9, 3 * heads * 8)), chunked=True,
              cpu_kernel="masked_softmax_" if plain else None,
              cuda_kernels=SOFTMAX_KERNELS if plain else ())


def sdpa_row(name, causal, masked, tiled=None):
    def mask(q, k):
        return _padding(q.shape[0], k.shape[-2])[:, None, None, :] if masked else None

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, causal, mask(q, k), tiled=tiled)

    def ref(q, k, v):
        return composite.attention(*(mg.tensor(a) for a in (q, k, v)), causal,
                                   mask(q, k)).numpy()
    return Op(name, fn, ref, attention_inputs(causal),
              normal((4, 2, 9, 8), (4, 2, 9 if causal else 13, 8), (4, 2, 9 if causal else 13, 8)),
              chunked=True, cpu_kernel=None if masked or tiled else "masked_softmax_",
              cuda_kernels=() if masked or tiled else SOFTMAX_KERNELS)


def attention_inputs(causal: bool):
    """q (B, H, Tq, D), k and v (B, H, Tk, D), Tk = Tq for causal attention."""
    dims = st.tuples(*(st.integers(1, n) for n in (2, 2, 4, 3, 4)))
    return dims.flatmap(lambda s: sized(s[:4], *[s[:2] + (s[2] if causal else s[4], s[3])] * 2))


def _attention_with_dropout(q, k, v):
    mg.manual_seed(0)  # one dropout mask: gradcheck sees one function
    return F.scaled_dot_product_attention(q, k, v, True, None, dropout_p=0.4)


TILED_DROPOUT = 0.4


def _tiled_attention_with_dropout(q, k, v):
    mg.manual_seed(0)  # one dropout mask: gradcheck sees one function
    return F.scaled_dot_product_attention(q, k, v, False, None, TILED_DROPOUT, tiled=True)


def _attention_with_dropout_ref(q, k, v):
    """The composite with the mask that tiled attention draws after manual_seed(0)."""
    mg.manual_seed(0)
    seed = rng.draw_seed("cpu")
    scales = tiled_attention.dropout_scales(np, q.shape[:-2], q.shape[-2], k.shape[-2],
                                            TILED_DROPOUT, seed)
    p = _softmax(q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1]), -1)
    return (p * scales) @ v


def _embedding(w):
    return F.embedding(_ids(w.shape[0]), w)


def _ids(n: int) -> np.ndarray:
    """Ids into n rows with repeats."""
    return (np.arange(2 * n + 1) * 5 % n).reshape(-1, 1)


ANY = shapes()
SMALL_2D = (st.integers(1, 4), st.integers(1, 4))

ELEMENTWISE = [
    Op("neg", lambda x: -x, lambda x: -x, one(arrays(ANY))),
    Op("exp", mg.exp, np.exp, one(arrays(ANY))),
    Op("log", mg.log, np.log, one(positive_arrays(ANY))),
    Op("sqrt", mg.sqrt, np.sqrt, one(positive_arrays(ANY))),
    Op("tanh", mg.tanh, np.tanh, one(arrays(ANY))),
    Op("sigmoid", mg.sigmoid, lambda x: 1 / (1 + np.exp(-x)), one(arrays(ANY, low=-30, high=30))),
    Op("relu", mg.relu, lambda x: np.maximum(x, 0), one(arrays(ANY, distinct=True))),
    Op("abs", mg.abs, np.abs, one(arrays(ANY, distinct=True))),
    Op("gelu", mg.gelu, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
       one(arrays(ANY, low=-4, high=4))),
    Op("gelu_tanh", lambda x: mg.gelu(x, approximate="tanh"),
       lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
       one(arrays(ANY, low=-4, high=4)), lambda rng: (np.linspace(-12, 12, 5001, dtype=np.float32)
                                                      .reshape(3, 1667),),
       chunked=True, cpu_kernel="gelu_tanh_forward", cuda_kernels=("gelu_fwd", "gelu_bwd")),
    Op("clip", lambda x: mg.clip(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7),
       one(arrays(ANY, distinct=True))),
    Op("clip_lower", lambda x: x.clip(min=0.1), lambda x: np.maximum(x, 0.1),
       one(arrays(ANY, distinct=True))),
    Op("pow_scalar", lambda x: x ** 3, lambda x: x ** 3, one(arrays(ANY))),
    Op("pow_fractional", lambda x: x ** 0.5, np.sqrt, one(positive_arrays(ANY))),
    Op("rsub_scalar", lambda x: 2.0 - x, lambda x: 2.0 - x, one(arrays(ANY))),
    Op("rdiv_scalar", lambda x: 1.5 / x, lambda x: 1.5 / x, one(positive_arrays(ANY))),
    Op("scalar_pow", lambda x: 2.0 ** x, lambda x: 2.0 ** x, one(arrays(ANY))),
    Op("add", lambda a, b: a + b, np.add, pair()),
    Op("sub", lambda a, b: a - b, np.subtract, pair()),
    Op("mul", lambda a, b: a * b, np.multiply, pair()),
    Op("div", lambda a, b: a / b, np.divide, pair(positive_b=True)),
    Op("pow", lambda a, b: a ** b, np.power, pair(0.3, 2.0)),
    Op("maximum", mg.maximum, np.maximum, pair(separated=True)),
    Op("minimum", mg.minimum, np.minimum, pair(separated=True)),
]

FUSED = [
    Op("softmax_last_axis", lambda x: mg.softmax(x, -1), lambda x: _softmax(x, -1),
       one(arrays(shapes(min_dims=1), low=-5, high=5)), normal((2, 5, 6)), chunked=True,
       cpu_kernel="softmax_forward", cuda_kernels=SOFTMAX_KERNELS),
    Op("softmax_axis_0", lambda x: mg.softmax(x, 0), lambda x: _softmax(x, 0),
       one(arrays(shapes(min_dims=1), low=-5, high=5))),
    Op("log_softmax_last_axis", lambda x: mg.log_softmax(x, -1),
       lambda x: np.log(_softmax(x, -1)), one(arrays(shapes(min_dims=1), low=-5, high=5)),
       normal((4, 9, 33))),
    Op("log_softmax_axis_0", lambda x: mg.log_softmax(x, 0), lambda x: np.log(_softmax(x, 0)),
       one(arrays(shapes(min_dims=1), low=-5, high=5))),
    Op("layer_norm", lambda x, w, b: F.layer_norm(x, x.shape[-1], w, b),
       of_tensors(composite.layer_norm),
       st.integers(2, 6).flatmap(lambda c: st.tuples(
           arrays(st.tuples(st.integers(1, 3), st.integers(1, 4), st.just(c)), distinct=True),
           arrays((c,)), arrays((c,)))),
       normal((5, 3, 300), (300,), (300,)), chunked=True, cpu_kernel="layer_norm_forward",
       cuda_kernels=LAYER_NORM_KERNELS),
    Op("layer_norm_no_bias", lambda x, w: F.layer_norm(x, x.shape[-1], w),
       lambda x, w: of_tensors(composite.layer_norm)(x, w, np.zeros(x.shape[-1])),
       st.integers(2, 6).flatmap(lambda c: st.tuples(
           arrays(st.tuples(st.integers(1, 4), st.just(c)), distinct=True), arrays((c,)))),
       normal((5, 3, 300), (300,)), chunked=True, cpu_kernel="layer_norm_forward",
       cuda_kernels=LAYER_NORM_KERNELS),
    Op("layer_norm_no_affine", lambda x: F.layer_norm(x, x.shape[-1]),
       lambda x: of_tensors(composite.layer_norm)(x, np.ones(x.shape[-1]), np.zeros(x.shape[-1])),
       one(arrays(st.tuples(st.integers(1, 4), st.integers(2, 6)), distinct=True)),
       normal((6, 40))),
    cross_entropy_row("cross_entropy_smoothing", 0.1, "mean"),
    cross_entropy_row("cross_entropy", 0.0, "mean"),
    cross_entropy_row("cross_entropy_sum", 0.1, "sum"),
    cross_entropy_row("cross_entropy_none", 0.0, "none"),
    Op("binary_cross_entropy_with_logits",
       lambda z: F.binary_cross_entropy_with_logits(z, _binary_targets(z.shape)),
       lambda z: np.mean(np.logaddexp(0.0, z) - z * _binary_targets(z.shape)),
       one(arrays(shapes(min_dims=1), low=-5, high=5)), normal((64, 300), scale=5)),
    sdpa_row("attention_causal", causal=True, masked=False),
    sdpa_row("attention", causal=False, masked=False),
    sdpa_row("attention_masked", causal=False, masked=True),
    Op("attention_dropout", _attention_with_dropout, None,
       attention_inputs(causal=True)),
    sdpa_row("tiled_attention_causal", causal=True, masked=False, tiled=True),
    sdpa_row("tiled_attention_cross", causal=False, masked=False, tiled=True),
    sdpa_row("tiled_attention_masked", causal=False, masked=True, tiled=True),
    Op("tiled_attention_dropout", _tiled_attention_with_dropout, _attention_with_dropout_ref,
       attention_inputs(causal=False), normal((4, 2, 9, 8), (4, 2, 13, 8), (4, 2, 13, 8)),
       chunked=True),
    mha_row("tiled_multi_head_attention_causal", 2, causal=True, padded=False, tiled=True),
    mha_row("tiled_multi_head_attention_padded", 2, causal=False, padded=True, tiled=True),
    mha_row("multi_head_attention_causal", 2, causal=True, padded=False),
    mha_row("multi_head_attention_padded", 2, causal=False, padded=True),
    mha_row("multi_head_attention_alibi_causal", 2, causal=True, padded=False, alibi=True),
    mha_row("multi_head_attention_alibi_padded", 4, causal=False, padded=True, alibi=True),
    mha_row("tiled_multi_head_attention_alibi_causal", 2, causal=True, padded=False,
            tiled=True, alibi=True),
    mha_row("tiled_multi_head_attention_alibi_padded", 4, causal=False, padded=True,
            tiled=True, alibi=True),
    Op("embedding", _embedding, lambda w: w[_ids(w.shape[0])], sized(SMALL_2D),
       normal((40, 16)), cpu_kernel="embedding_backward"),
    Op("linear", F.linear, of_tensors(composite.linear),
       st.tuples(st.integers(1, 4), st.integers(1, 4)).flatmap(lambda io: sized(
           (st.integers(1, 2), st.integers(1, 3), io[0]), (io[1], io[0]), (io[1],))),
       normal((4, 6, 32), (24, 32), (24,)), chunked=True, cpu_kernel="add_bias_"),
    Op("linear_no_bias", F.linear, of_tensors(composite.linear),
       st.tuples(st.integers(1, 4), st.integers(1, 4)).flatmap(lambda io: sized(
           (st.integers(1, 3), io[0]), (io[1], io[0])))),
    Op("matmul_batched", mg.matmul, np.matmul,
       st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)).flatmap(
           lambda mkn: sized((2, 1, mkn[0], mkn[1]), (3, mkn[1], mkn[2]))),
       normal((2, 1, 9, 16), (3, 16, 7))),
]

def _dropout(x):
    mg.manual_seed(0)  # one dropout mask: gradcheck sees one function
    return F.dropout(x, 0.5)


def _checkpointed(a, b):
    mg.manual_seed(0)
    return checkpoint(lambda p, q: F.dropout(p * q, 0.5).exp() * p, a, b)


def same_shape(n: int, min_dims: int = 1, **kw):
    """n arrays of one drawn shape."""
    return shapes(min_dims=min_dims).flatmap(lambda s: st.tuples(*[arrays(s, **kw)] * n))


THREE_D = (st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))

SHAPES_AND_REDUCTIONS = [
    Op("sum_axis", lambda x: x.sum(axis=1), lambda x: x.sum(axis=1), sized(THREE_D)),
    Op("mean_axes", lambda x: x.mean(axis=(0, 2)), lambda x: x.mean(axis=(0, 2)), sized(THREE_D)),
    Op("max_axis_and_min", lambda x: x.max(axis=1) + x.min(), lambda x: x.max(axis=1) + x.min(),
       sized(THREE_D, distinct=True)),
    Op("logsumexp_axis", lambda x: x.logsumexp(axis=-1),
       lambda x: np.log(np.exp(x).sum(axis=-1)), sized(THREE_D)),
    Op("reshape", lambda x: x.reshape(-1, x.shape[-1]), lambda x: x.reshape(-1, x.shape[-1]),
       sized(THREE_D)),
    Op("transpose", lambda x: x.transpose(2, 0, 1), lambda x: x.transpose(2, 0, 1),
       sized(THREE_D)),
    Op("broadcast_to", lambda x: x.broadcast_to((2,) + x.shape),
       lambda x: np.broadcast_to(x, (2,) + x.shape), sized(SMALL_2D)),
    Op("astype", lambda x: x.astype(np.float64) * 2, lambda x: x * 2, sized(SMALL_2D)),
    Op("to_device", lambda x: ops.ToDevice.apply(x, x.device), lambda x: x, sized(SMALL_2D)),
    Op("getitem", lambda x: x[np.array([0, -1, 0]), 1:], lambda x: x[np.array([0, -1, 0]), 1:],
       sized(SMALL_2D)),
    Op("concatenate", lambda a, b: mg.concatenate([a, b], axis=-1),
       lambda a, b: np.concatenate([a, b], axis=-1), same_shape(2)),
    Op("stack", lambda a, b: mg.stack([a, b], axis=1), lambda a, b: np.stack([a, b], axis=1),
       same_shape(2)),
    Op("where", lambda a, b: mg.where(a.numpy() > 0, a, b),
       lambda a, b: np.where(a > 0, a, b), same_shape(2, min_dims=0, distinct=True)),
    Op("masked_fill", lambda x: x.masked_fill(x.numpy() > 0, 0.5),
       lambda x: np.where(x > 0, 0.5, x), one(arrays(ANY, distinct=True))),
    Op("dropout", _dropout, None, one(arrays(ANY))),
    Op("checkpoint", _checkpointed, None, same_shape(2)),
]

OPS = ELEMENTWISE + SHAPES_AND_REDUCTIONS + FUSED
