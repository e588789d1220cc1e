"""The shapes of the Transformer models: GPTConfig (the GPT body, also the classifier's) and the
checks every Transformer config shares."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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

    def flops_per_token(self, head_share: float = 1.0) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM/nanoGPT MFU estimate;
        ``head_share`` of the tokens go through the output layer (a masked language model's
        hidden ones; none for a classifier, whose head is tiny)."""
        n = self.n_layer * 12 * self.d_model ** 2 + head_share * self.vocab_size * self.d_model
        return 6 * n + 12 * self.n_layer * self.d_model * self.context_length
