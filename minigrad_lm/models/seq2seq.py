"""The encoder-decoder Transformer of "Attention Is All You Need", for translation."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..engine import rng
from ..engine.tensor import Tensor, no_grad
from ..nn import functional as F
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear
from ..nn.module import Module, ModuleList
from ..nn.seq2seq_layers import Seq2SeqCache, TransformerDecoderLayer, _padding_mask
from ..nn.transformer import (
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    TransformerLayer,
    positions,
)
from .config import check_transformer_shape, layer_sizes

# ALiBi is for self-attention bodies: cross-attention has no distance between its two texts.
SEQ2SEQ_POSITIONALS = ("learned", "sinusoidal")


@dataclass
class Seq2SeqConfig:
    """The shape of a Seq2SeqTransformer (field names shared with GPTConfig where they mean the
    same). One vocabulary serves source and target; pad/bos/eos are its special ids."""

    vocab_size: int = 8000
    context_length: int = 128  # longest source or target sequence, in tokens with bos/eos
    n_layer: int = 3  # encoder layers, and as many decoder layers
    n_head: int = 4
    d_model: int = 256
    d_ff: int = 1024
    dropout: float = 0.1
    bias: bool = True
    norm_first: bool = False  # the paper's post-norm
    positional: str = "sinusoidal"  # or "learned"
    share_embeddings: bool = True  # one table for source and target tokens
    tie_weights: bool = True  # output projection = target embedding
    activation: str = "relu"
    layer_norm_eps: float = 1e-5
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        check_transformer_shape(self, ("vocab_size", "context_length", "n_layer", "n_head",
                                       "d_model", "d_ff"), SEQ2SEQ_POSITIONALS)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Seq2SeqConfig.dropout must be in [0, 1), got {self.dropout}")
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"Seq2SeqConfig.{name}={getattr(self, name)} is outside the "
                                 f"vocabulary of {self.vocab_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Seq2SeqConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Seq2SeqConfig: unknown keys {unknown}")
        return cls(**d)

    def parameter_count(self) -> int:
        """The model's parameters, counted from the config alone; equal to
        ``Seq2SeqTransformer(config).num_parameters()``."""
        d, v = self.d_model, self.vocab_size
        attention, feed_forward, norm = layer_sizes(d, self.d_ff, self.bias)
        encoder = attention + feed_forward + 2 * norm
        decoder = 2 * attention + feed_forward + 3 * norm  # cross-attention: q, kv and out
        count = v * d * (1 if self.share_embeddings else 2) + self.n_layer * (encoder + decoder)
        count += 2 * norm + (self.context_length * d if self.positional == "learned" else 0)
        return count + (0 if self.tie_weights else v * d)

    def buffer_count(self) -> int:
        """Values held beside the parameters: the sinusoidal position table."""
        return self.context_length * self.d_model if self.positional == "sinusoidal" else 0

    def kept_per_token(self, context: int) -> int:
        """Values a training forward keeps for backward per (source or target) token, before
        the output layer: an encoder layer's and a decoder layer's (three sublayers, two
        attention rows), as for a GPT layer, half the tokens each."""
        d, h, row = self.d_model, self.n_head, F.attention_kept_per_query(context)
        encoder = 9 * d + 2 * self.d_ff + h * row
        decoder = 15 * d + 2 * self.d_ff + 2 * h * row
        return self.n_layer * (encoder + decoder) // 2 + 4 * d

    def cache_per_token(self) -> int:
        """Values of the decoder's caches per token: its own keys/values and the encoder
        memory's projected keys/values, in every layer."""
        return 4 * self.n_layer * self.d_model

    def flops_per_token(self, head_share: float = 1.0) -> float:
        """Training FLOPs per (source or target) token: 6 x the weights it passes through, half
        the tokens through the encoder and half through the decoder and ``head_share`` of
        those through the output layer."""
        d, f = self.d_model, self.d_ff
        encoder, decoder = 4 * d * d + 2 * d * f, 8 * d * d + 2 * d * f
        return 6 * (self.n_layer * (encoder + decoder) + head_share * self.vocab_size * d) / 2


def _ids(idx, what: str, config: Seq2SeqConfig) -> np.ndarray:
    ids = idx.data if isinstance(idx, Tensor) else idx
    if not hasattr(ids, "ndim"):
        ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"Seq2SeqTransformer: expected {what} ids of shape (batch, time), got "
                         f"{ids.shape}")
    if ids.shape[1] > config.context_length:
        raise ValueError(f"Seq2SeqTransformer: {what} of {ids.shape[1]} tokens is longer than "
                         f"context_length={config.context_length}")
    bad = backend.out_of_range(ids, config.vocab_size)
    if bad is not None:
        raise ValueError(f"Seq2SeqTransformer: {what} token id {bad} is outside the vocabulary "
                         f"of {config.vocab_size}")
    return ids


