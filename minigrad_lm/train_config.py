"""The training configuration: one dataclass, the command line and JSON/TOML config files.

Precedence: command line > ``--config FILE`` > (with ``--resume``) the resumed run's own
configuration > the dataclass defaults. Every value is type- and range-checked, and unknown
keys in a config file are refused, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TrainConfig",
    "build_parser",
    "check_fields",
    "read_config_file",
]


@dataclass
class TrainConfig:
    """Every training option; field names are the ``--flags`` with ``_`` for ``-``.

    The defaults train the default run: a 4-layer character-level GPT on the standard
    library's docstrings, in about 4 minutes on 2 CPU cores.
    """

    task: str = "lm"
    data: str | None = None
    val_data: str | None = None
    tokenizer: str = "char"
    out: str = "runs/default"
    device: str = "cpu"
    seed: int = 1337
    max_steps: int = 2000
    decay_steps: int = 2000
    batch_size: int = 32
    grad_accum_steps: int = 1
    context: int = 64
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    norm: str = "pre"
    positional: str = "learned"
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 100
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_batches: int = 16
    log_every: int = 100
    init_from: str | None = None
    peak_flops: float | None = None
    sample_tokens: int = 400
    recompute: str = "none"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: str = "qkv"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check_type(f.name, getattr(self, f.name)))
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if value is not None and not _in_range(value, low, high):
                raise ValueError(f"{_flag(name)} must be {_range_text(low, high)}, got {value}")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{_flag(name)} must be one of {', '.join(choices)}, got "
                    f"{getattr(self, name)!r}"
                )
        if self.min_lr > self.lr:
            raise ValueError(f"--min-lr {self.min_lr} is above --lr {self.lr}")
        if self.task == "classify" and (self.data is None or self.val_data is None):
            raise ValueError("--task classify needs --data TRAIN_FILE and --val-data VAL_FILE")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {
    "task": ("lm", "classify"),
    "tokenizer": ("char", "byte"),
    "norm": ("pre", "post"),
    "positional": ("learned", "sinusoidal"),
    "recompute": ("none", "blocks", "attention"),
}

_INF = math.inf
# name -> (low, high), both inclusive; a half-open end is marked by a nested tuple.
_RANGES: dict[str, tuple[Any, Any]] = {
    "seed": (0, 2**63 - 1),
    "max_steps": (1, _INF),
    "decay_steps": (1, _INF),
    "batch_size": (1, _INF),
    "grad_accum_steps": (1, _INF),
    "context": (1, _INF),
    "n_layer": (1, _INF),
    "n_head": (1, _INF),
    "d_model": (1, _INF),
    "dropout": (0.0, (1.0,)),
    "lr": ((0.0,), _INF),
    "min_lr": (0.0, _INF),
    "warmup_steps": (0, _INF),
    "beta1": (0.0, (1.0,)),
    "beta2": (0.0, (1.0,)),
    "weight_decay": (0.0, _INF),
    "grad_clip": (0.0, _INF),
    "eval_every": (1, _INF),
    "eval_batches": (1, _INF),
    "log_every": (1, _INF),
    "peak_flops": ((0.0,), _INF),
    "sample_tokens": (0, _INF),
    "lora_rank": (0, 65536),
    "lora_alpha": ((0.0,), 1e9),
}


def _in_range(value: float, low: Any, high: Any) -> bool:
    above = value > low[0] if isinstance(low, tuple) else value >= low
    below = value < high[0] if isinstance(high, tuple) else value <= high
    return above and below and not (isinstance(value, float) and math.isnan(value))


def _range_text(low: Any, high: Any) -> str:
    left = f"> {low[0]}" if isinstance(low, tuple) else f">= {low}"
    if high is _INF:
        return left
    right = f"< {high[0]}" if isinstance(high, tuple) else f"<= {high}"
    return f"{left} and {right}"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_HINTS = typing.get_type_hints(TrainConfig)
_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))


def _base_type(name: str) -> type:
    """int, float or str: the field's type without its ``| None``."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _optional(name: str) -> bool:
    return type(None) in typing.get_args(_HINTS[name])


def _check_type(name: str, value: Any) -> Any:
    """``value`` if it fits field ``name`` (an int is accepted for a float); else ValueError."""
    kind = _base_type(name)
    if value is None and _optional(name):
        return None
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    noun = {int: "an integer", float: "a number", str: "a string"}[kind]
    raise ValueError(f"{_flag(name)} must be {noun}, got {value!r}")


