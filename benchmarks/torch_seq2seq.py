"""The same encoder-decoder in PyTorch, built on torch.nn.Transformer, for parity tests and the
translation benchmark; from_minigrad copies a Seq2SeqTransformer's weights into it."""
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as TF
from torch import nn


class TorchSeq2Seq(nn.Module):
    """Embeddings x sqrt(d) + positions, torch.nn.Transformer, output tied to the target
    embedding: minigrad_lm's Seq2SeqTransformer (shared embeddings)."""

    def __init__(self, cfg):
        super().__init__()
        if not (cfg.share_embeddings and cfg.tie_weights):
            raise ValueError("TorchSeq2Seq mirrors shared, tied embeddings only")
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.positional == "learned":
            self.pos = nn.Parameter(torch.zeros(cfg.context_length, cfg.d_model))
        else:
            from minigrad_lm.nn.transformer import sinusoidal_table
            self.register_buffer("pos", torch.tensor(sinusoidal_table(cfg.context_length,
                                                                      cfg.d_model)))
        with warnings.catch_warnings():  # nested tensors are off with norm_first: fine
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(
                cfg.d_model, cfg.n_head, cfg.n_layer, cfg.n_layer, cfg.d_ff, cfg.dropout,
                activation=cfg.activation, layer_norm_eps=cfg.layer_norm_eps, batch_first=True,
                norm_first=cfg.norm_first, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def _embed(self, ids):
        x = self.emb(ids) * math.sqrt(self.cfg.d_model) + self.pos[: ids.shape[1]]
        return self.drop(x)

    def forward(self, src, tgt_in):
        pad = self.cfg.pad_id
        causal = torch.triu(torch.ones(tgt_in.shape[1], tgt_in.shape[1], dtype=torch.bool), 1)
        h = self.transformer(self._embed(src), self._embed(tgt_in), tgt_mask=causal,
                             src_key_padding_mask=src == pad, memory_key_padding_mask=src == pad)
        return h @ self.emb.weight.T

    def loss(self, src, tgt_in, tgt_out, label_smoothing=0.0):
        logits = self(src, tgt_in)
        return TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                                ignore_index=self.cfg.pad_id, label_smoothing=label_smoothing)


def _attention_pairs(ours, attn):
    """Our packed projections -> torch's in_proj (q, k, v rows in that order)."""
    w = [ours.qkv.weight] if hasattr(ours, "qkv") else [ours.q.weight, ours.kv.weight]
    b = [ours.qkv.bias] if hasattr(ours, "qkv") else [ours.q.bias, ours.kv.bias]
    return [(attn.in_proj_weight, w), (attn.in_proj_bias, b),
            (attn.out_proj.weight, [ours.out.weight]), (attn.out_proj.bias, [ours.out.bias])]


def _norm_pairs(ours, theirs):
    return [(theirs.weight, [ours.weight]), (theirs.bias, [ours.bias])]


def _ff_pairs(ff, layer):
    return [(layer.linear1.weight, [ff.fc.weight]), (layer.linear1.bias, [ff.fc.bias]),
            (layer.linear2.weight, [ff.proj.weight]), (layer.linear2.bias, [ff.proj.bias])]


def decoder_layer_pairs(ours, theirs):
    """(torch parameter, our parameters whose concatenation it is) for a decoder layer."""
    return (_attention_pairs(ours.self_attn, theirs.self_attn)
            + _attention_pairs(ours.cross_attn, theirs.multihead_attn)
            + _norm_pairs(ours.norm1, theirs.norm1) + _norm_pairs(ours.norm2, theirs.norm2)
            + _norm_pairs(ours.norm3, theirs.norm3) + _ff_pairs(ours.ff, theirs))


def encoder_layer_pairs(ours, theirs):
    return (_attention_pairs(ours.attn, theirs.self_attn) + _norm_pairs(ours.norm1, theirs.norm1)
            + _norm_pairs(ours.norm2, theirs.norm2) + _ff_pairs(ours.ff, theirs))


def model_pairs(model, ref):
    """Every (torch parameter, our parameters) of a Seq2SeqTransformer and its TorchSeq2Seq."""
    pairs = [(ref.emb.weight, [model.tgt_emb.weight])]
    if model.config.positional == "learned":
        pairs.append((ref.pos, [model.pos_emb.embedding.weight]))
    for ours, theirs in zip(model.encoder, ref.transformer.encoder.layers):
        pairs += encoder_layer_pairs(ours, theirs)
    for ours, theirs in zip(model.decoder, ref.transformer.decoder.layers):
        pairs += decoder_layer_pairs(ours, theirs)
    return (pairs + _norm_pairs(model.encoder_norm, ref.transformer.encoder.norm)
            + _norm_pairs(model.decoder_norm, ref.transformer.decoder.norm))


def copy_weights(pairs) -> None:
    with torch.no_grad():
        for theirs, ours in pairs:
            theirs.copy_(torch.tensor(np.concatenate([p.numpy() for p in ours])))


def from_minigrad(model) -> TorchSeq2Seq:
    """A TorchSeq2Seq holding a copy of a minigrad_lm Seq2SeqTransformer's weights."""
    ref = TorchSeq2Seq(model.config)
    copy_weights(model_pairs(model, ref))
    return ref
