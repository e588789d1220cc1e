"""A checkpoint folder: which files it holds, writing them, reading and checking them, and
building its model.

A run folder (``--out DIR``) holds ``latest/`` and ``best/`` checkpoint folders, written with
:func:`minigrad_lm.io.files.write_checkpoint_dir` so a crash mid-save never loses the previous
one, plus ``metrics.jsonl`` (:mod:`.metrics`) and ``train_config.json``. A checkpoint folder
holds only safetensors and JSON, never a pickle:

- ``model.safetensors``: the weights (``state_dict()`` names);
- ``config.json``: format tag and version, task (a name of
  :data:`~minigrad_lm.checkpoints.kinds.KINDS`), model config (GPT or encoder-decoder) and the
  task's own keys (a classifier's number of classes and pooling);
- ``tokenizer.json``: the tokenizer's ``to_dict()``, or ``{"type": "external", "vocab_size": N}``
  for token ids that came without a tokenizer;
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW moment buffers and its step;
- ``state.json``: step, every random state needed to continue exactly, best val loss and the
  training configuration;
- ``checksums.json``: the SHA-256 of every other file. The formats catch truncation and foreign
  files, but a flipped byte inside the weights would load silently without it.

Every JSON file is checked against the shape it must have (:mod:`minigrad_lm.io.untrusted`) and the
model's memory is estimated from its config (:mod:`minigrad_lm.backend.memory`) before anything is
built, so a hand-edited or hostile checkpoint is refused with one message naming file and key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

from ..backend import memory
from ..data.tokenizer import tokenizer_from_dict
from ..data.trained_tokenizer import has_tokenizer_files, read_gpt2_tokenizer
from ..io.files import (
    CheckpointError,
    json_text,
    load_safetensors,
    read_json,
    resolve_checkpoint_dir,
    safetensors_bytes,
    sha256_file,
    write_checkpoint_dir,
)
from ..io.untrusted import (
    ANY,
    Int,
    ListOf,
    MapOf,
    Num,
    Object,
    Optional,
    Str,
    check,
    reading,
    short,
)
from ..models import GPTConfig, Seq2SeqConfig
from ..models.adapters import ADAPTER_CONFIG, apply_spec, read_adapter_spec
from ..models.hf_gpt2 import config_from_hf, is_hf_gpt2_dir, read_gpt2_state
from ..nn import Module
from ..nn.lora import lora_layers, remove_lora
from .kinds import KINDS, MAX_SIZE, CheckpointKind, LMKind
from .upgrade import VERSION, upgrade

__all__ = [
    "BEST",
    "LATEST",
    "Checkpoint",
    "checkpoint_files",
    "external_tokenizer_dict",
    "find_checkpoint",
    "make_model",
    "read_checkpoint",
    "read_checkpoint_of",
    "require_task",
    "run_has_checkpoint",
    "save_checkpoint",
]

FORMAT = "minigrad_lm.checkpoint"
LATEST, BEST = "latest", "best"
CHECKSUMS = "checksums.json"

# The shapes of the JSON files (see minigrad_lm.io.untrusted): checked before any value is used.
CONFIG_SPEC = Object({"format": Str(), "version": ANY, "task": Str(tuple(KINDS)),
                      "model": MapOf(ANY)}, required=("format", "version", "task", "model"),
                     extra=True)
EXTERNAL_TOKENIZER_SPEC = Object({"type": Str(), "vocab_size": Int(1, MAX_SIZE)},
                                 required=("type", "vocab_size"))
# One of ours has a "type"; a `tokenizers` document (a learned word/BPE vocabulary) a "model".
TOKENIZER_SPEC = Object({"type": Str(), "model": MapOf(ANY)}, extra=True)
STATE_SPEC = Object({
    "step": Int(0), "rng": MapOf(ANY), "batch_rng": MapOf(ANY),
    "best_val_loss": Optional(Num()), "best_metric": Str(),
    "best_score": Optional(Num()), "best_step": Optional(Int(0)),
    "train_config": MapOf(ANY), "world_size": Int(1, 1 << 24), "rank_rngs": ListOf(MapOf(ANY)),
}, extra=True)
CHECKSUMS_SPEC = MapOf(Str(test=lambda v: re.fullmatch(r"[0-9a-f]{64}", v) is not None,
                           what="a SHA-256 in hex"), what="an object of file name -> SHA-256")
# Files written before the step alone was kept also hold "param_groups" (options never read).
OPTIMIZER_SPEC = Object({"step": Int(0)}, required=("step",), extra=True)
def external_tokenizer_dict(vocab_size: int) -> dict[str, Any]:
    """Stands in for a tokenizer when token ids came without one (``vocab.json`` with a size)."""
    return {"type": "external", "vocab_size": vocab_size}


def make_model(task: str, config: GPTConfig | Seq2SeqConfig,
               extras: dict[str, Any] | None = None) -> Module:
    """A fresh model of ``task``'s kind (check the memory first:
    :func:`minigrad_lm.backend.memory.require`)."""
    return KINDS[task].build(config, extras or {})


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
    optimizer: Any,
    state: dict[str, Any],
    extras: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> dict[str, bytes]:
    """Everything one checkpoint folder holds, as file name -> bytes: ``extras`` are the
    task's own keys of config.json; ``extra_files`` (a LoRA run's adapter files) are
    checksummed with the rest."""
    opt = optimizer.state_dict()
    config = {"format": FORMAT, "version": VERSION, "task": task,
              "model": model_config.to_dict(), **(extras or {})}
    files = {
        "model.safetensors": safetensors_bytes(dict(model.state_dict())),
        "config.json": (json_text(config) + "\n").encode(),
        "tokenizer.json": (json_text(tokenizer_dict) + "\n").encode(),
        "optimizer.safetensors": safetensors_bytes(opt["buffers"]),
        "optimizer.json": (json_text({"step": opt["step"]}) + "\n").encode(),
        "state.json": (json_text(state) + "\n").encode(),
        **(extra_files or {}),
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
    return read_json(name, CHECKSUMS_SPEC)


def _verify(folder: str, fname: str, checksums: dict[str, str]) -> None:
    """Refuse a file whose bytes are not the ones that were saved (hashed in chunks)."""
    path = os.path.join(folder, fname)
    if fname not in checksums:
        raise CheckpointError(f"{path}: not listed in {CHECKSUMS}")
    if sha256_file(path) != checksums[fname]:
        raise CheckpointError(f"{path}: corrupted (its SHA-256 does not match {CHECKSUMS})")


@dataclass
class Checkpoint:
    """What a checkpoint folder says about itself; weights and optimizer are read on demand."""

    path: str
    task: str
    model_config: GPTConfig | Seq2SeqConfig
    tokenizer_dict: dict[str, Any]
    state: dict[str, Any]
    checksums: dict[str, str]
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # the task's own keys

    @property
    def kind(self) -> type[CheckpointKind]:
        return KINDS[self.task]

    @property
    def tokenizer(self):
        """The tokenizer, or None when the model was trained on external token ids."""
        if self.tokenizer_dict.get("type") == "external":
            return None
        with reading(os.path.join(self.path, "tokenizer.json")):
            return tokenizer_from_dict(self.tokenizer_dict)

    def _safetensors(self, fname: str):
        """The header is checked first, then the checksum (streamed); the arrays stay mapped."""
        tensors, _ = load_safetensors(os.path.join(self.path, fname), mmap=True)
        _verify(self.path, fname, self.checksums)
        return tensors

    def _state_dict(self) -> dict:
        if is_hf_gpt2_dir(self.path):
            return read_gpt2_state(self.path)[1]  # names and shapes checked against config.json
        return self._safetensors("model.safetensors")

    @property
    def truncation(self) -> str:
        """How a classifier cut texts longer than its context, as it was trained (``head``
        before the choice existed)."""
        return str(self.state.get("train_config", {}).get("truncation") or "head")

    @property
    def adapter_spec(self):
        """The LoRA adapters this checkpoint's model has (a --lora-rank run), else None."""
        if ADAPTER_CONFIG not in self.checksums:
            return None
        _verify(self.path, ADAPTER_CONFIG, self.checksums)
        return read_adapter_spec(self.path)

    def load_weights(self, model: Module, state: dict | None = None) -> None:
        """Copy the weights into ``model`` in place (names, shapes and dtypes checked). The
        weights of a LoRA run go into a model without adapters merged (W + alpha/r B A)."""
        name = os.path.join(self.path, "model.safetensors")
        spec = self.adapter_spec
        if spec is not None and not lora_layers(model):
            apply_spec(model, spec, os.path.join(self.path, ADAPTER_CONFIG))
            self.load_weights(model, state)
            remove_lora(model, merge=True)
            model.requires_grad_(True)
            return
        try:
            model.load_state_dict(self._state_dict() if state is None else state)
        except KeyError as e:
            raise CheckpointError(f"{name}: does not fit config.json ({e.args[0]})") from None
        except ValueError as e:
            raise CheckpointError(f"{name}: does not fit config.json ({e})") from None

    def load_pretrained(self, part: Module) -> None:
        """The weights that start another task's model into ``part`` of it (``--init-from``):
        an ELECTRA pretrainer's encoder, a language model whole."""
        self.load_weights(part, self.kind.pretrained_state(self._state_dict()))

    def check_memory(self, device: str = "cpu", batch: int = 1) -> None:
        """Refuse a model too large for ``device`` before anything is allocated."""
        head = self.kind.head(self.model_config, self.extras)
        nbytes, detail = memory.inference_bytes(self.model_config, batch, head)
        c = self.model_config
        memory.require(nbytes, detail, f"{self.path}: the model of config.json (vocabulary "
                       f"{c.vocab_size}, context {c.context_length}, {c.n_layer} layers, d_model "
                       f"{c.d_model})", device)

    def build_model(self, device: str = "cpu", batch: int = 1) -> Module:
        """The model with the checkpoint's weights, on ``device``, in eval mode; its memory is
        estimated and its weights are read and checked before it is built."""
        self.check_memory(device, batch)
        state = self._state_dict()
        model = self.kind.build(self.model_config, self.extras)
        model.to(device)
        self.load_weights(model, state)
        return model.eval()

    def load_optimizer(self, optimizer: Any) -> None:
        """Restore AdamW's buffers and step count; its options (lr, betas, ...) stay as set."""
        buffers = self._safetensors("optimizer.safetensors")
        meta = _read_verified_json(self.path, "optimizer.json", self.checksums, OPTIMIZER_SPEC)
        step = meta["step"]
        where = os.path.join(self.path, "optimizer.safetensors")
        groups = {f"g{i}" for i in range(len(optimizer.param_groups))}
        stray = sorted(k for k in buffers if k.split(".", 1)[0] not in groups)
        if stray:
            raise CheckpointError(
                f"{where}: buffers {short(stray)} belong to no parameter group of this "
                f"model's optimizer ({len(groups)} groups)"
            )
        # After a step every group has its moments: none would silently restart Adam's.
        empty = sorted(groups - {k.split(".", 1)[0] for k in buffers})
        if step > 0 and empty:
            raise CheckpointError(
                f"{where}: no moment buffers for parameter group(s) {', '.join(empty)}, but "
                f"optimizer.json says step {step}"
            )
        try:
            optimizer.load_state_dict({"step": step, "buffers": buffers})
        except ValueError as e:
            # Such a file still lists its groups' options; its groups follow an older rule.
            hint = ("; it was written before weight decay covered every parameter of 2+ "
                    "dimensions (embeddings too): continue from its weights with --init-from"
                    if "param_groups" in meta else "")
            raise CheckpointError(f"{where}: {e}{hint}") from None


