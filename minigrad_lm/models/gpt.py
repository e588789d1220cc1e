"""GPT: the decoder-only Transformer language model (and, with ``causal=False``, the body of
a bidirectional encoder)."""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from .. import backend, ops, rng
from ..nn import functional as F
from ..nn.attention import KVCache
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear
from ..nn.module import Module, ModuleList, Parameter
from ..nn.transformer import (LearnedPositionalEncoding, SinusoidalPositionalEncoding,
                              TransformerLayer, positions)
from ..recompute import checkpoint
from ..tensor import Tensor, is_grad_enabled


RECOMPUTE = ("none", "blocks", "attention")


def check_transformer_shape(config, sizes: tuple[str, ...]) -> None:
    """The checks every Transformer config needs: positive integer ``sizes``, heads that
    divide the width, a known kind of positions."""
    kind = type(config).__name__
    for name in sizes:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{kind}.{name} must be a positive integer, got {value!r}")
    if config.d_model % config.n_head:
        raise ValueError(f"{kind}: d_model={config.d_model} is not divisible by "
                         f"n_head={config.n_head}")
    if config.positional not in ("learned", "sinusoidal"):
        raise ValueError(f"{kind}.positional must be 'learned' or 'sinusoidal', got "
                         f"{config.positional!r}")


@dataclass
class GPTConfig:
    """The shape of a GPT. Unknown keys are rejected when loading from a dict."""

    vocab_size: int = 65
    context_length: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = True
    norm_first: bool = True
    positional: str = "learned"  # or "sinusoidal"
    tie_weights: bool = True
    activation: str = "gelu_tanh"  # GPT-2's; "gelu" (exact) and "relu" also work
    layer_norm_eps: float = 1e-5
    causal: bool = True  # False: a bidirectional encoder (each token sees the whole sentence)
    # activations recomputed in backward instead of kept (a training setting, not the shape):
    # "blocks" keeps each layer's input only; "attention" drops the (T, T) probabilities
    recompute: str = "none"

    def __post_init__(self):
        check_transformer_shape(self, ("vocab_size", "context_length", "n_layer", "n_head",
                                       "d_model"))
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"GPTConfig.recompute must be one of {', '.join(RECOMPUTE)}, got "
                             f"{self.recompute!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"GPTConfig: unknown keys {unknown}")
        return cls(**d)

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM/nanoGPT MFU estimate."""
        n = (self.n_layer * 12 * self.d_model ** 2 + self.vocab_size * self.d_model)
        return 6 * n + 12 * self.n_layer * self.d_model * self.context_length


class GPT(Module):
    """Token embedding + positions -> n_layer causal TransformerLayers -> LayerNorm -> vocab."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = Embedding(c.vocab_size, c.d_model)
        self.pos_emb = (LearnedPositionalEncoding(c.context_length, c.d_model)
                        if c.positional == "learned" else
                        SinusoidalPositionalEncoding(c.context_length, c.d_model))
        self.drop = Dropout(c.dropout)
        self.layers = ModuleList(
            TransformerLayer(c.d_model, c.n_head, 4 * c.d_model, c.dropout, c.norm_first,
                             c.activation, c.bias, c.layer_norm_eps) for _ in range(c.n_layer))
        self.ln_f = LayerNorm(c.d_model, c.layer_norm_eps, c.bias)
        self.head = Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.tok_emb.weight
        for layer in self.layers:
            layer.attn.recompute = c.recompute == "attention"
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2: N(0, 0.02) weights, zero biases, residual projections scaled 1/sqrt(2 n_layer)."""
        std = 0.02
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.data[...] = 0
            elif ".norm" in name or name.startswith("ln_f"):
                p.data[...] = 1
            else:
                s = residual_std if name.endswith(("attn.out.weight", "ff.proj.weight")) else std
                p.data[...] = rng.host().standard_normal(p.shape) * s

    def body(self, idx, key_padding_mask=None, cache: KVCache | None = None) -> Tensor:
        """Hidden states (B, T, d_model) after the final LayerNorm; ``key_padding_mask``
        (B, T) is True for real tokens (needed by a bidirectional body, where padding would
        otherwise be attended to)."""
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
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            bad = int(ids.max()) if int(ids.max()) >= self.config.vocab_size else int(ids.min())
            raise ValueError(f"GPT: token id {bad} is outside the vocabulary of "
                             f"{self.config.vocab_size}")
        ids = backend.to_device(ids, device)  # checked above, on the host when given there
        x = F.Embedding.apply(self.tok_emb.weight, ids)
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
        return self.head(self.body(idx, cache=cache))

    def loss(self, idx, targets, ignore_index: int = -100) -> Tensor:
        """Mean next-token cross-entropy of the logits for idx against targets (B, T)."""
        logits = self(idx)
        return F.cross_entropy(logits, targets, ignore_index=ignore_index)

    @classmethod
    def from_pretrained(cls, path: str) -> "GPT":
        """A GPT holding the weights of a local Hugging Face GPT-2 directory (no download)."""
        from .hf_gpt2 import load_gpt2
        return load_gpt2(path)

    def save_pretrained(self, path: str) -> None:
        """Write this model as a Hugging Face GPT-2 directory (config.json + model.safetensors)."""
        from .hf_gpt2 import save_gpt2
        save_gpt2(self, path)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, d_model={c.d_model}, "
                f"vocab={c.vocab_size}, context={c.context_length}")
