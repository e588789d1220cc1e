"""The part of each task that lives on after training: what its checkpoint's ``config.json``
holds beyond the model shape, how its model is built, how much memory it needs, and how it
scores a file for ``python -m minigrad_lm.evaluate``.

Inference reads checkpoints without importing the trainer, so this half of a task sits below
``minigrad_lm.train``; the training half (data, batches, loss, options) is the task's module in
:mod:`minigrad_lm.train.tasks`, whose class names its kind here. ``KINDS[name]`` is the kind of a
checkpoint whose ``config.json`` says ``"task": name``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..backend.memory import Head
from ..data.labeled import encode_sentences, load_labeled
from ..data.parallel import encode_lines, pad_pairs, pair_fits, read_parallel
from ..data.qa import QAExample, read_qa
from ..data.text import encode_text, load_text
from ..data.trained_tokenizer import FIRST_WORD_ID
from ..data.word2vec import NEGATIVES, CBOWSampler
from ..engine.tensor import no_grad
from ..inference.decoding import DecodeOptions, translate_ids, translate_text
from ..inference.explain import (
    ExplainOptions,
    Explanation,
    explain_answer,
    explain_classifier,
    explain_next_token,
    explain_translation,
    token_text,
)
from ..inference.qa import answer_examples, predict_answers, read_windows
from ..inference.qa_metrics import qa_metrics
from ..inference.scoring import (
    bleu,
    perplexity,
    score_cbow,
    score_classifier,
    score_lm,
    score_masked_lm,
    score_translation,
)
from ..io.files import CheckpointError
from ..io.untrusted import Bool, Int, ListOf, Num, Object, Str
from ..models import GPT, GPTConfig, Seq2SeqConfig, Seq2SeqTransformer, SequenceClassifier
from ..models.classifier import POOLINGS
from ..models.electra import ElectraConfig, ElectraPretrainer, encoder_state
from ..models.config import POSITIONALS, RECOMPUTE
from ..models.hf_gpt2 import EXPORT_ACTIVATIONS
from ..models.qa import QuestionAnswerer
from ..models.seq2seq import SEQ2SEQ_POSITIONALS
from ..models.word2vec import Word2VecPretrainer
from ..models.word2vec import encoder_state as word2vec_encoder_state
from ..nn import Module

__all__ = ["KINDS", "CheckpointKind", "ClassifyKind", "ElectraKind", "LMKind", "MaskedLMKind",
           "QAKind", "TranslateKind", "Word2VecKind"]

# Sizes above these are no model anyone trains here; the memory estimate refuses far less.
MAX_SIZE = 2**31 - 1
MAX_CLASSES = 65536
WORD2VEC_SCORED = 1 << 16  # words of a file that evaluate scores a word2vec pretrainer on

# The shapes of the model configs in config.json (minigrad_lm.io.untrusted): checked first.
_SHAPE = {
    "vocab_size": Int(1, MAX_SIZE), "context_length": Int(1, MAX_SIZE),
    "n_layer": Int(1, MAX_SIZE), "n_head": Int(1, MAX_SIZE), "d_model": Int(1, MAX_SIZE),
    "dropout": Num(0.0, 1.0), "bias": Bool(), "norm_first": Bool(),
    "positional": Str(POSITIONALS), "tie_weights": Bool(),
    "activation": Str(tuple(EXPORT_ACTIVATIONS)), "layer_norm_eps": Num(above=0.0),
}
GPT_SPEC = Object({**_SHAPE, "causal": Bool(), "recompute": Str(RECOMPUTE)})
SEQ2SEQ_SPEC = Object({**_SHAPE, "positional": Str(SEQ2SEQ_POSITIONALS),
                       "d_ff": Int(1, MAX_SIZE), "share_embeddings": Bool(),
                       "pad_id": Int(0, MAX_SIZE), "bos_id": Int(0, MAX_SIZE),
                       "eos_id": Int(0, MAX_SIZE)})


class CheckpointKind:
    """A task's checkpoints: subclasses set the class variables and override what differs.

    ``extras`` are the keys of ``config.json`` beyond ``format``, ``version``, ``task`` and
    ``model``, each with the shape it must have; the training task writes them
    (``checkpoint_extras``) and :meth:`build` gets them back. A key of ``extra_defaults`` may
    be missing (a checkpoint from before it existed) and then has that value.
    """

    name: ClassVar[str]
    noun: ClassVar[str]  # "a classifier": in errors that refuse another task's checkpoint
    config_class: ClassVar[type] = GPTConfig
    config_spec: ClassVar[Object] = GPT_SPEC
    extras: ClassVar[dict[str, Any]] = {}
    extra_defaults: ClassVar[dict[str, Any]] = {}
    # Training options that a model started from these weights (--init-from) is fine-tuned
    # with, where the user gives none and its task takes them.
    fine_tuning: ClassVar[dict[str, Any]] = {}
    bare_gpt: ClassVar[bool] = False  # the model is a GPT alone (GPT-2 export, generation)

    @staticmethod
    def build(config, extras: dict[str, Any]) -> Module:
        """A fresh model of this shape (its memory checked first by the caller)."""
        return GPT(config)

    @staticmethod
    def head(config, extras: dict[str, Any]) -> Head:
        """The output layer, when it is not the vocabulary projection (memory estimates)."""
        return Head()

    @staticmethod
    def pretrained_part(model: Module, source: type[CheckpointKind]) -> Module:
        """The part of ``model`` that the weights of a ``source`` checkpoint fit
        (``--init-from``): the GPT inside it, for a language model's weights."""
        return model

    @staticmethod
    def dictates(ckpt) -> dict[str, Any]:
        """Training options that a model started from ``ckpt``'s weights must be trained with
        (its weights need them); an option given otherwise is refused."""
        return {}

    @staticmethod
    def upgrade(config: dict[str, Any], state: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A format-1 (config.json, state.json) of this task in today's form
        (:mod:`.upgrade` has done what every task shares)."""
        return config, state

    @staticmethod
    def pretrained_state(state: dict[str, Any]) -> dict[str, Any]:
        """The weights of ``state`` (this kind's model) that start another task's model
        (``--init-from``): all of them, unless the model holds parts only pretraining uses."""
        return state

    @classmethod
    def score_file(cls, ckpt, model: Module, files: list[str], encoding: str,
                   batch_size: int) -> dict[str, Any]:
        """The metrics of ``model`` (read from ``ckpt``) on ``files``; every registered kind
        defines it (tests/train/test_tasks.py checks)."""
        raise NotImplementedError(f"{cls.name}: no file scoring")

    @staticmethod
    def report(where: str, metrics: dict[str, Any]) -> str:
        """One line for :meth:`score_file`'s metrics; every registered kind defines it."""
        raise NotImplementedError("a checkpoint kind reports its own metrics")

    @classmethod
    def explain(cls, ckpt, model: Module, sentences: list[str], names: list[str],
                options: ExplainOptions) -> list[Explanation]:
        """Why ``model`` (read from ``ckpt``) did what it did with each sentence (``names``
        for errors), for ``python -m minigrad_lm.explain``."""
        able = [k.noun for k in KINDS.values()
                if k.explain.__func__ is not CheckpointKind.explain.__func__]  # overridden
        raise ValueError(f"{ckpt.path}: {cls.noun}, which explain does not read (it reads "
                         f"{', '.join(able)})")


    @classmethod
    def check_explain_options(cls, ckpt, options: ExplainOptions) -> None:
        """Refuse the explain flags this kind does not read (a context: QA's alone)."""
        if options.context is not None:
            raise ValueError(f"--context/--context-file: {ckpt.path} is {cls.noun}; only a "
                             "question-answering model reads a context")


def _tokenizer(ckpt):
    tokenizer = ckpt.tokenizer
    if tokenizer is None:
        raise ValueError(f"{ckpt.path}: trained on token ids without a tokenizer; it cannot "
                         "read text files")
    return tokenizer


def _text_ids(ckpt, files: list[str], encoding: str):
    text = "\n".join(load_text(p, encoding) for p in files)
    return encode_text(_tokenizer(ckpt), text, ", ".join(files))


def _token_metrics(name: str, objective: str, loss: float, correct: int, tokens: int) -> dict:
    return {"task": name, "objective": objective, "tokens": tokens, "loss": loss / tokens,
            "perplexity": perplexity(loss / tokens), "accuracy": correct / tokens}


def _token_report(where: str, m: dict[str, Any]) -> str:
    scored = "tokens" if m["objective"] == "next token" else "hidden tokens"
    return (f"{where}: {m['tokens']:,} {scored} | loss {m['loss']:.4f} | perplexity "
            f"{m['perplexity']:.2f} | {m['objective']} accuracy {m['accuracy']:.1%}")


class LMKind(CheckpointKind):
    """A GPT language model: next-token prediction."""

    name = "lm"
    noun = "a language model"
    bare_gpt = True
    report = staticmethod(_token_report)

    @staticmethod
    def upgrade(config, state):
        """Format 1 called a masked language model ``lm`` with a bidirectional model."""
        if not config["model"].get("causal", True):
            return {**config, "task": MaskedLMKind.name}, state
        return config, state

    @classmethod
    def score_file(cls, ckpt, model, files, encoding, batch_size):
        """Loss, perplexity and accuracy of every next token, in consecutive windows."""
        ids = _text_ids(ckpt, files, encoding)
        with no_grad():
            scores = score_lm(model, ids, ckpt.model_config.context_length, batch_size)
        return _token_metrics(cls.name, "next token", *scores)

    @classmethod
    def explain(cls, ckpt, model, sentences, names, options):
        """Attributions of the likeliest next token (or ``options.target``, one token's text)
        to each sentence's last context_length tokens."""
        tokenizer = _tokenizer(ckpt)
        target = None
        if options.target is not None:
            target_ids = tokenizer.encode(options.target)
            if len(target_ids) != 1:
                raise ValueError(f"--target {options.target!r}: encodes to {len(target_ids)} "
                                 "tokens; a next-token target must be exactly one")
            target = int(target_ids[0])
        context = ckpt.model_config.context_length
        vocab = min(tokenizer.vocab_size, ckpt.model_config.vocab_size)
        out = []
        for sentence, name in zip(sentences, names, strict=True):
            try:
                ids = tokenizer.encode(sentence)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            if len(ids) == 0:
                raise ValueError(f"{name} encodes to no tokens")
            out.append(explain_next_token(model, ids[-context:], target, vocab_limit=vocab,
                                          **options.attribution(tokenizer)))
        return out


class MaskedLMKind(CheckpointKind):
    """A bidirectional GPT body trained to fill in hidden tokens (BERT's objective)."""

    name = "mlm"
    noun = "a masked language model"
    bare_gpt = True
    report = staticmethod(_token_report)

    @classmethod
    def score_file(cls, ckpt, model, files, encoding, batch_size):
        """Loss, perplexity and accuracy on 15% of the tokens, hidden as in training (the same
        ones every time the file is scored)."""
        ids = _text_ids(ckpt, files, encoding)
        with no_grad():
            scores = score_masked_lm(model, ids, ckpt.model_config.context_length, batch_size,
                                     _tokenizer(ckpt))
        return _token_metrics(cls.name, "masked", *scores)


class ElectraKind(MaskedLMKind):
    """An :class:`ElectraPretrainer`: the encoder (a bidirectional GPT body, whose weights
    start a classifier) with the generator and the replaced-token head of its pretraining.
    ``evaluate`` scores its generator as a masked language model."""

    name = "electra"
    noun = "an ELECTRA pretrainer"
    bare_gpt = False
    config_class = ElectraConfig
    config_spec = Object({**GPT_SPEC.fields, "generator_layers": Int(1, MAX_SIZE)})

    @staticmethod
    def build(config, extras):
        return ElectraPretrainer(config)

    @staticmethod
    def pretrained_state(state):
        return encoder_state(state)

    @classmethod
    def score_file(cls, ckpt, model, files, encoding, batch_size):
        """The generator's loss, perplexity and accuracy on 15% of the tokens, hidden as in
        training (the encoder itself predicts no tokens)."""
        return {**super().score_file(ckpt, model.generator, files, encoding, batch_size),
                "task": cls.name}


class Word2VecKind(CheckpointKind):
    """A :class:`Word2VecPretrainer`: an encoder whose token embeddings were trained by
    word2vec's continuous bag of words, and the context vectors of that training."""

    name = "word2vec"
    noun = "a word2vec pretrainer"
    # The word vectors move at 1/8 of the head's lr (2 layers): fine-tuned at the full lr, a
    # few thousand sentences overwrite them (MR: 0.793 against 0.777; benchmarks/pretrain.py).
    fine_tuning = {"layer_decay": 0.5}

    @staticmethod
    def build(config, extras):
        return Word2VecPretrainer(config)

    @staticmethod
    def head(config, extras):
        """The context vectors; a word is scored against 1 + NEGATIVES of them, not against
        the whole vocabulary as a language model's token is."""
        return Head(parameters=config.vocab_size * config.d_model, outputs=1 + NEGATIVES)

    @staticmethod
    def pretrained_state(state):
        return word2vec_encoder_state(state, FIRST_WORD_ID)

    @classmethod
    def score_file(cls, ckpt, model, files, encoding, batch_size):
        """The objective and the accuracy against noise words on up to
        :data:`WORD2VEC_SCORED` words of ``files``, their frequencies counted on the files
        (drawn with a fixed seed: the same words every time)."""
        ids = _text_ids(ckpt, files, encoding)
        sampler = CBOWSampler.of(ids, ckpt.model_config.vocab_size, list(range(FIRST_WORD_ID)),
                                 getattr(_tokenizer(ckpt), "sep_id", None))
        n = min(WORD2VEC_SCORED, sampler.expected_centres(ids))
        with no_grad():
            loss, accuracy = score_cbow(model, sampler, ids, n, batch_size,
                                        np.random.default_rng(0))
        return {"task": cls.name, "words": n, "loss": loss, "accuracy": accuracy}

    @staticmethod
    def report(where, m):
        return (f"{where}: {m['words']:,} words | continuous bag of words loss "
                f"{m['loss']:.4f} | true word first among {NEGATIVES + 1}: {m['accuracy']:.1%}")


class ClassifyKind(CheckpointKind):
    """A :class:`SequenceClassifier`: a GPT body, pooling and a linear head."""

    name = "classify"
    noun = "a classifier"
    extras = {"num_classes": Int(2, MAX_CLASSES), "pooling": Str(POOLINGS)}

    @staticmethod
    def build(config, extras):
        return SequenceClassifier(GPT(config), extras["num_classes"], extras["pooling"])

    @staticmethod
    def head(config, extras):
        k = extras["num_classes"]
        return Head(parameters=config.d_model * k + k, outputs=k)

    @staticmethod
    def pretrained_part(model, source):
        return model.body

    @staticmethod
    def upgrade(config, state):
        """Format 1 classifiers from before the choice of pooling pooled by the mean, and
        trained without word dropout when their options lack it."""
        options = state.get("train_config")
        if isinstance(options, dict):
            state = {**state, "train_config": {"word_dropout": 0.0, **options}}
        return {**config, "pooling": config.get("pooling", "mean")}, state

    @classmethod
    def score_file(cls, ckpt, model, files, encoding, batch_size):
        """Loss and accuracy over the labelled rows of ``files`` (read as in training)."""
        rows = load_labeled(files, encoding)
        classes = ckpt.extras["num_classes"]
        if int(rows.labels.max()) >= classes:
            i = int(rows.labels.argmax())
            raise ValueError(f"{rows.names()[i]}: label {int(rows.labels[i])}, but the "
                             f"classifier has {classes} classes")
        ids, lengths, cut = encode_sentences(_tokenizer(ckpt), rows.texts,
                                             ckpt.model_config.context_length,
                                             ckpt.extras["pooling"], rows.names(),
                                             ckpt.truncation)
        with no_grad():
            loss, correct = score_classifier(model, ids, lengths, rows.labels, batch_size)
        n = len(rows.labels)
        return {"task": cls.name, "rows": n, "loss": loss / n, "accuracy": correct / n,
                "cut_to_context": cut}

    @staticmethod
    def report(where, m):
        return f"{where}: {m['rows']:,} rows | loss {m['loss']:.4f} | accuracy {m['accuracy']:.1%}"

    @classmethod
    def explain(cls, ckpt, model, sentences, names, options):
        """Attributions of the predicted class (or ``options.target``, a class number) to each
        sentence's tokens, read as in training (the first context_length)."""
        classes = ckpt.extras["num_classes"]
        target = options.target
        if target is not None and (not target.isdigit() or int(target) >= classes):
            raise ValueError(f"--target {target!r}: a classifier's target is a class number, "
                             f"0..{classes - 1}")
        tokenizer = _tokenizer(ckpt)
        ids, lengths, _ = encode_sentences(tokenizer, sentences, ckpt.model_config.context_length,
                                           ckpt.extras["pooling"], names)
        return [explain_classifier(model, row[:n], None if target is None else int(target),
                                   **options.attribution(tokenizer))
                for row, n in zip(ids, lengths, strict=True)]


class TranslateKind(CheckpointKind):
    """A :class:`Seq2SeqTransformer` trained on parallel text."""

    name = "translate"
    noun = "a translation model"
    config_class = Seq2SeqConfig
    config_spec = SEQ2SEQ_SPEC

    @staticmethod
    def build(config, extras):
        return Seq2SeqTransformer(config)

    @classmethod
    def score_file(cls, ckpt, model, files, encoding, batch_size):
        """Loss and perplexity of the targets given their sources (no label smoothing), and
        the BLEU of the model's translations (beam search, as ``translate`` decodes)."""
        if len(files) != 2:
            raise ValueError(f"{ckpt.path}: a translation model scores --data SOURCE_FILE "
                             f"TARGET_FILE (two line-aligned files), got {len(files)} file(s)")
        sources, targets, lines, empty = read_parallel(*files)
        c, tokenizer = ckpt.model_config, _tokenizer(ckpt)
        src, tgt = encode_lines(tokenizer, sources, c.eos_id), encode_lines(tokenizer, targets)
        for i, line in enumerate(lines):
            if not pair_fits(src[i], tgt[i], c.context_length):
                raise ValueError(f"{files[0]}:{line}: the pair has {len(src[i])} and "
                                 f"{len(tgt[i]) + 1} tokens, more than the model's "
                                 f"{c.context_length}")
        loss, tokens = 0.0, 0
        options = DecodeOptions()
        with no_grad():
            for lo in range(0, len(src), batch_size):
                batch = pad_pairs(range(lo, min(lo + batch_size, len(src))), src, tgt,
                                  c.pad_id, c.bos_id, c.eos_id)
                part_loss, part_tokens = score_translation(model, batch, c.pad_id)
                loss, tokens = loss + part_loss, tokens + part_tokens
            score = bleu(translate_text(model, tokenizer, src, options), targets)
        return {"task": cls.name, "pairs": len(src), "skipped_empty": len(empty),
                "tokens": tokens, "loss": loss / tokens, "perplexity": perplexity(loss / tokens),
                "bleu": score, "beam_size": options.beam_size}

    @staticmethod
    def report(where, m):
        skipped = (f" ({m['skipped_empty']:,} with an empty side skipped)"
                   if m["skipped_empty"] else "")
        return (f"{where}: {m['pairs']:,} pairs{skipped} | loss {m['loss']:.4f} | perplexity "
                f"{m['perplexity']:.2f} | BLEU {m['bleu']:.2f} (beam {m['beam_size']})")

    @classmethod
    def explain(cls, ckpt, model, sentences, names, options):
        """Each sentence's translation (beam search) and its attention, cross-attention over
        the source first."""
        if options.target is not None:
            raise ValueError("--target: a translation is explained by the cross-attention of "
                             "each output token; --target applies to classifiers and language "
                             "models")
        tokenizer = _tokenizer(ckpt)
        sources = encode_lines(tokenizer, sentences, ckpt.model_config.eos_id)
        outputs = translate_ids(model, sources, DecodeOptions(options.beam))
        return [explain_translation(model, src, out, token_text(tokenizer))
                for src, out in zip(sources, outputs, strict=True)]


class QAKind(CheckpointKind):
    """A :class:`QuestionAnswerer`: a GPT body with a span head and an answer head over
    ``answers`` (class 0: "the answer is a span"); with ``fact_tokens`` > 0, a model that
    reads facts of up to that many tokens and has no span head; ``question_match``: the context's
    (or facts') tokens of the question's words are marked (models/qa.py)."""

    name = "qa"
    noun = "a question-answering model"
    extras = {"answers": ListOf(Str(), min_len=1, max_len=MAX_CLASSES),
              "fact_tokens": Int(0, MAX_SIZE), "question_match": Bool()}
    extra_defaults = {"fact_tokens": 0, "question_match": False}
    MAX_ANSWER_TOKENS = 30  # the longest span answer, unless the run said otherwise

    @staticmethod
    def build(config, extras):
        return QuestionAnswerer(GPT(config), len(extras["answers"]), extras["fact_tokens"],
                                extras["question_match"])

    @staticmethod
    def head(config, extras):
        k, d, j = len(extras["answers"]), config.d_model, extras["fact_tokens"]
        match = d if extras["question_match"] else 0
        if j:
            return Head(parameters=d * (j + k) + k + match, outputs=k)
        return Head(parameters=d * (2 + k) + 2 + k + match, outputs=2 + k)

    @staticmethod
    def pretrained_part(model, source):
        """The body; from another question-answering model, what reads the window too (the
        span head and the question-match vector), all but the answer head, whose classes are
        its own data's."""
        return model.reader() if source is QAKind else model.body

    @staticmethod
    def pretrained_state(state):
        return {k: v for k, v in state.items() if not k.startswith("answer.")}

    @staticmethod
    def dictates(ckpt):
        """A span reader starts a span reader, with or without the question match as it was
        trained."""
        if ckpt.extras["fact_tokens"]:
            raise CheckpointError(f"--init-from {ckpt.path}: this question-answering model reads "
                                  "facts; only one that reads token windows (--qa-input tokens) "
                                  "starts another")
        return {"qa_input": "tokens", "question_match": ckpt.extras["question_match"]}

    @classmethod
    def reading(cls, ckpt) -> tuple[int, int]:
        """(stride, longest answer) the run trained with: how its windows are read."""
        trained = ckpt.state.get("train_config") or {}
        stride = trained.get("stride") or max(1, ckpt.model_config.context_length // 2)
        return stride, trained.get("max_answer_tokens") or cls.MAX_ANSWER_TOKENS

    @classmethod
    def score_file(cls, ckpt, model, files, encoding, batch_size):
        """Exact match and F1 (SQuAD's normalisation) of the answers to every question of
        ``files`` (SQuAD JSON or bAbI), and bAbI's accuracy per task."""
        examples = read_qa(files).examples
        stride, longest = cls.reading(ckpt)
        answers = answer_examples(model, _tokenizer(ckpt), ckpt.extras["answers"], examples,
                                  stride, longest, batch_size)
        return {"task": cls.name, **qa_metrics(examples, [a.text for a in answers])}

    @classmethod
    def check_explain_options(cls, ckpt, options):
        """A question needs its context; the chosen answer is what is explained."""
        if ckpt.extras["fact_tokens"]:
            raise ValueError(f"{ckpt.path}: this question-answering model reads facts, and "
                             "attributions are computed for token windows only (models "
                             "trained with --qa-input tokens)")
        if options.context is None:
            raise ValueError(f"{ckpt.path}: {cls.noun} explains the answer to a question about "
                             "a text: give --context TEXT or --context-file FILE")
        if options.target is not None:
            raise ValueError("--target: a question-answering model is explained for the answer "
                             "it chooses (as python -m minigrad_lm.answer prints it)")

    @classmethod
    def explain(cls, ckpt, model, sentences, names, options):
        """Attributions of each question's chosen answer (as ``answer`` chooses it) to the
        tokens of the window it was read from, question and context: of a span's start plus
        end logit, or of a class answer's logit."""
        cls.check_explain_options(ckpt, options)
        tokenizer, answers = _tokenizer(ckpt), ckpt.extras["answers"]
        examples = [QAExample(name, q, options.context, [], [], "span", "", name)
                    for q, name in zip(sentences, names, strict=True)]
        stride, longest = cls.reading(ckpt)
        windows = read_windows(model, tokenizer, answers, examples, stride)
        chosen = predict_answers(model, windows, [options.context] * len(examples), answers,
                                 options.batch, longest)
        out = []
        for i, a in enumerate(chosen):
            row = a.window
            n = int(windows.lengths[row])
            ex = explain_answer(model, windows.ids[row, :n], windows.context_mask()[row, :n],
                                a.tokens, a.answer_class, a.text, a.probability,
                                answer_names=list(answers), matches=windows.matches[row, :n],
                                **options.attribution(tokenizer))
            rows = np.flatnonzero(windows.example == i)
            if len(rows) > 1:
                lo = int(windows.offsets[row, windows.ctx_lo[row], 0])
                ex.note = (f"the context is read in {len(rows)} windows; explained: window "
                           f"{int(np.searchsorted(rows, row)) + 1}, from character {lo}, which "
                           "holds the chosen answer")
            out.append(ex)
        return out

    @staticmethod
    def report(where, m):
        line = (f"{where}: {m['questions']:,} questions | exact match {m['exact_match']:.2f} | "
                f"F1 {m['f1']:.2f}")
        babi = m.get("babi")
        if babi is None:
            return line
        tasks = " ".join(f"{t} {1 - a:.1%}" for t, a in babi["task_accuracy"].items())
        return (f"{line}\nbAbI error per task: {tasks}\nbAbI mean error "
                f"{babi['mean_error']:.1%} over {len(babi['task_accuracy'])} tasks; failed "
                f"(error > 5%): {babi['failed_tasks']}")


KINDS: dict[str, type[CheckpointKind]] = {
    k.name: k for k in (LMKind, MaskedLMKind, ElectraKind, Word2VecKind, ClassifyKind,
                        TranslateKind, QAKind)}
