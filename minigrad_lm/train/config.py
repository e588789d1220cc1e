"""The training configuration: one dataclass, the command line and JSON/TOML config files.

Each option is defined once, as a :class:`TrainConfig` field made by :func:`option`: its type
(the annotation), default, --help text, range, choices and metavar together; a default that
depends on the task comes from the task's ``defaults`` (:mod:`.tasks`). Precedence: command
line > ``--config FILE`` > (with ``--resume``) the resumed run's own configuration > the task's
defaults > the field defaults. Every value is type- and range-checked, and unknown keys in a
config file are refused, so a typo never silently falls back to a default. Once built, a
TrainConfig is resolved: a field typed without ``None`` holds a value.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine import amp
from ..data.tokenizer import TOKENIZER_KINDS
from ..data.trained_tokenizer import KINDS as LEARNED_TOKENIZERS
from ..io.untrusted import InputError, parse_json, read_regular_bytes, short
from ..models.classifier import POOLINGS
from ..models.config import POSITIONALS, RECOMPUTE
from .tasks import DEFAULT_TASK, TASKS, task_name
from .tasks.common import flag as _flag

__all__ = ["LEARNED_VOCAB_OPTIONS", "TASK_OPTIONS", "TrainConfig", "applicable", "build_parser",
           "check_fields", "option", "read_config_file"]

INF = math.inf
INT_MAX = 2**63 - 1
TASK_HELP = "; ".join(f"{t.name}: {t.summary}" for t in TASKS.values())


def option(default: Any, help: str, *, range: tuple | None = None,
           choices: tuple[str, ...] | None = None, metavar: str | None = None) -> Any:
    """A TrainConfig field. ``range`` is (low, high), both inclusive, an exclusive end written
    as a 1-tuple: ``(0.0, (1.0,))`` is [0, 1). A field typed without ``None`` whose default is
    None is filled in by every task's ``defaults``."""
    return dataclasses.field(default=default, metadata={
        "help": help, "range": range, "choices": choices, "metavar": metavar})