def check_fields(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Refuse unknown keys; accept ``max-steps`` for ``max_steps`` as on the command line."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in _FIELD_NAMES:
            raise ValueError(
                f"{source}: unknown option {key!r} (known: {', '.join(_FIELD_NAMES)})"
            )
        out[name] = value
    return out


def read_config_file(path: str) -> dict[str, Any]:
    """Options from a ``.json`` object or a ``.toml`` table (keys as field or flag names)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such config file")
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ValueError(f"{p}: TOML config files need Python 3.11+; use JSON") from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{p}: invalid TOML ({e})") from None
    else:
        raise ValueError(f"{p}: a config file must end in .json or .toml")
    if not isinstance(values, dict):
        raise ValueError(f"{p}: expected a JSON object of options")
    values = check_fields(values, str(p))
    for name, value in values.items():
        try:
            _check_type(name, value)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
    return values


_HELP = {
    "task": "lm: language modelling; classify: fine-tune a sequence classifier",
    "data": "text file, folder of .txt files, or folder with train.bin/val.bin + vocab.json "
    "(lm; default: the standard library's docstrings); TSV/CSV file (classify)",
    "val_data": "validation text or TSV/CSV file (lm default: the last 10%% of --data)",
    "tokenizer": "tokenizer for text data",
    "out": "run folder: checkpoints, metrics.jsonl, train_config.json",
    "device": "cpu, cuda or cuda:N",
    "seed": "seed for initial weights, batches and dropout",
    "max_steps": "optimizer steps to train for (in total, when resuming)",
    "decay_steps": "the learning rate follows a cosine from --lr to --min-lr over this many "
    "steps (warmup included), then stays at --min-lr; it never depends on --max-steps, so a run "
    "stopped early and resumed matches one long run",
    "batch_size": "sequences per micro-batch on each rank: a step trains on batch-size x "
    "grad-accum-steps x ranks sequences",
    "grad_accum_steps": "micro-batches whose gradients are accumulated before each optimizer "
    "step (a larger batch in the same memory)",
    "context": "tokens per sequence (the model's context length)",
    "n_layer": "Transformer layers",
    "n_head": "attention heads per layer",
    "d_model": "model width",
    "dropout": "dropout probability",
    "norm": "pre: LayerNorm before each sublayer (GPT-2); post: after (original Transformer)",
    "positional": "position encoding",
    "lr": "peak learning rate",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_steps": "steps of linear learning-rate warmup",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "weight_decay": "AdamW decoupled weight decay (Linear weights only)",
    "grad_clip": "clip the global gradient norm to this (0: off)",
    "eval_every": "evaluate and save a checkpoint every N steps",
    "eval_batches": "batches (as large as a training step's) of train and of val text per "
    "evaluation (lm; classify evaluates the whole val file and this many batches of train rows)",
    "log_every": "print a log line every N steps",
    "init_from": "start from the weights of this language-model checkpoint (run folder or "
    "checkpoint folder)",
    "peak_flops": "peak FLOP/s for MFU (default: a quick matmul measurement on the device)",
    "sample_tokens": "length of the sample printed at the end (lm; 0: none)",
    "recompute": "activations recomputed in backward instead of kept: blocks keeps only each "
    "layer's input (config M at context 512: a quarter of the step memory for about a quarter "
    "more time), attention drops the attention probabilities (grows with context squared)",
    "lora_rank": "train rank-R LoRA adapters on --lora-targets instead of the whole model "
    "(the GPT body is frozen; a classifier's head still trains; 0: off); checkpoints then also "
    "hold adapter_model.safetensors + adapter_config.json in the PEFT layout",
    "lora_alpha": "LoRA scale: the update is (alpha / rank) B A",
    "lora_targets": "comma-separated Linear layers to adapt: qkv (attention's packed "
    "query/key/value), out (attention output), fc and proj (feed-forward)",
}


_METAVARS = {"data": "PATH", "val_data": "PATH", "out": "DIR", "device": "DEVICE",
             "init_from": "DIR"}
_TYPE_METAVARS = {int: "N", float: "X"}


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Flags for every TrainConfig field, absent from the result unless given."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, argument_default=argparse.SUPPRESS
    )
    for name in _FIELD_NAMES:
        kind = _base_type(name)
        default = getattr(TrainConfig, name)
        help_text = _HELP[name] if default is None else f"{_HELP[name]} (default: {default})"
        parser.add_argument(
            _flag(name),
            dest=name,
            type=kind,
            choices=CHOICES.get(name),
            metavar=None if name in CHOICES else _METAVARS.get(name, _TYPE_METAVARS.get(kind)),
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
