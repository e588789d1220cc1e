"""Tiled attention beyond the op registry: its memory (the attention's own allocations, traced),
the rule that picks it, default-sized tiles against the blocked core, rows without keys, and
half precision against float32."""
import tracemalloc

import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.nn import MultiHeadAttention
from minigrad_lm.nn import functional as F
from minigrad_lm.nn import tiled_attention


def _qkv(b, t, c, seed=0, dtype=np.float32):
    return mg.tensor(np.random.default_rng(seed).standard_normal((b, t, 3 * c)).astype(dtype),
                     requires_grad=True)


def _peak_bytes(fn) -> int:
    """Peak of the bytes allocated (and traced: NumPy reports its buffers) while fn runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def _saved_bytes(fn_ctx) -> int:
    """Bytes of the arrays a Function keeps for its backward."""
    def walk(x):
        if isinstance(x, np.ndarray):
            return x.nbytes if x.base is None else 0  # views of arrays counted elsewhere
        if isinstance(x, (list, tuple)):
            return sum(walk(v) for v in x)
        if isinstance(x, tiled_attention.Tiling):
            return sum(walk(v) for v in vars(x).values())
        return 0
    return sum(walk(v) for k, v in vars(fn_ctx).items() if k != "parents")


@pytest.mark.parametrize("causal", [True, False])
def test_tiled_attention_memory_is_linear_in_the_context(causal):
    b, h, t, d = 1, 2, 2048, 16
    one_probability_matrix = b * h * t * t * 4  # float32
    peaks, saved = {}, {}
    for tiled in (False, True):
        qkv = _qkv(b, t, h * d)

        def step():
            y = F.multi_head_attention(qkv, h, causal, tiled=tiled)
            saved[tiled] = _saved_bytes(y._ctx)
            y.backward(mg.ones(*y.shape))
        peaks[tiled] = _peak_bytes(step)
    # the blocked core keeps the probabilities: what the measurement must see (a causal mask
    # skips about half of them)
    assert saved[False] > 0.45 * one_probability_matrix
    assert peaks[False] > 0.45 * one_probability_matrix
    # the tiled core keeps q, k, v and the log-sum-exp: O(T); its other temporaries are the
    # gradients (O(T)) and tiles
    assert saved[True] <= 4 * b * t * 3 * h * d * 4
    assert peaks[True] < 0.15 * one_probability_matrix


def test_the_tiled_core_is_picked_by_length_dtype_or_the_caller(monkeypatch):
    monkeypatch.setattr(F, "TILED_MIN_KEYS", 8)
    attn = MultiHeadAttention(8, 2)

    def core(t, dtype=np.float32):
        x = mg.tensor(np.ones((1, t, 8), dtype=dtype), requires_grad=True)
        return type(F.multi_head_attention(attn.qkv(x).astype(dtype), 2, True)._ctx).__name__
    assert core(7) == "QKVAttention"
    assert core(8) == "TiledQKVAttention"
    assert core(7, np.float16) == "TiledQKVAttention"
    attn.tiled = False
    y = attn(mg.tensor(np.ones((1, 9, 8), np.float32), requires_grad=True), causal=True)
    assert type(y._ctx.parents[0]).__name__ == "QKVAttention"


@pytest.mark.parametrize("causal", [True, False])
def test_default_tiles_match_the_blocked_core(causal):
    """Several default-sized tiles, a length that is not a multiple of them, padding."""
    b, h, d, t = 2, 2, 8, 3 * tiled_attention.KEY_TILE // 2 + 5
    pad = np.arange(t)[None, :] < np.array([t, t // 3])[:, None]
    results = []
    for tiled in (False, True):
        qkv = _qkv(b, t, h * d)
        y = F.multi_head_attention(qkv, h, causal, pad, tiled=tiled)
        y.backward(mg.tensor(np.random.default_rng(1).standard_normal(y.shape)
                             .astype(np.float32)))
        results.append((y.numpy(), qkv.grad.numpy()))
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_broadcast_batch_axes_match_the_blocked_core():
    """One query set against a batch of keys, a mask over the batch: gradients un-broadcast."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 5, 4))
    k, v = rng.standard_normal((3, 2, 7, 4)), rng.standard_normal((3, 2, 7, 4))
    mask = (np.arange(7) < np.array([7, 4, 1])[:, None])[:, None, None, :]
    up = rng.standard_normal((3, 2, 5, 4))
    outs = []
    for tiled in (False, True):
        ts = [mg.tensor(a, requires_grad=True) for a in (q, k, v)]
        y = F.scaled_dot_product_attention(*ts, mask=mask, tiled=tiled)
        y.backward(mg.tensor(up))
        outs.append([y.numpy()] + [t.grad.numpy() for t in ts])
    for got, want in zip(*outs):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_queries_that_see_no_key_give_zeros_like_the_blocked_core():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 5, 4)) for _ in range(3))
    mask = np.ones((1, 1, 5, 5), dtype=bool)
    mask[..., 2, :] = False  # query 2 may see nothing
    outs = []
    for tiled in (False, True):
        ts = [mg.tensor(a, requires_grad=True) for a in (q, k, v)]
        y = F.scaled_dot_product_attention(*ts, mask=mask, tiled=tiled)
        y.backward(mg.ones(*y.shape))
        outs.append([y.numpy()] + [t.grad.numpy() for t in ts])
    assert np.all(outs[1][0][..., 2, :] == 0)
    for got, want in zip(*outs):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_dropout_mask_does_not_depend_on_tiles_and_drops_at_the_rate(monkeypatch):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, 37, 8)).astype(np.float32) for _ in range(3))
    outs = []
    for tiles in ((128, 256), (5, 7)):
        monkeypatch.setattr(tiled_attention, "QUERY_TILE", tiles[0])
        monkeypatch.setattr(tiled_attention, "KEY_TILE", tiles[1])
        mg.manual_seed(3)
        ts = [mg.tensor(a, requires_grad=True) for a in (q, k, v)]
        y = F.scaled_dot_product_attention(*ts, dropout_p=0.3, tiled=True)
        y.backward(mg.ones(*y.shape))
        outs.append([y.numpy()] + [t.grad.numpy() for t in ts])
    for got, want in zip(*outs):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    keep = tiled_attention.dropout_scales(np, (20, 30), 64, 64, 0.3, seed=1) > 0
    assert abs(keep.mean() - 0.7) < 0.005


def test_float16_attention_matches_float32_within_half_precision():
    """Half inputs are computed with float32 statistics and accumulators: the result differs
    from float32 by about the rounding of the inputs and the output, gradients too."""
    b, h, d, t = 2, 2, 16, 70
    pad = np.arange(t)[None, :] < np.array([t, 40])[:, None]
    base = np.random.default_rng(0).standard_normal((b, t, 3 * h * d))
    up = np.random.default_rng(1).standard_normal((b, t, h * d))
    results = {}
    for dtype in (np.float32, np.float16):
        qkv = mg.tensor(base.astype(dtype), requires_grad=True)
        y = F.multi_head_attention(qkv, h, True, pad)
        assert y.dtype == dtype
        y.backward(mg.tensor(up.astype(dtype)))
        results[dtype] = (y.numpy().astype(np.float32), qkv.grad.numpy().astype(np.float32))
    for got, want in zip(results[np.float16], results[np.float32]):
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, atol=4e-3 * scale, rtol=1e-2)