@dataclass
class TrainConfig:
    """Every training option; field names are the ``--flags`` with ``_`` for ``-``.

    The defaults train the default run: a 4-layer character-level GPT on the standard
    library's docstrings, in about 6 minutes on 2 CPU cores.
    """

    task: str = option(DEFAULT_TASK, TASK_HELP)
    data: str | list[str] | None = option(
        None, "lm: text file(s), folder of .txt files, or folder with train.bin/val.bin + "
        "vocab.json (default: the standard library's docstrings); classify: a TSV/CSV file "
        "(sentence/text and label columns), or one file of sentences per class (labels 0, 1, ... "
        "in the order given); translate: SOURCE_FILE TARGET_FILE, line-aligned, gzip or not; qa: "
        "SQuAD v1.1 JSON file(s) or bAbI task files (qaN_train.txt), several trained together",
        metavar="PATH")
    val_data: str | list[str] | None = option(
        None, "validation text, TSV/CSV file or files per class (lm default: the last 10%% of "
        "--data); translate: SOURCE_FILE TARGET_FILE", metavar="PATH")
    tokenizer: str = option(
        None, "char or byte; word or bpe: a vocabulary learned from the training text",
        choices=TOKENIZER_KINDS)
    out: str = option(
        "runs/default", "run folder: checkpoints, metrics.jsonl, train_config.json", metavar="DIR")
    device: str = option("cpu", "cpu, cuda or cuda:N", metavar="DEVICE")
    seed: int = option(1337, "seed for initial weights, batches and dropout", range=(0, INT_MAX))
    max_steps: int | None = option(
        None, "optimizer steps to train for (in total, when resuming)", range=(1, INF))
    decay_steps: int | None = option(
        None, "the learning rate follows a cosine from --lr to --min-lr over this many steps "
        "(warmup included), then stays at --min-lr; it never depends on --max-steps, so a run "
        "stopped early and resumed matches one long run", range=(1, INF))
    batch_size: int = option(
        None, "sequences per micro-batch on each rank: a step trains on batch-size x "
        "grad-accum-steps x ranks sequences", range=(1, INF))
    grad_accum_steps: int = option(
        1, "micro-batches whose gradients are accumulated before each optimizer step (a larger "
        "batch in the same memory)", range=(1, INF))
    context: int = option(None, "tokens per sequence (the model's context length)", range=(1, INF))
    n_layer: int = option(None, "Transformer layers", range=(1, INF))
    n_head: int = option(4, "attention heads per layer", range=(1, INF))
    d_model: int = option(None, "model width", range=(1, INF))
    dropout: float = option(None, "dropout probability", range=(0.0, (1.0,)))
    norm: str = option(
        "pre", "pre: LayerNorm before each sublayer (GPT-2); post: after (original Transformer)",
        choices=("pre", "post"))
    positional: str | None = option(
        None, "position encoding: learned or sinusoidal vectors added to the tokens, or alibi "
        "(each head's scores biased by distance)", choices=POSITIONALS)
    lr: float = option(None, "peak learning rate", range=((0.0,), INF))
    min_lr: float = option(None, "learning rate at the end of the cosine decay", range=(0.0, INF))
    warmup_steps: int = option(None, "steps of linear learning-rate warmup", range=(0, INF))
    beta1: float = option(0.9, "AdamW beta1", range=(0.0, (1.0,)))
    beta2: float = option(None, "AdamW beta2", range=(0.0, (1.0,)))
    weight_decay: float = option(
        None, "AdamW decoupled weight decay on every parameter of 2+ dimensions (matmul weights, "
        "embeddings), none on biases and norm gains", range=(0.0, INF))
    grad_clip: float = option(
        1.0, "clip the global gradient norm to this (0: off)", range=(0.0, INF))
    eval_every: int | None = option(
        None, "evaluate and save a checkpoint every N steps", range=(1, INF))
    eval_batches: int = option(
        16, "batches (as large as a training step's) of train and of val text per evaluation (lm; "
        "mlm: batches of 32 windows, whatever --batch-size; classify evaluates the whole val file "
        "and this many batches of train rows)",
        range=(1, INF))
    log_every: int = option(None, "print a log line every N steps", range=(1, INF))
    init_from: str | None = option(
        None, "start from the weights of this language-model checkpoint (run folder or checkpoint "
        "folder)", metavar="DIR")
    peak_flops: float | None = option(
        None, "peak FLOP/s for MFU (default: a quick matmul measurement on the device)",
        range=((0.0,), INF))
    sample_tokens: int | None = option(
        None, "lm: length of the sample printed at the end (0: none)", range=(0, INF))
    epochs: int | None = option(
        None, "classify: passes over the training rows (each in a new seeded order), instead of "
        "--max-steps; translate: passes over the token batches; qa: over the training windows",
        range=(1, INF))
    encoding: str = option("utf-8", "text encoding of --data and --val-data files (e.g. latin-1)")
    val_every_nth: int | None = option(
        None, "hold out lines N, 2N, 3N, ... of each --data file for validation (qa: SQuAD "
        "articles N, 2N, ...)", range=(2, INF))
    vocab_size: int | None = option(
        None, "word/bpe: the most tokens in the learned vocabulary (default: word 30000, bpe 8000)",
        range=(5, INF))
    min_count: int | None = option(
        None, "word/bpe: leave out words seen fewer times than this (default: 1)",
        range=(1, INF))
    lowercase: bool | None = option(
        None, "word/bpe: lower-case text before tokenizing (default: no)")
    attention: str = option(
        None, "classify: bidirectional (an encoder: each token sees the whole sentence, padding "
        "masked) or causal (a GPT body); lm: causal (next-token prediction) or bidirectional (a "
        "masked language model, BERT's pretraining, for --init-from of a classifier)",
        choices=("causal", "bidirectional"))
    mask_prob: float | None = option(
        None, "lm with --attention bidirectional: the share of tokens hidden and predicted (of "
        "them 80%% become [MASK], 10%% a random token, 10%% stay)", range=((0.0,), (1.0,)))
    pooling: str | None = option(
        None, "classify: mean of the real tokens' states, max (each feature's largest over "
        "them), cls (a leading [CLS] token; needs bidirectional attention and a word/bpe "
        "tokenizer) or last (the last real token)",
        choices=POOLINGS)
    word_dropout: float | None = option(
        None, "classify: the probability that a training sentence's word is replaced by [UNK] "
        "(default: 0.3 with a word or bpe vocabulary, as DAN on SST; 0 with char or byte)",
        range=(0.0, (1.0,)))
    truncation: str | None = option(
        None, "classify: which tokens of a text longer than --context are kept: head (the first "
        "ones) or head_tail (the first quarter and the last three quarters of the context: a "
        "review's verdict is often at its end) (default: head)")
    layer_decay: float | None = option(
        None, "classify: each Transformer layer below the top learns at this times the lr of the "
        "one above it, the embeddings lowest, the head at --lr (default: 1, one lr for all)",
        range=((0.0,), 1.0))
    generator_layers: int | None = option(
        None, "electra: layers of the generator, which shares the encoder's embeddings "
        "(default: 1)", range=(1, INF))
    token_cache: str | None = option(
        None, "lm, mlm, electra with a word or bpe vocabulary: the folder of token caches (the "
        "text tokenized once, reused while it and the tokenizer are unchanged; default: "
        "token_cache/ beside the --out folder)", metavar="DIR")
    recompute: str | None = option(
        None, "activations recomputed in backward instead of kept: blocks keeps only each "
        "layer's input (config M at context 512: a quarter of the step memory for about a quarter "
        "more time), attention drops the attention probabilities (grows with context squared)",
        choices=RECOMPUTE)
    precision: str = option(
        "fp32", "fp16: mixed precision (float16 GEMMs and attention, float32 master weights, "
        "optimizer state and reductions, dynamic loss scaling; the log line shows the scale and "
        "the steps skipped on overflow); on the CPU it checks numerics and is not faster; bf16 "
        "is refused (no bfloat16 arithmetic in NumPy or CuPy)", choices=amp.PRECISIONS)
    lora_rank: int | None = option(
        None, "train rank-R LoRA adapters on --lora-targets instead of the whole model (the GPT "
        "body is frozen; a classifier's head still trains; 0: off); checkpoints then also hold "
        "adapter_model.safetensors + adapter_config.json in the PEFT layout", range=(0, 65536))
    lora_alpha: float | None = option(
        None, "LoRA scale: the update is (alpha / rank) B A", range=((0.0,), 1000000000.0))
    lora_targets: str | None = option(
        None, "comma-separated Linear layers to adapt: qkv (attention's packed query/key/value), "
        "out (attention output), fc and proj (feed-forward)")
    d_ff: int | None = option(
        None, "translate: feed-forward width (default: 4 x --d-model)", range=(1, INF))
    embeddings: str | None = option(
        None, "translate: one embedding table for source and target, or one each (the output "
        "layer is tied to the target's)", choices=("shared", "separate"))
    batch_tokens: int | None = option(
        None, "translate: tokens per batch (source + target, padding included); --batch-size "
        "counts such batches per micro-batch", range=(1, INF))
    label_smoothing: float | None = option(
        None, "translate: label smoothing of the training loss", range=(0.0, (1.0,)))
    beam_size: int | None = option(
        None, "translate: beam size of the val BLEU decoding (1: greedy)",
        range=(1, INF))
    length_penalty: float | None = option(
        None, "translate: beam hypotheses are ranked by log p / length ** "
        "this", range=(0.0, INF))
    stride: int | None = option(
        None, "qa: tokens between the starts of the overlapping windows a long context is read in "
        "(default: half of --context)", range=(1, INF))
    max_answer_tokens: int | None = option(
        None, "qa: the longest span answer, in tokens", range=(1, INF))
    qa_input: str | None = option(
        None, "qa: how a context is read: 'tokens' ([CLS] question [SEP] context windows, "
        "which span answers need) or 'facts' (one unit per statement, the question first and "
        "then the facts from the latest back; --context then counts units). Default: facts "
        "when every answer is a class answer (bAbI), tokens otherwise",
        choices=("tokens", "facts"))
    question_match: bool | None = option(
        None, "qa: mark each context (or fact) token of a word the question holds (the "
        "exact-match feature of DrQA), a learned vector added to its embedding (default: yes "
        "for token windows, no for facts)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check_type(f.name, getattr(self, f.name)))
        _check_choice("task", self.task)
        self.task = task_name(self.to_dict())
        task = TASKS[self.task]
        for name in TASK_OPTIONS:
            if getattr(self, name) is not None and name not in task.options:
                owners = " or ".join(t.name for t in TASKS.values() if name in t.options)
                raise ValueError(f"{_flag(name)} applies to --task {owners}")
        no_length = all(getattr(self, name) is None for name in RUN_LENGTH)
        for name, value in task.defaults.items():
            if getattr(self, name) is None and (name not in RUN_LENGTH or no_length):
                setattr(self, name, value)
        _check_vocabulary_options(self)
        unset = [name for name in PER_TASK if getattr(self, name) is None]
        if unset:
            raise ValueError(f"--task {self.task} gives no default for {_flag(unset[0])}")
        for name in _RANGES:
            _check_range(name, getattr(self, name))
        for name in CHOICES:
            if getattr(self, name) is not None or not _optional(name):
                _check_choice(name, getattr(self, name))
        if self.min_lr > self.lr:
            raise ValueError(f"--min-lr {self.min_lr} is above --lr {self.lr}")
        if self.precision == "bf16":
            raise ValueError(f"--precision bf16: {amp.NO_BFLOAT16}")
        if self.val_data is not None and self.val_every_nth is not None:
            raise ValueError("--val-data and --val-every-nth both say where validation comes "
                             "from: choose one")
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError(f"--epochs {self.epochs} and --max-steps {self.max_steps} both set "
                             "the length of the run: choose one")
        task.check(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_FIELD_NAMES = tuple(_FIELDS)
_HINTS = typing.get_type_hints(TrainConfig)
CHOICES = {"task": tuple(TASKS), **{name: f.metadata["choices"] for name, f in _FIELDS.items()
                                    if f.metadata["choices"]}}
_RANGES = {name: f.metadata["range"] for name, f in _FIELDS.items() if f.metadata["range"]}
# Typed without None, default None: filled in by the task.
PER_TASK = tuple(name for name, f in _FIELDS.items()
                 if f.default is None and type(None) not in typing.get_args(_HINTS[name]))
RUN_LENGTH = ("max_steps", "epochs")  # a task's defaults give one: its run's length
# Options of some tasks only (default None): refused, when given, by the others.
TASK_OPTIONS = tuple(dict.fromkeys(name for t in TASKS.values() for name in t.options))
# Options of a learned (word or bpe) vocabulary, refused with a char or byte tokenizer, and
# the defaults of those that have one.
LEARNED_VOCAB_OPTIONS = ("vocab_size", "min_count", "lowercase")
LEARNED_VOCAB_DEFAULTS = {"min_count": 1, "lowercase": False}
# What an option left at None means, for the tasks without a default for it.
_NONE_MEANS = {"decay_steps": "the whole run", "eval_every": "twice an epoch",
               "positional": "alibi for token windows, learned for facts"}


def _check_vocabulary_options(cfg: TrainConfig) -> None:
    """Refuse an option of a learned vocabulary given with a char or byte tokenizer (it would
    change nothing); fill in their defaults for a word or bpe one."""
    if cfg.tokenizer in LEARNED_TOKENIZERS:
        for name, value in LEARNED_VOCAB_DEFAULTS.items():
            if getattr(cfg, name) is None:
                setattr(cfg, name, value)
        return
    for name in LEARNED_VOCAB_OPTIONS:
        if getattr(cfg, name) is not None:
            raise ValueError(f"{_flag(name)} applies to a learned vocabulary (--tokenizer "
                             f"{' or '.join(LEARNED_TOKENIZERS)}), not --tokenizer "
                             f"{cfg.tokenizer}")


def applicable(values: dict[str, Any]) -> dict[str, Any]:
    """Options ``values`` (a saved run's) less those their task or tokenizer never read: an
    older run saved every option, and given now they would be refused."""
    task = TASKS[task_name(values)]
    tokenizer = values.get("tokenizer") or task.defaults.get("tokenizer")
    return {k: v for k, v in values.items()
            if (k not in TASK_OPTIONS or k in task.options)
            and (k not in LEARNED_VOCAB_OPTIONS or tokenizer in LEARNED_TOKENIZERS)}


def _check_choice(name: str, value: Any) -> None:
    if value not in CHOICES[name]:
        raise ValueError(f"{_flag(name)} must be one of {', '.join(CHOICES[name])}, got "
                         f"{value!r}")


def _in_range(value: float, low: Any, high: Any) -> bool:
    """Inside the bounds and finite: an infinite --lr passes any lower bound, then the run
    dies at its first steps."""
    above = value > low[0] if isinstance(low, tuple) else value >= low
    below = value < high[0] if isinstance(high, tuple) else value <= high
    return above and below and not (isinstance(value, float) and not math.isfinite(value))


def _range_text(low: Any, high: Any) -> str:
    left = f"> {low[0]}" if isinstance(low, tuple) else f">= {low}"
    if high is INF:
        return f"a finite number {left}"
    right = f"< {high[0]}" if isinstance(high, tuple) else f"<= {high}"
    return f"{left} and {right}"


def _check_range(name: str, value: Any) -> None:
    if name not in _RANGES or value is None:
        return
    low, high = _RANGES[name]
    if _base_type(name) is int and high is INF:
        high = INT_MAX  # an integer option becomes a NumPy integer somewhere
    if not _in_range(value, low, high):
        raise ValueError(f"{_flag(name)} must be {_range_text(low, high)}, got {short(value)}")


PATH_LISTS = ("data", "val_data")  # one path, or several (one file per class)


def _base_type(name: str) -> type:
    """int, float, bool or str: the field's type without its ``| None`` (and, for the path
    options, without their ``| list[str]``)."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _optional(name: str) -> bool:
    """Whether ``name`` may be given as None (unset: a task's default fills it)."""
    return type(None) in typing.get_args(_HINTS[name]) or name in PER_TASK


def _check_type(name: str, value: Any, called: str | None = None) -> Any:
    """``value`` if it fits field ``name`` (an int is accepted for a float); else a ValueError
    calling it ``called`` (its flag by default)."""
    kind = _base_type(name)
    if value is None and _optional(name):
        return None
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if name in PATH_LISTS and isinstance(value, list) and value \
            and all(isinstance(v, str) for v in value):
        return value[0] if len(value) == 1 else value
    noun = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]
    if name in PATH_LISTS:
        noun = "a path or a list of paths"
    raise ValueError(f"{called or _flag(name)} must be {noun}, got {short(value)}")


def check_fields(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Refuse unknown keys and values of the wrong type, naming ``source`` (a file) and the
    key; accept ``max-steps`` for ``max_steps`` as on the command line."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in _FIELD_NAMES:
            raise ValueError(
                f"{source}: unknown option {short(key)} (known: {', '.join(_FIELD_NAMES)})"
            )
        out[name] = _check_type(name, value, f"{source}: key {short(key)}")
    return out


# A config file holds a few dozen options.
CONFIG_FILE_BYTES = 1 << 20


def read_config_file(path: str) -> dict[str, Any]:
    """Options from a ``.json`` object or a ``.toml`` table (keys as field or flag names)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise InputError(f"{p}: a config file must end in .json or .toml")
    raw = read_regular_bytes(p, CONFIG_FILE_BYTES, "config file")
    if suffix == ".json":
        values = parse_json(raw, str(p))
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise InputError(f"{p}: TOML config files need Python 3.11+; use JSON") from None
        try:
            values = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise InputError(f"{p}: not UTF-8 (bad byte at offset {e.start})") from None
        except (tomllib.TOMLDecodeError, RecursionError) as e:
            why = str(e) if isinstance(e, tomllib.TOMLDecodeError) else "nested too deeply"
            raise InputError(f"{p}: invalid TOML ({why})") from None
    if not isinstance(values, dict):
        raise InputError(f"{p}: expected a JSON object of options")
    values = check_fields(values, str(p))
    for name, value in values.items():
        try:
            _check_type(name, value)
            _check_range(name, value)
        except ValueError as e:
            raise InputError(f"{p}: {e}") from None
    return values


def _task_default(task, name: str) -> Any:
    """Task ``task``'s default of option ``name`` in words, or None."""
    if name in task.defaults:
        return task.defaults[name]
    other = RUN_LENGTH[1 - RUN_LENGTH.index(name)] if name in RUN_LENGTH else None
    if name == RUN_LENGTH[0] and other in task.defaults:
        return f"{_flag(other)} {task.defaults[other]}"
    if other is None:
        return _NONE_MEANS.get(name)
    return None


def _default_text(name: str) -> str:
    """`` (default: X)``, or the default of each task where they differ."""
    default = getattr(TrainConfig, name)
    per_task = {t.name: _task_default(t, name) for t in TASKS.values()}
    per_task = {k: v for k, v in per_task.items() if v is not None}
    if any(name in t.defaults for t in TASKS.values()):
        return " (default: " + "; ".join(f"{t} {v}" for t, v in per_task.items()) + ")"
    return "" if default is None else f" (default: {default})"


_TYPE_METAVARS = {int: "N", float: "X"}


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Flags for every TrainConfig field, absent from the result unless given."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, argument_default=argparse.SUPPRESS
    )
    for name in _FIELD_NAMES:
        kind = _base_type(name)
        help_text = f"{_FIELDS[name].metadata['help']}{_default_text(name)}"
        if kind is bool:
            parser.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction,
                                help=help_text)
            continue
        parser.add_argument(
            _flag(name),
            dest=name,
            type=kind,
            nargs="+" if name in PATH_LISTS else None,
            choices=CHOICES.get(name),
            metavar=None if name in CHOICES else (_FIELDS[name].metadata["metavar"]
                                                  or _TYPE_METAVARS.get(kind)),
            help=help_text,
        )
    parser.add_argument(
        "--config", metavar="FILE", default=None, help="JSON or TOML file of options"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="continue the run in --out from its latest checkpoint",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=False,
        help="start a new run in an --out folder that already holds one (deleting it)",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        default=False,
        help="data-parallel training across the processes started by mpiexec (needs mpi4py)",
    )
    return parser