class Seq2SeqTransformer(Module):
    """Embeddings x sqrt(d_model) + positions -> n_layer encoder layers over the source and
    n_layer decoder layers over the target prefix -> logits. Each stack ends in a LayerNorm, as
    torch.nn.Transformer's does."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        self.tgt_emb = Embedding(c.vocab_size, c.d_model)
        self.src_emb = self.tgt_emb if c.share_embeddings else Embedding(c.vocab_size, c.d_model)
        self.pos_emb = (LearnedPositionalEncoding(c.context_length, c.d_model)
                        if c.positional == "learned" else
                        SinusoidalPositionalEncoding(c.context_length, c.d_model))
        self.drop = Dropout(c.dropout)
        layer = dict(d_ff=c.d_ff, dropout=c.dropout, norm_first=c.norm_first,
                     activation=c.activation, bias=c.bias, eps=c.layer_norm_eps)
        self.encoder = ModuleList(TransformerLayer(c.d_model, c.n_head, **layer)
                                  for _ in range(c.n_layer))
        self.encoder_norm = LayerNorm(c.d_model, c.layer_norm_eps, c.bias)
        self.decoder = ModuleList(TransformerDecoderLayer(c.d_model, c.n_head, **layer)
                                  for _ in range(c.n_layer))
        self.decoder_norm = LayerNorm(c.d_model, c.layer_norm_eps, c.bias)
        self.head = Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.tgt_emb.weight
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform matrices (torch.nn.Transformer), zero biases, token (and learned
        position) embeddings N(0, 1/d), so that x sqrt(d) gives unit-variance inputs (fairseq)."""
        d = self.config.d_model
        for name, p in self.named_parameters():
            if "emb." in name or name == "head.weight":
                p.data[...] = rng.host().standard_normal(p.shape) / math.sqrt(d)
            elif name.endswith("bias"):
                p.data[...] = 0
            elif ".norm" in name or "_norm." in name:
                p.data[...] = 1
            else:
                bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                p.data[...] = rng.host().uniform(-bound, bound, p.shape)

    def _embed(self, table: Embedding, ids: np.ndarray, start: int = 0) -> Tensor:
        device = table.weight.device
        x = F.EmbeddingFunction.apply(table.weight, backend.to_device(ids, device))  # ids checked
        x = x * math.sqrt(self.config.d_model) + self.pos_emb(positions(start, ids.shape[1],
                                                                         device))
        return self.drop(x)

    def encode(self, src) -> tuple[Tensor, np.ndarray]:
        """(encoder output (B, Ts, d_model), source mask (B, Ts): True for real tokens)."""
        ids = _ids(src, "source", self.config)
        mask = ids != self.config.pad_id
        x = self._embed(self.src_emb, ids)
        for layer in self.encoder:
            x = layer(x, key_padding_mask=mask)
        return self.encoder_norm(x), mask

    def decode(self, tgt_in, memory: Tensor, src_mask, cache: Seq2SeqCache | None = None
               ) -> Tensor:
        """Logits (B, Tt, vocab) for the target prefix tgt_in (B, Tt), given the encoder output;
        with a cache, tgt_in holds only the tokens after the cached ones."""
        ids = _ids(tgt_in, "target", self.config)
        start = cache.length if cache is not None else 0
        if start + ids.shape[1] > self.config.context_length:
            raise ValueError(f"Seq2SeqTransformer: target of {start + ids.shape[1]} tokens is "
                             f"longer than context_length={self.config.context_length}")
        x = self._embed(self.tgt_emb, ids, start)
        for i, layer in enumerate(self.decoder):
            x = layer(x, memory, src_mask, cache=cache, layer_index=i)
        if cache is not None:
            cache.length += ids.shape[1]
        return self.head(self.decoder_norm(x))

    def forward(self, src, tgt_in) -> Tensor:
        """Logits (B, Tt, vocab) for each next target token (teacher forcing)."""
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)

    def loss(self, src, tgt_in, tgt_out, label_smoothing: float = 0.0) -> Tensor:
        """Mean token cross-entropy against tgt_out (B, Tt); padding (pad_id) counts for
        nothing."""
        return F.cross_entropy(self(src, tgt_in), tgt_out, ignore_index=self.config.pad_id,
                               label_smoothing=label_smoothing)

    @no_grad()
    def start_decoding(self, src, capacity: int, use_cache: bool = True) -> "DecoderState":
        """A decoding state for the sentences src (B, Ts): encoder run once, bos fed next."""
        memory, mask = self.encode(src)
        cache = None
        if use_cache:
            cache = Seq2SeqCache(capacity, _padding_mask(mask, memory, *mask.shape))
        return DecoderState(self, memory, mask, cache)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, d_model={c.d_model}, "
                f"vocab={c.vocab_size}, norm_first={c.norm_first}")


class DecoderState:
    """The decoding of a batch of sentences, one token a step: the prefix so far, the encoder
    output and (with use_cache) the decoder's caches. Without the cache each step re-runs the
    whole prefix, which is what the cached steps must reproduce."""

    def __init__(self, model: Seq2SeqTransformer, memory: Tensor, mask: np.ndarray,
                 cache: Seq2SeqCache | None):
        self.model, self.memory, self.mask, self.cache = model, memory, mask, cache
        self.tokens = np.full((mask.shape[0], 1), model.config.bos_id, dtype=np.int64)

    @no_grad()
    def log_probs(self) -> np.ndarray:
        """log p(next token | prefix) for every row: (N, vocab) float64 on the host."""
        fed = self.tokens[:, -1:] if self.cache is not None else self.tokens
        logits = self.model.decode(fed, self.memory, self.mask, self.cache).data[:, -1]
        logits = backend.to_numpy(logits).astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))

    def advance(self, next_tokens: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Append next_tokens (N,) to the prefixes of `rows` (default: every row, in order)."""
        if rows is not None:
            self.select(rows)
        self.tokens = np.concatenate([self.tokens, next_tokens[:, None]], axis=1)

    def select(self, rows: np.ndarray) -> None:
        """Keep these rows in this order (beam search; rows may repeat)."""
        self.tokens = self.tokens[rows]
        self.mask = self.mask[rows]
        on_device = backend.array_module(self.memory.data).asarray(rows)
        self.memory = Tensor(self.memory.data[on_device])
        if self.cache is not None:
            self.cache.select(on_device)
