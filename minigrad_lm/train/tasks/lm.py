"""Next-token prediction on a corpus: the language-model task and its scoring.
"""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...checkpoints.kinds import LMKind, MaskedLMKind, Word2VecKind
from ...data.corpus import default_corpus
from ...data.text import (
    encode_text,
    load_text,
    load_token_folder,
    read_vocab_json,
    split_train_val,
    unigram_baseline,
    windows,
)
from ...data.token_cache import TokenizerRequest, corpus_files, prepare_token_cache
from ...data.tokenizer import CharTokenizer, tokenizer_from_dict
from ...data.trained_tokenizer import KINDS, is_hf_dict
from ...engine.tensor import Tensor
from ...inference.sampling import generate
from ...inference.scoring import perplexity, summed_loss
from ...checkpoints.folder import external_tokenizer_dict
from ..distributed import LOCAL, World
from .base import Task
from .common import (
    EVAL_STREAM,
    GPT_OPTIONS,
    SAMPLE_TEMPERATURE,
    VAL_FRACTION,
    check_length,
    evaluating,
    fingerprint,
    gpt_config,
    hold_out_lines,
    joined,
    new_tokenizer,
    paths,
    tokenizer_kind,
)

if TYPE_CHECKING:
    from ...checkpoints.folder import Checkpoint
    from ..config import TrainConfig


