"""GPT: the decoder-only Transformer language model (and, with ``causal=False``, the body of
a bidirectional encoder)."""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import backend
from ..engine import rng
from ..engine.recompute import checkpoint
from ..engine.tensor import Tensor, is_grad_enabled
from ..nn import functional as F
from ..nn.attention import KVCache
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear
from ..nn.module import Module, ModuleList
from ..nn.transformer import (
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    TransformerLayer,
    positions,
)
from .config import GPTConfig
from .hf_gpt2 import read_gpt2_state, save_gpt2

INIT_STD = 0.02  # GPT-2's initial weights: N(0, INIT_STD)


class GPT(Module):
    """Token embedding + positions -> n_layer causal TransformerLayers -> LayerNorm -> vocab.

    With ``positional="alibi"`` there are no position vectors: each attention head biases its
    scores by distance instead (nn/alibi.py)."""

    peft_task_type = "CAUSAL_LM"  # its LoRA adapters' task in the PEFT layout
    peft_head = None  # no head of its own beyond the GPT

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = Embedding(c.vocab_size, c.d_model)
        alibi = c.positional == "alibi"
        self.pos_emb = (None if alibi else
                        LearnedPositionalEncoding(c.context_length, c.d_model)
                        if c.positional == "learned" else
                        SinusoidalPositionalEncoding(c.context_length, c.d_model))
        self.drop = Dropout(c.dropout)
        self.layers = ModuleList(
            TransformerLayer(c.d_model, c.n_head, 4 * c.d_model, c.dropout, c.norm_first,
                             c.activation, c.bias, c.layer_norm_eps, alibi)
            for _ in range(c.n_layer))
        self.ln_f = LayerNorm(c.d_model, c.layer_norm_eps, c.bias)
        self.head = Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.tok_emb.weight
        for layer in self.layers:
            layer.attn.recompute = c.recompute == "attention"
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2: N(0, 0.02) weights, zero biases, residual projections scaled 1/sqrt(2 n_layer)."""
        std = INIT_STD
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.data[...] = 0
            elif ".norm" in name or name.startswith("ln_f"):
                p.data[...] = 1
            else:
                s = residual_std if name.endswith(("attn.out.weight", "ff.proj.weight")) else std
                p.data[...] = rng.host().standard_normal(p.shape) * s

    def hidden_states(self, idx, key_padding_mask=None, cache: KVCache | None = None,
                      token_embeddings: Tensor | None = None) -> Tensor:
        """Hidden states (B, T, d_model) after the final LayerNorm; ``key_padding_mask``
        (B, T) is True for real tokens (needed by a bidirectional body, where padding would
        otherwise be attended to). ``token_embeddings`` (B, T, d_model), when given, stand in
        for the rows of idx's tokens (positions still apply): attributions differentiate
        the model with respect to them."""
        ids = idx.data if isinstance(idx, Tensor) else idx
        if not hasattr(ids, "ndim"):
            ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"GPT: expected token ids of shape (batch, time), got {ids.shape}")
        b, t = ids.shape
        start = cache.length if cache is not None else 0
        if start + t > self.config.context_length:
            raise ValueError(f"GPT: sequence of {start + t} tokens is longer than "
                             f"context_length={self.config.context_length}")
        device = self.tok_emb.weight.device
        bad = backend.out_of_range(ids, self.config.vocab_size)
        if bad is not None:
            raise ValueError(f"GPT: token id {bad} is outside the vocabulary of "
                             f"{self.config.vocab_size}")
        ids = backend.to_device(ids, device)  # checked above, on the host when given there
        if token_embeddings is None:
            x = F.EmbeddingFunction.apply(self.tok_emb.weight, ids)
        else:
            if token_embeddings.shape != (b, t, self.config.d_model):
                raise ValueError(f"GPT: token_embeddings of shape {token_embeddings.shape}, "
                                 f"expected {(b, t, self.config.d_model)}")
            x = token_embeddings
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions(start, t, device))
        x = self.drop(x)
        blocks = self.config.recompute == "blocks" and cache is None and is_grad_enabled()
        causal = self.config.causal
        for i, layer in enumerate(self.layers):
            # not the last layer: backward needs its activations at once, so recomputing them
            # would cost time and save no peak memory
            if blocks and i < len(self.layers) - 1:
                x = checkpoint(functools.partial(layer, causal=causal, layer_index=i,
                                                 key_padding_mask=key_padding_mask), x,
                               params=layer.parameters())
            else:
                x = layer(x, causal=causal, key_padding_mask=key_padding_mask, cache=cache,
                          layer_index=i)
        if cache is not None:
            cache.length += t
        return self.ln_f(x)

    def forward(self, idx, cache: KVCache | None = None) -> Tensor:
        """Logits (B, T, vocab_size) for token ids idx (B, T)."""
        return self.head(self.hidden_states(idx, cache=cache))

    def loss(self, idx, targets, ignore_index: int = F.IGNORE_INDEX) -> Tensor:
        """Mean next-token cross-entropy of the logits for idx against targets (B, T)."""
        logits = self(idx)
        return F.cross_entropy(logits, targets, ignore_index=ignore_index)

    @classmethod
    def from_pretrained(cls, path: str, dropout: float | None = None) -> "GPT":
        """A GPT holding the weights of a local Hugging Face GPT-2 folder (no download), in eval
        mode like transformers' from_pretrained (call ``.train()`` before fine-tuning)."""
        config, state = read_gpt2_state(path, dropout)
        model = cls(config)
        model.load_state_dict(state)
        return model.eval()

    def save_pretrained(self, path: str, eos_token_id: int | None = None) -> None:
        """Write this model as a Hugging Face GPT-2 folder (config.json + model.safetensors)
        that transformers' ``GPT2LMHeadModel.from_pretrained`` loads; settings GPT-2 cannot
        express raise a ValueError before anything is written."""
        save_gpt2(self.config, self.state_dict(), path, eos_token_id)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, d_model={c.d_model}, "
                f"vocab={c.vocab_size}, context={c.context_length}")