def _read_verified_json(folder: str, fname: str, checksums: dict[str, str],
                        spec: Any = None) -> Any:
    """The file's checksum first, then its shape: a corrupt byte is reported as corruption."""
    _verify(folder, fname, checksums)
    return read_json(os.path.join(folder, fname), spec)


def _foreign_config(folder: str) -> str | None:
    """Why ``folder/config.json`` is not one of ours (e.g. a Llama model), or None; read
    before checksums.json so that a foreign folder is not called an incomplete checkpoint."""
    name = os.path.join(folder, "config.json")
    config = read_json(name)
    if not isinstance(config, dict):
        return f"{name}: expected a JSON object, got {short(config)}"
    if config.get("format") == FORMAT:
        return None
    kind = config.get("model_type")
    if kind is not None:
        return (f"{name}: a Hugging Face model of model_type {short(kind)}; only GPT-2 "
                "(model_type 'gpt2') and minigrad_lm checkpoints can be read")
    return f"{name}: not a minigrad_lm checkpoint config (no format {FORMAT!r})"


def _read_config(folder: str, checksums: dict[str, str]
                 ) -> tuple[str, GPTConfig | Seq2SeqConfig, dict[str, Any], dict[str, Any]]:
    """(task, model config, the task's own keys, state.json) of a checkpoint folder, upgraded
    from an older format first."""
    name = os.path.join(folder, "config.json")
    config = _read_verified_json(folder, "config.json", checksums)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{name}: not a minigrad_lm checkpoint config")
    state = _read_verified_json(folder, "state.json", checksums, STATE_SPEC)
    config, state = upgrade(config, state, name)
    config = check(config, CONFIG_SPEC, name)
    kind = KINDS[config["task"]]
    kind.config_spec.check(config["model"], name, "model")
    extras = {k: v for k, v in config.items() if k not in CONFIG_SPEC.fields}
    check(extras, Object(kind.extras, required=tuple(k for k in kind.extras
                                                     if k not in kind.extra_defaults)), name)
    extras = {**kind.extra_defaults, **extras}
    try:
        model_config = kind.config_class.from_dict(config["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: bad model config ({e})") from None
    return kind.name, model_config, extras, state


def _read_tokenizer_dict(folder: str, checksums: dict[str, str], vocab_size: int) -> dict:
    name = os.path.join(folder, "tokenizer.json")
    tok = _read_verified_json(folder, "tokenizer.json", checksums, TOKENIZER_SPEC)
    if tok.get("type") == "external":
        size = check(tok, EXTERNAL_TOKENIZER_SPEC, name)["vocab_size"]
    else:
        with reading(name):
            size = tokenizer_from_dict(tok, vocab_size).vocab_size
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
    foreign = _foreign_config(folder)
    if foreign is not None:
        raise CheckpointError(foreign)
    checksums = _read_checksums(folder)
    task, model_config, extras, state = _read_config(folder, checksums)
    tokenizer_dict = _read_tokenizer_dict(folder, checksums, model_config.vocab_size)
    return Checkpoint(folder, task, model_config, tokenizer_dict, state, checksums, extras)


def require_task(ckpt: Checkpoint, task: str) -> Checkpoint:
    """``ckpt``, unless it is another task's: then an error that says how to train the right
    one (what every command that uses one model needs)."""
    if ckpt.task != task:
        raise CheckpointError(
            f"{ckpt.path}: a {ckpt.task} checkpoint, not {KINDS[task].noun}; train one with "
            f"python -m minigrad_lm.train --task {task}")
    return ckpt


def read_checkpoint_of(path: str, task: str) -> Checkpoint:
    """:func:`read_checkpoint`, refusing a checkpoint of another task (:func:`require_task`)."""
    return require_task(read_checkpoint(path), task)


def _read_hf_gpt2(path: str) -> Checkpoint:
    config_file = os.path.join(path, "config.json")
    config = config_from_hf(read_json(config_file), source=config_file)
    if not has_tokenizer_files(path):
        return Checkpoint(path, LMKind.name, config, external_tokenizer_dict(config.vocab_size),
                          {}, {})
    with reading(os.path.join(path, "tokenizer.json")):
        tokenizer = read_gpt2_tokenizer(path, config.vocab_size)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but "
                              f"config.json's vocabulary only {config.vocab_size}")
    return Checkpoint(path, LMKind.name, config, tokenizer.to_dict(), {}, {})
