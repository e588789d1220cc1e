"""The shapes of the Transformer models: GPTConfig (the GPT body, also the classifier's) and the
checks every Transformer config shares."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..nn import functional as F

RECOMPUTE = ("none", "blocks", "attention")
POSITIONALS = ("learned", "sinusoidal", "alibi")


def linear_size(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def layer_sizes(d: int, d_ff: int, bias: bool) -> tuple[int, int, int]:
    """Parameters of (an attention block, a feed-forward block, a LayerNorm) of width ``d``."""
    attention = linear_size(d, 3 * d, bias) + linear_size(d, d, bias)
    feed_forward = linear_size(d, d_ff, bias) + linear_size(d_ff, d, bias)
    return attention, feed_forward, d * (2 if bias else 1)


def check_transformer_shape(config, sizes: tuple[str, ...],
                            positionals: tuple[str, ...] = POSITIONALS) -> None:
    """The checks every Transformer config needs: positive integer ``sizes``, heads that
    divide the width, a kind of positions among ``positionals``."""
    kind = type(config).__name__
    for name in sizes:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{kind}.{name} must be a positive integer, got {value!r}")
    if config.d_model % config.n_head:
        raise ValueError(f"{kind}: d_model={config.d_model} is not divisible by "
                         f"n_head={config.n_head}")
    if config.positional not in positionals:
        raise ValueError(f"{kind}.positional must be one of {', '.join(positionals)}, got "
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
    positional: str = "learned"  # or "sinusoidal", or "alibi" (distance biases, nn/alibi.py)
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

    def parameter_count(self) -> int:
        """The model's parameters, counted from the config alone (Python ints: no overflow,
        whatever the sizes); equal to ``GPT(config).num_parameters()``."""
        c = self.d_model
        attention, feed_forward, norm = layer_sizes(c, 4 * c, self.bias)
        count = self.vocab_size * c + self.n_layer * (attention + feed_forward + 2 * norm) + norm
        if self.positional == "learned":
            count += self.context_length * c
        return count + (0 if self.tie_weights else self.vocab_size * c)

    def buffer_count(self) -> int:
        """Values held beside the parameters: the sinusoidal position table (ALiBi's biases
        are made per call)."""
        return self.context_length * self.d_model if self.positional == "sinusoidal" else 0

    def kept_per_token(self, context: int) -> int:
        """Values a training forward keeps for backward per token, before the output layer:
        per layer about 17 d_model (norms, q/k/v, MLP in and out) plus the attention row."""
        row = F.attention_kept_per_query(context)
        return self.n_layer * (17 * self.d_model + self.n_head * row) + 2 * self.d_model

    def cache_per_token(self) -> int:
        """Values of the key/value cache per token of context."""
        return 2 * self.n_layer * self.d_model

    def flops_per_token(self, head_share: float = 1.0) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM/nanoGPT MFU estimate;
        ``head_share`` of the tokens go through the output layer (a masked language model's
        hidden ones; none for a classifier, whose head is tiny)."""
        n = self.n_layer * 12 * self.d_model ** 2 + head_share * self.vocab_size * self.d_model
        return 6 * n + 12 * self.n_layer * self.d_model * self.context_length
