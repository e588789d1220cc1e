"""The translation task: parallel text, token-count batches, loss, val loss and val BLEU.

``--data SRC TGT`` and ``--val-data SRC TGT`` are line-aligned UTF-8 files (gzip is recognised
by its magic bytes and read transparently). A pair with an empty side carries nothing to learn
or score: such pairs are skipped and counted in the run's header (the counts and the first line
are printed). Training pairs longer than ``--context`` tokens are skipped and counted too; a
validation pair that long is an error naming its line, so val BLEU is always over the whole
file. One vocabulary (``--tokenizer bpe`` or ``word``, learned from both sides of the training
data) serves source and target; the decoder starts at ``[CLS]`` and stops at ``[SEP]``.

Batches hold up to ``--batch-tokens`` tokens (source + target, padding included): pairs sorted
by length are cut into batches once, so padding stays low, and each epoch visits every batch
once in a new seeded order (``--batch-size`` batches per micro-batch, 1 by default). The order
is a function of the step alone, so ``--resume`` continues bit-identically, mid-epoch too.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from ...backend import memory
from ...checkpoints.kinds import TranslateKind
from ...data.parallel import encode_lines, pad_pairs, pair_fits, read_parallel
from ...data.trained_tokenizer import DEFAULT_VOCAB_SIZE, SEP, TrainedTokenizer
from ...engine.tensor import Tensor
from ...inference.decoding import DECODE_BATCH, DecodeOptions, decoding_bytes, translate_text
from ...inference.scoring import bleu, perplexity, require_sacrebleu, score_translation
from ...models.seq2seq import SEQ2SEQ_POSITIONALS, Seq2SeqConfig
from ..distributed import LOCAL, World
from .base import Task
from .common import (
    EVAL_STREAM,
    epoch_draw,
    evaluating,
    fingerprint,
    flag,
    new_tokenizer,
    require_learned_tokenizer,
)

if TYPE_CHECKING:
    from ...checkpoints.folder import Checkpoint
    from ..config import TrainConfig

__all__ = ["TranslateTask"]

SHUFFLE_STREAM = 5  # ties between equally long pairs are broken by this stream of the seed
EXAMPLES = 3


def token_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """Pair indices cut into batches of at most max_tokens padded tokens (a longer pair is a
    batch alone), sorted by length so that batch-mates are alike."""
    order = np.lexsort((rng.random(len(src_lens)), tgt_lens, src_lens))
    batches, start, longest_src, longest_tgt = [], 0, 0, 0
    for n, i in enumerate(order):
        s, t = max(longest_src, src_lens[i]), max(longest_tgt, tgt_lens[i])
        if n > start and (n - start + 1) * (s + t) > max_tokens:
            batches.append(order[start:n])
            start, s, t = n, src_lens[i], tgt_lens[i]
        longest_src, longest_tgt = s, t
    batches.append(order[start:])
    return batches


class TranslateTask(Task):
    """Sequence-to-sequence training on parallel text, evaluated by val loss and val BLEU."""

    kind = TranslateKind
    name = TranslateKind.name
    summary = "train an encoder-decoder Transformer on parallel text"
    # A batch_size of 1 token-count batch (of --batch-tokens) per micro-batch; the attention
    # named is the encoder's (the decoder's is causal). Measured on Multi30k by
    # benchmarks/translate.py.
    defaults = {"epochs": 5, "tokenizer": "bpe", "batch_size": 1, "context": 128, "n_layer": 3,
                "d_model": 256, "positional": "sinusoidal", "dropout": 0.1, "lr": 1.5e-3,
                "min_lr": 1e-4, "warmup_steps": 200, "beta2": 0.98, "weight_decay": 0.01,
                "log_every": 100, "attention": "bidirectional", "embeddings": "shared",
                "batch_tokens": 4096, "label_smoothing": 0.1,
                "beam_size": DecodeOptions.beam_size,
                "length_penalty": DecodeOptions.length_penalty}
    options = ("epochs", "d_ff", "embeddings", "batch_tokens", "label_smoothing", "beam_size",
               "length_penalty")
    fixed = (*Task.fixed, "d_ff", "embeddings", "batch_tokens")
    best_metric = "val_bleu"
    higher_is_better = True

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        """Two files each for --data and --val-data, a learned vocabulary, a fresh model."""
        for name in ("data", "val_data"):
            value = getattr(cfg, name)
            if not (isinstance(value, list) and len(value) == 2):
                raise ValueError(f"--task translate needs {flag(name)} SOURCE_FILE TARGET_FILE "
                                 "(two line-aligned files)")
        require_learned_tokenizer(cfg, "--task translate learns its vocabulary")
        if cfg.init_from is not None:
            raise ValueError("--init-from starts from a language model; --task translate "
                             "trains an encoder-decoder from scratch")
        if cfg.attention != "bidirectional":
            raise ValueError("--attention causal: translate's encoder is bidirectional (its "
                             "decoder is causal)")
        if cfg.positional not in SEQ2SEQ_POSITIONALS:
            raise ValueError(f"--positional {cfg.positional}: translate takes "
                             f"{' or '.join(SEQ2SEQ_POSITIONALS)} (cross-attention has no "
                             "distance between the two texts)")
        DecodeOptions.check({**vars(DecodeOptions()), "beam_size": cfg.beam_size,
                             "length_penalty": cfg.length_penalty},
                            {"beam_size": "--beam-size", "length_penalty": "--length-penalty"})
        # The val BLEU's beam search, checked now rather than at the first evaluation.
        shape = SimpleNamespace(n_layer=cfg.n_layer, context_length=cfg.context,
                                d_model=cfg.d_model,
                                vocab_size=cfg.vocab_size or DEFAULT_VOCAB_SIZE[cfg.tokenizer])
        need, detail = decoding_bytes(shape, DECODE_BATCH * cfg.beam_size)
        memory.require(need, detail, f"--beam-size {cfg.beam_size}", cfg.device)

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None = None,
                 resumed_extras: dict[str, Any] | None = None):
        self.cfg = cfg
        require_sacrebleu()  # missing: fail before any work
        train_src, train_tgt, train_lines, self.train_empty = read_parallel(*cfg.data, cfg.encoding)
        self.val_src, self.val_tgt, val_lines, self.val_empty = read_parallel(*cfg.val_data, cfg.encoding)
        if source_tokenizer is not None:
            self.tokenizer = TrainedTokenizer.from_dict(source_tokenizer)
        else:
            self.tokenizer = new_tokenizer(cfg, train_src + train_tgt)
        self.tokenizer_dict = self.tokenizer.to_dict()
        self.vocab_size = self.tokenizer.vocab_size
        self.pad, self.bos, self.eos = (self.tokenizer.pad_id, self.tokenizer.cls_id,
                                        self.tokenizer.token_id(SEP))
        src, tgt = self._encode(train_src), self._encode(train_tgt, eos=False)
        fits = [i for i in range(len(src)) if pair_fits(src[i], tgt[i], cfg.context)]
        self.train_too_long = len(src) - len(fits)
        if not fits:
            raise ValueError(f"{cfg.data[0]}: every pair is longer than --context {cfg.context}")
        self.src, self.tgt = [src[i] for i in fits], [tgt[i] for i in fits]
        self.val_src_ids = self._encode(self.val_src)
        self.val_tgt_ids = self._encode(self.val_tgt, eos=False)
        for i, line in enumerate(val_lines):
            if not pair_fits(self.val_src_ids[i], self.val_tgt_ids[i], cfg.context):
                raise ValueError(
                    f"{cfg.val_data[0]}:{line}: the pair has {len(self.val_src_ids[i])} and "
                    f"{len(self.val_tgt_ids[i]) + 1} tokens, more than --context {cfg.context}")
        order_rng = np.random.default_rng([cfg.seed, SHUFFLE_STREAM])
        self.batches = token_batches(*self._lengths(self.src, self.tgt), cfg.batch_tokens,
                                     order_rng)
        self.val_batches = token_batches(*self._lengths(self.val_src_ids, self.val_tgt_ids),
                                         cfg.batch_tokens, order_rng)
        self.train_rows = len(self.batches)  # the Trainer's epochs count batches

    def _encode(self, lines: list[str], eos: bool = True) -> list[np.ndarray]:
        return encode_lines(self.tokenizer, lines, self.eos if eos else None)

    @staticmethod
    def _lengths(src, tgt) -> tuple[np.ndarray, np.ndarray]:
        return np.array([len(s) for s in src]), np.array([len(t) + 1 for t in tgt])

    def model_config(self, source: Checkpoint | None) -> Seq2SeqConfig:
        """A resumed model's shape (with this run's dropout), or a fresh one's from the
        options and the vocabulary."""
        cfg = self.cfg
        if source is not None:
            return dataclasses.replace(source.model_config, dropout=cfg.dropout)
        return Seq2SeqConfig(
            vocab_size=self.vocab_size, context_length=cfg.context, n_layer=cfg.n_layer,
            n_head=cfg.n_head, d_model=cfg.d_model, d_ff=cfg.d_ff or 4 * cfg.d_model,
            dropout=cfg.dropout, norm_first=cfg.norm == "pre", positional=cfg.positional,
            share_embeddings=cfg.embeddings == "shared", pad_id=self.pad, bos_id=self.bos,
            eos_id=self.eos)

    def describe(self) -> list[str]:
        cfg = self.cfg
        src_lens, tgt_lens = self._lengths(self.src, self.tgt)
        real = int(src_lens.sum() + tgt_lens.sum())
        padded = sum(len(b) * (src_lens[b].max() + tgt_lens[b].max()) for b in self.batches)
        lines = [
            f"data: {cfg.data[0]} -> {cfg.data[1]} ({len(self.src):,} pairs), val "
            f"{cfg.val_data[0]} -> {cfg.val_data[1]} ({len(self.val_src):,} pairs)",
            f"vocabulary {self.vocab_size:,} ({self.tokenizer.kind}, shared by both sides); "
            f"{real:,} train tokens in {len(self.batches):,} batches of <= {cfg.batch_tokens:,} "
            f"tokens ({1 - real / padded:.1%} padding)",
        ]
        for what, found, name in (("train", self.train_empty, cfg.data[0]),
                                  ("val", self.val_empty, cfg.val_data[0])):
            if found:
                lines.append(f"skipped {len(found):,} {what} pairs with an empty side (first: "
                             f"{name}:{found[0]})")
        if self.train_too_long:
            lines.append(f"skipped {self.train_too_long:,} train pairs longer than --context "
                         f"{cfg.context} tokens")
        return lines

    def batch_rows(self) -> int:
        """A token batch's rows, at their longest."""
        return self.cfg.batch_size * max(1, self.cfg.batch_tokens // self.cfg.context)

    def draw(self, rng: np.random.Generator, size: int, step: int) -> np.ndarray:
        """The ``size`` batches of step ``step``, epoch after epoch in seeded orders."""
        return epoch_draw(self.cfg.seed, len(self.batches), size, step)

    def _pad(self, rows: np.ndarray, src, tgt) -> tuple[np.ndarray, ...]:
        return pad_pairs(rows, src, tgt, self.pad, self.bos, self.eos)

    def batch_at(self, picks: np.ndarray) -> tuple[np.ndarray, ...]:
        rows = np.concatenate([self.batches[b] for b in picks])
        return self._pad(rows, self.src, self.tgt)

    def tokens(self, batch) -> int:
        """Real (not padding) source and target tokens of a batch."""
        src, _, tgt_out = batch
        return int((src != self.pad).sum() + (tgt_out != self.pad).sum())

    def fingerprint(self) -> str:
        return fingerprint(np.concatenate(self.src), np.concatenate(self.tgt))

    def loss(self, model, batch) -> Tensor:
        return model.loss(*batch, label_smoothing=self.cfg.label_smoothing)

    def _nll(self, model, batches, src, tgt, world: World) -> float:
        """Mean token cross-entropy (no smoothing) over these batches, shared by the ranks."""
        total, tokens = 0.0, 0
        for rows in batches[world.rank::world.size]:
            loss, n = score_translation(model, self._pad(rows, src, tgt), self.pad)
            total, tokens = total + loss, tokens + n
        return world.sum(total) / world.sum(tokens)

    def translate(self, model, sources: list[np.ndarray]) -> list[str]:
        options = DecodeOptions(beam_size=self.cfg.beam_size,
                                length_penalty=self.cfg.length_penalty)
        return translate_text(model, self.tokenizer, sources, options)

    def evaluate(self, model, world: World = LOCAL) -> dict[str, Any]:
        """Val loss and perplexity over the whole val set, train loss on a fixed sample of
        eval-batches batches, and (on rank 0) val BLEU of beam-size decoding."""
        rng = np.random.default_rng([self.cfg.seed, EVAL_STREAM])
        sample = [self.batches[i] for i in
                  np.sort(rng.permutation(len(self.batches))[:self.cfg.eval_batches])]
        with evaluating(model):
            metrics = {"train_loss": self._nll(model, sample, self.src, self.tgt, world),
                       "val_loss": self._nll(model, self.val_batches, self.val_src_ids,
                                             self.val_tgt_ids, world)}
            metrics["val_ppl"] = perplexity(metrics["val_loss"])
            if world.is_root:
                metrics["val_bleu"] = bleu(self.translate(model, self.val_src_ids),
                                           self.val_tgt)
        return metrics

    def eval_line(self, step: int, m: dict[str, Any]) -> str:
        return (f"step {step}: train {m['train_loss']:.4f} | val {m['val_loss']:.4f} "
                f"(ppl {m['val_ppl']:.2f}) | val BLEU {m['val_bleu']:.2f} "
                f"(beam {self.cfg.beam_size})")

    def finish(self, model, best: float | None) -> list[str]:
        """A few val sentences with their references and the trained model's translations."""
        with evaluating(model):
            hyps = self.translate(model, self.val_src_ids[:EXAMPLES])
        lines = [f"examples (val, beam {self.cfg.beam_size}):"]
        for src, ref, hyp in zip(self.val_src, self.val_tgt, hyps):
            lines += [f"  source: {src}", f"  reference: {ref}", f"  model: {hyp}"]
        return lines
