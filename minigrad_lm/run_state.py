"""Checkpoints of a training run: which files they hold and how models come back out of them.

A run folder (``--out DIR``) holds ``latest/`` and ``best/`` checkpoint folders, written with
:func:`minigrad_lm.checkpoint.write_checkpoint_dir` so a crash mid-save never loses the previous
one, plus ``metrics.jsonl`` (one JSON record per line) and ``train_config.json``. A checkpoint
folder holds only safetensors and JSON, never a pickle:

- ``model.safetensors``: the weights (``state_dict()`` names);
- ``config.json``: format tag, task (``lm``, ``classify`` or ``translate``), model config (GPT
  or encoder-decoder), number of classes;
- ``tokenizer.json``: the tokenizer's ``to_dict()``, or ``{"type": "external", "vocab_size": N}``
  for token ids that came without a tokenizer;
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW moment buffers, its step and options;
- ``state.json``: step, every random state needed to continue exactly, best val loss and the
  training configuration;
- ``checksums.json``: the SHA-256 of every other file. The formats catch truncation and foreign
  files, but a flipped byte inside the weights would load silently without it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from .checkpoint import (
    CheckpointError,
    atomic_write_text,
    json_text,
    load_safetensors,
    read_json,
    resolve_checkpoint_dir,
    safetensors_bytes,
    write_checkpoint_dir,
)
from .bpe import GPT2Tokenizer, has_tokenizer_files
from .data import tokenizer_from_dict
from .models import GPT, GPTConfig, Seq2SeqConfig, Seq2SeqTransformer, SequenceClassifier
from .models.classifier import POOLINGS
from .models.hf_gpt2 import config_from_hf, is_hf_gpt2_dir, read_gpt2_state
from .nn import Module

__all__ = [
    "BEST",
    "LATEST",
    "METRICS",
    "Checkpoint",
    "checkpoint_files",
    "external_tokenizer_dict",
    "find_checkpoint",
    "make_model",
    "read_checkpoint",
    "read_metrics",
    "run_has_checkpoint",
    "save_checkpoint",
    "truncate_metrics",
]

FORMAT = "minigrad_lm.checkpoint"
VERSION = 1
LATEST, BEST = "latest", "best"
METRICS = "metrics.jsonl"
CHECKSUMS = "checksums.json"
TASKS = ("lm", "classify", "translate")
MODEL_CONFIGS = {"lm": GPTConfig, "classify": GPTConfig, "translate": Seq2SeqConfig}


def external_tokenizer_dict(vocab_size: int) -> dict[str, Any]:
    """Stands in for a tokenizer when token ids came without one (``vocab.json`` with a size)."""
    return {"type": "external", "vocab_size": vocab_size}


def make_model(task: str, config: GPTConfig | Seq2SeqConfig, num_classes: int | None = None,
               pooling: str = "mean") -> Module:
    """A fresh GPT for ``lm``, a :class:`SequenceClassifier` on a fresh GPT body, or a
    :class:`Seq2SeqTransformer` for ``translate``."""
    if task == "translate":
        return Seq2SeqTransformer(config)
    body = GPT(config)
    return body if task == "lm" else SequenceClassifier(body, num_classes, pooling)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_files(
    model: Module,
    *,
    task: str,
    model_config: GPTConfig,
    tokenizer_dict: dict[str, Any],
    num_classes: int | None,
    optimizer: Any,
    state: dict[str, Any],
    pooling: str | None = None,
) -> dict[str, bytes]:
    """Everything one checkpoint folder holds, as file name -> bytes."""
    opt = optimizer.state_dict()
    config = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "model": model_config.to_dict(),
        "num_classes": num_classes,
    }
    if pooling is not None:
        config["pooling"] = pooling
    optimizer_meta = {"step": opt["step"], "param_groups": opt["param_groups"]}
    files = {
        "model.safetensors": safetensors_bytes(dict(model.state_dict())),
        "config.json": (json_text(config) + "\n").encode(),
        "tokenizer.json": (json_text(tokenizer_dict) + "\n").encode(),
        "optimizer.safetensors": safetensors_bytes(opt["buffers"]),
        "optimizer.json": (json_text(optimizer_meta) + "\n").encode(),
        "state.json": (json_text(state) + "\n").encode(),
    }
    checksums = {name: _sha256(data) for name, data in files.items()}
    files[CHECKSUMS] = (json_text(checksums) + "\n").encode()
    return files


def save_checkpoint(run_dir: str, files: dict[str, bytes], best: bool) -> None:
    """Write ``run_dir/latest`` (and ``run_dir/best`` too when ``best``), each crash-safely."""
    write_checkpoint_dir(os.path.join(run_dir, LATEST), files)
    if best:
        write_checkpoint_dir(os.path.join(run_dir, BEST), files)


# --------------------------------------------------------------------------------------------
# Finding and reading
# --------------------------------------------------------------------------------------------


def _is_checkpoint(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json"))


def run_has_checkpoint(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a ``latest`` or ``best`` checkpoint (or its crash leftover)."""
    return any(
        os.path.isdir(os.path.join(run_dir, name + suffix))
        for name in (LATEST, BEST)
        for suffix in ("", ".old")
    )


