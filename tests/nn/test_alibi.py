"""ALiBi (nn/alibi.py) beyond the op registry's gradchecks: the probabilities of a hand-worked
case, the causal blocks and default-sized tiles of long sequences against a reference, a GPT
without position vectors, and where it is refused."""
import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.models import GPT, GPTConfig, Seq2SeqConfig
from minigrad_lm.nn import AttentionRecorder
from minigrad_lm.nn import functional as F
from minigrad_lm.nn.alibi import alibi_slopes
from tests import reference


def test_slopes_are_press_et_al_geometric_sequence():
    assert alibi_slopes(8).tolist() == [2.0 ** -k for k in range(1, 9)]
    assert alibi_slopes(2).tolist() == [2.0 ** -4, 2.0 ** -8]


@pytest.mark.parametrize("tiled", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_equal_scores_give_probabilities_falling_with_distance(device, causal, tiled):
    """q = k = 0 leaves the biases alone in the scores: with v one-hot by key, each head's
    output row is exp(-slope |i - j|) over the keys it may see, normalised."""
    t, heads = 5, 2
    qkv = np.zeros((1, t, 3, heads, t))
    qkv[0, :, 2] = np.eye(t)[:, None, :]  # v of key j is e_j in every head
    out = F.multi_head_attention(mg.tensor(qkv.reshape(1, t, -1)).to(device), heads, causal,
                                 tiled=tiled, alibi=True).numpy().reshape(t, heads, t)
    for h, slope in enumerate([2.0 ** -4, 2.0 ** -8]):
        for i in range(t):
            seen = np.arange(i + 1 if causal else t)
            weights = np.exp(-slope * np.abs(i - seen))
            expected = np.zeros(t)
            expected[seen] = weights / weights.sum()
            np.testing.assert_allclose(out[i, h], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("causal", [True, False])
def test_long_sequences_by_blocks_and_tiles_match_the_reference(causal):
    """150 queries: causal attention goes by blocks of queries (each with its offset), tiled
    attention by tiles of 128 x 256; both must bias every block by its true distances."""
    b, t, heads, d = 2, 150, 4, 8
    qkv = np.random.default_rng(0).standard_normal((b, t, 3 * heads * d))
    pad = np.arange(t)[None, :] < np.array([[t], [97]])
    expected = reference.multi_head_attention(mg.tensor(qkv), heads, causal,
                                              None if causal else pad, with_alibi=True).numpy()
    for tiled in (False, True):
        got = F.multi_head_attention(mg.tensor(qkv), heads, causal, None if causal else pad,
                                     tiled=tiled, alibi=True).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def _alibi_gpt(causal: bool) -> GPT:
    mg.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, context_length=12, n_layer=2, n_head=4, d_model=16,
                         positional="alibi", causal=causal)).eval()


def test_a_gpt_with_alibi_has_no_position_vectors_and_sees_order():
    model = _alibi_gpt(causal=False)
    assert model.pos_emb is None and all(layer.attn.alibi for layer in model.layers)
    assert not any("pos" in name for name, _ in model.named_parameters())
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    swapped = np.array([[2, 1, 3, 4, 5, 6]])
    h, h_swapped = model.hidden_states(ids).numpy(), model.hidden_states(swapped).numpy()
    # the last token's state depends on the order of the first two tokens
    assert not np.allclose(h[0, -1], h_swapped[0, -1])


def test_recorded_attention_maps_are_the_biased_probabilities():
    model = _alibi_gpt(causal=False)
    ids = np.array([[1, 2, 3, 4, 5, 6, 7]])
    with AttentionRecorder() as rec:
        model.hidden_states(ids)
    layer0 = model.layers[0]
    x = layer0.norm1(model.tok_emb.weight[ids]).numpy()
    qkv = x @ layer0.attn.qkv.weight.numpy().T + layer0.attn.qkv.bias.numpy()
    q, k, _ = qkv.reshape(1, 7, 3, 4, 4).transpose(2, 0, 3, 1, 4)
    scores = q @ k.swapaxes(-1, -2) / 2.0 + reference.alibi(4, 7, 7)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(rec.maps[0][1], probs, rtol=1e-5, atol=1e-6)


def test_alibi_is_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="positional must be one of learned, sinusoidal, got"):
        Seq2SeqConfig(positional="alibi")
    with pytest.raises(ValueError, match="positional must be one of learned, sinusoidal, alibi"):
        GPTConfig(positional="rotary")