class LMTask(Task):
    """Next-token prediction: random windows of ``context`` tokens from the train split."""

    kind = LMKind
    name = LMKind.name
    summary = "language modelling (next-token prediction with a causal GPT)"
    # nanoGPT's CPU recipe: the default run, a character-level GPT on the stdlib's docstrings
    defaults = {"max_steps": 2000, "tokenizer": "char", "decay_steps": 2000, "batch_size": 32,
                "context": 64, "n_layer": 4, "d_model": 128, "positional": "learned",
                "dropout": 0.0, "lr": 2e-3, "min_lr": 2e-4, "warmup_steps": 100, "beta2": 0.99,
                "weight_decay": 0.1, "eval_every": 250, "log_every": 100, "attention": "causal",
                "sample_tokens": 400, **GPT_OPTIONS}
    options = (*GPT_OPTIONS, "val_every_nth", "token_cache", "sample_tokens")
    init_from = (LMKind.name, MaskedLMKind.name, Word2VecKind.name)

    @staticmethod
    def check_data(cfg: TrainConfig) -> None:
        """Where validation text comes from when --data names several files."""
        if isinstance(cfg.data, list) and cfg.val_data is None and cfg.val_every_nth is None:
            raise ValueError("several --data files: give --val-data or --val-every-nth N")

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        LMTask.check_data(cfg)
        if cfg.attention != "causal":
            raise ValueError("--task lm predicts the next token: its attention is causal "
                             "(--task mlm trains a bidirectional model)")

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None = None,
                 resumed_extras: dict[str, Any] | None = None):
        self.cfg = cfg
        folder = Path(cfg.data) if isinstance(cfg.data, str) else None
        if folder is not None and folder.is_dir() and (folder / "train.bin").exists():
            self._load_token_folder(folder, source_tokenizer)
        elif cfg.data is not None and _learned(cfg, source_tokenizer):
            self._load_cached(source_tokenizer)
        else:
            self._load_text(source_tokenizer)
        name = joined(cfg.data) if cfg.data is not None else "the default corpus"
        check_length(self.train, cfg.context, f"{name}: the training split")
        val_name = joined(cfg.val_data) if cfg.val_data is not None else name
        check_length(self.val, cfg.context, f"{val_name}: the validation split")
        self.vocab_size = self._vocab_size()
        self.unigram = unigram_baseline(self.train, self.val, self.vocab_size)

    def model_config(self, source: Checkpoint | None):
        return gpt_config(self.cfg, self.vocab_size, source)

    def _vocab_size(self) -> int:
        if self.tokenizer is not None:
            return self.tokenizer.vocab_size
        return self.tokenizer_dict["vocab_size"]

    def _load_token_folder(self, folder: Path, source_tokenizer: dict | None) -> None:
        if self.cfg.val_data is not None:
            raise ValueError(f"--val-data: {folder} is a token folder; its val.bin is the val set")
        self.train, self.val, tok = load_token_folder(folder)
        tok = tok or external_tokenizer_dict(read_vocab_json(folder)[1])
        if source_tokenizer is not None and source_tokenizer != tok:
            raise ValueError(f"{folder}/vocab.json: not the checkpoint's tokenizer")
        self.tokenizer_dict = tok
        self.tokenizer = None if tok.get("type") == "external" else tokenizer_from_dict(tok)
        self.source = (
            f"{folder}: {len(self.train):,} train and {len(self.val):,} val token ids"
        )

    def _load_cached(self, source_tokenizer: dict | None) -> None:
        """Text files tokenized once into a token cache (reused while they and the tokenizer
        are unchanged), read as memory maps: memory stays flat in the corpus size."""
        cfg = self.cfg
        root = cfg.token_cache or os.path.join(os.path.dirname(os.path.abspath(cfg.out)),
                                               "token_cache")
        request = TokenizerRequest(cfg.tokenizer, cfg.vocab_size, cfg.lowercase, cfg.min_count,
                                   given=source_tokenizer)
        val_files = corpus_files(cfg.val_data) if cfg.val_data is not None else []
        cache = prepare_token_cache(root, corpus_files(cfg.data), request,
                                    val_sources=val_files, val_every_nth=cfg.val_every_nth,
                                    encoding=cfg.encoding)
        self.source = (f"{joined(cfg.data)}, tokenized in {cache.folder} "
                       f"({'built now' if cache.built else 'reused'})")
        if cache.val is None:
            self.train, self.val = split_train_val(cache.train, VAL_FRACTION)
            self.source += f", split {1 - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%} into train/val"
        else:
            self.train, self.val = cache.train, cache.val
            held = (f"every {cfg.val_every_nth}th line" if cfg.val_data is None
                    else joined(cfg.val_data))
            self.source += f"; val: {held}"
        self.tokenizer, self.tokenizer_dict = cache.tokenizer, cache.tokenizer.to_dict()

    def _load_text(self, source_tokenizer: dict | None) -> None:
        cfg = self.cfg
        if cfg.data is None:
            text = default_corpus()
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            self.source = (
                f"docstrings of the Python {platform.python_version()} standard library, "
                f"{len(text):,} characters (sha256 {digest})"
            )
            texts = [text]
        else:
            texts = [load_text(p, cfg.encoding) for p in paths(cfg.data)]
            self.source = f"{joined(cfg.data)}, {sum(map(len, texts)):,} characters"
        val_text = None
        if cfg.val_data is not None:
            val_text = "\n".join(load_text(p, cfg.encoding) for p in paths(cfg.val_data))
        elif cfg.val_every_nth is not None:
            texts, held_out = zip(*(hold_out_lines(t, cfg.val_every_nth) for t in texts))
            val_text = "\n".join(held_out)
        text = "\n".join(texts)
        if source_tokenizer is not None:
            if source_tokenizer.get("type") == "external":
                raise ValueError(
                    "the checkpoint was trained on token ids without a tokenizer; it cannot "
                    "encode text (give --data a token folder)"
                )
            tokenizer = tokenizer_from_dict(source_tokenizer)
        elif cfg.tokenizer == "char":
            # Validation characters join the vocabulary: they are known now, and an error
            # about them would only stop the run.
            tokenizer = CharTokenizer.from_text(text + (val_text or ""), unknown=True)
        else:
            tokenizer = new_tokenizer(cfg, text.split("\n"))
        name = joined(cfg.data) if cfg.data is not None else "default corpus"
        ids = encode_text(tokenizer, text, name)
        if val_text is None:
            self.train, self.val = split_train_val(ids, VAL_FRACTION)
            self.source += f", split {1 - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%} into train/val"
        else:
            self.train, self.val = ids, encode_text(tokenizer, val_text, joined(cfg.val_data)
                                                     if cfg.val_data else name)
            held = (f"every {cfg.val_every_nth}th line" if cfg.val_data is None
                    else joined(cfg.val_data))
            self.source += f"; val: {held}, {len(val_text):,} characters"
        self.tokenizer, self.tokenizer_dict = tokenizer, tokenizer.to_dict()

    def describe(self) -> list[str]:
        return [
            f"data: {self.source}",
            (
                f"tokens: {len(self.train):,} train, {len(self.val):,} val; vocabulary "
                f"{self.vocab_size:,} ({tokenizer_kind(self.tokenizer_dict)})"
            ),
            f"unigram baseline (token frequencies, no context): val loss {self.unigram:.4f}",
        ]

    def draw(self, rng: np.random.Generator, size: int, step: int) -> np.ndarray:
        """Where the ``size`` training windows of one step start (the step's one random draw;
        :func:`~minigrad_lm.data.text.windows` cuts them)."""
        return rng.integers(0, len(self.train) - self.cfg.context, size=size)

    def batch_at(self, starts: np.ndarray) -> tuple[np.ndarray, ...]:
        """The training windows that start at ``starts``: inputs and next-token targets."""
        return windows(self.train, starts, self.cfg.context)

    @staticmethod
    def tokens(batch) -> int:
        return batch[0].size

    def fingerprint(self) -> str:
        return fingerprint(self.train, self.val)

    def loss(self, model, batch) -> Tensor:
        x, y = batch
        return model.loss(x, y)

    def _score(self, model, ids, rng, world: World) -> tuple[float, float]:
        cfg = self.cfg
        per_rank = cfg.batch_size * cfg.grad_accum_steps
        loss_sum, correct = 0.0, 0
        for _ in range(cfg.eval_batches):
            # Drawn like training batches, so the scored windows never depend on the ranks.
            starts = rng.integers(0, len(ids) - cfg.context, size=per_rank * world.size)
            mine = starts[world.rank * per_rank:(world.rank + 1) * per_rank]
            for lo in range(0, per_rank, cfg.batch_size):
                x, y = windows(ids, mine[lo:lo + cfg.batch_size], cfg.context)
                loss, right = summed_loss(model(x), y)
                loss_sum, correct = loss_sum + loss, correct + right
        tokens = cfg.eval_batches * per_rank * world.size * cfg.context
        return world.sum(loss_sum) / tokens, world.sum(correct) / tokens

    def evaluate(self, model, world: World = LOCAL) -> dict[str, float]:
        """Mean loss on ``eval_batches`` fixed train and val batches (as large as a training
        step's, each rank scoring its rows); val ppl and accuracy."""
        rng = np.random.default_rng([self.cfg.seed, EVAL_STREAM])
        with evaluating(model):
            train_loss, _ = self._score(model, self.train, rng, world)
            val_loss, val_acc = self._score(model, self.val, rng, world)
        return {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_ppl": perplexity(val_loss),
            "val_acc": val_acc,
        }

    def eval_line(self, step: int, m: dict[str, float]) -> str:
        return (
            f"step {step}: train {m['train_loss']:.4f} | val {m['val_loss']:.4f} "
            f"(ppl {m['val_ppl']:.2f}, acc {m['val_acc']:.1%}) | unigram {self.unigram:.4f}"
        )

    def finish(self, model, best: float | None) -> list[str]:
        """A sample from the trained model, started at a newline (a fresh docstring)."""
        n = self.cfg.sample_tokens
        if n == 0:
            return []
        prompt = self._sample_prompt()
        new = generate(model, prompt, n, temperature=SAMPLE_TEMPERATURE, seed=self.cfg.seed)
        head = f"sample ({n} tokens, temperature {SAMPLE_TEMPERATURE}, seed {self.cfg.seed}):"
        if self.tokenizer is None:
            return [head, " ".join(map(str, new.tolist()))]
        return [head, self.tokenizer.decode(np.concatenate([prompt, new]))]

    def _sample_prompt(self) -> np.ndarray:
        sep = getattr(self.tokenizer, "sep_id", None)
        if sep is not None:  # a line starts after a [SEP]
            return np.array([sep], np.int64)
        if self.tokenizer is not None:
            try:
                return self.tokenizer.encode("\n")
            except ValueError:  # a corpus without newlines
                pass
        return np.asarray(self.val[:1], dtype=np.int64)


def _learned(cfg: TrainConfig, source_tokenizer: dict | None) -> bool:
    """True when the text is encoded by a word or BPE vocabulary that ends lines with [SEP]
    (what a token cache holds): the checkpoint's, or one to learn. GPT-2's byte-level BPE has
    no [SEP] (its line breaks are tokens): its text is encoded whole."""
    if source_tokenizer is not None:
        return (is_hf_dict(source_tokenizer)
                and tokenizer_from_dict(source_tokenizer).sep_id is not None)
    return cfg.tokenizer in KINDS