def find_checkpoint(path: str, prefer: tuple[str, ...] = (BEST, LATEST)) -> str:
    """The checkpoint folder that ``path`` means: itself, or a run folder's ``best``/``latest``.

    A folder that a crash left as ``name.old`` is found under its plain name.
    """
    if os.path.isfile(path):
        raise CheckpointError(
            f"{path}: is a file; give a checkpoint folder (a run folder, or its best/ or latest/)"
        )
    if _is_checkpoint(path):
        return path
    if os.path.isdir(path):
        for name in prefer:
            try:
                return resolve_checkpoint_dir(os.path.join(path, name))
            except CheckpointError:
                continue
        raise CheckpointError(
            f"{path}: no checkpoint here (no config.json, no {' or '.join(prefer)} folder)"
        )
    return resolve_checkpoint_dir(path)  # a plain name whose write was cut between renames


def _read_checksums(folder: str) -> dict[str, str]:
    name = os.path.join(folder, CHECKSUMS)
    if not os.path.exists(name):
        raise CheckpointError(f"{folder}: incomplete checkpoint (no {CHECKSUMS})")
    sums = read_json(name)
    if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
        raise CheckpointError(f"{name}: expected an object of file name -> SHA-256")
    return sums


def _verify(folder: str, fname: str, checksums: dict[str, str]) -> None:
    """Refuse a file whose bytes are not the ones that were saved."""
    path = os.path.join(folder, fname)
    if fname not in checksums:
        raise CheckpointError(f"{path}: not listed in {CHECKSUMS}")
    with open(path, "rb") as f:
        actual = _sha256(f.read())
    if actual != checksums[fname]:
        raise CheckpointError(f"{path}: corrupted (its SHA-256 does not match {CHECKSUMS})")


@dataclass
class Checkpoint:
    """What a checkpoint folder says about itself; weights and optimizer are read on demand."""

    path: str
    task: str
    model_config: GPTConfig | Seq2SeqConfig
    num_classes: int | None
    tokenizer_dict: dict[str, Any]
    state: dict[str, Any]
    checksums: dict[str, str]
    pooling: str = "mean"

    @property
    def tokenizer(self):
        """The tokenizer, or None when the model was trained on external token ids."""
        if self.tokenizer_dict.get("type") == "external":
            return None
        return tokenizer_from_dict(self.tokenizer_dict)

    def _safetensors(self, fname: str):
        tensors, _ = load_safetensors(os.path.join(self.path, fname))
        _verify(self.path, fname, self.checksums)
        return tensors

    def load_weights(self, model: Module) -> None:
        """Copy the weights into ``model`` in place (names, shapes and dtypes checked)."""
        name = os.path.join(self.path, "model.safetensors")
        if is_hf_gpt2_dir(self.path):
            model.load_state_dict(read_gpt2_state(self.path)[1])
            return
        tensors = self._safetensors("model.safetensors")
        try:
            model.load_state_dict(tensors)
        except KeyError as e:
            raise CheckpointError(f"{name}: does not fit config.json ({e.args[0]})") from None
        except ValueError as e:
            raise CheckpointError(f"{name}: does not fit config.json ({e})") from None

    def build_model(self, device: str = "cpu") -> Module:
        """The model with the checkpoint's weights, on ``device``, in eval mode."""
        model = make_model(self.task, self.model_config, self.num_classes, self.pooling)
        model.to(device)
        self.load_weights(model)
        return model.eval()

    def load_optimizer(self, optimizer: Any) -> None:
        """Restore AdamW's buffers and step count; its options (lr, betas, ...) stay as set."""
        buffers = self._safetensors("optimizer.safetensors")
        meta = _read_verified_json(self.path, "optimizer.json", self.checksums)
        step = meta.get("step") if isinstance(meta, dict) else None
        where = os.path.join(self.path, "optimizer.safetensors")
        if not isinstance(step, int) or step < 0:
            raise CheckpointError(f"{self.path}/optimizer.json: expected {{'step': int, ...}}")
        groups = {f"g{i}" for i in range(len(optimizer.param_groups))}
        stray = sorted(k for k in buffers if k.split(".", 1)[0] not in groups)
        if stray:
            raise CheckpointError(
                f"{where}: buffers {stray} belong to no parameter group of this model's "
                f"optimizer ({len(groups)} groups)"
            )
        try:
            optimizer.load_state_dict(
                {"step": step, "param_groups": optimizer.param_groups, "buffers": buffers}
            )
        except ValueError as e:
            raise CheckpointError(f"{where}: {e}") from None


