"""What the tasks share: constants of the random streams, helpers for files, epochs,
tokenizers and the GPT shape.
"""
from __future__ import annotations

import dataclasses
import hashlib
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from ...data.tokenizer import ByteTokenizer, CharTokenizer
from ...data.trained_tokenizer import KINDS as LEARNED_TOKENIZERS
from ...data.trained_tokenizer import TrainedTokenizer, is_hf_dict
from ...engine.tensor import no_grad
from ...models import GPTConfig
from ...models.electra import ElectraConfig

if TYPE_CHECKING:
    from ...checkpoints.folder import Checkpoint
    from ..config import TrainConfig

# Evaluation draws its batches from a generator of its own, re-created for every evaluation:
# every eval scores the same windows, and the training streams are never touched.
EVAL_STREAM = 2
EPOCH_STREAM = 4  # the order of the rows (or batches) in each epoch
MAJORITY_MARGIN = 0.005  # val accuracy within this of the majority baseline learned nothing
VAL_FRACTION = 0.1
SAMPLE_TEMPERATURE = 0.8
FINGERPRINT_ROWS = 1 << 16
# The options of the tasks that train a GPT body (recompute and LoRA act on its blocks), and
# their defaults.
GPT_OPTIONS = {"recompute": "none", "lora_rank": 0, "lora_alpha": 16.0, "lora_targets": "qkv"}
# What a resumed run takes from its checkpoint (the model's shape, its adapters, the
# vocabulary, the validation split): given again, an option must say what the run was trained
# with. The data files may move (or be fixed) between runs: --data is not compared.
FIXED_ON_RESUME = ("context", "n_layer", "n_head", "d_model", "norm", "positional",
                   "attention", "tokenizer", "vocab_size", "min_count", "lowercase",
                   "val_every_nth", "lora_rank", "lora_alpha", "lora_targets")


@contextmanager
def evaluating(model):
    """Eval mode (no dropout) and no graph for the block, then back to training mode."""
    model.eval()
    try:
        with no_grad():
            yield
    finally:
        model.train()


def flag(name: str) -> str:
    """The command-line flag of option ``name``: ``--max-steps`` for ``max_steps``."""
    return "--" + name.replace("_", "-")


def require_learned_tokenizer(cfg: TrainConfig, why: str) -> None:
    """Refuse a char or byte tokenizer where ``why`` needs a word or bpe vocabulary."""
    if cfg.tokenizer not in LEARNED_TOKENIZERS:
        raise ValueError(f"{why}: --tokenizer {' or '.join(LEARNED_TOKENIZERS)}, not "
                         f"{cfg.tokenizer}")


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` items: a function of the seed alone."""
    return np.random.default_rng([seed, EPOCH_STREAM, epoch]).permutation(n)


def epoch_draw(seed: int, n: int, size: int, step: int) -> np.ndarray:
    """The ``size`` items of step ``step``: the next ones in the concatenation of the epochs'
    orders of ``n`` items. A function of the step alone, so a resumed run (mid-epoch too)
    picks the items the uninterrupted one would have."""
    start = step * size
    first, last = start // n, (start + size - 1) // n
    order = np.concatenate([epoch_order(seed, e, n) for e in range(first, last + 1)])
    return order[start - first * n:start - first * n + size]


def gpt_config(cfg: TrainConfig, vocab_size: int, source: Checkpoint | None) -> GPTConfig:
    """A GPT's shape: a checkpoint's (with this run's dropout, attention and recompute, so a
    causal language model can start a bidirectional classifier), or the options'."""
    causal = cfg.attention == "causal"
    if source is not None:
        config = source.model_config
        if isinstance(config, ElectraConfig):  # its encoder alone starts another model
            config = config.encoder()
        return dataclasses.replace(config, dropout=cfg.dropout, causal=causal,
                                   recompute=cfg.recompute)
    return GPTConfig(causal=causal, vocab_size=vocab_size, context_length=cfg.context,
                     n_layer=cfg.n_layer, n_head=cfg.n_head, d_model=cfg.d_model,
                     dropout=cfg.dropout, norm_first=cfg.norm == "pre",
                     positional=cfg.positional, recompute=cfg.recompute)


def paths(data: str | list[str]) -> list[str]:
    return [data] if isinstance(data, str) else list(data)


def joined(data: str | list[str]) -> str:
    return ", ".join(paths(data))


def hold_out_lines(text: str, nth: int) -> tuple[str, str]:
    """(the text less its lines nth, 2 nth, ..., those lines), as classification splits."""
    numbered = list(enumerate(text.split("\n"), 1))
    return ("\n".join(line for n, line in numbered if n % nth),
            "\n".join(line for n, line in numbered if not n % nth))


def fingerprint(*arrays: np.ndarray) -> str:
    """A digest of the data that tells two machines' copies apart without reading a large
    token file whole: shapes, dtypes and an evenly spaced sample of rows."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a[:: max(1, len(a) // FINGERPRINT_ROWS)]))
    return h.hexdigest()


def check_length(ids: np.ndarray, context: int, what: str) -> None:
    if len(ids) <= context:
        raise ValueError(
            f"{what} has {len(ids):,} tokens, not more than --context {context}; "
            "use more text or a smaller --context"
        )


def tokenizer_kind(tokenizer_dict: dict) -> str:
    if is_hf_dict(tokenizer_dict):
        return TrainedTokenizer.from_dict(tokenizer_dict).kind
    return str(tokenizer_dict.get("type"))


def new_tokenizer(cfg: TrainConfig, texts: list[str]):
    if cfg.tokenizer == "char":
        return CharTokenizer.from_text("".join(texts), unknown=True)
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    return TrainedTokenizer.train(cfg.tokenizer, texts, cfg.vocab_size, cfg.lowercase,
                                  cfg.min_count)
