"""Cross-attention, the decoder layer, the encoder-decoder model and its decoding."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.inference.decoding import (
    DecodeOptions,
    beam_search,
    greedy,
    translate_ids,
)
from minigrad_lm.models import Seq2SeqConfig, Seq2SeqTransformer
from minigrad_lm.nn import tiled_attention
from minigrad_lm.nn.seq2seq_layers import TransformerDecoderLayer, cross_attention
from tests.helpers import to_float64, x64

PAD, BOS, EOS = 0, 1, 2


def tiny(seed=0, **kw):
    mg.manual_seed(seed)
    cfg = dict(vocab_size=11, context_length=12, n_layer=2, n_head=2, d_model=8, d_ff=12,
               dropout=0.0)
    return Seq2SeqTransformer(Seq2SeqConfig(**{**cfg, **kw}))


def padding_masks(b, tk):
    """(B, Tk) masks with at least one real key per row, padding at the end."""
    return st.lists(st.integers(1, tk), min_size=b, max_size=b).map(
        lambda lens: np.arange(tk)[None, :] < np.array(lens)[:, None])


@pytest.fixture(scope="module", params=[False, True], ids=["blocked", "tiled"])
def tiled(request):
    """Both attention cores; the tiled one by tiles of 2 queries x 3 keys."""
    sizes = tiled_attention.QUERY_TILE, tiled_attention.KEY_TILE
    tiled_attention.QUERY_TILE, tiled_attention.KEY_TILE = 2, 3
    yield request.param
    tiled_attention.QUERY_TILE, tiled_attention.KEY_TILE = sizes


@settings(max_examples=10)
@given(data=st.data(), b=st.integers(1, 3), tq=st.integers(1, 4), tk=st.integers(1, 7),
       heads=st.sampled_from([1, 2]))
def test_cross_attention_gradcheck_with_padding(device, tiled, data, b, tq, tk, heads):
    mask = data.draw(st.none() | padding_masks(b, tk))
    q, kv = x64((b, tq, 4), device, seed=tq), x64((b, tk, 8), device, seed=tk + 10)
    q.requires_grad = kv.requires_grad = True
    assert mg.gradcheck(lambda a, c: cross_attention(a, c, heads, mask, tiled=tiled), [q, kv])


def test_cross_attention_matches_composite_softmax(tiled):
    rng = np.random.default_rng(0)
    q, kv = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 8))
    mask = np.array([[True] * 5, [True, True, False, False, False]])
    got = cross_attention(mg.tensor(q), mg.tensor(kv), 2, mask, tiled=tiled).numpy()
    qh = q.reshape(2, 3, 2, 2).transpose(0, 2, 1, 3)
    k, v = kv.reshape(2, 5, 2, 2, 2).transpose(2, 0, 3, 1, 4)
    s = qh @ k.swapaxes(-1, -2) / np.sqrt(2) + np.where(mask, 0, -np.inf)[:, None, None, :]
    p = np.exp(s - s.max(-1, keepdims=True))
    want = ((p / p.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(2, 3, 4)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_cross_attention_errors():
    with pytest.raises(ValueError, match=r"do not fit"):
        cross_attention(mg.randn(2, 3, 4), mg.randn(2, 5, 4), 2)
    with pytest.raises(ValueError, match=r"key_padding_mask of shape \(2, 4\)"):
        cross_attention(mg.randn(2, 3, 4), mg.randn(2, 5, 8), 2, np.ones((2, 4), bool))


@pytest.mark.parametrize("norm_first", [True, False])
@settings(max_examples=4)
@given(data=st.data(), tq=st.integers(1, 3), tk=st.integers(1, 4))
def test_decoder_layer_gradcheck_every_parameter(device, norm_first, data, tq, tk):
    mg.manual_seed(tq + tk)
    layer = to_float64(TransformerDecoderLayer(4, 2, d_ff=6, norm_first=norm_first), device)
    mask = data.draw(padding_masks(2, tk))
    x, memory = x64((2, tq, 4), device, seed=1), x64((2, tk, 4), device, seed=2)
    x.requires_grad = memory.requires_grad = True
    assert mg.gradcheck(lambda *ps: layer(x, memory, mask), [x, memory] + layer.parameters())


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("norm_first,positional", [(False, "sinusoidal"), (True, "learned")])
def test_seq2seq_loss_gradcheck_every_parameter(device, share, norm_first, positional):
    model = to_float64(tiny(1, d_model=4, d_ff=6, share_embeddings=share,
                            norm_first=norm_first, positional=positional), device)
    src = np.array([[5, 6, 7, EOS], [3, EOS, PAD, PAD]])
    tgt_in, tgt_out = np.array([[BOS, 8, 9], [BOS, 4, PAD]]), np.array([[8, 9, EOS], [4, EOS, PAD]])
    assert mg.gradcheck(lambda *ps: model.loss(src, tgt_in, tgt_out, label_smoothing=0.1),
                        model.parameters())


def test_shared_and_separate_embeddings_are_tied_to_the_output():
    shared, separate = tiny(share_embeddings=True), tiny(share_embeddings=False)
    assert shared.src_emb.weight is shared.tgt_emb.weight is shared.head.weight
    assert separate.src_emb.weight is not separate.tgt_emb.weight
    assert separate.head.weight is separate.tgt_emb.weight
    assert separate.num_parameters() - shared.num_parameters() == 11 * 8


def test_padded_batch_equals_each_sentence_alone(device):
    model = tiny(2).to(device).eval()
    srcs = [[5, 6, 7, 8, EOS], [3, EOS], [9, 4, EOS]]
    tgts = [[BOS, 4, 5], [BOS, 6, 7, 8, 9], [BOS]]
    src = np.zeros((3, 5), np.int64)
    tgt = np.zeros((3, 5), np.int64)
    for i, (s, t) in enumerate(zip(srcs, tgts)):
        src[i, :len(s)], tgt[i, :len(t)] = s, t
    with mg.no_grad():
        batch = model(src, tgt).numpy()
        for i, (s, t) in enumerate(zip(srcs, tgts)):
            alone = model(np.array([s]), np.array([t])).numpy()[0]
            np.testing.assert_allclose(batch[i, :len(t)], alone, rtol=1e-4, atol=1e-5)


def test_cached_decoder_steps_match_the_full_forward(device):
    model = tiny(3).to(device).eval()
    src = np.array([[5, 6, 7, EOS], [3, EOS, PAD, PAD]])
    tgt = np.array([[BOS, 4, 5, 6, 7], [BOS, 8, 9, 3, 3]])
    with mg.no_grad():
        full = model(src, tgt).numpy()
        state = model.start_decoding(src, capacity=6)
        steps = []
        for i in range(tgt.shape[1]):
            state.tokens = tgt[:, :i + 1]  # teacher forcing through the cached path
            steps.append(state.log_probs())
    logp = full - np.log(np.exp(full).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.stack(steps, 1), logp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("beam", [1, 3])
def test_cached_decoding_gives_the_uncached_tokens(device, beam):
    model = tiny(4).to(device).eval()
    sources = [np.array([5, 6, 7, EOS]), np.array([3, EOS]), np.array([9, 9, 8, 7, 6, EOS])]
    opts = DecodeOptions(beam_size=beam, max_len_a=1.0, max_len_b=3)
    cached = translate_ids(model, sources, opts, use_cache=True)
    uncached = translate_ids(model, sources, opts, use_cache=False)
    assert cached == uncached
    assert all(len(h) <= len(s) + 3 for h, s in zip(cached, sources))


def test_beam_one_equals_greedy_and_batching_changes_nothing(device):
    model = tiny(5).to(device).eval()
    rng = np.random.default_rng(0)
    sources = [np.append(rng.integers(3, 11, n), EOS) for n in (1, 4, 2, 6, 3)]
    src = np.zeros((5, 7), np.int64)
    for i, s in enumerate(sources):
        src[i, :len(s)] = s
    limits = [len(s) + 4 for s in sources]
    g = greedy(model.start_decoding(src, capacity=12), EOS, limits)
    assert beam_search(model.start_decoding(src, capacity=12), EOS, limits, beam_size=1) == g
    assert translate_ids(model, sources, DecodeOptions(1, max_len_a=1, max_len_b=3),
                         batch_size=2) == g
    batched = translate_ids(model, sources, DecodeOptions(beam_size=3))
    for i, s in enumerate(sources):  # batched beam search = one sentence at a time
        assert translate_ids(model, [s], DecodeOptions(beam_size=3)) == [batched[i]]


def test_loss_gradients_and_translations_on_gpu_match_cpu(gpu):
    src = np.array([[5, 6, 7, 8, EOS], [3, EOS, PAD, PAD, PAD], [9, 4, 10, EOS, PAD]])
    tgt_in = np.array([[BOS, 4, 5, 6], [BOS, 6, PAD, PAD], [BOS, 7, 8, PAD]])
    tgt_out = np.array([[4, 5, 6, EOS], [6, EOS, PAD, PAD], [7, 8, EOS, PAD]])
    results = []
    for device in ("cpu", gpu):
        model = tiny(7, share_embeddings=False).to(device)
        loss = model.loss(src, tgt_in, tgt_out, label_smoothing=0.1)
        loss.backward()
        grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
        sources = [row[:list(row).index(EOS) + 1] for row in src]
        hyps = translate_ids(model.eval(), sources, DecodeOptions(beam_size=3, max_len_b=4))
        results.append((loss.item(), grads, hyps))
    (cpu_loss, cpu_grads, cpu_hyps), (gpu_loss, gpu_grads, gpu_hyps) = results
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-5)
    for name, g in cpu_grads.items():
        np.testing.assert_allclose(gpu_grads[name], g, rtol=1e-3, atol=1e-5, err_msg=name)
    assert gpu_hyps == cpu_hyps


class TableModel:
    """A decoder state whose next-token log-probabilities are a fixed table by prefix; unlisted
    prefixes end at once."""

    def __init__(self, table: dict, vocab: int, n: int = 1):
        self.table, self.vocab = table, vocab
        self.tokens = np.full((n, 1), BOS)

    def log_probs(self):
        out = np.full((len(self.tokens), self.vocab), -50.0)
        for i, row in enumerate(self.tokens):
            probs = self.table.get(tuple(row[1:].tolist()), {EOS: 1.0})
            for tok, p in probs.items():
                out[i, tok] = np.log(p)
        return out

    def advance(self, next_tokens, rows=None):
        if rows is not None:
            self.tokens = self.tokens[rows]
        self.tokens = np.concatenate([self.tokens, next_tokens[:, None]], 1)


def score(table, hyp):
    prefix, total = (), 0.0
    for tok in hyp + [EOS]:
        total += np.log(table.get(prefix, {EOS: 1.0}).get(tok, np.exp(-50.0)))
        prefix += (tok,)
    return total


def test_beam_search_beats_greedy_when_a_better_sequence_exists():
    # greedy takes 3 (0.6) and then faces 0.3 at best; 4 (0.4) then eos (0.9) scores higher
    table = {(): {3: 0.6, 4: 0.4}, (3,): {5: 0.3, 6: 0.3, 7: 0.4 - 1e-9},
             (3, 7): {EOS: 0.5, 5: 0.5}, (4,): {EOS: 0.9, 5: 0.1}}
    g = greedy(TableModel(table, 8), EOS, 5)[0]
    b = beam_search(TableModel(table, 8), EOS, 5, beam_size=2, length_penalty=0.0)[0]
    assert g == [3, 7]
    assert b == [4]
    assert score(table, b) > score(table, g)
    # with no better sequence, beam search agrees with greedy
    sure = {(): {3: 0.9, 4: 0.1}, (3,): {EOS: 0.95, 5: 0.05}}
    assert beam_search(TableModel(sure, 8, n=2), EOS, 5, 2, 0.0) == [[3], [3]]


def test_length_limit_and_source_errors():
    model = tiny(6).eval()
    out = translate_ids(model, [np.array([5, EOS])], DecodeOptions(1, max_len_a=0, max_len_b=2))
    assert len(out[0]) <= 2
    with pytest.raises(ValueError, match="sentence 2: 13 tokens, longer than the model's "
                                         "maximum of 12"):
        translate_ids(model, [np.array([5, EOS]), np.arange(13) % 8 + 3], DecodeOptions())
    with pytest.raises(ValueError, match="source of 13 tokens is longer than context_length=12"):
        model(np.ones((1, 13), np.int64), np.ones((1, 2), np.int64))
    with pytest.raises(ValueError, match="beam_size must be a positive integer"):
        DecodeOptions(beam_size=0)
    with pytest.raises(ValueError, match="eos_id=11 is outside the vocabulary of 11"):
        Seq2SeqConfig(vocab_size=11, eos_id=11)