def _read_verified_json(folder: str, fname: str, checksums: dict[str, str]) -> Any:
    value = read_json(os.path.join(folder, fname))
    _verify(folder, fname, checksums)
    return value


def _read_config(folder: str, checksums: dict[str, str]
                 ) -> tuple[str, GPTConfig | Seq2SeqConfig, int | None, str]:
    name = os.path.join(folder, "config.json")
    config = _read_verified_json(folder, "config.json", checksums)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{name}: not a minigrad_lm checkpoint config")
    if config.get("version") != VERSION:
        raise CheckpointError(
            f"{name}: checkpoint format version {config.get('version')!r}, this code reads "
            f"version {VERSION}"
        )
    task = config.get("task")
    if task not in TASKS:
        raise CheckpointError(f"{name}: unknown task {task!r}")
    model = config.get("model")
    try:
        model_config = MODEL_CONFIGS[task].from_dict(model if isinstance(model, dict) else {})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: bad model config ({e})") from None
    num_classes = config.get("num_classes")
    if task == "classify" and (not isinstance(num_classes, int) or num_classes < 2):
        raise CheckpointError(f"{name}: a classifier needs num_classes >= 2, got {num_classes!r}")
    pooling = config.get("pooling", "mean")  # checkpoints before the choice pooled by mean
    if pooling not in POOLINGS:
        raise CheckpointError(f"{name}: unknown pooling {str(pooling)[:40]!r}")
    return task, model_config, num_classes, pooling


def _read_tokenizer_dict(folder: str, checksums: dict[str, str], vocab_size: int) -> dict:
    name = os.path.join(folder, "tokenizer.json")
    tok = _read_verified_json(folder, "tokenizer.json", checksums)
    if not isinstance(tok, dict):
        raise CheckpointError(f"{name}: expected a JSON object")
    if tok.get("type") == "external":
        size = tok.get("vocab_size")
    else:
        try:
            size = tokenizer_from_dict(tok).vocab_size
        except ValueError as e:
            raise CheckpointError(f"{name}: {e}") from None
    if size != vocab_size:
        raise CheckpointError(
            f"{name}: vocabulary of {size} tokens, but config.json says {vocab_size}"
        )
    return tok


def read_checkpoint(path: str, prefer: tuple[str, ...] = (BEST, LATEST)) -> Checkpoint:
    """Read and cross-check a checkpoint's JSON files (see :func:`find_checkpoint` for
    ``path``); weights and optimizer state are read by the returned object's methods.
    A Hugging Face GPT-2 folder is read too (as a language model with no training state)."""
    if is_hf_gpt2_dir(path):
        return _read_hf_gpt2(path)
    folder = find_checkpoint(path, prefer)
    checksums = _read_checksums(folder)
    task, model_config, num_classes, pooling = _read_config(folder, checksums)
    tokenizer_dict = _read_tokenizer_dict(folder, checksums, model_config.vocab_size)
    state = _read_verified_json(folder, "state.json", checksums)
    if not isinstance(state, dict):
        raise CheckpointError(f"{folder}/state.json: expected a JSON object")
    return Checkpoint(folder, task, model_config, num_classes, tokenizer_dict, state, checksums,
                      pooling)


def _read_hf_gpt2(path: str) -> Checkpoint:
    config_file = os.path.join(path, "config.json")
    config = config_from_hf(read_json(config_file), source=config_file)
    tokenizer = (GPT2Tokenizer.from_dir(path).to_dict() if has_tokenizer_files(path)
                 else external_tokenizer_dict(config.vocab_size))
    return Checkpoint(path, "lm", config, None, tokenizer, {}, {})


# --------------------------------------------------------------------------------------------
# metrics.jsonl
# --------------------------------------------------------------------------------------------


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``; a torn last line (a crash mid-write) is
    skipped, any other bad line is an error naming it."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (is {run_dir} a training run folder?)")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if lineno >= len(lines) - 1:  # only the final line can be torn
                break
            raise ValueError(f"{path}:{lineno}: not a JSON record") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}:{lineno}: a record needs an integer 'step'")
        records.append(record)
    return records


def truncate_metrics(run_dir: str, step: int) -> None:
    """Drop the records after ``step``: a resumed run logs those steps again."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
    atomic_write_text(
        os.path.join(run_dir, METRICS), "".join(json_text(r, indent=None) + "\n" for r in kept)
    )
