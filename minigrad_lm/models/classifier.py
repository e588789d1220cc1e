"""A sentence classifier: a Transformer body (causal GPT or bidirectional encoder) and a new
linear head over its pooled hidden states."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..engine import ops, rng
from ..engine.tensor import Tensor
from ..nn.layers import Linear
from ..nn.module import Module, Parameter
from .gpt import GPT

POOLINGS = ("mean", "max", "cls", "last")


class SequenceClassifier(Module):
    """Class logits from a GPT body (pretrained or fresh) and a linear head.

    pooling="mean" averages the hidden states of the real tokens (``lengths`` mark them);
    "max" takes each feature's largest value over them (a strong cue anywhere in the sentence
    is kept whole rather than diluted by its length);
    "cls" takes position 0, where the caller put a [CLS] token (a bidirectional body only:
    a causal one shows position 0 nothing else); "last" takes the last real token, the one
    a causal body has shown the whole sentence. A bidirectional body (``causal=False``) gets
    a key-padding mask, so padding never changes a real token's state.
    """

    peft_task_type = "SEQ_CLS"  # its LoRA adapters' task in the PEFT layout
    peft_head = "classifier"  # trained beside the adapters: PEFT's modules_to_save

    def __init__(self, body: GPT, num_classes: int, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"SequenceClassifier: pooling must be one of {', '.join(POOLINGS)}, "
                             f"got {pooling!r}")
        if pooling == "cls" and body.config.causal:
            raise ValueError("SequenceClassifier: pooling 'cls' needs a bidirectional body "
                             "(causal=False); a causal body shows position 0 only itself")
        if num_classes < 2:
            raise ValueError(f"SequenceClassifier: need at least 2 classes, got {num_classes}")
        self.body, self.num_classes, self.pooling = body, num_classes, pooling
        self.classifier = Linear(body.config.d_model, num_classes)
        self.classifier.weight.data[...] = rng.host().standard_normal(
            self.classifier.weight.shape) * 0.02
        self.classifier.bias.data[...] = 0

    def parameters(self) -> list[Parameter]:
        """Parameters used for classification (the body's unused LM head is left out)."""
        head = id(self.body.head.weight)
        shared = self.body.config.tie_weights
        return [p for _, p in self.named_parameters() if shared or id(p) != head]

    def forward(self, idx, lengths=None, token_embeddings: Tensor | None = None) -> Tensor:
        """Class logits (B, num_classes) for ids (B, T); lengths (B,) count the real tokens
        at the start of each row (default: all T); ``token_embeddings`` replace the rows of
        idx's tokens (see GPT.hidden_states)."""
        ids = idx.data if isinstance(idx, Tensor) else idx
        xp = backend.array_module(self.classifier.weight.data)
        b, t = ids.shape
        lens = xp.full((b,), t) if lengths is None else xp.asarray(
            backend.to_device(np.asarray(backend.to_numpy(lengths)), self.classifier.weight.device))
        keep = xp.arange(t)[None, :] < lens[:, None]  # (B, T) real tokens
        # A causal body needs no mask: right padding comes after every real token.
        h = self.body.hidden_states(ids, key_padding_mask=None if self.body.config.causal
                                    else keep, token_embeddings=token_embeddings)
        if self.pooling == "cls":
            pooled = h[:, 0]
        elif self.pooling == "last":
            pooled = h[xp.arange(b), lens - 1]
        elif self.pooling == "max":
            pooled = ops.max(ops.masked_fill(h, ~keep[:, :, None], -np.inf), axis=1)
        else:
            w = (keep / lens[:, None]).astype(h.dtype)[:, :, None]  # (B, T, 1)
            pooled = ops.sum(h * Tensor(w), axis=1)
        return self.classifier(pooled)
